// Shared by the libFuzzer harnesses: each input goes to a file (the loaders read paths), the load
// limits are set low enough that an allocation above them is a finding (libFuzzer's -rss_limit_mb
// and -malloc_limit_mb catch it), and minigrad::Error is the one exception a bad file may raise:
// anything else escaping a loader aborts, and libFuzzer reports it.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include "minigrad.h"

namespace mgfuzz {

// A directory of this process's own (under TMPDIR, or /tmp).
inline const std::string& work_dir() {
  static const std::string d = [] {
    const char* t = std::getenv("TMPDIR");
    std::string p = std::string(t && *t ? t : "/tmp") + "/minigrad-fuzz-" + std::to_string(::getpid());
    std::filesystem::create_directories(p);
    return p;
  }();
  return d;
}

inline std::string write_input(const std::string& name, const uint8_t* data, size_t size) {
  const std::string p = work_dir() + "/" + name;
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  return p;
}

// The harnesses' limits: 64 MiB inflated, 2^22 pixels (libFuzzer runs with -rss_limit_mb=512).
inline void set_fuzz_limits() {
  static const bool once = [] {
    minigrad::io::set_load_limits({.max_decompressed_bytes = int64_t(64) << 20, .max_image_pixels = int64_t(1) << 22});
    minigrad::set_num_threads(1);
    return true;
  }();
  (void)once;
}

// Runs body; minigrad::Error is an expected outcome (but for seeds, with MINIGRAD_FUZZ_EXPECT_OK
// set), any other exception a finding.
template <class F>
int run(F&& body) {
  set_fuzz_limits();
  static const bool expect_ok = std::getenv("MINIGRAD_FUZZ_EXPECT_OK") != nullptr;  // the seed corpus in ctest
  try {
    body();
  } catch (const minigrad::Error& e) {
    if (expect_ok) {
      std::fprintf(stderr, "a seed failed to load: %s\n", e.what());
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finding: a %s escaped the loader: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
  return 0;
}

}  // namespace mgfuzz
