// libFuzzer: load_image on arbitrary bytes; the first byte picks the channels asked for (0, 1, 3).
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  return mgfuzz::run([&] {
    const int channels[3] = {0, 1, 3};
    const std::string p = mgfuzz::write_input("in.img", data + 1, size - 1);
    (void)minigrad::io::load_image(p, channels[data[0] % 3]).numel();
  });
}
