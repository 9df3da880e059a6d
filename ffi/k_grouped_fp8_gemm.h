// XLA FFI handler symbol of the K-grouped (weight-gradient) FP8 GEMM (defined in k_grouped_fp8_gemm.cu).
#pragma once

#include "xla/ffi/api/api.h"

// D[g] (FP32) = C[g] + A[:, K_g] . B[:, K_g]^T over consecutive K ranges whose sizes live on the device.
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmKGroupedFp8GemmNtContiguous);
XLA_FFI_DECLARE_HANDLER_SYMBOL(JaxDeepgemmKGroupedFp8GemmNtContiguousV1);  // before MN-major A scales
