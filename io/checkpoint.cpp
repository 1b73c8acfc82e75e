// safetensors: 8-byte little-endian header length, a JSON header, then the raw tensor bytes.
#include "checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "../core/autograd.h"
#include "../nn/module.h"
#include "../optim/optimizer.h"

namespace minigrad::io {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

const char* st_dtype(DType t) { return t == kFloat32 ? "F32" : t == kFloat64 ? "F64" : t == kInt64 ? "I64" : "U8"; }

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else o += c;
  }
  return o;
}

// A minimal JSON reader for safetensors headers: objects, arrays, strings, integers.
struct Json {
  enum Kind { Obj, Arr, Str, Num } kind = Num;
  std::vector<std::pair<std::string, Json>> obj;
  std::vector<Json> arr;
  std::string str;
  int64_t num = 0;
};

class Parser {
 public:
  Parser(const std::string& s, const std::string& path) : s_(s), path_(path) {}
  Json parse() {
    Json j = value(0);
    ws();
    fail_if(i_ != s_.size(), "trailing bytes after the header object");
    return j;
  }

 private:
  [[noreturn]] void fail(const std::string& why) {
    MG_FAIL("load_safetensors: ", path_, " has a corrupt header: ", why, " at byte ", i_ + 8);
  }
  void fail_if(bool c, const std::string& why) {
    if (c) fail(why);
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  char peek() {
    ws();
    fail_if(i_ >= s_.size(), "unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    fail_if(peek() != c, std::string("expected '") + c + "'");
    ++i_;
  }
  std::string string() {
    expect('"');
    std::string o;
    while (true) {
      fail_if(i_ >= s_.size(), "unterminated string");
      char c = s_[i_++];
      if (c == '"') return o;
      if (c != '\\') {
        o += c;
        continue;
      }
      fail_if(i_ >= s_.size(), "unterminated escape");
      char e = s_[i_++];
      switch (e) {
        case '"': case '\\': case '/': o += e; break;
        case 'b': o += '\b'; break;
        case 'f': o += '\f'; break;
        case 'n': o += '\n'; break;
        case 'r': o += '\r'; break;
        case 't': o += '\t'; break;
        case 'u': {
          fail_if(i_ + 4 > s_.size(), "short \\u escape");
          unsigned v = 0;
          for (int k = 0; k < 4; ++k) {
            char h = s_[i_++];
            fail_if(!std::isxdigit(static_cast<unsigned char>(h)), "bad \\u escape");
            v = v * 16 + unsigned(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
          }
          if (v < 0x80) o += char(v);
          else if (v < 0x800) o += char(0xC0 | (v >> 6)), o += char(0x80 | (v & 0x3F));
          else o += char(0xE0 | (v >> 12)), o += char(0x80 | ((v >> 6) & 0x3F)), o += char(0x80 | (v & 0x3F));
          break;
        }
        default: fail("bad escape");
      }
    }
  }
  Json value(int depth) {
    fail_if(depth > 8, "nesting too deep");
    Json j;
    char c = peek();
    if (c == '{') {
      j.kind = Json::Obj;
      ++i_;
      if (peek() == '}') return ++i_, j;
      while (true) {
        std::string k = string();
        expect(':');
        j.obj.emplace_back(std::move(k), value(depth + 1));
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect('}');
        return j;
      }
    }
    if (c == '[') {
      j.kind = Json::Arr;
      ++i_;
      if (peek() == ']') return ++i_, j;
      while (true) {
        j.arr.push_back(value(depth + 1));
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect(']');
        return j;
      }
    }
    if (c == '"') {
      j.kind = Json::Str;
      j.str = string();
      return j;
    }
    fail_if(!(std::isdigit(static_cast<unsigned char>(c)) || c == '-'), "unexpected character");
    size_t start = i_;
    if (s_[i_] == '-') ++i_;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    fail_if(i_ - start > 18 || i_ == start || (s_[start] == '-' && i_ - start == 1), "bad number");
    j.num = std::stoll(s_.substr(start, i_ - start));
    return j;
  }
  const std::string& s_;
  std::string path_;
  size_t i_ = 0;
};

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::ostringstream h;
  h << '{';
  bool first = true;
  if (!metadata.empty()) {
    h << "\"__metadata__\":{";
    for (auto it = metadata.begin(); it != metadata.end(); ++it)
      h << (it == metadata.begin() ? "" : ",") << '"' << json_escape(it->first) << "\":\"" << json_escape(it->second) << '"';
    h << '}';
    first = false;
  }
  std::vector<Tensor> data;
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    MG_CHECK(t.defined(), "save_safetensors: tensor \"", name, "\" is undefined");
    MG_CHECK(!name.empty() && name != "__metadata__", "save_safetensors: invalid tensor name \"", name, "\"");
    for (const auto& [n2, t2] : tensors) MG_CHECK(&n2 == &name || n2 != name, "save_safetensors: name \"", name, "\" appears twice");
    Tensor c = t.detach().to(Device::cpu()).contiguous();
    const uint64_t n = uint64_t(c.numel()) * c.element_size();
    h << (first ? "" : ",") << '"' << json_escape(name) << "\":{\"dtype\":\"" << st_dtype(c.dtype()) << "\",\"shape\":[";
    for (int64_t d = 0; d < c.dim(); ++d) h << (d ? "," : "") << c.size(d);
    h << "],\"data_offsets\":[" << off << ',' << off + n << "]}";
    off += n;
    first = false;
    data.push_back(c);
  }
  h << '}';
  std::string header = h.str();
  while (header.size() % 8) header += ' ';

  namespace fs = std::filesystem;
  fs::path target(path);
  const std::string tmp = (target.parent_path() / ("." + target.filename().string() + ".tmp." + std::to_string(getpid()))).string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  MG_CHECK(fd >= 0, "save_safetensors: cannot create ", tmp, ": ", std::strerror(errno));
  auto write_all = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::write(fd, c, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      c += w;
      n -= size_t(w);
    }
    return true;
  };
  uint64_t hl = header.size();
  bool ok = write_all(&hl, 8) && write_all(header.data(), header.size());
  for (const auto& t : data) ok = ok && write_all(t.raw_data(), size_t(t.numel()) * t.element_size());
  const int err = errno;
  ok = ok && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok) {
    ::unlink(tmp.c_str());
    MG_FAIL("save_safetensors: writing ", tmp, " failed: ", std::strerror(err ? err : errno), "; ", path, " is unchanged");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    MG_FAIL("save_safetensors: cannot rename ", tmp, " to ", path, ": ", std::strerror(e));
  }
}

