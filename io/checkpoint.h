// minigrad: checkpoints in the safetensors format (readable by PyTorch's `safetensors` package).
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor.h"

namespace minigrad::nn {
class Module;
}
namespace minigrad::optim {
class Optimizer;
}

namespace minigrad::io {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes tensors (float32, float64, int64) and string metadata atomically: a temporary file in the
// same directory, flushed and fsync'ed, then renamed over `path`. A crash leaves the old file.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  NamedTensors tensors;  // in file order
  std::map<std::string, std::string> metadata;
};
// Reads a safetensors file, refusing a truncated or corrupt one with an error that says why.
SafetensorsFile load_safetensors(const std::string& path);

// A training checkpoint: the model's parameters and buffers under their own names (so
// `model.load_state_dict(safetensors.torch.load_file(path), strict=False)` works in PyTorch), the
// optimizer's state under "optimizer.", and the epoch in the metadata.
// `extra` adds string metadata (e.g. the training history).
void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer* opt,
                     int64_t epoch, const std::map<std::string, std::string>& extra = {});
// Loads into model (and optimizer); checks every name and shape. Returns the epoch; the file's
// metadata goes to *metadata when given.
int64_t load_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer* opt,
                        std::map<std::string, std::string>* metadata = nullptr);

}  // namespace minigrad::io
