// Per-device facts the heuristics need, read once per device ordinal (no per-call driver queries).
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

inline const DeviceInfo& CurrentDeviceInfo() {
  constexpr int kMaxDevices = 64;
  static std::array<DeviceInfo, kMaxDevices> infos{};
  static std::array<std::once_flag, kMaxDevices> once;
  int dev = 0;
  cudaGetDevice(&dev);
  if (dev < 0 || dev >= kMaxDevices) dev = 0;
  std::call_once(once[dev], [dev] {
    DeviceInfo& info = infos[dev];
    cudaDeviceGetAttribute(&info.num_sms, cudaDevAttrMultiProcessorCount, dev);
    cudaDeviceGetAttribute(&info.max_smem_per_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    cudaDeviceGetAttribute(&info.cc_major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&info.cc_minor, cudaDevAttrComputeCapabilityMinor, dev);
  });
  return infos[dev];
}

}  // namespace jdg