SafetensorsFile load_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MG_CHECK(f.good(), "load_safetensors: cannot open ", path);
  f.seekg(0, std::ios::end);
  const uint64_t size = uint64_t(f.tellg());
  f.seekg(0);
  MG_CHECK(size >= 8, "load_safetensors: ", path, " is truncated: ", size, " bytes, shorter than the 8-byte header length");
  uint64_t hl = 0;
  f.read(reinterpret_cast<char*>(&hl), 8);
  MG_CHECK(hl >= 2 && hl <= (uint64_t(100) << 20), "load_safetensors: ", path, " is corrupt: header length ", hl, " is implausible");
  MG_CHECK(8 + hl <= size, "load_safetensors: ", path, " is truncated: the header says ", hl, " bytes but the file has ", size - 8, " after the length");
  std::string header(size_t(hl), '\0');
  f.read(header.data(), std::streamsize(hl));
  Json root = Parser(header, path).parse();
  MG_CHECK(root.kind == Json::Obj, "load_safetensors: ", path, " is corrupt: the header is not a JSON object");
  const uint64_t data_size = size - 8 - hl;
  SafetensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto& [name, v] : root.obj) {
    if (name == "__metadata__") {
      MG_CHECK(v.kind == Json::Obj, "load_safetensors: ", path, ": __metadata__ is not an object");
      for (auto& [k, s] : v.obj) {
        MG_CHECK(s.kind == Json::Str, "load_safetensors: ", path, ": metadata \"", k, "\" is not a string");
        out.metadata[k] = s.str;
      }
      continue;
    }
    auto field = [&](const char* key) -> const Json& {
      for (auto& [k, x] : v.obj)
        if (k == key) return x;
      MG_FAIL("load_safetensors: ", path, ": tensor \"", name, "\" has no ", key);
    };
    MG_CHECK(v.kind == Json::Obj, "load_safetensors: ", path, ": entry \"", name, "\" is not an object");
    const Json& dt = field("dtype");
    const Json& sh = field("shape");
    const Json& of = field("data_offsets");
    MG_CHECK(dt.kind == Json::Str, "load_safetensors: ", path, ": dtype of \"", name, "\" is not a string");
    DType t;
    if (dt.str == "F32") t = kFloat32;
    else if (dt.str == "F64") t = kFloat64;
    else if (dt.str == "I64") t = kInt64;
    else if (dt.str == "U8") t = kUInt8;
    else MG_FAIL("load_safetensors: ", path, ": tensor \"", name, "\" has dtype ", dt.str, "; minigrad reads F32, F64, I64 and U8");
    MG_CHECK(sh.kind == Json::Arr && of.kind == Json::Arr && of.arr.size() == 2, "load_safetensors: ", path,
             ": tensor \"", name, "\" has a malformed shape or data_offsets");
    Shape shape;
    for (auto& d : sh.arr) {
      MG_CHECK(d.kind == Json::Num && d.num >= 0 && d.num < (int64_t(1) << 40), "load_safetensors: ", path,
               ": tensor \"", name, "\" has an invalid dimension");
      shape.push_back(d.num);
    }
    MG_CHECK(of.arr[0].kind == Json::Num && of.arr[1].kind == Json::Num && of.arr[0].num >= 0 && of.arr[1].num >= of.arr[0].num,
             "load_safetensors: ", path, ": tensor \"", name, "\" has invalid data_offsets");
    const uint64_t b = uint64_t(of.arr[0].num), e = uint64_t(of.arr[1].num);
    const uint64_t need = uint64_t(numel_of(shape)) * element_size(t);
    MG_CHECK(e - b == need, "load_safetensors: ", path, ": tensor \"", name, "\" of shape ", shape, " (", dt.str, ") needs ",
             need, " bytes but its data_offsets span ", e - b);
    MG_CHECK(e <= data_size, "load_safetensors: ", path, " is truncated: tensor \"", name, "\" ends at byte ", e,
             " of a data section of ", data_size);
    spans.emplace_back(b, e);
    Tensor x = empty(shape, t);
    f.seekg(std::streamoff(8 + hl + b));
    f.read(static_cast<char*>(x.raw_data()), std::streamsize(need));
    MG_CHECK(f.good() || need == 0, "load_safetensors: ", path, ": reading tensor \"", name, "\" failed");
    out.tensors.emplace_back(name, x);
  }
  std::sort(spans.begin(), spans.end());
  uint64_t cur = 0;
  for (auto& [b, e] : spans) {
    MG_CHECK(b == cur, "load_safetensors: ", path, " is corrupt: tensor data ", b < cur ? "overlaps" : "leaves a hole", " at byte ", b);
    cur = e;
  }
  MG_CHECK(cur == data_size, "load_safetensors: ", path, " is corrupt: ", data_size - cur, " unindexed bytes after the tensors");
  return out;
}

