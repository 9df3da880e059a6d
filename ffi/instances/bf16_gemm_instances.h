// The compiled (BLOCK_M, BLOCK_N, CLUSTER_M, MAJOR) shapes of the BF16 GEMM kernel: the one list that
// the instance translation units, the dispatcher and the heuristics all expand. Each group is
// compiled in its own translation unit (ffi/instances/bf16_gemm_instance.cu.in) so the build runs
// in parallel (~5 s of single-core nvcc per instance).
#pragma once

// Entries are X(BLOCK_M, BLOCK_N, CLUSTER_M, MAJOR). CLUSTER_M = 2 pairs vertically adjacent tiles that
// share (multicast) one B tile (dense only: paired tiles of a grouped GEMM may use different experts).
// MAJOR is the operand-major mask: 0 = NT (both K-major: dense and grouped), 1 = TT (A stored [K, M]),
// 2 = NN (B stored [K, N]; also the M-grouped ragged NN form, B [G, K, N]), 3 = TN (both MN-major; also
// the K-grouped TN form). The K-grouped walk is compiled into MAJOR 0 and 3.
// BLOCK_N 16/32: enough CTAs to stream B at small M (no split-K); D through register stores.
#define JDG_BF16_BM64(X) X(64, 16, 1, 0) X(64, 32, 1, 0) X(64, 64, 1, 0) X(64, 128, 1, 0) X(64, 256, 1, 0)  // decode
#define JDG_BF16_BM128(X) X(128, 64, 1, 0) X(128, 128, 1, 0) X(128, 256, 1, 0)  // everything else
#define JDG_BF16_CLUSTER(X) X(128, 256, 2, 0)                                   // large M: halves B's L2 reads
#define JDG_BF16_MN_MAJOR(X)                                                                      \
  X(64, 128, 1, 1) X(128, 128, 1, 1) X(128, 256, 1, 1) X(64, 128, 1, 2) X(128, 128, 1, 2)          \
      X(128, 256, 1, 2) X(64, 128, 1, 3) X(128, 128, 1, 3) X(128, 256, 1, 3)
#define JDG_BF16_ALL(X) JDG_BF16_BM64(X) JDG_BF16_BM128(X) JDG_BF16_CLUSTER(X) JDG_BF16_MN_MAJOR(X)
