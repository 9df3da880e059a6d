// XLA FFI handler symbols of the BF16 GEMM family (defined in bf16_gemm.cu).
#pragma once

#include <array>
#include <cstdint>

#include "xla/ffi/api/api.h"

// D[M,N] (BF16 or FP32) = A . B^T (+ D when accumulate=1, FP32 only); A stored [M,K] or [K,M], B
// stored [N,K] or [K,N] (attribute `major`); a split-K workspace output.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmBf16Gemm);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmBf16GemmV1);  // before split-K (no workspace)
// M-grouped contiguous: D[r] = A[r] . B[expert(r)]^T, per-row expert ids, 128-row aligned segments.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmMGroupedBf16GemmNtContiguous);
// M-grouped masked: D[g, :masked_m[g]] = A[g, :masked_m[g]] . B[g]^T.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmMGroupedBf16GemmNtMasked);
// M-grouped ragged (lax.ragged_dot's layout): group g owns rows [ends[g-1], ends[g]) of A.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmMGroupedBf16GemmNtRagged);
// The same with B stored [G, K, N] (lax.ragged_dot's rhs; the dgrad of the NT form), read in place.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmMGroupedBf16GemmNnRagged);
// K-grouped (weight gradients): D[g] (= C[g] +) A[K range g]^T . B[K range g], device K sizes, FP32 D [G, M, N].
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmKGroupedBf16GemmContiguous);

namespace jdg {
// Bytes of split-K scratch (FP32 partials) the dense BF16 kernel takes for this problem and (forced or heuristic)
// config: > 0 only when it splits K; -1 when no compiled kernel runs the forced config. bf16_gemm_nt sizes the
// workspace output with it at trace time.
int64_t Bf16GemmSplitWorkspaceBytes(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m,
                                    int split_k, bool out_fp32, int major);
// The (block_m, block_n, cluster_m, split_k) the dense BF16 heuristic picks: tests and tuning ask.
std::array<int, 4> Bf16GemmTile(int m, int n, int k, int num_sms, bool out_fp32, int major);
}  // namespace jdg
