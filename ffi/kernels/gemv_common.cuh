// What the decode GEMVs (sm90_bf16_gemv.cuh, sm90_fp8_gemv.cuh) share: one CTA per kRows rows of B, each thread
// holding partial sums of kRows x kM outputs (kRows columns of D, kM rows of A) over its share of K.
#pragma once

#include <cstdint>
#include <type_traits>

namespace jdg {

// The CTA's rows of B as 16-byte vectors (`vecs` per row); rows past n read row n - 1 again (never stored), so the
// K loop needs no predicate.
template <int kRows>
__device__ __forceinline__ void GemvRowsOfB(const void* b, int64_t vecs, int n0, int n, const uint4* (&rows)[kRows]) {
#pragma unroll
  for (int r = 0; r < kRows; ++r) rows[r] = static_cast<const uint4*>(b) + int64_t(min(n0 + r, n - 1)) * vecs;
}

// Calls launch(std::integral_constant<int, kM>) with the compiled row count for m: 1, 2 or kMaxM (m <= kMaxM).
template <int kMaxM, class Launch>
inline void GemvForRows(int m, Launch&& launch) {
  if (m == 1)
    launch(std::integral_constant<int, 1>{});
  else if (m == 2)
    launch(std::integral_constant<int, 2>{});
  else
    launch(std::integral_constant<int, kMaxM>{});
}

// The end: the partial sums summed over the warp, then over the warps in warp order (a fixed order: the result is
// bitwise repeatable); thread j < kRows * kM hands output (j / kM, j % kM) to `store(row_of_b, row_of_a, value)`.

template <int kThreads, int kRows, int kM, class Store>
__device__ __forceinline__ void GemvReduceAndStore(const float (&acc)[kRows][kM], Store&& store) {
  constexpr int kWarps = kThreads / 32;
  __shared__ float partial[kWarps][kRows * kM];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int i = 0; i < kM; ++i) {
      float s = acc[r][i];
#pragma unroll
      for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
      if (lane == 0) partial[warp][r * kM + i] = s;
    }
  }
  __syncthreads();
  if (threadIdx.x < kRows * kM) {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += partial[w][threadIdx.x];
    store(int(threadIdx.x) / kM, int(threadIdx.x) % kM, s);
  }
}

}  // namespace jdg
