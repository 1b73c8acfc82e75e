// libFuzzer: read_idx on arbitrary IDX bytes gzip-compressed by the harness, so the fuzzer works
// on the decompressed header and data as the .gz loader sees them.
#include <zlib.h>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return mgfuzz::run([&] {
    const std::string p = mgfuzz::work_dir() + "/in.idx.gz";
    gzFile f = gzopen(p.c_str(), "wb1");
    if (!f) std::abort();
    if (size > 0 && gzwrite(f, data, unsigned(size)) != int(size)) std::abort();
    if (gzclose(f) != Z_OK) std::abort();
    (void)minigrad::io::read_idx(p).numel();
  });
}
