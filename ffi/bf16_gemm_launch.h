// What the BF16 GEMM handlers hand to a kernel instance: raw operands and a chosen config.
// No CUDA device code here, so handlers and heuristics include it cheaply.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/gemm_grouping.h"

namespace jdg {

constexpr int kBf16BlockK = 64;  // 64 bf16 = one 128-byte swizzled row per operand row per stage
constexpr int kBf16SmemCapacity = 232448;  // opt-in dynamic shared memory per block on sm_90

// BF16 output tiles whose width is a multiple of 64 are staged in shared memory for TMA stores.
constexpr int Bf16GemmSmemDBytes(int block_m, int block_n) { return block_m * block_n * 2; }
// FP32 output (+ C) leaves through a per-warp slab of 8 rows x 128 bytes (kernels/staged_store.cuh): row-contiguous
// 16-byte stores instead of the accumulator layout's 8 rows x 8 bytes per warp instruction. Needs 16-byte rows.
constexpr bool Bf16GemmUsesStagedStore(bool out_fp32, int n) { return out_fp32 && n % 4 == 0; }
constexpr int Bf16GemmStagedSlabBytes(int block_m) { return block_m / 64 * 4 /* warps */ * 8 * 128; }
// One pipeline stage: A and B 64-K slices (128 bytes per operand row) and its full + empty mbarriers.
constexpr int kBf16GemmBarrierBytesPerStage = 16;
constexpr int Bf16GemmStageBytes(int block_m, int block_n) {
  return block_m * 128 + block_n * 128 + kBf16GemmBarrierBytesPerStage;
}

struct Bf16GemmOperands {
  int device = 0;            // CUDA device ordinal of the call
  int m = 0, n = 0, k = 0;
  const void* a = nullptr;   // bf16 [m, k] (K-major) or [k, m] (MN-major, major bit 0)
  const void* b = nullptr;   // bf16 [num_groups * n, k] (K-major) or [k, n] (MN-major, major bit 1; dense only)
  int major = 0;             // bit 0: A MN-major, bit 1: B MN-major (0 = NT)
  const float* c = nullptr;  // optional FP32 [m, n] added to the product (aliases d; FP32 output only)
  void* d = nullptr;         // bf16 or FP32 [m, n]
  bool out_fp32 = false;
  // M-grouped (contiguous, masked, ragged; b is [num_groups, n, k]) or K-grouped (NT or TN; d, FP32, is
  // [num_groups * m, n]); default: dense.
  GemmGrouping grouping;
  // Split-K (Bf16GemmConfig::split_k > 1): scratch for the FP32 partials, at least Bf16GemmSplitPartialBytes.
  void* split_partials = nullptr;
  size_t split_partials_bytes = 0;
};

struct Bf16GemmConfig {
  int block_m = 0, block_n = 0, cluster_m = 1, major = 0, num_stages = 0, grid = 0, raster_band = 0;
  bool tma_store = false;  // BF16 D staged in shared memory and written with TMA (needs n % 8 == 0)
  bool staged_store = false;  // FP32 D through per-warp shared-memory slabs (needs n % 4 == 0)
  // > 1: each output tile's K-blocks are shared by this many CTAs, one (tile, split) each (grid = tiles x split_k),
  // whose FP32 partials meet in global scratch (kernels/split_k_global.cuh). Dense NT only (Bf16GemmMaySplitK).
  int split_k = 1;
};

// The dense handler's CUDA-core GEMV (kernels/sm90_bf16_gemv.cuh, bf16_gemm.cu's Bf16DenseTakesGemv): the most rows of
// A it takes, and the rows of B (columns of D) per CTA (144 CTAs at N = 576). bf16_gemm_tile reports it as the tile
// (kBf16GemvMaxM, kBf16GemvRows) without split.
constexpr int kBf16GemvMaxM = 4;
constexpr int kBf16GemvRows = 4;
// Where it was measured to beat the tile kernels (H100, session 56, kernel us, GEMV / best tile): K >= 7168, every
// N (1 x 576 6.13 / 8.64, 4 x 576 7.42 / 8.90, 1 x 2112 11.69 / 15.38, 4 x 2112 14.88 / 15.38, 1 x 4096 21.26 /
// 29.48, 1 x 7168 x 16384 75.3 / 100.5). Shorter K is left to the tile kernels (the FP8 GEMV loses there).
constexpr int kBf16GemvMinK = 7168;

// Split-K is compiled into the dense NT kernels of unpaired tiles up to 128 wide: the decode shapes, whose few tiles
// would otherwise each run one long chain of 64-K slices while most SMs idle.
constexpr bool Bf16GemmMaySplitK(int block_n, int cluster_m, int major) {
  return major == 0 && cluster_m == 1 && block_n <= 128;
}
// Most CTAs one tile's K-blocks are split over (the last one reads all their partials at once).
constexpr int kBf16MaxSplitK = 8;
// Most output tiles a split-K launch may have (its arrival counters, sm90_bf16_gemm.cuh).
constexpr int kBf16SplitMaxTiles = 1024;

inline int64_t Bf16GemmTiles(const Bf16GemmConfig& cfg, int64_t m, int64_t n) {
  return (m + cfg.block_m - 1) / cfg.block_m * ((n + cfg.block_n - 1) / cfg.block_n);
}
// Bytes of FP32 partials a split-K launch needs (0 without split-K).
inline int64_t Bf16GemmSplitPartialBytes(const Bf16GemmConfig& cfg, int64_t m, int64_t n) {
  if (cfg.split_k <= 1) return 0;
  return Bf16GemmTiles(cfg, m, n) * cfg.split_k * cfg.block_m * cfg.block_n * int64_t(sizeof(float));
}

// Whether a launch stores D through shared memory + TMA (then that staging area precedes the stages):
// BF16 D with a 16-byte row pitch, from a tile made of whole 64-column chunks. Otherwise registers
// store D directly (FP32 D, optional + C; narrow decode tiles; odd pitches).
constexpr bool Bf16GemmUsesTmaStore(bool out_fp32, int n, int block_n) {
  return !out_fp32 && n % 8 == 0 && block_n % 64 == 0;
}
// Shared memory ahead of the pipeline stages: the TMA-store staging or the staged store's slabs.
constexpr int Bf16GemmDStagingBytes(bool tma_store, bool staged_store, int block_m, int block_n) {
  return tma_store ? Bf16GemmSmemDBytes(block_m, block_n) : staged_store ? Bf16GemmStagedSlabBytes(block_m) : 0;
}

// Launches the compiled instance `cfg` names (bf16_gemm.cu); cudaErrorInvalidConfiguration if none.
cudaError_t DispatchBf16Gemm(const Bf16GemmOperands& op, const Bf16GemmConfig& cfg, cudaStream_t stream);

// Implemented once per (BLOCK_M, BLOCK_N, CLUSTER_M, MAJOR) in the generated instance translation units.
template <int kBlockM, int kBlockN, int kClusterM, int kMajor>
cudaError_t LaunchSm90Bf16Gemm(const Bf16GemmOperands& op, const Bf16GemmConfig& cfg, cudaStream_t stream);

}  // namespace jdg