void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer* opt, int64_t epoch,
                     const std::map<std::string, std::string>& extra) {
  NamedTensors all = model.named_parameters();
  for (auto& nb : model.named_buffers()) all.push_back(nb);
  if (opt)
    for (auto& [k, t] : opt->state_dict()) all.emplace_back("optimizer." + k, t);
  std::map<std::string, std::string> meta = extra;
  meta["epoch"] = std::to_string(epoch);
  meta["format"] = "minigrad-checkpoint-1";
  save_safetensors(path, all, meta);
}

int64_t load_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer* opt,
                        std::map<std::string, std::string>* metadata) {
  SafetensorsFile f = load_safetensors(path);
  std::map<std::string, Tensor> byname(f.tensors.begin(), f.tensors.end());
  auto load_named = [&](const std::vector<std::pair<std::string, Tensor>>& dst) {
    for (const auto& [n, t] : dst) {
      auto it = byname.find(n);
      MG_CHECK(it != byname.end(), "load_checkpoint: ", path, " has no tensor \"", n, "\"");
      MG_CHECK(it->second.sizes() == t.sizes(), "load_checkpoint: \"", n, "\" in ", path, " has shape ",
               it->second.sizes(), " but the model's has ", t.sizes());
      NoGradGuard ng;
      t.detach().copy_(it->second.to(t.dtype()).to(t.device()));
    }
  };
  load_named(model.named_parameters());
  load_named(model.named_buffers());
  if (opt) {
    optim::StateDict s;
    for (const auto& [n, t] : f.tensors)
      if (n.rfind("optimizer.", 0) == 0) s.emplace_back(n.substr(10), t);
    opt->load_state_dict(s);
  }
  if (metadata) *metadata = f.metadata;
  auto e = f.metadata.find("epoch");
  MG_CHECK(e != f.metadata.end(), "load_checkpoint: ", path, " has no epoch in its metadata");
  return std::stoll(e->second);
}

}  // namespace minigrad::io
