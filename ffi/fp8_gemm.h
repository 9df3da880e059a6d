// XLA FFI handler symbols of the dense FP8 GEMM family (defined in fp8_gemm.cu).
#pragma once

#include "xla/ffi/api/api.h"

// D[M,N] (BF16) = A[M,K] . B[N,K]^T with 1x128 A scales and 128x128 B scales.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmFp8GemmNt1d2d);
// D[M,N] (FP32) = A . B^T (+ C) with 1x128 A scales and per-row (1x128) B scales.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmFp8GemmNt1d1d);
