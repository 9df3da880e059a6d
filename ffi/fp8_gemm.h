// XLA FFI handler symbols of the dense FP8 GEMM family (defined in fp8_gemm.cu).
#pragma once

#include <array>
#include <cstdint>

#include "xla/ffi/api/api.h"

// D[M,N] (BF16) = A[M,K] . B[N,K]^T with 1x128 A scales and 128x128 B scales.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmFp8GemmNt1d2d);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmFp8GemmNt1d2dV3);  // before split-K (no workspace)
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmFp8GemmNt1d2dV2);  // before MN-major A scales
// D[M,N] (FP32) = A . B^T (+ C) with 1x128 A scales and per-row (1x128) B scales.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmFp8GemmNt1d1d);

namespace jdg {
// Whether the 1D2D heuristic (or the forced tile) runs a 128- or 256-row tile for this problem given MN-major A
// scales, the only tiles that read those faster than K-major ones (by TMA); fp8_gemm_nt asks at trace time.
bool Fp8GemmPrefersMnMajorSfa(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m,
                              int cluster_n);
// How many CTAs the 1D2D kernel's heuristic splits each tile's K-blocks over for this problem and config (1: none;
// the launch may lower it so that its clusters fit on the GPU at once).
int Fp8GemmSplitK(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m, int cluster_n, int split_k,
                  bool sfa_mn_major);
// Bytes of split-K scratch (FP32 partials) the 1D2D kernel takes for this problem and config: > 0 only when it splits
// K through global memory. fp8_gemm_nt sizes the workspace output with it at trace time.
int64_t Fp8GemmSplitWorkspaceBytes(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m,
                                   int cluster_n, int split_k, bool sfa_mn_major);
// The (block_m, block_n, cluster_m, cluster_n, split_k) the 1D2D heuristic picks for a dense problem (split_k before
// the launch lowers it to fit the GPU's clusters; negative: split through global memory): tests and tuning ask.
std::array<int, 5> Fp8GemmBlockTile(int m, int n, int k, int num_sms, bool sfa_mn_major);
// The (block_m, block_n, cluster_m, cluster_n) the 1D1D (per-channel B scales) heuristic picks for the dense FP32-out
// GEMM (k_groups = 1) or the K-grouped one (k_groups problems of mean K k): tests and tuning ask.
std::array<int, 4> Fp8GemmPerChannelTile(int m, int n, int k, int num_sms, int k_groups, bool sfa_mn_major);
}  // namespace jdg
