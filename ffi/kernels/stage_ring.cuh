// The shared-memory stage ring of the warp-specialised GEMM kernels (FP8 and BF16): full/empty
// mbarriers per stage, cluster-wide set-up and teardown, and the consumers' stage release. Device code.
#pragma once

#include <cute/arch/cluster_sm90.hpp>
#include <cutlass/arch/barrier.h>

namespace jdg {

using RingBarrier = cutlass::arch::ClusterTransactionBarrier;

// Thread 0 initialises the ring: `full` waits for the producer's arrive_and_expect_tx (plus
// `extra_full_arrivals` threads that fill part of a stage with plain stores), `empty` for one arrive
// per consumer warp of every CTA of the cluster (a 2-CTA cluster multicasts an operand's halves, so
// a stage may be refilled only when both CTAs' consumers released it). The barriers must be visible
// to the peer CTA before any multicast lands in this one.
template <int kClusterSize>
__device__ __forceinline__ void InitStageRing(RingBarrier* full, RingBarrier* empty, int num_stages,
                                              int consumer_warps, int extra_full_arrivals = 0) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < num_stages; ++s) {
      full[s].init(1 + extra_full_arrivals);
      empty[s].init(kClusterSize * consumer_warps);
    }
    cutlass::arch::fence_barrier_init();
  }
  if constexpr (kClusterSize > 1) {
    cute::cluster_arrive_relaxed();
    cute::cluster_wait();
  } else {
    __syncthreads();
  }
}

// A consumer warp is done with a stage: one arrive per warp (lane i releases CTA i's copy).
template <int kClusterSize>
__device__ __forceinline__ void ReleaseStage(RingBarrier& empty, int lane) {
  if constexpr (kClusterSize == 1) {
    if (lane == 0) empty.arrive();
  } else {
    if (lane < kClusterSize) empty.arrive(uint32_t(lane), 1u);
  }
}

// ReleaseStage for a stage that was also read with plain shared-memory loads (not only by WGMMAs, which have
// completed by the time of the release). A CTA-scope fence first waits until the warp's loads are performed:
// once the arrive lands, the producer (for a 2-CTA cluster the peer CTA's, whose multicast writes this CTA's
// shared memory and which CUTLASS's remote arrive, a CTA-scope release, does not order the loads against) may
// refill the stage. A cluster-scope release would do the same with a GPU-scope MEMBAR (SASS), which also waits
// for the previous tile's global stores.
template <int kClusterSize>
__device__ __forceinline__ void ReleaseStageAfterLoads(RingBarrier& empty, int lane) {
  asm volatile("fence.acq_rel.cta;" ::: "memory");
  ReleaseStage<kClusterSize>(empty, lane);
}

// Neither CTA of a cluster may exit while its peer can still multicast into it or arrive on its barriers.
template <int kClusterSize>
__device__ __forceinline__ void ExitStageRing() {
  if constexpr (kClusterSize > 1) {
    cute::cluster_arrive();
    cute::cluster_wait();
  }
}

}  // namespace jdg
