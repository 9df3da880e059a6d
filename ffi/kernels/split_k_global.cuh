// Split-K through global memory, shared by the FP8 and BF16 GEMM kernels: the CTAs that split one output tile's
// K-blocks each write their FP32 partial to scratch and count their arrival; the tile's last CTA sums every partial
// in split order (deterministic: the same bits whichever CTA comes last) and stores the tile. Nobody waits for
// anybody, so the splits of a tile need not be resident together (no clusters, any number of CTAs).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace jdg {

// A named barrier by raw PTX id over kThreads threads (ids above the CUTLASS NamedBarrier ones the kernels' epilogues
// use): wait for all of them, or arrive without waiting.
template <uint32_t kId, int kThreads>
__device__ __forceinline__ void NamedBarrierSync() {
  asm volatile("bar.sync %0, %1;\n" ::"n"(kId), "n"(kThreads) : "memory");
}
template <uint32_t kId, int kThreads>
__device__ __forceinline__ void NamedBarrierArrive() {
  asm volatile("bar.arrive %0, %1;\n" ::"n"(kId), "n"(kThreads) : "memory");
}

// Named barrier of the split-K hand-over among the math threads (raw PTX id, as above).
constexpr uint32_t kSplitKBarrier = 14;

// atomicInc with release-acquire semantics at GPU scope: the split-K arrival publishes this CTA's partial (its
// threads' stores ordered before by a CTA barrier) and, for the last arrival, acquires the others'.
__device__ __forceinline__ unsigned AtomicIncAcqRel(unsigned* counter, unsigned limit) {
  unsigned old;
  asm volatile("atom.acq_rel.gpu.global.inc.u32 %0, [%1], %2;\n" : "=r"(old) : "l"(counter), "r"(limit) : "memory");
  return old;
}

// One CTA's share of the hand-over for output tile `tile_id`, split `split` of `split_k` (<= kMaxSplit), by its
// kThreads math threads (`thread` in [0, kThreads)), each holding 4 * kGroups FP32 accumulators `acc` (the WGMMA
// layout: 4 per 8-column group). `partials`: [tiles, split_k, kGroups, kThreads] float4s, the threads' float4s of a
// group adjacent. `arrivals[tile_id]`: atomicInc wraps it back to zero at the tile's last arrival, so the counters
// are zero between launches without a memset (CUDA zeroes them when the module loads); two launches sharing the
// counters must not run at once (XLA runs a device's kernels on one stream). `verdict`: a word of shared memory no
// one else touches now. Returns true in the tile's last CTA, whose `acc` then holds the sum of all partials (its own
// read back from memory too: no second register copy of the tile); the others are done with the tile.
template <int kGroups, int kThreads, int kMaxSplit>
__device__ __forceinline__ bool SplitKGlobalHandOver(float* acc, float* partials, unsigned* arrivals, int tile_id,
                                                     int split, int split_k, int thread, volatile int* verdict) {
  float4* tile_partials = reinterpret_cast<float4*>(partials) + int64_t(tile_id) * split_k * kGroups * kThreads + thread;
#pragma unroll
  for (int g = 0; g < kGroups; ++g)
    __stcg(tile_partials + (split * kGroups + g) * kThreads,
           make_float4(acc[4 * g], acc[4 * g + 1], acc[4 * g + 2], acc[4 * g + 3]));
  // One release-acquire arrival per CTA after its threads' stores (the barrier orders them before it, as in
  // CUTLASS's split-K semaphore); no per-thread fences.
  NamedBarrierSync<kSplitKBarrier, kThreads>();
  if (thread == 0) *verdict = AtomicIncAcqRel(&arrivals[tile_id], unsigned(split_k - 1)) == unsigned(split_k - 1);
  // (The verdict goes through shared memory: a barrier's predicate reduction spilled registers in the FP8 128 x 64
  // tile.)
  NamedBarrierSync<kSplitKBarrier, kThreads>();
  if (*verdict == 0) return false;
  // Each group's loads of all splits at once (at most kMaxSplit: more spilled in the FP8 kernel).
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    float4 part[kMaxSplit];
#pragma unroll
    for (int r = 0; r < kMaxSplit; ++r)
      if (r < split_k) part[r] = __ldcg(tile_partials + (r * kGroups + g) * kThreads);
    float4 total = part[0];
#pragma unroll
    for (int r = 1; r < kMaxSplit; ++r) {
      if (r < split_k)
        total = make_float4(total.x + part[r].x, total.y + part[r].y, total.z + part[r].z, total.w + part[r].w);
    }
    acc[4 * g] = total.x, acc[4 * g + 1] = total.y, acc[4 * g + 2] = total.z, acc[4 * g + 3] = total.w;
  }
  return true;
}

}  // namespace jdg
