// Dense FP8 1D2D GEMM at M <= kFp8GemvMaxM (decode rows): D[m, n] = sum over 128-K blocks kb of
// sfa[m, kb] * sfb[n / 128, kb] * (A[m, kb] . B[n, kb]), BF16 out, on the CUDA cores. The BF16 twin
// (sm90_bf16_gemv.cuh) says why: at M <= 4 the tile kernel's start-up and split-K hand-over are most of a call that
// only streams B once. Each CTA streams kFp8GemvRows rows of B (one 128-row scale block: 4 divides 128) with 16-byte
// evict-first loads; a thread's 16 values lie in one K-block, whose dot product (exact FP8 products, FP32 sums) is
// scaled by sfa * sfb and added to the thread's sums; one fixed-order CTA reduction at the end. Each vector is
// converted to floats once (at M = 4 converting per pair of rows would make the kernel ALU-bound).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fp8_gemm_launch.h"
#include "kernels/gemv_common.cuh"

namespace jdg {

constexpr int kFp8GemvThreads = 256;
static_assert(128 % kFp8GemvRows == 0, "a CTA's rows of B share one 128-row scale block");

// The 16 e4m3 values of a 16-byte vector as floats (exact), each converted once per vector and reused by every
// row of A (or of B) it meets.
__device__ __forceinline__ void Fp8x16ToFloat(const uint4& x, float (&out)[16]) {
  const uint32_t xs[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const auto pair = static_cast<__nv_fp8x2_storage_t>(xs[i] >> (16 * h));
      const float2 f = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3)));
      out[4 * i + 2 * h] = f.x, out[4 * i + 2 * h + 1] = f.y;
    }
  }
}

// One CTA per kFp8GemvRows columns of D. kM: the compiled row count (m <= kM). K % 16 == 0 (the handler's check).
// sfa: [m, k_blocks] (K-major); sfb: [ceil(n / 128), k_blocks].
template <int kM>
__global__ void __launch_bounds__(kFp8GemvThreads)
    Fp8GemvKernel(const uint8_t* __restrict__ a, const float* __restrict__ sfa, const uint8_t* __restrict__ b,
                  const float* __restrict__ sfb, __nv_bfloat16* d, int m, int n, int k) {
  const int n0 = blockIdx.x * kFp8GemvRows;
  const int vecs = k / 16, k_blocks = (k + 127) / 128;
  const uint4* a4 = reinterpret_cast<const uint4*>(a);
  const float* sfb_row = sfb + int64_t(n0 / 128) * k_blocks;
  float acc[kFp8GemvRows][kM] = {};
  const uint4* rows[kFp8GemvRows];
  GemvRowsOfB(b, vecs, n0, n, rows);
#pragma unroll 2
  for (int v = threadIdx.x; v < vecs; v += kFp8GemvThreads) {
    const int kb = v / 8;  // 8 vectors of 16 per 128-K block
    uint4 bv[kFp8GemvRows];
#pragma unroll
    for (int r = 0; r < kFp8GemvRows; ++r) bv[r] = __ldcs(rows[r] + v);  // B is read once: evict-first
    const float sb = __ldg(sfb_row + kb);
    float bf[kFp8GemvRows][16];
#pragma unroll
    for (int r = 0; r < kFp8GemvRows; ++r) Fp8x16ToFloat(bv[r], bf[r]);
#pragma unroll
    for (int i = 0; i < kM; ++i) {
      if (i >= m) break;
      float af[16];
      Fp8x16ToFloat(__ldg(a4 + int64_t(i) * vecs + v), af);  // A and its scales: every CTA reads them (L2 / L1)
      const float s = __ldg(sfa + int64_t(i) * k_blocks + kb) * sb;
#pragma unroll
      for (int r = 0; r < kFp8GemvRows; ++r) {
        float dot = 0.f;  // one K-block's 16 products: exact, summed in FP32, then scaled
#pragma unroll
        for (int j = 0; j < 16; ++j) dot = fmaf(af[j], bf[r][j], dot);
        acc[r][i] = fmaf(s, dot, acc[r][i]);
      }
    }
  }
  GemvReduceAndStore<kFp8GemvThreads, kFp8GemvRows, kM>(acc, [&](int r, int i, float s) {
    const int col = n0 + r;
    if (i < m && col < n) d[int64_t(i) * n + col] = __float2bfloat16_rn(s);
  });
}

// Launches the GEMV for m <= kFp8GemvMaxM.
inline cudaError_t LaunchFp8Gemv(const void* a, const float* sfa, const void* b, const float* sfb, void* d, int m,
                                 int n, int k, cudaStream_t stream) {
  const dim3 grid((n + kFp8GemvRows - 1) / kFp8GemvRows);
  const auto* a8 = static_cast<const uint8_t*>(a);
  const auto* b8 = static_cast<const uint8_t*>(b);
  auto* d16 = static_cast<__nv_bfloat16*>(d);
  GemvForRows<kFp8GemvMaxM>(m, [&](auto rows) {
    Fp8GemvKernel<rows()><<<grid, kFp8GemvThreads, 0, stream>>>(a8, sfa, b8, sfb, d16, m, n, k);
  });
  return cudaGetLastError();
}

}  // namespace jdg
