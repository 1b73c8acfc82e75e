// libFuzzer: load_safetensors on arbitrary bytes.
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return mgfuzz::run([&] {
    const std::string p = mgfuzz::write_input("in.safetensors", data, size);
    minigrad::io::SafetensorsFile f = minigrad::io::load_safetensors(p);
    for (auto& [name, t] : f.tensors) (void)t.numel();
  });
}
