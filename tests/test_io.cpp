// io/: IDX and CIFAR readers, images, the DataLoader, safetensors and checkpoints, on small files
// the tests write themselves.
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "helpers.h"

using namespace mgtest;
namespace fs = std::filesystem;

namespace {
// A small MNIST-format set: image i is filled with value i*10, label i % 10.
void write_mnist(const TempDir& d, const std::string& prefix, int64_t n, bool gz) {
  std::vector<uint8_t> img, lab;
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 28 * 28; ++k) img.push_back(uint8_t(i * 10));
    lab.push_back(uint8_t(i % 10));
  }
  std::string ext = gz ? ".gz" : "";
  io::write_idx(d / (prefix + "-images-idx3-ubyte" + ext), img, {n, 28, 28});
  io::write_idx(d / (prefix + "-labels-idx1-ubyte" + ext), lab, {n});
}
}  // namespace

TEST_CASE("IDX files: round trip (plain and gzip), MNIST layout, corrupt files") {
  TempDir d;
  for (bool gz : {false, true}) {
    write_mnist(d, gz ? "t10k" : "train", 12, gz);
    io::TensorDataset ds = io::load_mnist(d.path.string(), !gz);
    CHECK(ds.images.sizes() == Shape{12, 1, 28, 28});
    CHECK(ds.images.dtype() == kUInt8);  // pixels as the file holds them; the DataLoader scales
    CHECK(ds.labels.dtype() == kInt64);
    CHECK(ds.images[5][0][3][4].item() == 50);
    CHECK(ds.labels[11].item() == 1);
  }
  Tensor raw = io::read_idx(d / "train-labels-idx1-ubyte");
  check_close(vals(raw.narrow(0, 0, 3)), {0, 1, 2});
  // truncated: drop the last byte
  std::string b = read_bytes(d / "train-images-idx3-ubyte");
  write_bytes(d / "cut", b.substr(0, b.size() - 1));
  CHECK_ERROR(io::read_idx(d / "cut"), "read_idx", "truncated", "[12, 28, 28]");
  write_bytes(d / "junk", "\x12\x34\x08\x01xxxx");
  CHECK_ERROR(io::read_idx(d / "junk"), "read_idx", "bad magic");
  std::string gzb = read_bytes(d / "t10k-images-idx3-ubyte.gz");
  write_bytes(d / "cut.gz", gzb.substr(0, gzb.size() / 2));
  CHECK_ERROR(io::read_idx(d / "cut.gz"), "read_idx");
  CHECK_ERROR(io::load_mnist(d / "nowhere", true), "load_mnist", "does not exist");
  TempDir e;
  CHECK_ERROR(io::load_mnist(e.path.string(), true), "load_mnist", "train-images-idx3-ubyte");
  io::write_idx(e / "train-images-idx3-ubyte", std::vector<uint8_t>(2 * 4, 0), {2, 2, 2});
  io::write_idx(e / "train-labels-idx1-ubyte", {3, 12}, {2});
  CHECK_ERROR(io::load_mnist(e.path.string(), true), "load_mnist", "label 12");
}

TEST_CASE("CIFAR-10 binary batches: layout and corrupt files") {
  TempDir d;
  std::string rec;
  for (int i = 0; i < 3; ++i) {
    rec += char(i + 4);
    for (int k = 0; k < 3072; ++k) rec += char((k / 1024) * 100 + i);  // channel c has value c*100 + i
  }
  write_bytes(d / "test_batch.bin", rec);
  io::TensorDataset ds = io::load_cifar10(d.path.string(), false);
  CHECK(ds.images.sizes() == Shape{3, 3, 32, 32});
  check_close(vals(ds.labels), {4, 5, 6});
  CHECK(ds.images.dtype() == kUInt8);
  CHECK(ds.images[2][1][7][9].item() == 102);
  write_bytes(d / "test_batch.bin", rec.substr(0, 3073 + 100));
  CHECK_ERROR(io::load_cifar10(d.path.string(), false), "load_cifar10", "truncated");
  CHECK_ERROR(io::load_cifar10(d.path.string(), true), "load_cifar10", "data_batch_1.bin");
  CHECK_ERROR(io::load_cifar10(d / "missing", true), "load_cifar10", "does not exist");
}

