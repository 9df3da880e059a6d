// SM90 FP8 block-scaled GEMM: D[M,N] = A[M,K] . B[N,K]^T with DeepSeek's scaling recipes.
//
//   A: e4m3, 1x128 scales, K-major sfa[M, ceil(K/128)] or MN-major sfa_t[ceil(K/128), align(M, 4)]
//      (read by the math threads, or, for BLOCK_M = 256, staged per stage in shared memory: MN-major
//      ones by one TMA load per stage, K-major ones by a scale-loader warp's 4-byte copies)
//   B: e4m3, either 128x128 block scales sfb[ceil(N/128), ceil(K/128)]   (kBlock128,  BF16 out)
//              or   1x128 per-row scales, given transposed sfb_t[ceil(K/128), align(N,4)] and
//                   streamed per stage through TMA                         (kPerChannel, FP32 out (+C))
//
// Structure (the DeepGEMM design, written with CuTe's WGMMA/TMA atoms and CUTLASS barriers):
//   * persistent CTAs walk output tiles in L2-friendly bands (TileScheduler);
//   * one producer warpgroup (a single elected thread) streams A/B 128-K slices through a
//     `num_stages`-deep shared-memory ring with TMA, full/empty mbarriers per stage;
//   * one or two consumer warpgroups each own 64 rows per 128-row wave (BLOCK_M = 256 runs two
//     waves through one accumulator): per 128-K slice and wave they issue 4 FP8 WGMMAs
//     (m64nBLOCK_Nk32) into a fresh FP32 accumulator, wait, then promote
//     `final += (sfa[row] * sfb[col]) * accum` on the CUDA cores; the stage is released after the
//     last wave. The two-level accumulation avoids the reduced-precision accumulation of FP8
//     tensor-core sums over long K;
//   * 2-CTA clusters share one operand tile through TMA multicast: along M (two M-blocks, one B
//     tile) or along N (two N-blocks, one A tile); each CTA loads half and multicasts it;
//   * the epilogue writes the tile straight from registers (any M, any even/odd N), or (BF16, BLOCK_N
//     a multiple of 64) through swizzled shared memory and TMA stores;
//   * split-K (dense, small M, long K): a cluster of CTAs shares one tile's K-blocks; each CTA sums its share of
//     the tile's columns over all the CTAs' FP32 partials (read from their shared memory: distributed shared
//     memory) and stores it.
// Grouped forms (GemmGrouping, gemm_tile_walk.cuh): M-grouped contiguous/masked (1D2D: a per-tile
// expert selects B's rows) and K-grouped (1D1D: each group owns a K range of A and B and an [m, n]
// slice of D; the K loop simply starts and ends at the group's K-blocks).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <numeric>
#include <type_traits>
#include <utility>

#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/arch/mma_sm90_desc.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cute/arch/mma_sm90_gmma_ext.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "fp8_gemm_launch.h"
#include "kernels/cache_hints.cuh"
#include "kernels/gemm_tile_walk.cuh"
#include "kernels/split_k_global.cuh"
#include "kernels/stage_ring.cuh"
#include "kernels/staged_store.cuh"
#include "kernels/swizzled_stage.cuh"
#include "kernels/wgmma_desc.cuh"

namespace jdg {

constexpr int kFp8BlockK = 128;  // one 128-byte swizzled row of FP8 per operand row per stage

struct Fp8GemmParams {
  int m, n, k;
  int a_tail_box_rows;      // rows of A a tail tile's stage loads (tma_a_tail's box; kARowsPerCta: no tail box)
  int num_k_blocks;         // ceil(k / 128)
  const float* sfa;         // K-major [m, num_k_blocks], or MN-major [num_k_blocks, sfa_mn_stride]
  int sfa_mn_stride;        // 0: K-major sfa
  const float* sfb;         // kBlock128: [ceil(n/128), num_k_blocks]; kPerChannel: unused (TMA)
  const float* c;           // kPerChannel: optional FP32 [m, n] added to the product (aliases d)
  void* d;                  // kBlock128: BF16 [m, n]; kPerChannel: FP32 [m, n]
  int raster_band;          // tiles per band of the L2 rasterisation
  int use_tma_store;        // BF16 D through swizzled shared memory + TMA store (needs n % 8 == 0)
  GemmGrouping grouping;    // M-grouped MoE layouts (B is [num_groups * n, k]); default: dense
  // Split-K (dense 1D2D, unpaired tiles up to 128 x 128): the grid is launched in clusters of split_k CTAs, one output
  // tile per cluster; CTA r of a cluster takes the r-th share of the K-blocks, then sums the r-th share of the
  // tile's columns over all the CTAs' FP32 partials (read from their shared memory) in split order and stores it.
  int split_k = 1;
  // Split-K through global memory instead (no clusters): [tiles, split_k, BLOCK_M * BLOCK_N] FP32 partials, each in
  // the math threads' register order; nullptr: the cluster hand-over above.
  float* split_partials = nullptr;
};

// Arrivals of each output tile's splits in a split-K launch through global memory (kernels/split_k_global.cuh).
static __device__ unsigned int g_fp8_split_arrivals[kFp8SplitGlobalMaxTiles];

// Named barrier that staggers the two math warpgroups of a tile by one wave (raw PTX id, as above).
constexpr uint32_t kStaggerBarrier = 13;
// Named barriers of the dual-chain hand-over (raw PTX ids, as above): partial written / partial read.
constexpr uint32_t kDualPartialBarrier = 11;
constexpr uint32_t kDualFreeBarrier = 12;

// Dual-chain tiles: the chain that takes K-block i of a tile's n. The chains alternate batches of kBatch K-blocks;
// the K-blocks after the last whole batch go to the chain whose turn the next batch would be.
template <int kBatch>
__device__ __forceinline__ int DualChainOf(int i, int n) {
  const int whole_batches = n / kBatch;
  return (i < whole_batches * kBatch ? i / kBatch : whole_batches) % 2;
}

// The 1D2D promotion of one 8-column group of a 64-row slice: final += scale · accumulator, with s0 the scale of the
// thread's first row and s1 of the row 8 below (the WGMMA accumulator layout: 2 columns of each row per thread).
__device__ __forceinline__ void PromoteGroup(float* fin, const float* acc, float s0, float s1) {
  fin[0] = fmaf(s0, acc[0], fin[0]);
  fin[1] = fmaf(s0, acc[1], fin[1]);
  fin[2] = fmaf(s1, acc[2], fin[2]);
  fin[3] = fmaf(s1, acc[3], fin[3]);
}

// The 1D1D promotion of a 64-row slice: final += accumulator x (row scale x column scale), with the column scales
// of the stage's [BLOCK_N] floats (float2 4 g + quad: the thread's columns 8 g + 2 quad and + 1 of group g).
template <int kBlockN>
__device__ __forceinline__ void PromotePerColumn(float* fin, const float* acc, float sa0, float sa1,
                                                 const float2* sfb_stage, int quad) {
#pragma unroll
  for (int g = 0; g < kBlockN / 8; ++g) {
    const float2 col = sfb_stage[4 * g + quad];
    fin[4 * g + 0] = fmaf(sa0 * col.x, acc[4 * g + 0], fin[4 * g + 0]);
    fin[4 * g + 1] = fmaf(sa0 * col.y, acc[4 * g + 1], fin[4 * g + 1]);
    fin[4 * g + 2] = fmaf(sa1 * col.x, acc[4 * g + 2], fin[4 * g + 2]);
    fin[4 * g + 3] = fmaf(sa1 * col.y, acc[4 * g + 3], fin[4 * g + 3]);
  }
}

// Cluster-wide barrier of the split-K hand-over, split into its two halves. Not the `.aligned` forms: the producer
// warpgroup's threads reach it on diverged paths.
__device__ __forceinline__ void SplitKClusterArrive() { asm volatile("barrier.cluster.arrive.release;\n" ::: "memory"); }
__device__ __forceinline__ void SplitKClusterWait() { asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory"); }

// Address in the shared memory of CTA `rank` of this cluster of the object at `local` in this CTA.
__device__ __forceinline__ uint32_t PeerSmemAddress(const void* local, uint32_t rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n"
               : "=r"(remote)
               : "r"(cute::cast_smem_ptr_to_uint(local)), "r"(rank));
  return remote;
}

// 16-byte load from a peer CTA's shared memory (an address from PeerSmemAddress). Not volatile and no memory
// clobber, so that the compiler may issue a batch of them back to back; the cluster barrier before (a volatile asm
// with a memory clobber) orders them after the peers' stores.
__device__ __forceinline__ float4 LoadPeerSmem4(uint32_t remote) {
  float4 v;
  asm("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(remote));
  return v;
}

template <int N>
struct Fp8Wgmma;
#define JDG_DEFINE_FP8_WGMMA(N) \
  template <>                   \
  struct Fp8Wgmma<N> {          \
    using Op = cute::SM90::GMMA::MMA_64x##N##x32_F32E4M3E4M3_SS_TN<>; \
  };
JDG_DEFINE_FP8_WGMMA(16)
JDG_DEFINE_FP8_WGMMA(24)
JDG_DEFINE_FP8_WGMMA(32)
JDG_DEFINE_FP8_WGMMA(48)
JDG_DEFINE_FP8_WGMMA(64)
JDG_DEFINE_FP8_WGMMA(96)
JDG_DEFINE_FP8_WGMMA(112)
JDG_DEFINE_FP8_WGMMA(128)
JDG_DEFINE_FP8_WGMMA(144)
JDG_DEFINE_FP8_WGMMA(160)
JDG_DEFINE_FP8_WGMMA(176)
JDG_DEFINE_FP8_WGMMA(192)
#undef JDG_DEFINE_FP8_WGMMA

template <class Op, size_t... I>
__device__ __forceinline__ void WgmmaFma(uint64_t desc_a, uint64_t desc_b, float* d, bool accumulate,
                                         std::index_sequence<I...>) {
  Op::fma(desc_a, desc_b, d[I]...,
          accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}

// 4-byte cp.async (global -> shared, through L1) and an arrive on `bar` once this thread's earlier
// cp.asyncs have landed (.noinc: the barrier's expected count includes this arrival).
__device__ __forceinline__ void CopyAsync4(uint32_t smem_addr, const float* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_addr), "l"(src) : "memory");
}
__device__ __forceinline__ void ArriveWhenCopiesLand(RingBarrier& bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(cute::cast_smem_ptr_to_uint(&bar))
               : "memory");
}

