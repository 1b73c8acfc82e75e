// Tensor: factories, views, dtypes, element access, printing, the allocator's counters.
#include <functional>
#include <sstream>

#include "helpers.h"

using namespace mgtest;

TEST_CASE("factories fill and report their metadata") {
  for_each_device([&](Device dev) {
    Tensor z = zeros({2, 3}, device(dev)), o = ones({2, 3}, kFloat64), f = full({4}, 2.5, device(dev));
    CHECK(z.sizes() == Shape{2, 3});
    CHECK(z.strides() == Shape{3, 1});
    CHECK(z.dtype() == kFloat32);
    CHECK(z.device() == dev);
    CHECK(o.dtype() == kFloat64);
    check_close(vals(z), std::vector<double>(6, 0.0));
    check_close(vals(o), std::vector<double>(6, 1.0));
    check_close(vals(f), std::vector<double>(4, 2.5));
    check_close(vals(arange(5)), {0, 1, 2, 3, 4});
    check_close(vals(arange(1, 2, 0.25, kFloat64)), {1, 1.25, 1.5, 1.75});
    CHECK(arange(3, kInt64).dtype() == kInt64);
    CHECK(scalar_tensor(7).dim() == 0);
    CHECK(scalar_tensor(7).item() == 7);
    check_close(vals(from_vector<int64_t>({1, 2, 3, 4}, {2, 2})), {1, 2, 3, 4});
    CHECK(zeros({2}, requires_grad()).requires_grad());
  });
  CHECK_ERROR(arange(0, 5, -1), "arange", "step");
  CHECK_ERROR(from_vector<float>({1, 2, 3}, {2, 2}), "from_vector", "[2, 2]");
  CHECK_ERROR(empty({2, -1}), "empty", "negative");
  CHECK_ERROR(zeros({2}, TensorOptions(kInt64).requires_grad()), "floating");
}

TEST_CASE("random factories are seedable and have the right distributions") {
  manual_seed(42);
  Tensor a = randn({1000}, kFloat64);
  manual_seed(42);
  Tensor b = randn({1000}, kFloat64);
  CHECK(vals(a) == vals(b));
  Generator g1(7), g2(7);
  CHECK(vals(rand({50}, {}, &g1)) == vals(rand({50}, {}, &g2)));
  Tensor u = rand({20000}, kFloat64);
  auto uv = vals(u);
  CHECK(*std::min_element(uv.begin(), uv.end()) >= 0.0);
  CHECK(*std::max_element(uv.begin(), uv.end()) < 1.0);
  CHECK(mean(u).item() == doctest::Approx(0.5).epsilon(0.02));
  Tensor n = randn({20000}, kFloat64);
  CHECK(mean(n).item() == doctest::Approx(0.0).epsilon(0.03));
  CHECK(var(n).item() == doctest::Approx(1.0).epsilon(0.05));
  Tensor r = randint(3, 7, {1000});
  CHECK(r.dtype() == kInt64);
  CHECK(min(r).item() == 3);
  CHECK(max(r).item() == 6);
  CHECK_ERROR(randint(5, 5, {2}), "randint", "low < high");
  CHECK_ERROR(rand({2}, kInt64), "rand", "floating");
}

TEST_CASE("views share storage and follow PyTorch's semantics") {
  for_each_device([&](Device dev) {
    Tensor x = arange(24, device(dev)).view({2, 3, 4});
    CHECK(x.is_contiguous());

    Tensor p = x.permute({2, 0, 1});
    CHECK(p.sizes() == Shape{4, 2, 3});
    CHECK(p.strides() == Shape{1, 12, 4});
    CHECK(p.storage() == x.storage());
    CHECK_FALSE(p.is_contiguous());
    CHECK(p[3][1][2].item() == x[1][2][3].item());
    Tensor pc = p.contiguous();
    CHECK(pc.is_contiguous());
    CHECK(pc.storage() != x.storage());
    CHECK(vals(pc)[0 * 6 + 1 * 3 + 2] == 1 * 12 + 2 * 4 + 0);

    Tensor t = x.transpose(0, 2);
    CHECK(t.sizes() == Shape{4, 3, 2});
    CHECK(t[1][2][0].item() == x[0][2][1].item());

    Tensor n = x.narrow(2, 1, 2);
    CHECK(n.sizes() == Shape{2, 3, 2});
    CHECK(n.storage_offset() == 1);
    check_close(vals(n.select(0, 1).select(0, 0)), {13, 14});

    Tensor s = x.slice(2, 0, 4, 2);
    CHECK(s.sizes() == Shape{2, 3, 2});
    check_close(vals(s[0][0]), {0, 2});
    check_close(vals(x.slice(0, -1, std::nullopt)), vals(x[1]));

    Tensor col = arange(3, device(dev)).view({3, 1});
    Tensor e = col.expand({2, 3, 4});
    CHECK(e.strides() == Shape{0, 1, 0});
    CHECK(e[1][2][3].item() == 2);

    Tensor u = x.unsqueeze(1);
    CHECK(u.sizes() == Shape{2, 1, 3, 4});
    CHECK(u.squeeze(1).sizes() == x.sizes());
    CHECK(zeros({1, 3, 1}).squeeze().sizes() == Shape{3});
    CHECK(x.flatten(1).sizes() == Shape{2, 12});
    CHECK(x.view({-1, 4}).sizes() == Shape{6, 4});
    CHECK(x.reshape({4, 6}).storage() == x.storage());
    // reshape of a permuted tensor must copy; view must refuse
    CHECK(p.reshape({-1}).storage() != x.storage());
    CHECK_ERROR(p.view({-1}), "view", "reshape");
  });
}

