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

// Writes tensors (float32, float64, int64, uint8) and string metadata atomically: a temporary file
// in the same directory, flushed and fsync'ed, renamed over `path`, then the directory fsync'ed. A
// crash leaves the old file; a failed save removes its temporary file, and each save removes the
// temporary files of writers that died (their process is gone). The metadata gets
// "minigrad.crc32", the CRC-32 of the data section, which load_safetensors verifies.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  NamedTensors tensors;  // in file order
  std::map<std::string, std::string> metadata;
};
// Reads a safetensors file, refusing a truncated or corrupt one with an error that says why. The
// whole header is checked (dtypes, shapes, offsets in order without overlap or holes, no name
// twice) before any tensor is allocated; a "minigrad.crc32" in the metadata is verified.
SafetensorsFile load_safetensors(const std::string& path);

// A training checkpoint: the model's parameters and buffers under their own names (so
// `model.load_state_dict(safetensors.torch.load_file(path), strict=False)` works in PyTorch), the
// optimizer's state under "optimizer.", and the epoch in the metadata.
// `extra` adds string metadata (e.g. the training history).
void save_checkpoint(const std::string& path, const nn::Module& model, const optim::Optimizer* opt,
                     int64_t epoch, const std::map<std::string, std::string>& extra = {});

struct LoadCheckpointOptions {
  // As LibTorch's and PyTorch's load_state_dict: every parameter and buffer of the model must be in
  // the file, and every tensor of the file must be one of them or (with an optimizer) the
  // optimizer's. strict = false loads the tensors the two share (shapes must still match) and
  // skips the rest.
  bool strict = true;
};
// Loads into model (and optimizer); checks every name and shape, and the optimizer's state and the
// epoch for range (finite, non-negative learning rate and moments, an integral step). Returns the
// epoch; the file's metadata goes to *metadata when given. Without an optimizer the file's
// "optimizer." tensors are ignored.
int64_t load_checkpoint(const std::string& path, nn::Module& model, optim::Optimizer* opt,
                        std::map<std::string, std::string>* metadata = nullptr,
                        const LoadCheckpointOptions& options = {});

}  // namespace minigrad::io
