// libFuzzer: load_cifar10 on a test batch of arbitrary bytes (plain, or gzip if it is one).
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return mgfuzz::run([&] {
    mgfuzz::write_input("test_batch.bin", data, size);
    (void)minigrad::io::load_cifar10(mgfuzz::work_dir(), false).size();
  });
}
