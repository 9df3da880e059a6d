// The compiled (BLOCK_M, BLOCK_N) tile shapes of the FP8 GEMM kernel: the one list that the
// instance translation units, the dispatcher and the heuristics all expand. Each group below is
// compiled in its own translation unit so the build runs in parallel. Adding a shape costs
// ~20-40 s of single-core nvcc time: add one only when the benchmark shows it wins.
#pragma once

// BF16-output 1D2D kernels (128x128 weight scales).
#define JDG_FP8_1D2D_BM64(X) X(64, 16) X(64, 32) X(64, 64) X(64, 128) X(64, 192)      // M <= 64: N-parallel
#define JDG_FP8_1D2D_BM128(X) X(128, 16) X(128, 32) X(128, 64) X(128, 128)           // small/medium M
#define JDG_FP8_1D2D_BM128_WIDE(X) X(128, 144) X(128, 160) X(128, 176) X(128, 192)   // large M: wave fit
#define JDG_FP8_1D2D_ALL(X) JDG_FP8_1D2D_BM64(X) JDG_FP8_1D2D_BM128(X) JDG_FP8_1D2D_BM128_WIDE(X)

// FP32-output 1D1D kernels (per-channel weight scales, optional accumulate into C).
#define JDG_FP8_1D1D_ALL(X) X(64, 64) X(128, 128)