TEST_CASE("view bad inputs give clear errors") {
  Tensor x = zeros({2, 3});
  CHECK_ERROR(x.view({4, 2}), "view", "[4, 2]", "[2, 3]");
  CHECK_ERROR(x.view({-1, -1}), "view", "-1");
  CHECK_ERROR(x.permute({0}), "permute", "[2, 3]");
  CHECK_ERROR(x.permute({0, 0}), "permute", "repeated");
  CHECK_ERROR(x.transpose(0, 2), "transpose", "out of range");
  CHECK_ERROR(x.narrow(1, 2, 2), "narrow", "size 3");
  CHECK_ERROR(x.select(0, 2), "select", "index 2");
  CHECK_ERROR(x.expand({3, 3}), "expand", "[2, 3]", "[3, 3]");
  CHECK_ERROR(x.slice(0, 0, 1, 0), "slice", "step");
  CHECK_ERROR(zeros({2, 2, 2}).t(), "t:", "[2, 2, 2]");
  CHECK_ERROR(x.unsqueeze(3), "unsqueeze", "out of range");
  CHECK_ERROR(Tensor().sizes(), "undefined");
  CHECK_ERROR(x.item(), "item", "one element");
  CHECK_ERROR(x.data_ptr<double>(), "data_ptr", "float32", "float64");
}

TEST_CASE("dtype conversion, element access and from_blob") {
  Tensor x = from_vector<double>({1.5, -2.25, 3.0}, {3});
  CHECK(x.dtype() == kFloat64);
  CHECK(x.to(kFloat32).dtype() == kFloat32);
  CHECK(x.to(kInt64).to_vector<int64_t>() == std::vector<int64_t>{1, -2, 3});
  CHECK(x[1].item<double>() == -2.25);
  CHECK(x.to_vector<float>() == std::vector<float>{1.5f, -2.25f, 3.0f});
  float buf[6] = {0, 1, 2, 3, 4, 5};
  Tensor b = from_blob(buf, {2, 3});
  CHECK(b[1][2].item() == 5);
  {
    NoGradGuard ng;
    b.mul_(2.0);
  }
  CHECK(buf[5] == 10.0f);  // no copy: the caller's memory was written
  bool freed = false;
  {
    Tensor owned = from_blob(buf, {6}, {}, [&freed](void*) { freed = true; });
  }
  CHECK(freed);
  CHECK_ERROR(from_blob(nullptr, {2}), "from_blob", "null");
}

TEST_CASE("uint8 tensors hold bytes: create, view, copy, convert, print; ops that compute refuse them") {
  Tensor u = from_vector<uint8_t>({0, 1, 127, 128, 255, 9}, {2, 3});
  CHECK(u.dtype() == kUInt8);
  CHECK(u.element_size() == 1);
  CHECK(u.to_vector<uint8_t>() == std::vector<uint8_t>{0, 1, 127, 128, 255, 9});
  CHECK(u[1][1].item() == 255);
  CHECK(u.t().contiguous().to_vector<uint8_t>() == std::vector<uint8_t>{0, 128, 1, 255, 127, 9});
  check_close(vals(u.to(kFloat32)), {0, 1, 127, 128, 255, 9});
  CHECK(from_vector<double>({3.0, 200.0}).to(kUInt8).to_vector<uint8_t>() == std::vector<uint8_t>{3, 200});
  CHECK(zeros({4}, kUInt8).to_vector<uint8_t>() == std::vector<uint8_t>(4, 0));
  Tensor r = randint(0, 256, {1000}, kUInt8);
  CHECK(r.dtype() == kUInt8);
  CHECK(max(r.to(kInt64)).item() <= 255);
  std::ostringstream os;
  os << u;
  CHECK(os.str().find("[[0, 1, 127],") != std::string::npos);
  CHECK(os.str().find("dtype=uint8") != std::string::npos);
  CHECK(promote(kUInt8, kInt64) == kInt64);
  CHECK(promote(kUInt8, kFloat32) == kFloat32);
  CHECK_ERROR(add(u, u), "add", "uint8", "kFloat32");
  CHECK_ERROR(mul(u, 2.0), "mul", "uint8");
  CHECK_ERROR(sum(u), "sum", "uint8");
  CHECK_ERROR(relu(u), "relu", "uint8");
  CHECK_ERROR(mm(u, u.t()), "mm", "uint8");
  CHECK_ERROR(eq(u, u), "eq", "uint8");
  CHECK_ERROR(randint(0, 300, {2}, kUInt8), "randint", "uint8");
  CHECK_ERROR(Tensor(zeros({2}, kUInt8)).requires_grad_(), "requires_grad_", "uint8");
}