// TMA load of one operand's 128-K slice at (k, row0) into `dst`: the whole tile, or, for an operand
// shared by a 2-CTA cluster, this CTA's half (kRowsPerCta rows) multicast into both CTAs' stages.
template <bool kMulticast, int kRowsPerCta>
__device__ __forceinline__ void LoadOperandSlice(const CUtensorMap* tma, uint64_t* mbar, uint8_t* dst, int k, int row0,
                                                 int cta_rank) {
  if constexpr (!kMulticast) {
    cute::SM90_TMA_LOAD_2D::copy(tma, mbar, kEvictNormal, dst, k, row0);
  } else {
    const int half = cta_rank * kRowsPerCta;
    cute::SM90_TMA_LOAD_MULTICAST_2D::copy(tma, mbar, uint16_t(0b11), kEvictNormal, dst + half * kFp8BlockK, k,
                                           row0 + half);
  }
}

template <int kBlockM, int kBlockN, BScale kBScale, int kClusterM, int kClusterN>
struct Fp8GemmTraits {
  static_assert(kBlockM == 64 || kBlockM == 128 || kBlockM == 256,
                "BLOCK_M is 64 (one consumer warpgroup), 128 (two) or 256 (two, in two 128-row waves)");
  static_assert(kBlockN % 16 == 0 || kBlockN == 24, "BLOCK_N must be a valid WGMMA N for FP8");
  static_assert(kBlockN <= 192, "accumulator + promoted copy must fit in 232 registers per thread");
  static_assert(kBlockM < 256 || (128 % kBlockN == 0 && (kBScale == BScale::kBlock128 || kBlockN == 128)),
                "BLOCK_M = 256 keeps two promoted copies: BLOCK_N <= 128 (one B scale row; 1D1D: 128)");
  static_assert(kClusterM * kClusterN <= 2, "clusters of one or two CTAs (along M or N)");
  static_assert(kClusterM == 1 || kBlockN % 16 == 0, "B multicast: each CTA loads a 1024-byte-aligned half");
  static_assert(kClusterN == 1 || (kBlockM / kClusterN) * kFp8BlockK % 1024 == 0,
                "A multicast: each CTA loads a 1024-byte-aligned half");
  static constexpr int kClusterSize = kClusterM * kClusterN;
  static constexpr int kBRowsPerCta = kBlockN / kClusterM;  // rows of the B tile each CTA of a cluster loads
  static constexpr int kARowsPerCta = kBlockM / kClusterN;  // rows of the A tile each CTA of a cluster loads
  static constexpr int kNumWaves = kBlockM == 256 ? 2 : 1;
  // Two consumer warpgroups on one 64-row tile, alternate K-block batches each (Fp8GemmDualChain).
  static constexpr bool kDualChain = Fp8GemmDualChain(kBlockM, kBlockN, kBScale);
  static constexpr int kNumMathWarpgroups = kBlockM == 64 && !kDualChain ? 1 : 2;
  static constexpr int kNumMathThreads = kNumMathWarpgroups * 128;
  static constexpr int kNumThreads = kNumMathThreads + 128;  // + one producer warpgroup
  // The other 64-row tiles (64 x 16, 64 x 32, 64 x 128, and the 1D1D 64 x 64) are compiled so that two CTAs fit on
  // one SM (launch registers <= 128 per thread; the math warpgroup then takes 208, the producer 40): a 64-row CTA's
  // K loop is one latency-bound chain (~440 cycles per K-block: WGMMA round trip, then the promotion), so a forced
  // split-K runs two chains per SM when its stages fit in half the shared memory (Fp8GemmConfig::two_per_sm). The
  // dual-chain tiles run their two chains in one CTA instead, one per SM.
  static constexpr int kMinCtasPerSm = kBlockM == 64 && !kDualChain ? 2 : 1;
  static constexpr int kMathRegisters = kBlockM == 64 && !kDualChain ? 208 : 232;
  // BLOCK_M = 256: the A (and 1D2D B) scales of each stage sit in shared memory, written by the producer
  // warpgroup's second warp or by TMA (1D1D B scales always arrive by TMA with the operands); the math warps
  // would otherwise issue 4 dependent global loads per slice per thread, with L1 almost all given to shared
  // memory. Smaller tiles keep their register loads: the scale area would cost them a pipeline stage
  // (measured: -8 %).
  static constexpr bool kScalesInSmem = kBlockM == 256;
  // 128-row tiles given MN-major A scales take them into shared memory by TMA as well (decided at run time:
  // the scale area, kBlockM floats per stage, exists only then; 1D2D B scales stay in registers, 1D1D ones
  // arrive by TMA anyway).
  static constexpr bool kSfaMaySmem = kBlockM == 128;
  static constexpr int kSmemA = kBlockM * kFp8BlockK;        // bytes per stage, multiple of 1024
  static constexpr int kSmemB = kBlockN * kFp8BlockK;
  static constexpr int kSmemSfb = Fp8GemmSfbStageBytes(kBlockN, kBScale);
  static constexpr int kSmemScales = Fp8GemmScaleStageBytes(kBlockM);  // [BLOCK_M] sfa + [4] sfb floats
  static constexpr int kStageBytes = kSmemA + kSmemB + kSmemSfb + kSmemScales;
  static constexpr bool kTmaStoreD = Fp8GemmHasSmemD(kBlockN, kBScale);
  static constexpr bool kStagedStoreD = Fp8GemmHasStagedD(kBlockM, kBlockN, kBScale);
  static_assert(8 * Fp8GemmStagedRowBytes(kBScale) ==
                    (kBScale == BScale::kPerChannel ? kStagedSlabBytes<float> : kStagedSlabBytes<__nv_bfloat16>),
                "the launch's D staging budget and the staged store's slab must agree");
  static constexpr int kSmemD = Fp8GemmSmemDBytes(kBlockM, kBlockN, kBScale);  // multiple of 1024
  static constexpr int kBarrierBytes = kFp8GemmBarrierBytesPerStage;  // full + empty barrier per stage
  static constexpr int kTxBytes = kSmemA + kSmemB + (kBScale == BScale::kPerChannel ? kBlockN * 4 : 0);
  // How many 128-column B scale blocks one tile can overlap: 1 when BLOCK_N divides 128 (tiles
  // never straddle), else at most (127 + BLOCK_N) / 128 + 1. (The tight bound, ceil((128 - gcd(BLOCK_N,
  // 128) + BLOCK_N) / 128), is 2 for 192, but ptxas then spills the 128 x 192 kernel: measured.)
  static constexpr int kScaleRows =
      kBScale != BScale::kBlock128 ? 1 : (128 % kBlockN == 0 ? 1 : (127 + kBlockN) / 128 + 1);
  static_assert(!kScalesInSmem || kScaleRows <= 4, "the stage's scale area holds 4 B scales");
  // The ragged walk and its row-masked epilogue are compiled only into tiles with registers to spare
  // (beside the 128 x 192 tile's 2 x 96 accumulators they spill: measured).
  static constexpr bool kMGrouped = kBScale == BScale::kBlock128;
  static constexpr bool kRaggedWalk = kMGrouped && kBlockN <= kMaxRaggedBlockN;
  // A 256-row M-grouped tile may compute only some of its two 128-row waves: contiguous GEMMs align experts
  // to 128 rows, so the waves may belong to different experts (the tile then runs its K loop once per wave,
  // each with its wave's expert: ContiguousSecondWaveGroup), and a ragged unit computes only the waves
  // holding rows of its group.
  static constexpr bool kPartialWaveTiles = kMGrouped && kBlockM == 256;
  // Split-K is compiled into the dense 1D2D tiles of one 128-row wave up to 128 wide (few tiles, long K: small M;
  // beside the wider tiles' accumulators its code spills: measured).
  // Unpaired tiles only: the launch's clusters are the splits of one tile.
  static constexpr bool kMaySplitK =
      kBScale == BScale::kBlock128 && kBlockM <= 128 && kBlockN <= kFp8SplitKMaxBlockN && kClusterM * kClusterN == 1;
  // The hand-over through global memory only up to 128 x 64 (in the 128 x 128 tile it spills: measured).
  static constexpr bool kMaySplitGlobal = kMaySplitK && Fp8GemmMaySplitGlobal(kBlockM, kBlockN);
  // K-blocks in flight per math warpgroup (dense or M-grouped 1D2D tiles of one wave, up to 64 wide). One 64-row
  // warpgroup's K loop is a latency chain: issue a K-block's WGMMAs, wait for them, promote, next (~440 cycles per
  // K-block against ~130 of tensor work for 64 x 64, session 16). With kKBatch accumulator sets it issues kKBatch
  // K-blocks back to back and promotes each as it completes, while the later ones run (2-14 % faster on the small-M
  // tiles, session 17). As many sets as fit beside the promoted copy without spilling (ptxas): 4 (64 x 16 / 64 x 32
  // at 208 registers; 64 x 64 as a dual-chain tile at 232: it took 3 at 208 before session 44). 128 x 128 tiles
  // without split-K (the pairs) take two sets: two warpgroups in step finish their WGMMAs together (they share the
  // tensor cores, interleaved) and promote together, so one set left the tensor cores idle during every promotion
  // (1D2D: 8-10 % faster at M = 4096, session 18). With split-K's code they spill.
  // The 1D1D 128 x 128 tiles (K-grouped weight gradients) take two sets as well: their promotion, a row scale x
  // column scale product per element plus the column scales' loads, is twice the 1D2D one.
  static constexpr int kKBatch = kNumWaves == 1 && kBScale == BScale::kBlock128 && kBlockN <= 64 && kScaleRows == 1
                                     ? 4
                                 : kNumWaves == 1 && kBlockM == 128 && kBlockN == 128 && !kMaySplitK
                                     ? 2
                                     : 1;
  // 256-row 1D2D tiles, whose two promoted copies leave no room for a second set, stagger their warpgroups instead:
  // the second one starts the CTA's first K loop when the first one's first wave has completed, so that each one's
  // promotion runs during the other's WGMMAs (3-4 % faster at 4096 x 4096 x 7168 and 4096 x 7168 x 16384, neutral at
  // K = 2048). Measured slower on the one-wave tiles (128 x 128, 128 x 192: 1-7 %) and on the 1D1D ones (3-4 %) when
  // every K loop staggered (session 18); once per CTA (session 27's form) the one-wave 128-row tiles without a second
  // accumulator set stagger too: 128 x 144-192 (the masked and 4096 x 2112 picks), whose two warpgroups otherwise
  // wait for their WGMMAs together and promote together, leaving the tensor cores idle for each promotion.
  static constexpr bool kStaggerWarpgroups =
      kBScale == BScale::kBlock128 && (kNumWaves == 2 || (kBlockM == 128 && kKBatch == 1 && !kMaySplitK));
  static_assert(!kStaggerWarpgroups || kKBatch == 1, "the batched K loop does not stagger");
  static_assert(!kDualChain || (kKBatch > 1 && !kScalesInSmem), "dual chains take batches; no scale-loader warp");

