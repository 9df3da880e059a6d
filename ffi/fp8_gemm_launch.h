// What the FP8 GEMM handlers hand to a kernel instance: raw operands and a chosen config.
// No CUDA device code here, so handlers and heuristics include it cheaply.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/gemm_grouping.h"

namespace jdg {

enum class BScale : int {
  kBlock128 = 0,    // sfb[ceil(N/128), ceil(K/128)]: "1D2D", BF16 output
  kPerChannel = 1,  // one scale per row of B per 128-K block: "1D1D", FP32 output, optional C
};

constexpr int kSm90SmemCapacity = 232448;  // opt-in dynamic shared memory per block on sm_90
// Dynamic shared memory per block with which two blocks fit on one SM (228 KB per SM, 1 KB reserved per block).
constexpr int kSm90SmemTwoPerSm = 115712;

// Widest tile compiled with the ragged M-grouped tile walk (see sm90_fp8_gemm.cuh).
constexpr int kMaxRaggedBlockN = 176;
// Tallest tile of the masked and ragged M-grouped GEMMs (the contiguous one also runs 256-row tiles).
constexpr int kMGroupedMaxBlockM = 128;

// BF16 (1D2D) tiles whose width is a multiple of 64 stage D in shared memory for TMA stores.
constexpr bool Fp8GemmHasSmemD(int block_n, BScale scale) { return scale == BScale::kBlock128 && block_n % 64 == 0; }
// The other tiles of two math warpgroups (FP32 output; BF16 tiles 144-176 wide or narrower than 64) store D from
// registers through a per-warp slab of shared memory: 8 rows of one 128-byte (FP32) or 64-byte (BF16) column chunk,
// re-read row-contiguous, so that each store is a 16-byte piece of a row (sm90_fp8_gemm.cuh, the staged epilogue).
// The accumulator layout stored directly writes 8 rows x 8 or 16 bytes per warp instruction. (64-row tiles keep
// the direct stores: their two-CTAs-per-SM stage budget has no room.)
constexpr bool Fp8GemmHasStagedD(int block_m, int block_n, BScale scale) {
  return block_m >= 128 && !Fp8GemmHasSmemD(block_n, scale);
}
constexpr int Fp8GemmStagedRowBytes(BScale scale) { return scale == BScale::kPerChannel ? 128 : 64; }
// The 64 x 64 1D2D tiles run two consumer warpgroups on the same 64 rows, taking alternate K-block batches (two
// WGMMA chains per CTA, one CTA per SM); the second hands its FP32 partial to the first through shared memory
// (64 x 64 floats, after the D staging area) at the end of each tile. One chain's K loop is latency-bound (WGMMA
// round trip, then the promotion); with two, one promotes while the other's WGMMAs run. Each chain fills and consumes
// its own half of the stage ring in order (sm90_fp8_gemm.cuh: in one shared ring a chain could wait on a full
// barrier two phases past the one it had seen, which a parity wait cannot tell apart; session 44). H100, session 46,
// kernel us against one chain: 128 x 4096 x 7168 18.8 -> 16.3, 64 x 7168 x 16384 (split 2, two CTAs per SM before)
// 47.4 -> 44.7, 64 x 7168 x 2048 9.4 -> 8.9. Not the narrow 64 x 16 / 64 x 32 tiles: with half rings two chains made
// them slower than one (64 x 2112 x 7168 11.9 -> 13.5-13.8, 128 x 2112 x 7168 12.6 -> 14.4-14.7, session 46).
constexpr bool Fp8GemmDualChain(int block_m, int block_n, BScale scale) {
  return block_m == 64 && block_n == 64 && scale == BScale::kBlock128;
}
// The dual chain's hand-over area (64 x BLOCK_N floats) follows the TMA store's staging area, which the previous
// tile's asynchronous store may still be reading.
constexpr int Fp8GemmDualPartialBytes(int block_m, int block_n, BScale scale) {
  return Fp8GemmDualChain(block_m, block_n, scale) ? block_m * block_n * 4 : 0;
}
constexpr int Fp8GemmSmemDBytes(int block_m, int block_n, BScale scale) {
  return (Fp8GemmHasSmemD(block_n, scale)               ? block_m * block_n * 2
          : Fp8GemmHasStagedD(block_m, block_n, scale) ? 8 /* math warps */ * 8 * Fp8GemmStagedRowBytes(scale)
                                                       : 0) +
         Fp8GemmDualPartialBytes(block_m, block_n, scale);
}

// Shared-memory budget of one pipeline stage: A and B 128-K slices (one 128-byte row per operand row),
// per-column B scales for 1D1D (128-byte aligned), and its full + empty mbarriers. The kernel's
// layout and the heuristic's stage count both come from here.
constexpr int Fp8GemmSfbStageBytes(int block_n, BScale scale) {
  return scale == BScale::kPerChannel ? (block_n * 4 + 127) / 128 * 128 : 0;
}
// BLOCK_M = 256 stages its A scales (and up to 4 B scales) in shared memory (see sm90_fp8_gemm.cuh);
// 128-byte aligned per stage: the A scales may arrive by TMA.
constexpr int Fp8GemmScaleStageBytes(int block_m) { return block_m == 256 ? (block_m * 4 + 16 + 127) / 128 * 128 : 0; }
constexpr int kFp8GemmBarrierBytesPerStage = 16;
// 128-row tiles given MN-major A scales stage them in shared memory too (per stage, beyond the above).
constexpr int Fp8GemmOptionalSfaStageBytes(int block_m) { return block_m == 128 ? block_m * 4 : 0; }
constexpr int Fp8GemmStageBytes(int block_m, int block_n, BScale scale) {
  return block_m * 128 + block_n * 128 + Fp8GemmSfbStageBytes(block_n, scale) + Fp8GemmScaleStageBytes(block_m) +
         kFp8GemmBarrierBytesPerStage;
}

// Row stride (floats) of MN-major A scales [ceil(K/128), align(M, 4)]: 16-byte rows, as TMA needs.
constexpr int64_t Fp8GemmSfaMnStride(int64_t m) { return (m + 3) / 4 * 4; }

struct Fp8GemmOperands {
  int device = 0;               // CUDA device ordinal of the call
  int m = 0, n = 0, k = 0, num_k_blocks = 0;
  const void* a = nullptr;      // e4m3 [m, k]
  const float* sfa = nullptr;   // K-major [m, num_k_blocks], or MN-major [num_k_blocks, sfa_mn_stride]
  int sfa_mn_stride = 0;        // 0: sfa is K-major; else MN-major with this row stride (align(m, 4))
  const void* b = nullptr;      // e4m3 [n, k]
  const float* sfb = nullptr;   // 1D2D: [ceil(n/128), num_k_blocks]; 1D1D: transposed [num_k_blocks, sfb_row_stride]
  int sfb_row_stride = 0;       // 1D1D only: align(n, 4)
  const float* c = nullptr;     // 1D1D only, optional FP32 [m, n]
  void* d = nullptr;            // BF16 (1D2D) or FP32 (1D1D) [m, n]
  // M-grouped (1D2D only: contiguous, masked, ragged; b is [num_groups, n, k] and sfb [num_groups, ceil(n/128),
  // num_k_blocks]) or K-grouped (1D1D only; d and c are [num_groups * m, n]); default: dense.
  GemmGrouping grouping;
  // Split-K through global memory (Fp8GemmConfig::split_global): the FP32 partials' scratch, at least
  // Fp8GemmSplitPartialBytes of the config (else the launch hands the partials over through a cluster instead).
  void* split_partials = nullptr;
  size_t split_partials_bytes = 0;
};

// The operands of one call from the handler's buffers (any buffer type with untyped_data()).
template <class Buffer>
Fp8GemmOperands MakeFp8GemmOperands(int device, int64_t m, int64_t n, int64_t k, const Buffer& a, const Buffer& sfa,
                                    const Buffer& b, const Buffer& sfb, const Buffer& d) {
  Fp8GemmOperands op;
  op.device = device;
  op.m = int(m);
  op.n = int(n);
  op.k = int(k);
  op.num_k_blocks = int((k + 127) / 128);
  op.a = a.untyped_data();
  op.sfa = static_cast<const float*>(sfa.untyped_data());
  op.b = b.untyped_data();
  op.sfb = static_cast<const float*>(sfb.untyped_data());
  op.d = const_cast<void*>(static_cast<const void*>(d.untyped_data()));
  return op;
}

struct Fp8GemmConfig {
  // cluster_m / cluster_n = 2: CTA pairs on adjacent M-blocks sharing B / adjacent N-blocks sharing A.
  int block_m = 0, block_n = 0, cluster_m = 1, cluster_n = 1, num_stages = 0, grid = 0, raster_band = 0;
  // > 1: each output tile's K-blocks are split over a cluster of this many CTAs (dense 1D2D, unpaired tiles up to
  // 128 x 128). split_k_fits: the heuristic chose it, so the launch may lower it until its clusters fit on the GPU
  // at once (a forced split is kept).
  int split_k = 1;
  bool split_k_fits = false;
  // Split-K without clusters: every CTA writes its FP32 partial to global scratch (Fp8GemmOperands::split_partials)
  // and counts its arrival; the tile's last CTA sums all partials in split order and stores the tile. Any number of
  // splits then fits the GPU at once (clusters of 4 must sit in one GPC: 33 of them do not fit on 132 SMs).
  bool split_global = false;
  // Split-K with 64-row tiles: few enough stages that two CTAs share an SM (two K chains per SM).
  bool two_per_sm = false;
};

// The dense 1D2D handler's CUDA-core GEMV (kernels/sm90_fp8_gemv.cuh, fp8_gemm.cu's Fp8DenseTakesGemv): the most rows
// of A it takes, and the rows of B (columns of D) per CTA. fp8_gemm_block_tile reports it as the tile
// (kFp8GemvMaxM, kFp8GemvRows, 1, 1, 1).
constexpr int kFp8GemvMaxM = 4;
constexpr int kFp8GemvRows = 4;
// Where it beats the tile kernels (H100, session 56, kernel us, GEMV / best tile): K = 7168 at M x N <= 4096
// (1 x 576 3.98 / 7.62, 4 x 576 5.65 / 7.61, 1 x 2112 6.87 / 10.15, 1 x 4096 11.80 / 19.44); not at 4 x 2112
// (10.91 / 10.19) nor at short K, where each CTA's four rows are too little to stream (1 x 24576 x 1536 17.8 / 16.6,
// 1 x 32768 x 512 18.9 against ~10).
constexpr int kFp8GemvMinK = 7168;
constexpr int kFp8GemvMaxMN = 4096;

// Widest tile compiled with split-K (see sm90_fp8_gemm.cuh).
constexpr int kFp8SplitKMaxBlockN = 128;

// Most CTAs one tile's K-blocks are split over: they form one cluster (the portable cluster size).
constexpr int kFp8MaxSplitK = 8;
// Output tiles of a config (clusters' padding tiles included).
inline int64_t Fp8GemmTiles(const Fp8GemmConfig& cfg, int64_t m, int64_t n) {
  const int64_t cm = cfg.block_m * cfg.cluster_m, cn = cfg.block_n * cfg.cluster_n;
  return (m + cm - 1) / cm * cfg.cluster_m * ((n + cn - 1) / cn * cfg.cluster_n);
}

// Tiles compiled with the split-K hand-over through global memory.
constexpr bool Fp8GemmMaySplitGlobal(int block_m, int block_n) { return block_m * block_n <= 128 * 64; }

// Most CTAs a split-K launch through global memory shares a tile's K-blocks over (the last one reads all partials at
// once).
constexpr int kFp8MaxSplitGlobal = 4;

// Most output tiles a split-K launch through global memory may have (its arrival counters, sm90_fp8_gemm.cuh).
constexpr int kFp8SplitGlobalMaxTiles = 1024;

// Bytes of FP32 partials a split-K launch through global memory needs (0 for any other config).
inline int64_t Fp8GemmSplitPartialBytes(const Fp8GemmConfig& cfg, int64_t m, int64_t n) {
  if (!cfg.split_global || cfg.split_k <= 1) return 0;
  return Fp8GemmTiles(cfg, m, n) * cfg.split_k * cfg.block_m * cfg.block_n * int64_t(sizeof(float));
}

// Launches the compiled instance `cfg` names (fp8_gemm.cu); cudaErrorInvalidConfiguration if none.
cudaError_t DispatchFp8Gemm(BScale scale, const Fp8GemmOperands& op, const Fp8GemmConfig& cfg, cudaStream_t stream);

// Implemented once per (BLOCK_M, BLOCK_N, scaling) in ffi/instances/*.cu.
template <int kBlockM, int kBlockN, BScale kBScale, int kClusterM, int kClusterN>
cudaError_t LaunchSm90Fp8Gemm(const Fp8GemmOperands& op, const Fp8GemmConfig& cfg, cudaStream_t stream);

}  // namespace jdg
