// Per-device facts the heuristics need, read once per device ordinal (no per-call driver queries),
// and per-device one-time kernel set-up (function attributes are per device).
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <mutex>

namespace jdg {

struct DeviceInfo {
  int num_sms = 0;
  int max_smem_per_block = 0;  // opt-in dynamic shared memory limit, bytes
  int cc_major = 0, cc_minor = 0;
};

constexpr int kMaxDevices = 64;

// `device` is the FFI DeviceOrdinal of the call (XLA makes that device current for the handler).
inline const DeviceInfo& GetDeviceInfo(int device) {
  static std::array<DeviceInfo, kMaxDevices> infos{};
  static std::array<std::once_flag, kMaxDevices> once;
  const int dev = (device >= 0 && device < kMaxDevices) ? device : 0;
  std::call_once(once[dev], [dev] {
    DeviceInfo& info = infos[dev];
    cudaDeviceGetAttribute(&info.num_sms, cudaDevAttrMultiProcessorCount, dev);
    cudaDeviceGetAttribute(&info.max_smem_per_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    cudaDeviceGetAttribute(&info.cc_major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&info.cc_minor, cudaDevAttrComputeCapabilityMinor, dev);
  });
  return infos[dev];
}

// Runs `fn` once per (Tag, device) and returns its first result, e.g. a kernel's cudaFuncSetAttribute,
// which applies to the current device only, or an occupancy query.
template <typename Tag, typename Fn>
auto OncePerDevice(int device, Fn&& fn) {
  using Result = decltype(fn());
  static std::array<std::once_flag, kMaxDevices> once;
  static std::array<Result, kMaxDevices> result{};
  const int dev = (device >= 0 && device < kMaxDevices) ? device : 0;
  std::call_once(once[dev], [&] { result[dev] = fn(); });
  return result[dev];
}

}  // namespace jdg