TEST_CASE("images: PNG written by save_png reads back through stb_image") {
  TempDir d;
  Tensor img = rand({3, 5, 7});
  io::save_png(d / "a.png", img);
  Tensor back = io::load_image(d / "a.png");
  CHECK(back.sizes() == Shape{3, 5, 7});
  check_close(vals(back), vals(img), 0.5 / 255.0 + 1e-6);
  CHECK(io::load_image(d / "a.png", 1).sizes() == Shape{1, 5, 7});
  write_bytes(d / "bad.png", "\x89PNG not really");
  CHECK_ERROR(io::load_image(d / "bad.png"), "load_image", "cannot decode");
  CHECK_ERROR(io::load_image(d / "none.png"), "load_image", "does not exist");
}

TEST_CASE("DataLoader: batches, shuffle by seed, drop_last, background thread, transforms") {
  io::TensorDataset ds{arange(10).view({10, 1, 1, 1}).to(kFloat32), arange(10, kInt64)};
  io::DataLoader dl(ds, {.batch_size = 4, .shuffle = true, .seed = 3});
  CHECK(dl.batches_per_epoch() == 3);
  auto epoch = [&] {
    std::vector<int64_t> seen;
    dl.start_epoch();
    while (auto b = dl.next()) {
      CHECK(b->data.size(0) == b->target.size(0));
      auto xs = vals(b->data), ys = vals(b->target);
      for (size_t i = 0; i < xs.size(); ++i) {
        CHECK(xs[i] == ys[i]);  // images stay with their labels
        seen.push_back(int64_t(ys[i]));
      }
    }
    return seen;
  };
  auto e1 = epoch(), e2 = epoch();
  CHECK(std::set<int64_t>(e1.begin(), e1.end()).size() == 10);
  CHECK(e1.size() == 10);
  CHECK(e1 != e2);  // reshuffled
  io::DataLoader again(ds, {.batch_size = 4, .shuffle = true, .seed = 3});
  again.start_epoch();
  std::vector<int64_t> first;
  while (auto b = again.next())
    for (double v : vals(b->target)) first.push_back(int64_t(v));
  CHECK(first == e1);  // the same seed gives the same order
  io::DataLoader dl2(ds, {.batch_size = 4, .shuffle = false, .drop_last = true});
  dl2.start_epoch();
  int n = 0;
  while (auto b = dl2.next()) {
    CHECK(b->data.size(0) == 4);
    ++n;
  }
  CHECK(n == 2);
  // transforms
  Generator g(1);
  Tensor x = rand({2, 3, 4, 4});
  Tensor nx = io::normalize({0.5, 0.5, 0.5}, {0.25, 0.25, 0.25})(x, g);
  check_close(vals(nx), vals(div(sub(x, 0.5), 0.25)), 1e-6);
  Tensor fx = io::random_horizontal_flip(1.0)(x, g);
  CHECK(fx[1][2][3][0].item() == x[1][2][3][3].item());
  Tensor cx = io::random_crop(4, 2)(x, g);
  CHECK(cx.sizes() == Shape{2, 3, 4, 4});
  Tensor same = io::random_crop(4, 0)(x, g);
  check_close(vals(same), vals(x));
  // uint8 images (as the loaders keep them) come out as float32 in [0, 1], still with their labels
  io::DataLoader bytes(io::TensorDataset{mul(arange(10, kInt64), 25).to(kUInt8).view({10, 1, 1, 1}), arange(10, kInt64)},
                       {.batch_size = 3, .shuffle = true, .seed = 5});
  bytes.start_epoch();
  while (auto b = bytes.next()) {
    CHECK(b->data.dtype() == kFloat32);
    auto xs = vals(b->data), ys = vals(b->target);
    for (size_t i = 0; i < xs.size(); ++i) CHECK(xs[i] == doctest::Approx(ys[i] * 25.0 / 255.0));
  }
  check_close(vals(io::images_to_float(from_vector<uint8_t>({0, 51, 255}, {3}))), {0.0, 0.2, 1.0}, 1e-7);
  CHECK_ERROR(io::images_to_float(arange(3, kInt64)), "images_to_float", "int64");
  CHECK_ERROR(io::DataLoader(io::TensorDataset{arange(4, kFloat64).view({4, 1, 1, 1}), arange(4, kInt64)}, {}), "DataLoader",
              "float32 or uint8", "float64");
  CHECK_ERROR(io::normalize({0.5}, {0.0}), "normalize", "positive");
  CHECK_ERROR(io::DataLoader(ds, {.batch_size = 0}), "DataLoader", "batch_size");
  io::DataLoader bad(io::TensorDataset{zeros({4, 2, 2, 2}), arange(4, kInt64)}, {.batch_size = 2, .transforms = {io::normalize({0.1}, {1.0})}});
  bad.start_epoch();
  CHECK_ERROR(bad.next(), "normalize", "1 channels");  // errors in the worker reach the caller
}

