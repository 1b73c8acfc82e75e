// minigrad: where a tensor's storage lives.
#pragma once
#include <cstdint>
#include <ostream>
#include <string_view>

namespace minigrad {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1 };
inline constexpr int kNumDeviceTypes = 2;

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  constexpr Device() = default;
  constexpr Device(DeviceType t, int i = 0) : type(t), index(i) {}  // NOLINT: implicit like LibTorch
  static constexpr Device cpu() { return Device(DeviceType::CPU, 0); }
  static constexpr Device cuda(int i = 0) { return Device(DeviceType::CUDA, i); }
  constexpr bool is_cpu() const { return type == DeviceType::CPU; }
  constexpr bool is_cuda() const { return type == DeviceType::CUDA; }
  constexpr bool operator==(const Device&) const = default;
};

inline constexpr DeviceType kCPU = DeviceType::CPU;
inline constexpr DeviceType kCUDA = DeviceType::CUDA;

// "cpu", "cuda" (device 0) or "cuda:N", as LibTorch's torch::Device accepts them; throws
// minigrad::Error naming the text otherwise.
Device parse_device(std::string_view s);

inline std::ostream& operator<<(std::ostream& os, Device d) {
  return d.is_cpu() ? os << "cpu" : os << "cuda:" << d.index;
}

}  // namespace minigrad