  static_assert(kStageBytes + kBarrierBytes == Fp8GemmStageBytes(kBlockM, kBlockN, kBScale),
                "stage layout and the heuristic's stage budget must agree");
  static constexpr int SmemBytes(int num_stages) { return kSmemD + num_stages * (kStageBytes + kBarrierBytes); }
};

template <int kBlockM, int kBlockN, BScale kBScale, int kClusterM, int kClusterN>
__global__ void __launch_bounds__(Fp8GemmTraits<kBlockM, kBlockN, kBScale, kClusterM, kClusterN>::kNumThreads,
                                  Fp8GemmTraits<kBlockM, kBlockN, kBScale, kClusterM, kClusterN>::kMinCtasPerSm)
    Sm90Fp8GemmKernel(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_a_tail,
                      const __grid_constant__ CUtensorMap tma_b,
                      const __grid_constant__ CUtensorMap tma_sfb, const __grid_constant__ CUtensorMap tma_sfa,
                      const __grid_constant__ CUtensorMap tma_d,
                      const Fp8GemmParams p, const int num_stages) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Traits = Fp8GemmTraits<kBlockM, kBlockN, kBScale, kClusterM, kClusterN>;
  using Barrier = RingBarrier;
  using Wgmma = typename Fp8Wgmma<kBlockN>::Op;
  constexpr int kAccums = kBlockN / 2;  // FP32 accumulators per thread for a 64 x BLOCK_N slice
  constexpr int kWaves = Traits::kNumWaves;
  constexpr int kScaleFloats = Traits::kSmemScales / 4;

  extern __shared__ __align__(1024) uint8_t smem[];
  // D staging: BF16 for TMA stores, [BLOCK_N/64 chunks][BLOCK_M rows][128 B], 128B-swizzled; or the per-warp slabs
  // of the staged register stores, [8 math warps][kStagedSlabBytes<D type>].
  uint8_t* smem_d = smem;
  uint8_t* smem_a = smem + Traits::kSmemD;
  uint8_t* smem_b = smem_a + num_stages * Traits::kSmemA;
  float* smem_sfb = reinterpret_cast<float*>(smem_b + num_stages * Traits::kSmemB);
  // A scales of a 128-row tile in shared memory (MN-major, by TMA) instead of registers.
  const bool sfa_smem_128 = Traits::kSfaMaySmem && p.sfa_mn_stride != 0;
  const int scale_floats = Traits::kScalesInSmem ? kScaleFloats : (sfa_smem_128 ? kBlockM : 0);  // per stage
  float* smem_scales = smem_sfb + num_stages * (Traits::kSmemSfb / 4);
  Barrier* full = reinterpret_cast<Barrier*>(smem_scales + num_stages * scale_floats);
  Barrier* empty = full + num_stages;

  // Read through a shuffle so the compiler knows it is warp-uniform: everything derived from it (the
  // WGMMA descriptors above all) then lives in uniform registers, with no R2UR before each WGMMA.
  const int warpgroup = __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0);
  const int lane = threadIdx.x % 32;
  // BLOCK_M = 256 with MN-major A scales: each stage's [BLOCK_M] scales arrive by TMA with the
  // operands (one 1 KB box instead of 256 4-byte copies through L1, 8 sectors per 32 bytes used).
  const bool sfa_by_tma = (Traits::kScalesInSmem || Traits::kSfaMaySmem) && p.sfa_mn_stride != 0;

  // In a cluster the two CTAs work on adjacent tiles that share one operand tile (B for M-blocks 2i
  // and 2i+1, A for N-blocks 2j and 2j+1): each loads half of it and multicasts it to both, so a
  // stage may be refilled only when the consumers of both CTAs have released it.
  const int cta_rank = Traits::kClusterSize > 1 ? int(cute::block_rank_in_cluster()) : 0;
  const bool k_grouped = kBScale == BScale::kPerChannel && p.grouping.group_k != nullptr;
  // K-grouped: the groups' walk order and K ranges, after the stage barriers (16-byte aligned: every stage area
  // is a multiple of 128 bytes). Built before the ring starts: its scratch is stage 0's A tile.
  KGroupedSlot* k_group_table = nullptr;
  if (k_grouped && KGroupedWalkTableBytes(p.grouping.num_groups) > 0) {
    k_group_table = reinterpret_cast<KGroupedSlot*>(empty + num_stages);
    BuildKGroupedWalk<kFp8BlockK>(p.grouping, p.num_k_blocks, k_group_table, reinterpret_cast<int*>(smem_a));
  }
  // (Dual-chain tiles: each stage is consumed and released by one of the two warpgroups.)
  constexpr int kReleasingWarpgroups = Traits::kDualChain ? 1 : Traits::kNumMathWarpgroups;
  InitStageRing<Traits::kClusterSize>(full, empty, num_stages, kReleasingWarpgroups * 4,
                                      Traits::kScalesInSmem ? 32 : 0);
  // Dual-chain tiles split the ring: chain c fills and consumes stages [c * ring_len, (c + 1) * ring_len) in order
  // (the launch makes num_stages even, each half at least a batch). Each chain then waits on every phase of its
  // stages' full barriers in turn. (In one shared ring a chain stepped over the other's stages, so it could wait on
  // a stage two phases past the one it had seen, which the parity wait cannot tell from the phase before it: a
  // late TMA landing was read as landed. Session 44: a few wrong elements at 64 x 7168 x 16384, 64 x 64 tiles.)
  const int ring_len = Traits::kDualChain ? num_stages / 2 : num_stages;

  // The scheduler walks cluster tiles (kClusterM M-blocks x kClusterN N-blocks); all CTAs see one order.
  TileScheduler sched(p.m, p.n, kBlockM * kClusterM, kBlockN * kClusterN, p.raster_band);
  const int first_tile = blockIdx.x / Traits::kClusterSize, tile_stride = gridDim.x / Traits::kClusterSize;
  const bool ragged = Traits::kRaggedWalk && p.grouping.group_ends != nullptr;
  // Tile `tile` of this CTA's walk: its M/N blocks, its group (expert), its K-block range (empty for a
  // padding tile or an empty group), whether its group's K layout is broken (K-grouped only) and, for a
  // 256-row contiguous tile whose waves belong to two experts, the second wave's expert (else -1): the
  // K range then runs twice, wave 0 with `group`'s B, wave 1 with `second_group`'s.
  auto next_tile = [&](int tile, int& m_block, int& n_block, int& group, int& second_group, int& kb_begin,
                       int& kb_end, bool& poisoned) -> bool {
    kb_begin = 0, poisoned = false, second_group = -1;
    if (ragged) {
      if (!NextRaggedTile<kBlockM, kBlockN, kClusterN>(p.grouping, p.m, p.n, tile, cta_rank, m_block, n_block,
                                                       group))
        return false;
      kb_end = group < 0 ? 0 : p.num_k_blocks;
      return true;
    }
    if (k_grouped) {
      // Odd rounds of the walk run backwards (boustrophedon): with the groups in descending K, a CTA that took one
      // of a round's last, shortest tiles takes one of the next round's first, longest ones.
      const int round = tile / tile_stride;
      if (k_group_table != nullptr && round % 2 == 1) tile = round * tile_stride + (tile_stride - 1 - (tile - round * tile_stride));
      if (!NextKGroupedTile<kFp8BlockK>(sched, p.grouping, p.num_k_blocks, tile, m_block, n_block, group, kb_begin,
                                        kb_end, poisoned, k_group_table))
        return false;
      // both CTAs of a cluster work on the same group
      if constexpr (kClusterM > 1) m_block = m_block * kClusterM + cta_rank;
      if constexpr (kClusterN > 1) n_block = n_block * kClusterN + cta_rank;
      return true;
    }
    // Split-K: consecutive walk entries are the splits of one tile (a cluster of split_k CTAs, one entry each:
    // split = the CTA's rank in its cluster).
    const int split = Traits::kMaySplitK && p.split_k > 1 ? tile % p.split_k : 0;
    if (Traits::kMaySplitK && p.split_k > 1) tile /= p.split_k;
    if (!NextGemmTile<kBlockM, kBlockN, kClusterM, kClusterN>(sched, p.grouping, p.m, p.n, tile, cta_rank, m_block,
                                                              n_block, group))
      return false;
    if constexpr (Traits::kPartialWaveTiles)
      second_group = ContiguousSecondWaveGroup(p.grouping, p.m, m_block * kBlockM, group);
    kb_end = group < 0 ? 0 : p.num_k_blocks;
    if (Traits::kMaySplitK && p.split_k > 1) {
      kb_begin = split * p.num_k_blocks / p.split_k;
      kb_end = group < 0 ? kb_begin : (split + 1) * p.num_k_blocks / p.split_k;
    }
    return true;
  };
  // Index of the first B scale row (of kScaleRows) covering tile column n0, for 128x128 B scales.
  auto sfb_row_index = [&](int group, int n0, int r) {
    const int num_n_scale_rows = (p.n + 127) / 128;
    return static_cast<int64_t>(max(group, 0) * num_n_scale_rows + min(n0 / 128 + r, num_n_scale_rows - 1)) *
           p.num_k_blocks;
  };

  if (warpgroup == Traits::kNumMathWarpgroups) {
    // ---------------- producer warpgroup: one thread issues every TMA load ----------------
    cutlass::arch::warpgroup_reg_dealloc<40>();
    const int producer_warp = (threadIdx.x - Traits::kNumMathThreads) / 32;
    if (threadIdx.x == Traits::kNumMathThreads) {
      cute::prefetch_tma_descriptor(&tma_a);
      if (kClusterN == 1 && p.a_tail_box_rows < Traits::kARowsPerCta) cute::prefetch_tma_descriptor(&tma_a_tail);
      cute::prefetch_tma_descriptor(&tma_b);
      if constexpr (kBScale == BScale::kPerChannel) cute::prefetch_tma_descriptor(&tma_sfb);
      if (sfa_by_tma) cute::prefetch_tma_descriptor(&tma_sfa);
      const uint32_t tx_bytes = Traits::kTxBytes + (sfa_by_tma ? kBlockM * 4 : 0);
      const uint32_t tail_tx_bytes = tx_bytes - (Traits::kARowsPerCta - p.a_tail_box_rows) * kFp8BlockK;
      int stage = 0, phase = 0;
      // Dual-chain tiles: the other chain's cursor in its half of the ring (see the consumers' ring_begin), stage |
      // phase << 16 (one register: the producer runs on 40), swapped with stage / phase around each of chain 1's
      // K-blocks.
      [[maybe_unused]] int other_cursor = ring_len;
      auto swap_cursors = [&] {
        const int cursor = stage | phase << 16;
        stage = other_cursor & 0xffff, phase = other_cursor >> 16, other_cursor = cursor;
      };
      int m_block, n_block, group, second_group, kb_begin, kb_end;
      bool poisoned;
      for (int tile = first_tile; next_tile(tile, m_block, n_block, group, second_group, kb_begin, kb_end, poisoned);
           tile += tile_stride) {
        const int a_row0 = m_block * kBlockM;
        // The tail box where it holds every row of A left (the last M-block's; a ragged tile may start elsewhere).
        // None for A pairs along N (compiled out: the 256 x 128 pair spilled with it).
        const bool a_tail = kClusterN == 1 && a_row0 + p.a_tail_box_rows >= p.m;
        for (int pass = 0; pass < (second_group >= 0 ? 2 : 1); ++pass) {
          // M-grouped: B is [G * n, k] and the tile multiplies its expert's rows. (A padding tile or an
          // empty K group has no K-blocks: nothing to load, the consumers write zeros or C.)
          const int b_row0 = (k_grouped ? 0 : (pass == 0 ? group : second_group) * p.n) + n_block * kBlockN;
          for (int kb = kb_begin; kb < kb_end; ++kb) {
            const bool chain1 =
                Traits::kDualChain && DualChainOf<Traits::kKBatch>(kb - kb_begin, kb_end - kb_begin) == 1;
            if (chain1) swap_cursors();
            empty[stage].wait(phase ^ 1);
            full[stage].arrive_and_expect_tx(a_tail ? tail_tx_bytes : tx_bytes);
            auto* mbar = reinterpret_cast<uint64_t*>(&full[stage]);
            LoadOperandSlice<(kClusterN > 1), Traits::kARowsPerCta>(a_tail ? &tma_a_tail : &tma_a, mbar,
                                                                    smem_a + stage * Traits::kSmemA,
                                                                    kb * kFp8BlockK, a_row0, cta_rank);
            LoadOperandSlice<(kClusterM > 1), Traits::kBRowsPerCta>(&tma_b, mbar, smem_b + stage * Traits::kSmemB,
                                                                    kb * kFp8BlockK, b_row0, cta_rank);
            if constexpr (kBScale == BScale::kPerChannel)
              cute::SM90_TMA_LOAD_2D::copy(&tma_sfb, mbar, kEvictNormal, smem_sfb + stage * (Traits::kSmemSfb / 4),
                                           n_block * kBlockN, kb);
            if constexpr (Traits::kScalesInSmem || Traits::kSfaMaySmem) {
              if (sfa_by_tma)  // rows past M read as zero (never stored)
                cute::SM90_TMA_LOAD_2D::copy(&tma_sfa, mbar, kEvictNormal, smem_scales + stage * scale_floats, a_row0, kb);
            }
            if (chain1) {
              if (++stage == 2 * ring_len) stage = ring_len, phase ^= 1;
              swap_cursors();
            } else if (++stage == ring_len) {
              stage = 0, phase ^= 1;
            }
          }
        }  // pass
      }
    } else if (Traits::kScalesInSmem && producer_warp == 1) {
      // Scale loader: once a stage is free, cp.async copies its BLOCK_M A scales and kScaleRows B
      // scales into the stage's scale area and each lane's `full` arrival fires when its copies land
      // (no registers held: the producer warpgroup runs on 40).
      int stage = 0, phase = 0;
      int m_block, n_block, group, second_group, kb_begin, kb_end;
      bool poisoned;
      for (int tile = first_tile; next_tile(tile, m_block, n_block, group, second_group, kb_begin, kb_end, poisoned);
           tile += tile_stride) {
        const int row = m_block * kBlockM + lane;
        for (int pass = 0; pass < (second_group >= 0 ? 2 : 1); ++pass) {
          const float* sfb_row = p.sfb + sfb_row_index(pass == 0 ? group : second_group, n_block * kBlockN,
                                                       min(lane, Traits::kScaleRows - 1));
          for (int kb = kb_begin; kb < kb_end; ++kb) {
            empty[stage].wait(phase ^ 1);
            const uint32_t scales = cute::cast_smem_ptr_to_uint(smem_scales + stage * kScaleFloats);
            if (!sfa_by_tma) {
#pragma unroll 1
              for (int i = 0; i < kBlockM / 32; ++i)
                CopyAsync4(scales + 4 * (32 * i + lane),
                           p.sfa + static_cast<int64_t>(min(row + 32 * i, p.m - 1)) * p.num_k_blocks + kb);
            }
            if constexpr (kBScale == BScale::kBlock128)
              if (lane < Traits::kScaleRows) CopyAsync4(scales + 4 * (kBlockM + lane), sfb_row + kb);
            ArriveWhenCopiesLand(full[stage]);
            if (++stage == num_stages) stage = 0, phase ^= 1;
          }
        }  // pass
      }
    }
    if (Traits::kMaySplitK && p.split_k > 1 && p.split_partials == nullptr) {
      // The two cluster barriers of the split-K hand-over (one tile per CTA), which count every thread.
      SplitKClusterArrive();
      SplitKClusterWait();
      SplitKClusterArrive();
      SplitKClusterWait();
    }
  } else {
    // ---------------- consumer warpgroups: WGMMA + FP32 promotion + epilogue ----------------
    cutlass::arch::warpgroup_reg_alloc<Traits::kMathRegisters>();
    const int warp_in_wg = (threadIdx.x / 32) % 4;
    const int quad = lane % 4;  // column pair within each 8-column group
    // Row of this thread's first accumulator in wave w (and that + 8): waves are 128 rows apart.
    // Dual-chain tiles: both warpgroups hold the tile's 64 rows; `chain` picks the K-block batches each takes.
    const int chain = Traits::kDualChain ? warpgroup : 0;
    const int row_wg = Traits::kDualChain ? 0 : warpgroup;
    const int wg_row_in_tile = row_wg * 64 + warp_in_wg * 16 + lane / 4;
    float accum[kAccums], final_acc[kWaves][kAccums];
    float accum_more[Traits::kKBatch > 1 ? Traits::kKBatch - 1 : 1][kAccums];  // sets 1.. of a K-block batch
    bool split_k_wait_pending = false;  // split-K: the second hand-over barrier, waited at exit
    bool staggered = false;  // kStaggerWarpgroups: the warpgroups were staggered once, on this CTA's first K loop
    // WGMMA descriptors of stage 0, wave 0, K-step 0 for this warpgroup's rows (and all of B). The
    // start address field (14 bits of 16-byte units) never carries: shared memory is < 256 KB.
    const uint64_t desc_a0 = SmemDescK128B(smem_a + row_wg * 64 * kFp8BlockK);
    const uint64_t desc_b0 = SmemDescK128B(smem_b);
    const uint32_t desc_a0_lo = uint32_t(desc_a0), desc_b0_lo = uint32_t(desc_b0);
    const uint64_t desc_a0_hi = desc_a0 & ~uint64_t(0xffffffffu), desc_b0_hi = desc_b0 & ~uint64_t(0xffffffffu);
    const int ring_begin = chain * ring_len, ring_end = ring_begin + ring_len;  // this chain's stages
    int stage = ring_begin, phase = 0;
    int m_block, n_block, group, second_group, kb_begin, kb_end;
    bool poisoned;
    for (int tile = first_tile; next_tile(tile, m_block, n_block, group, second_group, kb_begin, kb_end, poisoned);
         tile += tile_stride) {
      // m_block (n_block) may be past M (N) for the second CTA of a ragged last cluster pair: it
      // computes on zero-filled operands and stores nothing.
      const int row0 = m_block * kBlockM + wg_row_in_tile, row1 = row0 + 8;  // wave 0

      // A masked 128-row tile whose rows for this warpgroup (its 64) all lie past its expert's masked_m: the
      // warpgroup issues no WGMMAs, so the other one has the tensor cores to itself (such tiles end each expert
      // whose count is <= 64 past a multiple of 128: a third of the bench's masked tiles at 4 x 256 x 7168 x 2048).
      // It still waits on and releases every stage and runs its promotion and epilogue on stale accumulators:
      // those rows of D are unspecified for the masked form.
      bool idle_rows = false;
      // (Not in the batched K loops of the narrower tiles: there the flag spilled, 128 x 64.)
      if constexpr (kWaves == 1 && kBlockM == 128 && Traits::kKBatch == 1) {
        if (p.grouping.masked_m != nullptr) {
          const int rows = MaskedGroupRows(p.grouping, group);
          idle_rows = (m_block % (p.grouping.max_m / kBlockM)) * kBlockM + warpgroup * 64 >= rows;
        }
      }

      const int n0 = n_block * kBlockN;
      // The loops below count K-blocks from the tile's first (kb_begin, non-zero for K-grouped GEMMs).
      const int num_k_blocks = kb_end - kb_begin;
      // Register-loaded scales (BLOCK_M <= 128): rows past M are clamped (never stored). A BLOCK_N-wide
      // tile may overlap up to kScaleRows of the 128-column B scale blocks (e.g. 3 for BLOCK_N = 176
      // starting at column 112).
      const int64_t sfa_kb_step = p.sfa_mn_stride != 0 ? p.sfa_mn_stride : 1;
      const int64_t sfa_row_step = p.sfa_mn_stride != 0 ? 1 : p.num_k_blocks;
      const float* sfa0 = p.sfa + min(row0, p.m - 1) * sfa_row_step + kb_begin * sfa_kb_step;
      const float* sfa1 = p.sfa + min(row1, p.m - 1) * sfa_row_step + kb_begin * sfa_kb_step;
      const float* sfb_rows[Traits::kScaleRows];
      const int col_offset = n0 % 128;  // this tile's first column inside its first scale block
      if constexpr (kBScale == BScale::kBlock128) {
#pragma unroll
        for (int r = 0; r < Traits::kScaleRows; ++r) sfb_rows[r] = p.sfb + sfb_row_index(group, n0, r) + kb_begin;
      }
#pragma unroll
      for (int w = 0; w < kWaves; ++w) {
#pragma unroll
        for (int i = 0; i < kAccums; ++i) final_acc[w][i] = 0.0f;
      }

      float sa[kWaves][2], sb[Traits::kScaleRows];
      if constexpr (!Traits::kScalesInSmem) {
        if (!sfa_smem_128) sa[0][0] = __ldg(sfa0), sa[0][1] = __ldg(sfa1);
        if constexpr (kBScale == BScale::kBlock128) {
#pragma unroll
          for (int r = 0; r < Traits::kScaleRows; ++r) sb[r] = __ldg(sfb_rows[r]);
        }
      }

      // Issues one 128-K slice of wave w (4 x m64nBLOCK_Nk32 WGMMAs) from stage `s` into `acc` (`accum`, or a set of
      // a K-block batch). The two warpgroups issue independently: a named-barrier token ring that made them take
      // turns (so that one's promotion overlapped the other's WGMMAs) measured 1.5-2.5 % slower on every FP8 tile
      // (H200, session 14).
      // Descriptors differ from the stage-0 ones only in the start address (16-byte units, the low word): 32-bit adds
      // on the low word, the high word a constant. (64-bit adds of a sign-extended offset, recomputed from the stage
      // index after the full-barrier wait, put ~30 dependent uniform instructions between that wait and the first
      // WGMMA of every K-block.) `stage_lo_a/b` are the low words of stage s's wave-0 descriptors.
      auto issue_at = [&](uint32_t stage_lo_a, uint32_t stage_lo_b, int w, float* acc) {
        if (idle_rows) return;  // no WGMMA: the stage is still waited on and released by the caller
        const uint32_t lo_a = stage_lo_a + uint32_t((w * 128 * kFp8BlockK) >> 4);
#pragma unroll
        for (int i = 0; i < kAccums; ++i) cute::warpgroup_fence_operand(acc[i]);
        cute::warpgroup_arrive();
#pragma unroll
        for (int k = 0; k < kFp8BlockK / 32; ++k)
          WgmmaFma<Wgmma>(desc_a0_hi | (lo_a + k * 2), desc_b0_hi | (stage_lo_b + k * 2), acc, k > 0,
                          std::make_index_sequence<kAccums>{});
        cute::warpgroup_commit_batch();
      };
      auto stage_desc_lo_a = [&](int s) { return desc_a0_lo + uint32_t((s * Traits::kSmemA) >> 4); };
      auto stage_desc_lo_b = [&](int s) { return desc_b0_lo + uint32_t((s * Traits::kSmemB) >> 4); };
      auto issue = [&](int s, int w, float* acc) { issue_at(stage_desc_lo_a(s), stage_desc_lo_b(s), w, acc); };

      // Traits::kStaggerWarpgroups, once per CTA (its first K loop with K-blocks): warpgroup 1 waits (bar.sync) before
      // its first issue, warpgroup 0 arrives (bar.arrive, no wait) once its first wave's WGMMAs completed; each passes
      // the barrier once. The offset then persists, warpgroup 1 reaching each tile's end (and its epilogue) later than
      // warpgroup 0, instead of costing a wave of warpgroup 1's WGMMAs at every tile (staggering every K loop was
      // 0.3-1.3 % slower at M = 4096, session 27). Decided before the loop, so that the loop tests one flag.
      auto stagger_before_loop = [&](bool loop_has_k_blocks) -> bool {  // whether this loop's first wave releases it
        if constexpr (Traits::kStaggerWarpgroups) {
          if (staggered || !loop_has_k_blocks) return false;
          staggered = true;
          if (warpgroup == 1)
            NamedBarrierSync<kStaggerBarrier, Traits::kNumMathThreads>();
          return warpgroup == 0;
        }
        return false;
      };
      auto stagger_release = [&]() {
        NamedBarrierArrive<kStaggerBarrier, Traits::kNumMathThreads>();
      };

      // Accumulator set j of a K-block batch (set 0 is `accum`).
      auto batch_set = [&]<int kJ>() -> float* {
        if constexpr (kJ == 0) return accum;
        else return accum_more[kJ - 1];
      };
      // Issues kKBatch K-blocks (one stage each) into their own accumulator sets, then, as each completes,
      // releases its stage and promotes it: the later K-blocks' WGMMAs run during the earlier ones' wait and
      // promotion. Nothing is in flight across the loop's back edge (ptxas would serialise every WGMMA).
      // Returns the K-blocks done; the caller runs the remainder one at a time.
      auto batched_k_loop = [&]() -> int {
        constexpr int kBatch = Traits::kKBatch;
        int kb = 0;
        for (; kb + kBatch <= num_k_blocks; kb += kBatch) {
          if constexpr (Traits::kDualChain) {
            if ((kb / kBatch) % 2 != chain) continue;  // the other chain's batch (its stages are its own)
          }
          // This batch's register-loaded scales and their products, read before its stages are waited on and its
          // WGMMAs issued: read after the issue (as before session 44), ptxas hoisted each set's WGMMA wait above the
          // previous set's promotion to cover the loads, so all promotions ran after the batch's last WGMMA, with the
          // tensor cores idle. (1D1D: the row scales; its column scales are read from each set's stage just before
          // its promotion, 32 registers at a time.)
          float s0[kBatch], s1[kBatch];
          if (!sfa_smem_128) {
#pragma unroll
            for (int j = 0; j < kBatch; ++j) {
              const float a0 = __ldg(sfa0 + (kb + j) * sfa_kb_step), a1 = __ldg(sfa1 + (kb + j) * sfa_kb_step);
              const float b = kBScale == BScale::kBlock128 ? __ldg(sfb_rows[0] + kb + j) : 1.0f;
              s0[j] = a0 * b, s1[j] = a1 * b;
            }
          }
          int batch_stage[kBatch];
          [&]<int... kJ>(std::integer_sequence<int, kJ...>) {
            ([&] {
              batch_stage[kJ] = stage;
              full[stage].wait(phase);
              issue(stage, 0, batch_set.template operator()<kJ>());
              if (++stage == ring_end) stage = ring_begin, phase ^= 1;
            }(), ...);
          }(std::make_integer_sequence<int, kBatch>{});
          if (sfa_smem_128) {  // 128-row tiles' A scales staged by TMA: read once their stages have landed
#pragma unroll
            for (int j = 0; j < kBatch; ++j) {
              const float* scales = smem_scales + batch_stage[j] * kBlockM;
              const float b = kBScale == BScale::kBlock128 ? __ldg(sfb_rows[0] + kb + j) : 1.0f;
              s0[j] = scales[wg_row_in_tile] * b, s1[j] = scales[wg_row_in_tile + 8] * b;
            }
          }
          [&]<int... kJ>(std::integer_sequence<int, kJ...>) {
            ([&] {
              float* acc = batch_set.template operator()<kJ>();
              cute::warpgroup_wait<kBatch - 1 - kJ>();
#pragma unroll
              for (int i = 0; i < kAccums; ++i) cute::warpgroup_fence_operand(acc[i]);
              if constexpr (kBScale == BScale::kBlock128) {
                ReleaseStage<Traits::kClusterSize>(empty[batch_stage[kJ]], lane);
#pragma unroll
                for (int g = 0; g < kBlockN / 8; ++g) PromoteGroup(&final_acc[0][4 * g], &acc[4 * g], s0[kJ], s1[kJ]);
              } else {
                PromotePerColumn<kBlockN>(
                    final_acc[0], acc, s0[kJ], s1[kJ],
                    reinterpret_cast<const float2*>(smem_sfb + batch_stage[kJ] * (Traits::kSmemSfb / 4)), quad);
                __syncwarp();  // released after the column scales' loads, as in the one-set loop
                ReleaseStageAfterLoads<Traits::kClusterSize>(empty[batch_stage[kJ]], lane);
              }
            }(), ...);
          }(std::make_integer_sequence<int, kBatch>{});
        }
        return kb;
      };

      // The K loop over the waves in kWaveMask (bit w: wave w). The mask is a template argument so that
      // after unrolling the skipped waves vanish: the loop of all waves compiles as if the two-pass path
      // did not exist (a run-time wave test in it cost ~12 % at 4096 x 4096 x 7168: measured). kColOffset is
      // the tile's first column inside its first 128-column B scale block (col_offset), for tiles that
      // straddle scale blocks: fixed at compile time, each 8-column group's scale row is too, and the
      // promotion multiplies sa . sb once per scale row instead of once per group.
      auto k_loop = [&]<int kWaveMask, int kColOffset>() {
        constexpr int kLastWave = kWaveMask >> 1 ? 1 : 0;
        int kb = 0;
        if constexpr (Traits::kKBatch > 1) {
          kb = batched_k_loop();
          if constexpr (Traits::kDualChain) {
            // The K-blocks after the last whole batch belong to the chain whose turn the next batch would be.
            if (DualChainOf<Traits::kKBatch>(kb, num_k_blocks) != chain) kb = num_k_blocks;
          }
          if (kb < num_k_blocks) {  // the remainder's first scales (those read into registers)
            if (!sfa_smem_128) sa[0][0] = __ldg(sfa0 + kb * sfa_kb_step), sa[0][1] = __ldg(sfa1 + kb * sfa_kb_step);
            if constexpr (kBScale == BScale::kBlock128) sb[0] = __ldg(sfb_rows[0] + kb);
          }
        }
        // Whether the next K-block's stage was seen full during this one's last promotion (its full-barrier test is
        // issued right after the stage release, so that its latency overlaps the promotion's FFMAs instead of
        // sitting between the last promotion and the next K-block's first WGMMA).
        bool next_full = false;
        // This K-block's stage descriptors, carried from the previous K-block (advanced with the ring).
        uint32_t cur_lo_a = stage_desc_lo_a(stage), cur_lo_b = stage_desc_lo_b(stage);
        bool stagger_pending = stagger_before_loop(kb < num_k_blocks);
        // 1D2D: two K-blocks per loop iteration (ptxas keeps the remainder), so that the ring's wrap is predicated
        // rather than a branch and the second K-block's barrier test, scale reads and descriptors may be scheduled
        // into the first one's promotion, as in DeepGEMM's loop, which its JIT unrolls 8 K-blocks deep (RESULTS
        // session 31). H100, session 36: 2-2.5 % faster at K >= 7168, 0-3 % on the contiguous and masked anchors,
        // 2 % slower at K = 512; four deep lost 5 % on the 128 x 176 pairs. (1D1D: its 256-row tiles spill 84 bytes
        // unrolled.)
#pragma unroll(kBScale == BScale::kBlock128 ? 2 : 1)
        for (; kb < num_k_blocks; ++kb) {
          if (!next_full) full[stage].wait(phase);

          [[maybe_unused]] float next_sa0 = 0.0f, next_sa1 = 0.0f, next_sb[Traits::kScaleRows];  // register-loaded scales only
#pragma unroll
          for (int w = 0; w < kWaves; ++w) {
            if (!((kWaveMask >> w) & 1)) continue;
            constexpr int kFirstWave = kWaveMask & 1 ? 0 : 1;
            issue_at(cur_lo_a, cur_lo_b, w, accum);
            if constexpr (!Traits::kScalesInSmem) {
              // Fetch the next slice's scales while the tensor cores work (L1-resident after the first).
              const int kb_next = min(kb + 1, num_k_blocks - 1);
              if (!sfa_smem_128)
                next_sa0 = __ldg(sfa0 + kb_next * sfa_kb_step), next_sa1 = __ldg(sfa1 + kb_next * sfa_kb_step);
              if constexpr (kBScale == BScale::kBlock128) {
#pragma unroll
                for (int r = 0; r < Traits::kScaleRows; ++r) next_sb[r] = __ldg(sfb_rows[r] + kb_next);
              }
            }
            if constexpr (Traits::kScalesInSmem) {
              // Read while the WGMMAs run (and before the stage is released below).
              const float* scales = smem_scales + stage * kScaleFloats;
              sa[w][0] = scales[w * 128 + wg_row_in_tile], sa[w][1] = scales[w * 128 + wg_row_in_tile + 8];
#pragma unroll
              for (int r = 0; r < Traits::kScaleRows; ++r) sb[r] = scales[kBlockM + r];
            } else if (sfa_smem_128) {
              const float* scales = smem_scales + stage * kBlockM;
              sa[0][0] = scales[wg_row_in_tile], sa[0][1] = scales[wg_row_in_tile + 8];
            }
            // Per-column B scales of this slice (1D1D) sit in shared memory next to the stage's tiles. The first
            // kEarlyGroups groups' are read while the WGMMAs run (the promotion waited for these loads after the
            // WGMMA wait); all of them would spill with two waves' promoted copies live (BLOCK_M = 256).
            [[maybe_unused]] constexpr int kEarlyGroups = kWaves == 1 ? kBlockN / 8 : kBlockN / 16;
            [[maybe_unused]] float2 col_scale[kBlockN / 8];
            [[maybe_unused]] const float2* sfb_stage =
                reinterpret_cast<const float2*>(smem_sfb + stage * (Traits::kSmemSfb / 4));
            if constexpr (kBScale == BScale::kPerChannel) {
#pragma unroll
              for (int g = 0; g < kEarlyGroups; ++g) col_scale[g] = sfb_stage[4 * g + quad];
            }
            cute::warpgroup_wait<0>();
#pragma unroll
            for (int i = 0; i < kAccums; ++i) cute::warpgroup_fence_operand(accum[i]);
            if (w == kFirstWave && stagger_pending) stagger_pending = false, stagger_release();
            if constexpr (kBScale == BScale::kPerChannel) {
#pragma unroll
              for (int g = kEarlyGroups; g < kBlockN / 8; ++g) col_scale[g] = sfb_stage[4 * g + quad];
            }

            float* fin = final_acc[w];
            if constexpr (kBScale == BScale::kBlock128) {
              if (w == kLastWave) {
                // The next K-block's stage and its full phase, tested early (1D1D releases later, without it).
                const bool ring_wraps = stage + 1 == ring_end;
                const int next_stage = ring_wraps ? ring_begin : stage + 1, next_phase = ring_wraps ? phase ^ 1 : phase;
                ReleaseStage<Traits::kClusterSize>(empty[stage], lane);
                next_full = full[next_stage].test_wait(uint32_t(next_phase));
              }
#pragma unroll
              for (int g = 0; g < kBlockN / 8; ++g) {
                // Scale row of this 8-column group, selected without indexing registers at run time.
                [[maybe_unused]] const int row = (kColOffset + 8 * g) >> 7;  // (unused with one scale row)
                float b_scale = sb[0];
                if constexpr (Traits::kScaleRows > 1) b_scale = row >= 1 ? sb[1] : b_scale;
                if constexpr (Traits::kScaleRows > 2) b_scale = row >= 2 ? sb[2] : b_scale;
                PromoteGroup(&fin[4 * g], &accum[4 * g], sa[w][0] * b_scale, sa[w][1] * b_scale);
              }
            } else {
              const float sa0 = sa[w][0], sa1 = sa[w][1];
#pragma unroll
              for (int g = 0; g < kBlockN / 8; ++g) {
                fin[4 * g + 0] = fmaf(sa0 * col_scale[g].x, accum[4 * g + 0], fin[4 * g + 0]);
                fin[4 * g + 1] = fmaf(sa0 * col_scale[g].y, accum[4 * g + 1], fin[4 * g + 1]);
                fin[4 * g + 2] = fmaf(sa1 * col_scale[g].x, accum[4 * g + 2], fin[4 * g + 2]);
                fin[4 * g + 3] = fmaf(sa1 * col_scale[g].y, accum[4 * g + 3], fin[4 * g + 3]);
              }
              // Released after the promotion, with a CTA-scope fence first (ReleaseStageAfterLoads): an LDS still
              // queued when the producer (for a pair, the peer CTA's) sees the stage free would read what TMA
              // refills (suspected cause of a 1-in-6 wrong element in test_accumulate_into_c without the turn ring).
              // (No early test of the next stage's full barrier here: after the 1D1D release it cost the 256 x 128
              // tiles 1.6 %, session 32.)
              if (w == kLastWave) {
                __syncwarp();
                ReleaseStageAfterLoads<Traits::kClusterSize>(empty[stage], lane);
              }
            }
          }
          if constexpr (!Traits::kScalesInSmem) {
            if (!sfa_smem_128) sa[0][0] = next_sa0, sa[0][1] = next_sa1;
            if constexpr (kBScale == BScale::kBlock128) {
#pragma unroll
              for (int r = 0; r < Traits::kScaleRows; ++r) sb[r] = next_sb[r];
            }
          }
          if (++stage == ring_end) {
            stage = ring_begin, phase ^= 1;
            cur_lo_a = stage_desc_lo_a(ring_begin), cur_lo_b = stage_desc_lo_b(ring_begin);
          } else {
            cur_lo_a += uint32_t(Traits::kSmemA >> 4), cur_lo_b += uint32_t(Traits::kSmemB >> 4);
          }
        }
      };
      // The K loop for this tile's column offset (one instance per offset a BLOCK_N-wide tile can have: the
      // multiples of gcd(BLOCK_N, 128); one for tiles that never straddle).
      auto k_loop_at_offset = [&]<int kWaveMask>() {
        if constexpr (Traits::kScaleRows == 1) {
          k_loop.template operator()<kWaveMask, 0>();
        } else {
          constexpr int kOffsetStep = std::gcd(kBlockN, 128);
          [&]<int... kI>(std::integer_sequence<int, kI...>) {
            ((col_offset == kI * kOffsetStep ? (k_loop.template operator()<kWaveMask, kI * kOffsetStep>(), 0) : 0), ...);
          }(std::make_integer_sequence<int, 128 / kOffsetStep>{});
        }
      };
      constexpr int kAllWaves = (1 << kWaves) - 1;
      if constexpr (Traits::kPartialWaveTiles) {
        int waves = kAllWaves;
        if (ragged) {  // only the waves holding rows of the unit's group (or of the zero tail)
          int lo, hi;
          RaggedTileRows<kBlockM>(p.grouping, p.m, m_block, group, lo, hi);
          const int mid = m_block * kBlockM + 128;
          waves = (lo < mid ? 1 : 0) | (hi > mid ? 2 : 0);
        }
        if (second_group >= 0) {
          // A two-expert contiguous tile runs the K range twice: wave 0 in the first pass, wave 1 in the
          // second (the scales of each stage are in shared memory, written for the stage's pass).
          k_loop_at_offset.template operator()<1>();
          k_loop_at_offset.template operator()<2>();
        } else if (waves == 1) {
          k_loop_at_offset.template operator()<1>();
        } else if (waves == 2) {
          k_loop_at_offset.template operator()<2>();
        } else {
          k_loop_at_offset.template operator()<kAllWaves>();
        }
      } else {
        k_loop_at_offset.template operator()<kAllWaves>();
      }

      if constexpr (Traits::kDualChain) {
        // Chain 1 hands its partial to chain 0 (one float per accumulator and thread, the 128 threads' floats of an
        // accumulator adjacent), which adds it in a fixed order and stores the tile; chain 1 waits until it is read,
        // so that its next tile's partial cannot overwrite it. Chain 1 keeps zeros (split-K parks them, unstored).
        const int partial_offset = Traits::kSmemD - Fp8GemmDualPartialBytes(kBlockM, kBlockN, kBScale);
        float* partial = reinterpret_cast<float*>(smem_d + partial_offset) + threadIdx.x % 128;
        if (chain == 1) {
#pragma unroll
          for (int i = 0; i < kAccums; ++i) partial[i * 128] = final_acc[0][i], final_acc[0][i] = 0.0f;
          NamedBarrierArrive<kDualPartialBarrier, Traits::kNumMathThreads>();
          NamedBarrierSync<kDualFreeBarrier, Traits::kNumMathThreads>();
        } else {
          NamedBarrierSync<kDualPartialBarrier, Traits::kNumMathThreads>();
#pragma unroll
          for (int i = 0; i < kAccums; ++i) final_acc[0][i] += partial[i * 128];
          NamedBarrierArrive<kDualFreeBarrier, Traits::kNumMathThreads>();
        }
      }
      // Split-K: the 8-column groups of the tile this CTA reduces and stores (all of them without split-K).
      int stored_g_begin = 0, stored_g_end = kBlockN / 8;
      if constexpr (Traits::kMaySplitK) {
        if (Traits::kMaySplitGlobal && p.split_k > 1 && p.split_partials != nullptr) {
          // Split-K hand-over through global memory (no cluster; one tile per CTA, walk entry = blockIdx.x): the tile's
          // last CTA stores it, the others are done. A dual-chain tile's partial is chain 0's alone (chain 1 handed its
          // share over above and stores nothing). The verdict goes through the stage ring's idle first word.
          if (Traits::kDualChain && chain == 1) continue;
          constexpr int kHandThreads = Traits::kDualChain ? 128 : Traits::kNumMathThreads;
          if (!SplitKGlobalHandOver<kBlockN / 8, kHandThreads, kFp8MaxSplitGlobal>(
                  final_acc[0], p.split_partials, g_fp8_split_arrivals, int(blockIdx.x) / p.split_k,
                  int(blockIdx.x) % p.split_k, p.split_k, int(threadIdx.x) % kHandThreads,
                  reinterpret_cast<volatile int*>(smem_a)))
            continue;
        } else if (p.split_k > 1) {
          // Split-K hand-over through distributed shared memory. The cluster holds this tile's splits (CTA r: split
          // r) and nothing else, so once every WGMMA of the tile has completed the stage ring is free: each CTA
          // parks its partial there (one float4 per 8-column group and thread, the math threads' float4s of a
          // group adjacent). Then CTA r sums the r-th share of the column groups over all splits, in split order
          // (deterministic), reading the others' partials with 16-byte cluster loads, and stores that share:
          // each CTA reads (split - 1) / split of a tile, in parallel, instead of CTA 0 reading split - 1 tiles.
          // The second cluster barrier, waited at exit, keeps each CTA's shared memory alive until all have read it.
          constexpr int kGroups = kBlockN / 8;
          float4* parked = reinterpret_cast<float4*>(smem_a) + threadIdx.x;
          const uint32_t split = cute::block_rank_in_cluster();
          NamedBarrierSync<kSplitKBarrier, Traits::kNumMathThreads>();
#pragma unroll
          for (int g = 0; g < kGroups; ++g)
            parked[g * Traits::kNumMathThreads] = make_float4(final_acc[0][4 * g], final_acc[0][4 * g + 1],
                                                              final_acc[0][4 * g + 2], final_acc[0][4 * g + 3]);
          SplitKClusterArrive();
          SplitKClusterWait();
          stored_g_begin = int(split) * kGroups / p.split_k;
          stored_g_end = (int(split) + 1) * kGroups / p.split_k;
          uint32_t peer[kFp8MaxSplitK];
#pragma unroll
          for (int r = 0; r < kFp8MaxSplitK; ++r) peer[r] = r < p.split_k ? PeerSmemAddress(parked, uint32_t(r)) : 0;
#pragma unroll
          for (int g = 0; g < kGroups; ++g) {
            if (g < stored_g_begin || g >= stored_g_end) continue;
            float4 part[kFp8MaxSplitK];
#pragma unroll
            for (int r = 0; r < kFp8MaxSplitK; ++r) {
              if (r < p.split_k && uint32_t(r) != split)
                part[r] = LoadPeerSmem4(peer[r] + g * Traits::kNumMathThreads * 16);
            }
            float* acc = &final_acc[0][4 * g];
            float4 total = split == 0 ? make_float4(acc[0], acc[1], acc[2], acc[3]) : part[0];
#pragma unroll
            for (int r = 1; r < kFp8MaxSplitK; ++r) {
              if (r < p.split_k) {
                const float4 v = uint32_t(r) == split ? make_float4(acc[0], acc[1], acc[2], acc[3]) : part[r];
                total = make_float4(total.x + v.x, total.y + v.y, total.z + v.z, total.w + v.w);
              }
            }
            acc[0] = total.x, acc[1] = total.y, acc[2] = total.z, acc[3] = total.w;
          }
          SplitKClusterArrive();
          split_k_wait_pending = true;
        }
      }
      if constexpr (Traits::kDualChain) {
        if (chain == 1) continue;  // chain 0 stores the tile
      }
      if (kBScale == BScale::kPerChannel && poisoned) {
#pragma unroll
        for (int w = 0; w < kWaves; ++w) {
#pragma unroll
          for (int i = 0; i < kAccums; ++i) final_acc[w][i] = __int_as_float(0x7fc00000);  // broken K layout: NaN
        }
      }
      if constexpr (Traits::kMGrouped) {
        if (p.grouping.row_group != nullptr) {
          // Rows of their 128-row block's expert (the block's first row's) keep their values, padding rows
          // (-1) store 0, and a row of another expert (a segment not aligned to 128 rows: the layout
          // contract is broken) stores NaN, so a bad device-side layout is visible instead of silently
          // using the wrong weights.
#pragma unroll
          for (int w = 0; w < kWaves; ++w) {
            const int wave_group = w == 0 ? (kWaves == 1 ? group : GemmRowGroup(p.grouping, p.m, m_block * kBlockM))
                                          : GemmRowGroup(p.grouping, p.m, m_block * kBlockM + 128 * w);
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int row_group = GemmRowGroup(p.grouping, p.m, (h == 0 ? row0 : row1) + 128 * w);
              const float fill = row_group < 0 ? 0.0f : __int_as_float(0x7fc00000);
              if (row_group != wave_group || wave_group < 0) {
#pragma unroll
                for (int g = 0; g < kBlockN / 8; ++g)
                  final_acc[w][4 * g + 2 * h] = fill, final_acc[w][4 * g + 2 * h + 1] = fill;
              }
            }
          }
        }
      }

      // ---------------- epilogue ----------------
      // The rows this unit stores: the tile's rows below M, or (ragged) its group's rows in the tile.
      // A warpgroup whose rows (64 per wave) all belong to the unit stores with TMA; a ragged tile
      // straddling groups stores its group's rows through registers.
      int row_lo = m_block * kBlockM, row_hi = min(p.m, row_lo + kBlockM);  // empty past M (2nd CTA of a pair)
      bool wg_rows_whole = true;
      if constexpr (Traits::kRaggedWalk) {
        if (ragged) RaggedTileRows<kBlockM>(p.grouping, p.m, m_block, group, row_lo, row_hi);
        const int wg_row0 = m_block * kBlockM + row_wg * 64;
        wg_rows_whole = row_lo <= wg_row0 && min(wg_row0 + 64 + 128 * (kWaves - 1), p.m) <= row_hi;
      }
      if constexpr (Traits::kTmaStoreD) {
        if (p.use_tma_store && wg_rows_whole && stored_g_end - stored_g_begin == kBlockN / 8) {
          // Registers -> swizzled shared memory (StageBf16Swizzled: the 16-byte unit index is XORed with
          // the row) -> one TMA store per 64-column chunk of each of this warpgroup's 64-row slices.
          // The store is asynchronous: the warpgroup goes on to the next tile and waits for the smem
          // reads only before it overwrites the staging buffer.
          const bool leader = threadIdx.x % 128 == 0;
          const uint32_t barrier_id = 1 + warpgroup;
          if (leader) cute::tma_store_wait<0>();
          cutlass::arch::NamedBarrier::sync(128, barrier_id);
#pragma unroll
          for (int w = 0; w < kWaves; ++w)
            StageBf16Swizzled<kBlockN, kBlockM * 128>(
                final_acc[w], cute::cast_smem_ptr_to_uint(smem_d + (w * 128 + warpgroup * 64) * 128), warp_in_wg, lane);
          cutlass::arch::fence_view_async_shared();
          cutlass::arch::NamedBarrier::sync(128, barrier_id);
          if (leader) {
#pragma unroll
            for (int w = 0; w < kWaves; ++w) {
              const int slice_row0 = m_block * kBlockM + w * 128 + warpgroup * 64;
              uint8_t* wg_staging = smem_d + (w * 128 + warpgroup * 64) * 128;
              if (slice_row0 < p.m) {
#pragma unroll
                for (int chunk = 0; chunk < kBlockN / 64; ++chunk)
                  if (n0 + 64 * chunk < p.n)
                    TmaStoreEvictFirst2D(&tma_d, wg_staging + chunk * (kBlockM * 128), n0 + 64 * chunk, slice_row0);
              }
            }
            cute::tma_store_arrive();
          }
          continue;
        }
      }
      const int64_t d_row0 = k_grouped ? int64_t(group) * p.m : 0;  // K-grouped D is [G * m, n]
      // Registers -> global memory, bounds-checked (staged where Traits::kStagedStoreD allows; direct for 64-row
      // tiles, split-K shares and rows that are not 16-byte multiples).
      const bool n_even = (p.n % 2) == 0;
      // Calls fn(w, g, h, offset, pair) for each of this thread's element pairs that the unit stores.
      auto for_each_stored_pair = [&](auto&& fn) {
#pragma unroll
        for (int g = 0; g < kBlockN / 8; ++g) {
          const int col = n0 + 8 * g + 2 * quad;
          if (col >= p.n || g < stored_g_begin || g >= stored_g_end) continue;
          const bool pair = col + 1 < p.n;
#pragma unroll
          for (int w = 0; w < kWaves; ++w) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int row = row0 + w * 128 + 8 * h;
              if (row >= row_hi || (Traits::kRaggedWalk && row < row_lo)) continue;
              fn(w, g, h, (d_row0 + row) * p.n + col, pair);
            }
          }
        }
      };
      if constexpr (kBScale == BScale::kPerChannel) {
        if (p.c != nullptr) {
          // C (which aliases D: each element is read, then written, by one thread) is read in full before
          // any store. Interleaved, every load waited behind the previous store (the compiler cannot
          // reorder a load past a store to a pointer that may alias it): 64 serial round trips to memory
          // per 256 x 128 tile.
          const float* c = p.c;
          if (n_even && n0 + kBlockN <= p.n && row_lo < row_hi) {
            // Branch-free, one base pointer per accumulator row and immediate column offsets, so that the
            // compiler issues the loads back to back without spending registers on addresses. A row the
            // unit does not store reads a stored row (row_lo) and adds nothing.
            const float* c_row[kWaves][2];
            bool stored[kWaves][2];
#pragma unroll
            for (int w = 0; w < kWaves; ++w) {
#pragma unroll
              for (int h = 0; h < 2; ++h) {
                const int row = row0 + w * 128 + 8 * h;
                stored[w][h] = row < row_hi && row >= row_lo;
                c_row[w][h] = c + (d_row0 + (stored[w][h] ? row : row_lo)) * p.n + n0 + 2 * quad;
              }
            }
#pragma unroll
            for (int g = 0; g < kBlockN / 8; ++g) {
#pragma unroll
              for (int w = 0; w < kWaves; ++w) {
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                  const float2 v = *reinterpret_cast<const float2*>(c_row[w][h] + 8 * g);
                  final_acc[w][4 * g + 2 * h] += stored[w][h] ? v.x : 0.0f;
                  final_acc[w][4 * g + 2 * h + 1] += stored[w][h] ? v.y : 0.0f;
                }
              }
            }
          } else {
            for_each_stored_pair([&](int w, int g, int h, int64_t offset, bool pair) {
              final_acc[w][4 * g + 2 * h] += c[offset];
              if (pair) final_acc[w][4 * g + 2 * h + 1] += c[offset + 1];
            });
          }
        }
      }
      if constexpr (Traits::kStagedStoreD) {
        using DType = std::conditional_t<kBScale == BScale::kBlock128, __nv_bfloat16, float>;
        if ((p.n * int(sizeof(DType))) % 16 == 0 && stored_g_end - stored_g_begin == kBlockN / 8) {
          StagedStore<DType, kBlockN, kWaves>(final_acc, smem_d + (threadIdx.x / 32) * kStagedSlabBytes<DType>,
                                              static_cast<DType*>(p.d) + d_row0 * p.n,
                                              m_block * kBlockM + wg_row_in_tile - lane / 4, n0, p.n, row_lo, row_hi,
                                              lane);
          continue;
        }
      }
      for_each_stored_pair([&](int w, int g, int h, int64_t offset, bool pair) {
        const float v0 = final_acc[w][4 * g + 2 * h], v1 = final_acc[w][4 * g + 2 * h + 1];
        if constexpr (kBScale == BScale::kBlock128) {
          __nv_bfloat16* d = static_cast<__nv_bfloat16*>(p.d) + offset;
          if (pair && n_even) {
            *reinterpret_cast<__nv_bfloat162*>(d) = __floats2bfloat162_rn(v0, v1);
          } else {
            d[0] = __float2bfloat16_rn(v0);
            if (pair) d[1] = __float2bfloat16_rn(v1);
          }
        } else {
          float* d = static_cast<float*>(p.d) + offset;
          if (pair && n_even) {
            *reinterpret_cast<float2*>(d) = make_float2(v0, v1);
          } else {
            d[0] = v0;
            if (pair) d[1] = v1;
          }
        }
      });
    }
    if constexpr (Traits::kTmaStoreD) {
      if (threadIdx.x % 128 == 0) cute::tma_store_wait<0>();  // staging smem must outlive the stores
    }
    if (split_k_wait_pending) SplitKClusterWait();
  }
  ExitStageRing<Traits::kClusterSize>();
#endif
}

}  // namespace jdg
