// minigrad: the seedable random generator behind rand/randn/randint and dropout.
#pragma once
#include <cstdint>
#include <random>

namespace minigrad {

class Generator {
 public:
  explicit Generator(uint64_t seed = 5489u) : engine_(seed) {}
  void manual_seed(uint64_t seed) { engine_.seed(seed); }
  std::mt19937_64& engine() { return engine_; }

 private:
  std::mt19937_64 engine_;
};

// The process-wide default generator (used when no generator is passed).
Generator& default_generator();
// Seeds the default generator, like torch::manual_seed.
void manual_seed(uint64_t seed);

}  // namespace minigrad
