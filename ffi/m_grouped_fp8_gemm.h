// XLA FFI handler symbols of the M-grouped (MoE) FP8 GEMM family (defined in m_grouped_fp8_gemm.cu).
#pragma once

#include "xla/ffi/api/api.h"

// D[M,N] (BF16) = A[r] . B[group(r)]^T per row r, groups given per row, segments BLOCK_M-aligned.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtContiguous);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtContiguousV2);  // before block_m
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtContiguousV1);  // before MN-major A scales
// D[g, :masked_m[g]] (BF16) = A[g, :masked_m[g]] . B[g]^T; the rest of D[g] is unspecified.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtMasked);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtMaskedV1);
// D[M,N] (BF16) = A[r] . B[g]^T for rows r of group g = [ends[g-1], ends[g]) (any sizes); rows past the last end 0.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtRagged);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtRaggedV1);  // before MN-major A scales
