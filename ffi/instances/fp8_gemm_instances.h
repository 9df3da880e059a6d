// The compiled (BLOCK_M, BLOCK_N) tile shapes of the FP8 GEMM kernel: the one list that the
// instance translation units, the dispatcher and the heuristics all expand. Each group below is
// compiled in its own translation unit so the build runs in parallel. Adding a shape costs
// ~20-40 s of single-core nvcc time: add one only when the benchmark shows it wins.
#pragma once

// Entries are X(BLOCK_M, BLOCK_N, CLUSTER_M, CLUSTER_N). CLUSTER_M = 2 runs pairs of CTAs on vertically
// adjacent tiles that share one B tile, each loading half of it and multicasting it to both (halves B's
// L2 reads); CLUSTER_N = 2 pairs horizontally adjacent tiles sharing one A tile (halves A's reads; also
// valid for M-grouped GEMMs, whose pairs then share one expert).

// BF16-output 1D2D kernels (128x128 weight scales).
#define JDG_FP8_1D2D_BM64(X) X(64, 16, 1, 1) X(64, 32, 1, 1) X(64, 64, 1, 1) X(64, 128, 1, 1)  // M <= 64
#define JDG_FP8_1D2D_BM128(X) X(128, 16, 1, 1) X(128, 32, 1, 1) X(128, 64, 1, 1) X(128, 128, 1, 1)  // small/medium M
#define JDG_FP8_1D2D_BM128_WIDE(X) X(128, 144, 1, 1) X(128, 160, 1, 1) X(128, 176, 1, 1) X(128, 192, 1, 1)  // wave fit
// Small M with few N-tiles (64 x 2112 x 7168: 132 tiles of 64 x 16, each re-reading the whole A from L2):
// pairs share one A tile.
#define JDG_FP8_1D2D_BM64_CLUSTER(X) X(64, 32, 1, 2)  // (64 x 16 pairs: slower than unpaired, measured)
// Large M (128x192 in a cluster spills, never faster).
#define JDG_FP8_1D2D_BM128_CLUSTER(X) X(128, 128, 2, 1) X(128, 176, 2, 1) X(128, 128, 1, 2)
// Large M, dense only: two 128-row waves per tile halve B's reads per FLOP.
#define JDG_FP8_1D2D_BM256(X) X(256, 128, 1, 1) X(256, 128, 2, 1) X(256, 128, 1, 2)
#define JDG_FP8_1D2D_ALL(X) \
  JDG_FP8_1D2D_BM64(X) JDG_FP8_1D2D_BM64_CLUSTER(X) JDG_FP8_1D2D_BM128(X) JDG_FP8_1D2D_BM128_WIDE(X) \
      JDG_FP8_1D2D_BM128_CLUSTER(X) JDG_FP8_1D2D_BM256(X)

// FP32-output 1D1D kernels (per-channel weight scales, optional accumulate into C).
#define JDG_FP8_1D1D_SMALL(X) X(64, 64, 1, 1) X(128, 128, 1, 1) X(128, 128, 2, 1)
// Two 128-row waves per tile halve B's reads and the per-column scale loads per FLOP (K-grouped weight
// gradients, M = 4096-7168); pairs share one group's B tile (2, 1) or A tile (1, 2): 40 or 32 KB of
// operands per CTA and K-block.
#define JDG_FP8_1D1D_BM256(X) X(256, 128, 1, 1) X(256, 128, 2, 1) X(256, 128, 1, 2)
#define JDG_FP8_1D1D_ALL(X) JDG_FP8_1D1D_SMALL(X) JDG_FP8_1D1D_BM256(X)
