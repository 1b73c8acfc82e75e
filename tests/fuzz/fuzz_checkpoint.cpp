// libFuzzer: a checkpoint loaded into a model and its Adam optimizer, strict and not.
#include "fuzz_common.h"
#include "fuzz_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return mgfuzz::run([&] {
    using namespace minigrad;
    const std::string p = mgfuzz::write_input("in.ckpt", data, size);
    auto model = mgfuzz::fuzz_model();
    optim::Adam opt(model->parameters(), {.lr = 1e-3});
    try {
      (void)io::load_checkpoint(p, *model, &opt);
    } catch (const Error&) {
    }
    (void)io::load_checkpoint(p, *model, &opt, nullptr, {.strict = false});
  });
}
