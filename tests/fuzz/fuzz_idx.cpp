// libFuzzer: read_idx on arbitrary bytes (a gzip member among them takes the zlib path).
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return mgfuzz::run([&] { (void)minigrad::io::read_idx(mgfuzz::write_input("in.idx", data, size)).numel(); });
}
