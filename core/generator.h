// minigrad: the seedable random generator behind rand/randn/randint and dropout.
#pragma once
#include <cstdint>
#include <mutex>
#include <random>

namespace minigrad {

// A Mersenne Twister with a lock, as PyTorch's generators: rand, randn, randint, dropout and the
// layers' initialisers hold it while they draw, so threads may share a generator (the default one
// too) and each call's numbers come from one contiguous stretch of the stream. Which thread draws
// first is up to the scheduler: for results that do not depend on it, give each thread its own
// Generator. Code that draws from engine() itself holds mutex() while it does.
class Generator {
 public:
  explicit Generator(uint64_t seed = 5489u) : engine_(seed) {}
  Generator(const Generator& o) : engine_(o.state()) {}
  Generator& operator=(const Generator& o) {
    if (this != &o) {
      const std::mt19937_64 e = o.state();
      std::lock_guard<std::mutex> lk(mu_);
      engine_ = e;
    }
    return *this;
  }
  void manual_seed(uint64_t seed) {
    std::lock_guard<std::mutex> lk(mu_);
    engine_.seed(seed);
  }
  std::mt19937_64& engine() { return engine_; }
  std::mutex& mutex() const { return mu_; }

 private:
  std::mt19937_64 state() const {
    std::lock_guard<std::mutex> lk(mu_);
    return engine_;
  }
  std::mt19937_64 engine_;
  mutable std::mutex mu_;
};

// The process-wide default generator (used when no generator is passed).
Generator& default_generator();
// Seeds the default generator, like torch::manual_seed.
void manual_seed(uint64_t seed);

}  // namespace minigrad
