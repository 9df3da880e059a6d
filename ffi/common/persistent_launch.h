// Launch configuration of a persistent kernel whose CTAs may run in clusters along M (TMA multicast).
// Shared by the GEMM launchers: a persistent grid must be resident all at once, so a clustered grid
// is capped at the number of clusters the device can hold together (SM pairs that straddle a GPC
// cannot host a cluster), queried once per kernel and device. A grid of one work item per CTA
// (persistent = false, e.g. split-K clusters) is launched whole.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <cstdio>
#include <cstdlib>

#include "common/device_info.h"

namespace jdg {

// Clusters of `cluster_size` CTAs (<= 8) of `kernel` the device holds at once, each CTA with `smem_bytes` of
// shared memory; queried once per (Tag, device, cluster size). 0 when the query fails.
template <class Tag, class Kernel>
int ResidentClusters(Tag, int device, Kernel* kernel, int threads, int smem_bytes, int cluster_size) {
  static std::array<std::array<std::once_flag, 9>, kMaxDevices> once;
  static std::array<std::array<int, 9>, kMaxDevices> result{};
  const int dev = (device >= 0 && device < kMaxDevices) ? device : 0;
  const int size = std::clamp(cluster_size, 1, 8);
  std::call_once(once[dev][size], [&] {
    cudaLaunchConfig_t probe = {};
    cudaLaunchAttribute cluster = {};
    cluster.id = cudaLaunchAttributeClusterDimension;
    cluster.val.clusterDim.x = size;
    cluster.val.clusterDim.y = cluster.val.clusterDim.z = 1;
    probe.gridDim = dim3(size);
    probe.blockDim = dim3(threads);
    probe.dynamicSmemBytes = smem_bytes;
    probe.attrs = &cluster;
    probe.numAttrs = 1;
    int n = 0;
    result[dev][size] = cudaOccupancyMaxActiveClusters(&n, kernel, &probe) == cudaSuccess ? n : 0;
  });
  return result[dev][size];
}

class PersistentLaunch {
 public:
  // `Tag` names the kernel instance for the once-per-device occupancy query (declare a local struct
  // in the templated launcher). `max_smem_bytes`: the shared memory the query assumes (the opt-in cap).
  template <class Tag, class Kernel>
  PersistentLaunch(Tag, int device, Kernel* kernel, int grid, int threads, int smem_bytes, int cluster_m,
                   int max_smem_bytes, cudaStream_t stream, const char* what, bool persistent = true) {
    config_.gridDim = dim3(grid);
    config_.blockDim = dim3(threads);
    config_.dynamicSmemBytes = smem_bytes;
    config_.stream = stream;
    cluster_.id = cudaLaunchAttributeClusterDimension;
    cluster_.val.clusterDim.x = cluster_m;
    cluster_.val.clusterDim.y = 1;
    cluster_.val.clusterDim.z = 1;
    config_.attrs = &cluster_;
    config_.numAttrs = 1;
    if (cluster_m <= 1 || !persistent) return;
    const int max_clusters = OncePerDevice<Tag>(device, [&] {
      cudaLaunchConfig_t probe = config_;
      probe.gridDim = dim3(cluster_m);
      probe.dynamicSmemBytes = max_smem_bytes;
      int n = 0;
      return cudaOccupancyMaxActiveClusters(&n, kernel, &probe) == cudaSuccess ? n : 0;
    });
    // An answer below half the SM pairs would mean a failed query, not a smaller GPU: ignore it.
    const int sm_groups = GetDeviceInfo(device).num_sms / cluster_m;
    if (max_clusters >= sm_groups / 2)
      config_.gridDim.x = std::min<unsigned>(config_.gridDim.x, unsigned(max_clusters * cluster_m));
    static const bool print = std::getenv("JAX_DEEPGEMM_PRINT_CONFIGS") != nullptr;
    if (print)
      std::fprintf(stderr, "jax_deepgemm %s: %d co-resident %d-CTA clusters, grid %u\n", what, max_clusters, cluster_m,
                   config_.gridDim.x);
  }
  PersistentLaunch(const PersistentLaunch&) = delete;  // config_ points into this object
  PersistentLaunch& operator=(const PersistentLaunch&) = delete;

  const cudaLaunchConfig_t* config() const { return &config_; }

 private:
  cudaLaunchConfig_t config_ = {};
  cudaLaunchAttribute cluster_ = {};
};

}  // namespace jdg
