// The CUDA device itself: transfers, the caching allocator's counters, out-of-memory and
// mixed-device errors. Op and layer tests run on CUDA through devices(); these need a GPU and
// skip (with a message) without one.
#include "helpers.h"

using namespace mgtest;

namespace {
bool have_cuda() {
  if (device_available(Device::cuda())) return true;
  MESSAGE("no CUDA device: skipped");
  return false;
}
}  // namespace

TEST_CASE("parse_device reads cpu, cuda and cuda:N, and names bad text") {
  CHECK(parse_device("cpu") == Device::cpu());
  CHECK(parse_device("cuda") == Device::cuda(0));
  CHECK(parse_device("cuda:3") == Device::cuda(3));
  CHECK_ERROR(parse_device("gpu"), "device", "\"gpu\"");
  CHECK_ERROR(parse_device("cuda:"), "device", "\"cuda:\"");
  CHECK_ERROR(parse_device("cuda:-1"), "device", "cuda:-1");
  CHECK_ERROR(parse_device("cuda:1x"), "device", "cuda:1x");
  if (!device_available(Device::cuda())) {
    CHECK_ERROR(ones({1}, TensorOptions().device(Device::cuda())), "cuda:0", "CUDA");
    CHECK_ERROR(synchronize(Device::cuda()), "synchronize", "cuda:0");
  }
  synchronize(Device::cpu());  // nothing to wait for
}

TEST_CASE("CUDA: to() round trips every dtype, strided views included") {
  if (!have_cuda()) return;
  Tensor f = randn({3, 5}), d = randn({4}, kFloat64), i = randint(-9, 9, {7}), u = randint(0, 256, {9}, kUInt8);
  for (const Tensor& t : {f, d, i, u}) {
    Tensor g = t.to(Device::cuda());
    CHECK(g.device() == Device::cuda());
    CHECK(g.dtype() == t.dtype());
    CHECK(vals(g) == vals(t));
  }
  Tensor tt = f.t();  // non-contiguous both ways
  CHECK(vals(tt.to(Device::cuda())) == vals(tt));
  Tensor back = empty({5, 3}, TensorOptions().device(Device::cuda())).t();
  back.copy_(f);  // strided device destination
  CHECK(vals(back) == vals(f));
  // autograd through the transfer
  Tensor x = randn({4}, requires_grad());
  sum(mul(x.to(Device::cuda()), 3.0)).backward();
  check_close(vals(x.grad()), {3, 3, 3, 3});
}

TEST_CASE("CUDA: the caching allocator counts and reuses blocks") {
  if (!have_cuda()) return;
  const Device dev = Device::cuda();
  empty_cache(dev);
  MemoryStats s0 = memory_stats(dev);
  {
    Tensor a = empty({1 << 20}, TensorOptions().device(dev));
    MemoryStats s1 = memory_stats(dev);
    CHECK(s1.current_bytes - s0.current_bytes >= (4 << 20));
    CHECK(s1.active_allocations == s0.active_allocations + 1);
  }
  CHECK(memory_stats(dev).cached_bytes >= (4 << 20));
  Tensor again = empty({1 << 20}, TensorOptions().device(dev));
  CHECK(memory_stats(dev).cached_bytes < (4 << 20));
  again = Tensor();
  empty_cache(dev);
  CHECK(memory_stats(dev).cached_bytes == 0);
}

TEST_CASE("CUDA: bad input names the devices and the sizes") {
  if (!have_cuda()) return;
  Tensor c = ones({2}), g = ones({2}, TensorOptions().device(Device::cuda()));
  CHECK_ERROR(add(c, g), "add", "cpu", "cuda:0");
  CHECK_ERROR(matmul(ones({2, 2}), ones({2, 2}, TensorOptions().device(Device::cuda()))), "cpu", "cuda");
  // far more than any GPU has: a clear error with what was asked for and what is free
  CHECK_ERROR(empty({int64_t(1) << 46}, TensorOptions().device(Device::cuda())), "CUDA out of memory",
              "tried to allocate", "free");
  CHECK_ERROR(ones({1}, TensorOptions().device(Device::cuda(99))), "cuda:99", "does not exist");
}