TEST_CASE("safetensors: round trip, a file built by hand from the spec, corrupt files") {
  TempDir d;
  io::NamedTensors ts{{"w", randn({3, 4})}, {"d", randn({2}, kFloat64)}, {"i", arange(5, kInt64)}, {"s", scalar_tensor(2.5)},
                      {"u", from_vector<uint8_t>({0, 7, 255}, {3})}};
  io::save_safetensors(d / "a.safetensors", ts, {{"epoch", "7"}, {"note", "quote \" and \\ slash"}});
  io::SafetensorsFile f = io::load_safetensors(d / "a.safetensors");
  REQUIRE(f.tensors.size() == 5);
  for (size_t k = 0; k < 5; ++k) {
    CHECK(f.tensors[k].first == ts[k].first);
    CHECK(f.tensors[k].second.dtype() == ts[k].second.dtype());
    CHECK(f.tensors[k].second.sizes() == ts[k].second.sizes());
    check_close(vals(f.tensors[k].second), vals(ts[k].second), 0);
  }
  CHECK(f.metadata["note"] == "quote \" and \\ slash");
  // Byte layout per the spec: u64 LE header length, JSON header (8-byte aligned), raw LE data.
  std::string raw = read_bytes(d / "a.safetensors");
  uint64_t hl;
  std::memcpy(&hl, raw.data(), 8);
  CHECK(hl % 8 == 0);
  CHECK(raw.substr(8, 1) == "{");
  CHECK(raw.size() == 8 + hl + (12 * 4 + 2 * 8 + 5 * 8 + 4 + 3));
  CHECK(raw.find(R"("u":{"dtype":"U8")") != std::string::npos);
  // A file written by hand, as another implementation would.
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"a":"b"}})";
  std::string hand(8, '\0');
  uint64_t len = header.size();
  std::memcpy(hand.data(), &len, 8);
  float vals2[2] = {1.5f, -3.0f};
  hand += header + std::string(reinterpret_cast<char*>(vals2), 8);
  write_bytes(d / "hand.safetensors", hand);
  io::SafetensorsFile h = io::load_safetensors(d / "hand.safetensors");
  check_close(vals(h.tensors[0].second), {1.5, -3.0});
  CHECK(h.metadata["a"] == "b");
  // As the reference writer (huggingface/safetensors) lays files out: "__metadata__" first, data
  // sorted by dtype alignment (8-byte types first) while the JSON lists names in another order,
  // and the header padded with spaces to a multiple of 8.
  std::string ref = R"({"__metadata__":{"format":"pt"},"b.bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},)"
                    R"("a.weight":{"dtype":"F64","shape":[2,1],"data_offsets":[0,16]}})";
  ref += std::string((8 - ref.size() % 8) % 8, ' ');
  std::string rf(8, '\0');
  uint64_t rlen = ref.size();
  std::memcpy(rf.data(), &rlen, 8);
  double f64[2] = {0.5, -2.0};
  float f32[2] = {1.0f, 2.0f};
  rf += ref + std::string(reinterpret_cast<char*>(f64), 16) + std::string(reinterpret_cast<char*>(f32), 8);
  write_bytes(d / "ref.safetensors", rf);
  io::SafetensorsFile r = io::load_safetensors(d / "ref.safetensors");
  REQUIRE(r.tensors.size() == 2);
  CHECK(r.tensors[0].first == "b.bias");
  check_close(vals(r.tensors[0].second), {1.0, 2.0});
  CHECK(r.tensors[1].second.sizes() == Shape{2, 1});
  CHECK(r.tensors[1].second.dtype() == kFloat64);
  check_close(vals(r.tensors[1].second), {0.5, -2.0});
  CHECK(r.metadata["format"] == "pt");
  // And minigrad's own file passes the reference reader's checks: offsets sorted by start begin
  // at 0 and follow each other without gaps, and the data ends exactly at the end of the file
  // (checked above through the size); its header is valid UTF-8 JSON starting with '{'.
  {
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    const std::string hdr = raw.substr(8, hl);
    for (size_t at = hdr.find("\"data_offsets\":["); at != std::string::npos; at = hdr.find("\"data_offsets\":[", at + 1)) {
      const size_t b = at + 16, comma = hdr.find(',', b), close = hdr.find(']', b);
      spans.emplace_back(std::stoull(hdr.substr(b, comma - b)), std::stoull(hdr.substr(comma + 1, close - comma - 1)));
    }
    std::sort(spans.begin(), spans.end());
    REQUIRE(spans.size() == 5);
    uint64_t at = 0;
    for (auto [b, e] : spans) {
      CHECK(b == at);
      at = e;
    }
    CHECK(8 + hl + at == raw.size());
  }
  // Truncated and corrupt variants.
  write_bytes(d / "t1", raw.substr(0, raw.size() - 3));
  CHECK_ERROR(io::load_safetensors(d / "t1"), "load_safetensors", "truncated");
  write_bytes(d / "t2", raw.substr(0, 20));
  CHECK_ERROR(io::load_safetensors(d / "t2"), "load_safetensors", "truncated");
  std::string bad = raw;
  bad[8] = '#';
  write_bytes(d / "t3", bad);
  CHECK_ERROR(io::load_safetensors(d / "t3"), "load_safetensors", "corrupt header");
  std::string hole = hand;
  hole[8 + header.find("[0,8]") + 1] = '4';  // offsets [4,8]: wrong size for the shape
  write_bytes(d / "t4", hole);
  CHECK_ERROR(io::load_safetensors(d / "t4"), "load_safetensors", "needs 8 bytes");
  write_bytes(d / "t5", hand + "xx");
  CHECK_ERROR(io::load_safetensors(d / "t5"), "load_safetensors", "unindexed");
  std::string huge = hand;
  huge[7] = '\x7f';
  write_bytes(d / "t6", huge);
  CHECK_ERROR(io::load_safetensors(d / "t6"), "load_safetensors", "header length");
  CHECK_ERROR(io::load_safetensors(d / "none"), "load_safetensors", "cannot open");
  // A failed write leaves no partial file and no temporary behind.
  CHECK_ERROR(io::save_safetensors(d / "no/such/dir/x.safetensors", ts), "save_safetensors", "cannot create");
  io::save_safetensors(d / "a.safetensors", {{"only", ones({1})}});  // replaced atomically
  CHECK(io::load_safetensors(d / "a.safetensors").tensors.size() == 1);
  int files = 0;
  for (auto& e : fs::directory_iterator(d.path)) files += e.path().filename().string().find(".tmp.") != std::string::npos;
  CHECK(files == 0);
  CHECK_ERROR(io::save_safetensors(d / "dup", {{"a", ones({1})}, {"a", ones({1})}}), "save_safetensors", "twice");
}

