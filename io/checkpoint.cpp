// safetensors: 8-byte little-endian header length, a JSON header, then the raw tensor bytes.
#include "checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <bit>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <signal.h>
#include <zlib.h>

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
  std::vector<std::string> keys;  // an object: keys[i] names arr[i]
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
      std::set<std::string> seen;
      while (true) {
        std::string k = string();
        fail_if(!seen.insert(k).second, "key \"" + k + "\" appears twice");
        expect(':');
        j.keys.push_back(std::move(k));
        j.arr.push_back(value(depth + 1));
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

namespace {

constexpr const char* kCrcKey = "minigrad.crc32";

// CRC-32 (zlib's) of a byte range, in pieces that fit zlib's uInt.
uLong crc_update(uLong crc, const void* p, size_t n) {
  const auto* b = static_cast<const Bytef*>(p);
  while (n > 0) {
    const size_t k = std::min<size_t>(n, size_t(1) << 30);
    crc = crc32(crc, b, uInt(k));
    b += k;
    n -= k;
  }
  return crc;
}

// Temporary files of saves to `target` are ".<name>.tmp.<pid>.<n>"; those whose process is gone
// are left from a crash and are removed.
void remove_dead_writers_temps(const std::filesystem::path& dir, const std::string& filename) {
  namespace fs = std::filesystem;
  const std::string prefix = "." + filename + ".tmp.";
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    long pid = 0;
    const char* b = name.data() + prefix.size();
    const auto [p, err] = std::from_chars(b, name.data() + name.size(), pid);
    if (err != std::errc() || p == b || pid <= 0) continue;
    if (::kill(pid_t(pid), 0) != 0 && errno == ESRCH) fs::remove(it->path(), ec);
  }
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata0) {
  std::vector<Tensor> data;
  uLong crc = crc32(0, Z_NULL, 0);
  for (const auto& [name, t] : tensors) {
    MG_CHECK(t.defined(), "save_safetensors: tensor \"", name, "\" is undefined");
    MG_CHECK(!name.empty() && name != "__metadata__", "save_safetensors: invalid tensor name \"", name, "\"");
    Tensor c = t.detach().to(Device::cpu()).contiguous();
    crc = crc_update(crc, c.raw_data(), size_t(c.numel()) * c.element_size());
    data.push_back(c);
  }
  {
    std::set<std::string> names;
    for (const auto& nt : tensors)
      MG_CHECK(names.insert(nt.first).second, "save_safetensors: name \"", nt.first, "\" appears twice");
  }
  std::map<std::string, std::string> metadata = metadata0;
  metadata[kCrcKey] = std::to_string(crc);
  std::ostringstream h;
  h << '{';
  h << "\"__metadata__\":{";
  for (auto it = metadata.begin(); it != metadata.end(); ++it)
    h << (it == metadata.begin() ? "" : ",") << '"' << json_escape(it->first) << "\":\"" << json_escape(it->second) << '"';
  h << '}';
  uint64_t off = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& c = data[i];
    const uint64_t n = uint64_t(c.numel()) * c.element_size();
    h << ",\"" << json_escape(tensors[i].first) << "\":{\"dtype\":\"" << st_dtype(c.dtype()) << "\",\"shape\":[";
    for (int64_t d = 0; d < c.dim(); ++d) h << (d ? "," : "") << c.size(d);
    h << "],\"data_offsets\":[" << off << ',' << off + n << "]}";
    off += n;
  }
  h << '}';
  std::string header = h.str();
  while (header.size() % 8) header += ' ';

  namespace fs = std::filesystem;
  fs::path target(path);
  const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  remove_dead_writers_temps(dir, target.filename().string());
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = (target.parent_path() / ("." + target.filename().string() + ".tmp." +
                                                   std::to_string(getpid()) + "." + std::to_string(++counter)))
                              .string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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
  errno = 0;
  bool ok = write_all(&hl, 8) && write_all(header.data(), header.size());
  for (const auto& t : data) ok = ok && write_all(t.raw_data(), size_t(t.numel()) * t.element_size());
  const int err = errno;
  ok = ok && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok) {
    const int e = err ? err : errno;
    ::unlink(tmp.c_str());
    MG_FAIL("save_safetensors: writing ", tmp, " failed: ", std::strerror(e ? e : EIO), "; ", path, " is unchanged");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    MG_FAIL("save_safetensors: cannot rename ", tmp, " to ", path, ": ", std::strerror(e));
  }
  // The rename is durable once the directory is on disk too.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  MG_CHECK(dfd >= 0, "save_safetensors: wrote ", path, " but cannot open its directory to sync it: ", std::strerror(errno));
  const bool synced = ::fsync(dfd) == 0 || errno == EINVAL;  // EINVAL: a file system without directory sync
  const int e = errno;
  ::close(dfd);
  MG_CHECK(synced, "save_safetensors: wrote ", path, " but syncing its directory failed: ", std::strerror(e));
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
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t b, e;
  };
  std::vector<Entry> entries;
  // Every entry is checked before any tensor is allocated.
  for (size_t ei = 0; ei < root.keys.size(); ++ei) {
    const std::string& name = root.keys[ei];
    const Json& v = root.arr[ei];
    if (name == "__metadata__") {
      MG_CHECK(v.kind == Json::Obj, "load_safetensors: ", path, ": __metadata__ is not an object");
      for (size_t i = 0; i < v.keys.size(); ++i) {
        MG_CHECK(v.arr[i].kind == Json::Str, "load_safetensors: ", path, ": metadata \"", v.keys[i], "\" is not a string");
        out.metadata[v.keys[i]] = v.arr[i].str;
      }
      continue;
    }
    auto field = [&](const char* key) -> const Json& {
      for (size_t i = 0; i < v.keys.size(); ++i)
        if (v.keys[i] == key) return v.arr[i];
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
    MG_CHECK(sh.kind == Json::Arr && sh.arr.size() <= 64 && of.kind == Json::Arr && of.arr.size() == 2,
             "load_safetensors: ", path, ": tensor \"", name, "\" has a malformed shape or data_offsets");
    Shape shape;
    for (auto& d : sh.arr) {
      MG_CHECK(d.kind == Json::Num && d.num >= 0, "load_safetensors: ", path, ": tensor \"", name,
               "\" has an invalid dimension");
      shape.push_back(d.num);
    }
    MG_CHECK(of.arr[0].kind == Json::Num && of.arr[1].kind == Json::Num && of.arr[0].num >= 0 && of.arr[1].num >= of.arr[0].num,
             "load_safetensors: ", path, ": tensor \"", name, "\" has invalid data_offsets");
    const uint64_t b = uint64_t(of.arr[0].num), e = uint64_t(of.arr[1].num);
    // The bytes the shape needs, without overflow: no more than the span can hold.
    uint64_t need = 0;
    const bool fits = checked_numel(shape, &need) && !__builtin_mul_overflow(need, uint64_t(element_size(t)), &need);
    MG_CHECK(fits && e - b == need, "load_safetensors: ", path, ": tensor \"", name, "\" of shape ", shape, " (", dt.str,
             ") needs ", fits ? std::to_string(need) : std::string("more than 2^64"), " bytes but its data_offsets span ",
             e - b);
    MG_CHECK(e <= data_size, "load_safetensors: ", path, " is truncated: tensor \"", name, "\" ends at byte ", e,
             " of a data section of ", data_size);
    entries.push_back({name, t, std::move(shape), b, e});
  }
  std::vector<size_t> order(entries.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t c) {
    return std::pair(entries[a].b, entries[a].e) < std::pair(entries[c].b, entries[c].e);
  });
  uint64_t cur = 0;
  for (size_t i : order) {
    const Entry& en = entries[i];
    MG_CHECK(en.b == cur, "load_safetensors: ", path, " is corrupt: tensor \"", en.name, "\" ",
             en.b < cur ? "overlaps the one before it" : "leaves a hole", " at byte ", en.b);
    cur = en.e;
  }
  MG_CHECK(cur == data_size, "load_safetensors: ", path, " is corrupt: ", data_size - cur, " unindexed bytes after the tensors");
  // The data section adds up to the file's size: reading it allocates no more than the file holds.
  std::vector<Tensor> loaded(entries.size());
  for (size_t i : order) {
    const Entry& en = entries[i];
    Tensor x = empty(en.shape, en.dtype);
    const uint64_t need = en.e - en.b;
    f.seekg(std::streamoff(8 + hl + en.b));
    f.read(static_cast<char*>(x.raw_data()), std::streamsize(need));
    MG_CHECK(f.good() || need == 0, "load_safetensors: ", path, ": reading tensor \"", en.name, "\" failed");
    loaded[i] = x;
  }
  if (auto it = out.metadata.find(kCrcKey); it != out.metadata.end()) {
    unsigned long want = 0;
    const auto [p, err] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), want);
    MG_CHECK(err == std::errc() && p == it->second.data() + it->second.size(), "load_safetensors: ", path,
             ": metadata \"", kCrcKey, "\" is not a number: \"", it->second, "\"");
    uLong crc = crc32(0, Z_NULL, 0);
    for (size_t i : order) crc = crc_update(crc, loaded[i].raw_data(), size_t(entries[i].e - entries[i].b));
    MG_CHECK(crc == want, "load_safetensors: ", path, " is corrupt: the data's CRC-32 is ", crc, " but the file says ",
             want, " (", kCrcKey, ")");
  }
  for (size_t i = 0; i < entries.size(); ++i) out.tensors.emplace_back(entries[i].name, loaded[i]);
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
                        std::map<std::string, std::string>* metadata, const LoadCheckpointOptions& o) {
  SafetensorsFile f = load_safetensors(path);
  // The epoch first: a file with a bad one changes nothing.
  auto e = f.metadata.find("epoch");
  MG_CHECK(e != f.metadata.end(), "load_checkpoint: ", path, " has no epoch in its metadata");
  int64_t epoch = -1;
  {
    const std::string& v = e->second;
    const auto [p, err] = std::from_chars(v.data(), v.data() + v.size(), epoch);
    MG_CHECK(err == std::errc() && p == v.data() + v.size() && epoch >= 0, "load_checkpoint: ", path,
             ": metadata \"epoch\" is \"", v, "\", not a non-negative integer");
  }
  std::map<std::string, Tensor> byname(f.tensors.begin(), f.tensors.end());
  std::set<std::string> used;
  NamedTensors dst = model.named_parameters();
  for (auto& nb : model.named_buffers()) dst.push_back(nb);
  std::vector<std::pair<Tensor, Tensor>> copies;  // checked first, copied after: a bad file changes nothing
  for (const auto& [n, t] : dst) {
    auto it = byname.find(n);
    if (it == byname.end()) {
      MG_CHECK(!o.strict, "load_checkpoint: ", path, " has no tensor \"", n, "\" (strict loading; "
               "LoadCheckpointOptions{.strict = false} loads the tensors it has)");
      continue;
    }
    used.insert(n);
    const Tensor& src = it->second;
    MG_CHECK(src.sizes() == t.sizes(), "load_checkpoint: \"", n, "\" in ", path, " has shape ", src.sizes(),
             " but the model's has ", t.sizes());
    MG_CHECK(is_floating(t.dtype()) || !is_floating(src.dtype()), "load_checkpoint: \"", n, "\" in ", path, " is ",
             src.dtype(), " but the model's is ", t.dtype(), ": floating values are not converted to integers");
    copies.emplace_back(t, src);
  }
  optim::StateDict s;
  if (opt)
    for (const auto& [n, t] : f.tensors)
      if (n.rfind("optimizer.", 0) == 0) {
        s.emplace_back(n.substr(10), t);
        used.insert(n);
      }
  if (o.strict)
    for (const auto& [n, t] : f.tensors)
      MG_CHECK(used.count(n) || (!opt && n.rfind("optimizer.", 0) == 0), "load_checkpoint: ", path,
               " has tensor \"", n, "\" of shape ", t.sizes(), ", which the model", opt ? " and the optimizer do" : " does",
               " not have (strict loading; LoadCheckpointOptions{.strict = false} skips it)");
  if (opt) opt->load_state_dict(s);  // checks names, shapes and ranges before it changes anything
  {
    NoGradGuard ng;
    for (auto& [t, src] : copies) t.detach().copy_(src.to(t.dtype()).to(t.device()));
  }
  if (metadata) *metadata = f.metadata;
  return epoch;
}

}  // namespace minigrad::io
