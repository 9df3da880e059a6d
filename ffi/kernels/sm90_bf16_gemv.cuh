// Dense BF16 GEMM at M <= kBf16GemvMaxM (decode rows), NT layout: D[m, n] = A[m, :] . B[n, :] (+ C), on the CUDA
// cores. Why not the tensor-core kernel: at M <= 4 a call only has to stream B once, and that kernel's fixed start-up
// (barrier set-up, descriptor prefetch, the first TMA round trip: ~2.5 us, RESULTS session 48) plus its split-K
// hand-over are most of the call (H100, session 54: 1 x 576 x 7168 8.7 us against 5.4 for XLA's dot). Here each CTA
// streams kBf16GemvRows rows of B with 16-byte loads from its first instruction on, every thread holding the dot
// products of those rows with the M rows of A for its share of K; one CTA-wide reduction at the end, in a fixed
// order (bitwise repeatable: kernels/gemv_common.cuh). The FP8 GEMM's twin is sm90_fp8_gemv.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "bf16_gemm_launch.h"
#include "kernels/gemv_common.cuh"

namespace jdg {

constexpr int kBf16GemvThreads = 256;

// acc += dot of 8 BF16 pairs (one 16-byte vector of A and one of B) in FP32.
__device__ __forceinline__ float Bf16Dot8(const uint4& x, const uint4& y, float acc) {
  const uint32_t xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&xs[i]));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ys[i]));
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
  }
  return acc;
}

// One CTA per kBf16GemvRows columns of D. kM: the compiled row count (m <= kM; rows past m are neither read nor
// stored). K % 8 == 0 (the handler's check): every row of A and B is whole 16-byte vectors.
template <int kM>
__global__ void __launch_bounds__(kBf16GemvThreads)
    Bf16GemvKernel(const __nv_bfloat16* __restrict__ a, const __nv_bfloat16* __restrict__ b, const float* c, void* d,
                   int m, int n, int k, bool out_fp32) {
  const int n0 = blockIdx.x * kBf16GemvRows;
  const int vecs = k / 8;
  const uint4* a4 = reinterpret_cast<const uint4*>(a);
  float acc[kBf16GemvRows][kM] = {};
  const uint4* rows[kBf16GemvRows];
  GemvRowsOfB(b, vecs, n0, n, rows);
#pragma unroll 2
  for (int v = threadIdx.x; v < vecs; v += kBf16GemvThreads) {
    uint4 bv[kBf16GemvRows];
#pragma unroll
    for (int r = 0; r < kBf16GemvRows; ++r) bv[r] = __ldcs(rows[r] + v);  // B is read once: evict-first
#pragma unroll
    for (int i = 0; i < kM; ++i) {
      if (i >= m) break;
      const uint4 av = __ldg(a4 + int64_t(i) * vecs + v);  // A: every CTA reads it (L2 / L1)
#pragma unroll
      for (int r = 0; r < kBf16GemvRows; ++r) acc[r][i] = Bf16Dot8(av, bv[r], acc[r][i]);
    }
  }
  GemvReduceAndStore<kBf16GemvThreads, kBf16GemvRows, kM>(acc, [&](int r, int i, float s) {
    const int col = n0 + r;
    if (i >= m || col >= n) return;
    const int64_t at = int64_t(i) * n + col;
    if (out_fp32)
      static_cast<float*>(d)[at] = c != nullptr ? c[at] + s : s;
    else
      static_cast<__nv_bfloat16*>(d)[at] = __float2bfloat16_rn(s);
  });
}

// Launches the GEMV for m <= kBf16GemvMaxM (A [m, k], B [n, k], both K-major; D [m, n]; c: FP32 D's prior values).
inline cudaError_t LaunchBf16Gemv(const void* a, const void* b, const float* c, void* d, int m, int n, int k,
                                  bool out_fp32, cudaStream_t stream) {
  const dim3 grid((n + kBf16GemvRows - 1) / kBf16GemvRows);
  const auto* a16 = static_cast<const __nv_bfloat16*>(a);
  const auto* b16 = static_cast<const __nv_bfloat16*>(b);
  GemvForRows<kBf16GemvMaxM>(m, [&](auto rows) {
    Bf16GemvKernel<rows()><<<grid, kBf16GemvThreads, 0, stream>>>(a16, b16, c, d, m, n, k, out_fp32);
  });
  return cudaGetLastError();
}

}  // namespace jdg