TEST_CASE("printing shows values, shape and dtype") {
  std::ostringstream os;
  os << from_vector<int64_t>({1, 2, 3, 4}, {2, 2});
  CHECK(os.str().find("[[1, 2],") != std::string::npos);
  CHECK(os.str().find("dtype=int64") != std::string::npos);
  std::ostringstream big;
  big << zeros({2000});
  CHECK(big.str().find("...") != std::string::npos);
  std::ostringstream g;
  g << mul(ones({2}, requires_grad()), 2.0);
  CHECK(g.str().find("grad_fn=mul") != std::string::npos);
}

TEST_CASE("allocator counters track current, peak and count, and reset the peak") {
  Device dev = Device::cpu();
  reset_peak_memory_stats(dev);
  MemoryStats s0 = memory_stats(dev);
  int64_t bytes = 0;
  {
    Tensor a = empty({1 << 20});  // 4 MiB
    MemoryStats s1 = memory_stats(dev);
    bytes = s1.current_bytes - s0.current_bytes;
    CHECK(bytes >= (4 << 20));
    CHECK(bytes < (4 << 20) + (1 << 19));
    CHECK(s1.allocation_count == s0.allocation_count + 1);
    CHECK(s1.active_allocations == s0.active_allocations + 1);
    CHECK(s1.peak_bytes >= s0.current_bytes + bytes);
  }
  MemoryStats s2 = memory_stats(dev);
  CHECK(s2.current_bytes == s0.current_bytes);
  CHECK(s2.peak_bytes >= s0.current_bytes + bytes);
  CHECK(s2.cached_bytes >= bytes);  // kept for reuse
  reset_peak_memory_stats(dev);
  CHECK(memory_stats(dev).peak_bytes == s0.current_bytes);
  // the cached block is reused: the same size allocates no new memory from the system
  Tensor again = empty({1 << 20});
  CHECK(memory_stats(dev).cached_bytes == s2.cached_bytes - bytes);
  empty_cache(dev);
  CHECK(memory_stats(dev).cached_bytes == 0);
  if (!device_available(Device::cuda()))
    CHECK_ERROR(memory_stats(Device::cuda()), "cuda", "CUDA");
}

TEST_CASE("the CPU cache gives blocks back rather than grow past 1.5x the most bytes ever live") {
  // empty_cache() restarts the high-water mark from what is live now (C). Eight blocks of size S
  // are cached; then a block of another size, 9S, would make the footprint C + 17S while 1.5x the
  // most ever live is 1.5 (C + 9S): the cache frees old blocks first, as S >= C makes
  // C + 17S > 1.5 C + 13.5 S.
  empty_cache();
  const int64_t C = memory_stats().current_bytes;
  const int64_t S = std::max<int64_t>(C, 1 << 20) / 4 * 4;
  {
    std::vector<Tensor> blocks;
    for (int i = 0; i < 8; ++i) blocks.push_back(empty({S / 4}));
  }
  CHECK(memory_stats().cached_bytes >= 8 * S);
  Tensor big = empty({9 * S / 4});
  MemoryStats m = memory_stats();
  CHECK(m.cached_bytes < 8 * S);
  CHECK(double(m.current_bytes + m.cached_bytes) <= 1.5 * double(C + 9 * S + (9 * S) / 8));
  // a block of a cached size is still reused
  big = Tensor();
  const int64_t cached = memory_stats().cached_bytes;
  Tensor again = empty({9 * S / 4});
  CHECK(memory_stats().cached_bytes < cached);
  again = Tensor();
  empty_cache();
}

TEST_CASE("set_num_threads validates and applies") {
  int n = get_num_threads();
  set_num_threads(1);
  CHECK(get_num_threads() == 1);
  set_num_threads(n);
  CHECK_ERROR(set_num_threads(0), "set_num_threads");
}
