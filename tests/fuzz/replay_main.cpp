// Runs a fuzz harness on files, without libFuzzer: `fuzz_X_replay FILE...` (the seed corpus in
// ctest, a crash reproducer by hand). Built with every compiler; libFuzzer builds use its own main.
#include <cstdint>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::ifstream f(argv[i], std::ios::binary);
    if (!f) {
      std::cerr << "cannot read " << argv[i] << "\n";
      return 1;
    }
    const std::string b((std::istreambuf_iterator<char>(f)), {});
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(b.data()), b.size());
  }
  std::cout << "replayed " << argc - 1 << " inputs\n";
  return 0;
}