TEST_CASE("checkpoints hold the model, the optimizer and the epoch") {
  TempDir d;
  manual_seed(4);
  auto make = [] {
    return std::make_shared<nn::Sequential>(std::make_shared<nn::Conv2d>(1, 2, 3), std::make_shared<nn::BatchNorm2d>(2),
                                            std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(8, 3));
  };
  auto net = make();
  optim::Adam opt(net->parameters(), {.lr = 0.01});
  Tensor x = randn({4, 1, 4, 4});
  Tensor y = from_vector<int64_t>({0, 1, 2, 1});
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    cross_entropy((*net)(x), y).backward();
    opt.step();
  }
  io::save_checkpoint(d / "ck.safetensors", *net, &opt, 3);
  auto net2 = make();
  optim::Adam opt2(net2->parameters(), {.lr = 0.5});
  CHECK(io::load_checkpoint(d / "ck.safetensors", *net2, &opt2) == 3);
  CHECK(opt2.lr() == doctest::Approx(0.01));
  for (size_t k = 0; k < net->parameters().size(); ++k) check_close(vals(net2->parameters()[k]), vals(net->parameters()[k]), 0);
  check_close(vals(net2->buffers()[0]), vals(net->buffers()[0]), 0);
  // one more identical step on both gives identical weights
  for (auto* pair : {&opt, &opt2}) {
    auto& o = *pair;
    auto& n = pair == &opt ? net : net2;
    o.zero_grad();
    cross_entropy((*n)(x), y).backward();
    o.step();
  }
  check_close(vals(net2->parameters()[0]), vals(net->parameters()[0]), 1e-7);
  auto other = std::make_shared<nn::Sequential>(std::make_shared<nn::Conv2d>(1, 3, 3));
  CHECK_ERROR(io::load_checkpoint(d / "ck.safetensors", *other, nullptr), "load_checkpoint", "0.weight", "[3, 1, 3, 3]");
}
