// SM90 FP8 block-scaled GEMM: D[M,N] = A[M,K] . B[N,K]^T with DeepSeek's scaling recipes.
//
//   A: e4m3, 1x128 scales  sfa[M, ceil(K/128)] (row-major, read by the math threads)
//   B: e4m3, either 128x128 block scales sfb[ceil(N/128), ceil(K/128)]   (kBlock128,  BF16 out)
//              or   1x128 per-row scales, given transposed sfb_t[ceil(K/128), align(N,4)] and
//                   streamed per stage through TMA                         (kPerChannel, FP32 out (+C))
//
// Structure (the DeepGEMM design, written with CuTe's WGMMA/TMA atoms and CUTLASS barriers):
//   * persistent CTAs walk output tiles in L2-friendly bands (TileScheduler);
//   * one producer warpgroup (a single elected thread) streams A/B 128-K slices through a
//     `num_stages`-deep shared-memory ring with TMA, full/empty mbarriers per stage;
//   * BLOCK_M/64 consumer warpgroups each own 64 rows: per 128-K slice they issue 4 FP8 WGMMAs
//     (m64nBLOCK_Nk32) into a fresh FP32 accumulator, release the stage, then promote
//     `final += (sfa[row] * sfb[col]) * accum` on the CUDA cores. The two-level accumulation
//     avoids the reduced-precision accumulation of FP8 tensor-core sums over long K;
//   * the epilogue writes the tile straight from registers (any M, any even/odd N), or (BF16, BLOCK_N
//     a multiple of 64) through swizzled shared memory and TMA stores.
// Grouped forms (GemmGrouping, gemm_tile_walk.cuh): M-grouped contiguous/masked (1D2D: a per-tile
// expert selects B's rows) and K-grouped (1D1D: each group owns a K range of A and B and an [m, n]
// slice of D; the K loop simply starts and ends at the group's K-blocks).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/arch/mma_sm90_desc.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cute/arch/mma_sm90_gmma_ext.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "fp8_gemm_launch.h"
#include "kernels/gemm_tile_walk.cuh"
#include "kernels/stage_ring.cuh"

namespace jdg {

constexpr int kFp8BlockK = 128;  // one 128-byte swizzled row of FP8 per operand row per stage

struct Fp8GemmParams {
  int m, n, k;
  int num_k_blocks;         // ceil(k / 128)
  const float* sfa;         // [m, num_k_blocks]
  const float* sfb;         // kBlock128: [ceil(n/128), num_k_blocks]; kPerChannel: unused (TMA)
  const float* c;           // kPerChannel: optional FP32 [m, n] added to the product (aliases d)
  void* d;                  // kBlock128: BF16 [m, n]; kPerChannel: FP32 [m, n]
  int raster_band;          // tiles per band of the L2 rasterisation
  int use_tma_store;        // BF16 D through swizzled shared memory + TMA store (needs n % 8 == 0)
  GemmGrouping grouping;    // M-grouped MoE layouts (B is [num_groups * n, k]); default: dense
};

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

// Shared-memory matrix descriptor of a K-major tile whose rows are 128 bytes, 128B-swizzled
// (what TMA writes with CU_TENSOR_MAP_SWIZZLE_128B). 8-row core groups are 1024 bytes apart.
__device__ __forceinline__ uint64_t SmemDescK128B(const void* smem) {
  cute::GmmaDescriptor desc;
  desc.bitfield.start_address_ = static_cast<uint16_t>(cute::cast_smem_ptr_to_uint(smem) >> 4);
  desc.bitfield.leading_byte_offset_ = 0;  // unused for swizzled K-major layouts
  desc.bitfield.stride_byte_offset_ = 1024 >> 4;
  desc.bitfield.base_offset_ = 0;
  desc.bitfield.layout_type_ = static_cast<uint8_t>(cute::SM90::GMMA::LayoutType::B128);
  return desc.desc_;
}

template <int kBlockM, int kBlockN, BScale kBScale, int kClusterM, int kPipelined>
struct Fp8GemmTraits {
  static_assert(kBlockM == 64 || kBlockM == 128, "BLOCK_M is 64 (one consumer warpgroup) or 128 (two)");
  static_assert(kBlockN % 16 == 0 || kBlockN == 24, "BLOCK_N must be a valid WGMMA N for FP8");
  static_assert(kBlockN <= 192, "accumulator + promoted copy must fit in 232 registers per thread");
  static_assert(kClusterM == 1 || (kClusterM == 2 && kBlockN % 16 == 0),
                "B multicast: two CTAs, each loading a 1024-byte-aligned half of the B tile");
  static constexpr int kBRowsPerCta = kBlockN / kClusterM;  // rows of the B tile each CTA of a cluster loads
  static constexpr int kNumMathWarpgroups = kBlockM / 64;
  static constexpr int kNumMathThreads = kNumMathWarpgroups * 128;
  static constexpr int kNumThreads = kNumMathThreads + 128;  // + one producer warpgroup
  static constexpr int kSmemA = kBlockM * kFp8BlockK;        // bytes per stage, multiple of 1024
  static constexpr int kSmemB = kBlockN * kFp8BlockK;
  static constexpr int kSmemSfb = Fp8GemmSfbStageBytes(kBlockN, kBScale);
  static constexpr int kStageBytes = kSmemA + kSmemB + kSmemSfb;
  static constexpr bool kTmaStoreD = Fp8GemmHasSmemD(kBlockN, kBScale);
  static constexpr int kSmemD = Fp8GemmSmemDBytes(kBlockM, kBlockN, kBScale);  // multiple of 1024
  static constexpr int kBarrierBytes = kFp8GemmBarrierBytesPerStage;  // full + empty barrier per stage
  static constexpr int kTxBytes = kSmemA + kSmemB + (kBScale == BScale::kPerChannel ? kBlockN * 4 : 0);
  // How many 128-column B scale blocks one tile can overlap: 1 when BLOCK_N divides 128 (tiles
  // never straddle), else at most (127 + BLOCK_N) / 128 + 1. (The tight bound, ceil((128 - gcd(BLOCK_N,
  // 128) + BLOCK_N) / 128), is 2 for 192, but ptxas then spills the 128 x 192 kernel: measured.)
  // Variant (kPipelined = 1): two accumulator sets, so the WGMMAs of K-block kb+1 are in flight while
  // kb is promoted. Needs a single B scale row and room for the accumulators twice (BLOCK_N | 128).
  // Measured on H100: 10-19 % slower on memory-bound small-M shapes (a stage is released only once
  // the next one has landed); compute-bound tiles not measured yet, so the heuristic never picks it.
  static_assert(!kPipelined || (kBScale == BScale::kBlock128 && 128 % kBlockN == 0),
                "the pipelined main loop needs one B scale row per tile (BLOCK_N divides 128)");
  static constexpr bool kPipelinedMma = kPipelined != 0;
  static constexpr int kScaleRows =
      kBScale != BScale::kBlock128 ? 1 : (128 % kBlockN == 0 ? 1 : (127 + kBlockN) / 128 + 1);

  static_assert(kStageBytes + kBarrierBytes == Fp8GemmStageBytes(kBlockM, kBlockN, kBScale),
                "stage layout and the heuristic's stage budget must agree");
  static constexpr int SmemBytes(int num_stages) { return kSmemD + num_stages * (kStageBytes + kBarrierBytes); }
};

template <int kBlockM, int kBlockN, BScale kBScale, int kClusterM, int kPipelined>
__global__ void __launch_bounds__(Fp8GemmTraits<kBlockM, kBlockN, kBScale, kClusterM, kPipelined>::kNumThreads, 1)
    Sm90Fp8GemmKernel(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_b,
                      const __grid_constant__ CUtensorMap tma_sfb, const __grid_constant__ CUtensorMap tma_d,
                      const Fp8GemmParams p, const int num_stages) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Traits = Fp8GemmTraits<kBlockM, kBlockN, kBScale, kClusterM, kPipelined>;
  using Barrier = RingBarrier;
  using Wgmma = typename Fp8Wgmma<kBlockN>::Op;
  constexpr int kAccums = kBlockN / 2;  // FP32 accumulators per thread for a 64 x BLOCK_N slice

  extern __shared__ __align__(1024) uint8_t smem[];
  uint8_t* smem_d = smem;  // BF16 output staging: [BLOCK_N/64 chunks][BLOCK_M rows][128 B], 128B-swizzled
  uint8_t* smem_a = smem + Traits::kSmemD;
  uint8_t* smem_b = smem_a + num_stages * Traits::kSmemA;
  float* smem_sfb = reinterpret_cast<float*>(smem_b + num_stages * Traits::kSmemB);
  Barrier* full = reinterpret_cast<Barrier*>(smem_b + num_stages * (Traits::kSmemB + Traits::kSmemSfb));
  Barrier* empty = full + num_stages;

  const int warpgroup = threadIdx.x / 128;
  const int lane = threadIdx.x % 32;

  // In a cluster the two CTAs work on vertically adjacent tiles (M-blocks 2i and 2i+1) that share
  // the B tile: each loads half of it and multicasts it to both, so a stage may be refilled only
  // when the consumers of both CTAs have released it.
  const int cta_rank = kClusterM > 1 ? int(cute::block_rank_in_cluster()) : 0;
  InitStageRing<kClusterM>(full, empty, num_stages, Traits::kNumMathWarpgroups * 4);

  // The scheduler walks cluster tiles (kClusterM M-blocks x 1 N-block); both CTAs see the same order.
  TileScheduler sched(p.m, p.n, kBlockM * kClusterM, kBlockN, p.raster_band);
  const int first_tile = blockIdx.x / kClusterM, tile_stride = gridDim.x / kClusterM;
  const bool k_grouped = kBScale == BScale::kPerChannel && p.grouping.group_k != nullptr;
  // Tile `tile` of this CTA's walk: its M/N blocks, its group (expert), its K-block range (empty for a
  // padding tile or an empty group) and whether its group's K layout is broken (K-grouped only).
  // The ragged walk and its row-masked epilogue are compiled only into tiles with registers to spare
  // (beside the 128 x 192 tile's 2 x 96 accumulators they spill: measured).
  constexpr bool kRaggedWalk = kBScale == BScale::kBlock128 && kBlockN <= kMaxRaggedBlockN;
  const bool ragged = kRaggedWalk && p.grouping.group_ends != nullptr;
  auto next_tile = [&](int tile, int& m_block, int& n_block, int& group, int& kb_begin, int& kb_end,
                       bool& poisoned) -> bool {
    kb_begin = 0, poisoned = false;
    if (ragged) {
      if (!NextRaggedTile<kBlockM, kBlockN>(p.grouping, p.m, p.n, tile, m_block, n_block, group)) return false;
      kb_end = group < 0 ? 0 : p.num_k_blocks;
      return true;
    }
    if (k_grouped) {
      if (!NextKGroupedTile(sched, p.grouping, p.num_k_blocks, tile, m_block, n_block, group, kb_begin, kb_end,
                            poisoned))
        return false;
      m_block = m_block * kClusterM + cta_rank;  // both CTAs of a cluster work on the same group
      return true;
    }
    if (!NextGemmTile<kBlockM, kBlockN, kClusterM>(sched, p.grouping, p.m, p.n, tile, cta_rank, m_block, n_block,
                                                   group))
      return false;
    kb_end = group < 0 ? 0 : p.num_k_blocks;
    return true;
  };

  if (warpgroup == Traits::kNumMathWarpgroups) {
    // ---------------- producer warpgroup: one thread issues every TMA load ----------------
    cutlass::arch::warpgroup_reg_dealloc<40>();
    if (threadIdx.x == Traits::kNumMathThreads) {
      cute::prefetch_tma_descriptor(&tma_a);
      cute::prefetch_tma_descriptor(&tma_b);
      if constexpr (kBScale == BScale::kPerChannel) cute::prefetch_tma_descriptor(&tma_sfb);
      int stage = 0, phase = 0;
      int m_block, n_block, group, kb_begin, kb_end;
      bool poisoned;
      for (int tile = first_tile; next_tile(tile, m_block, n_block, group, kb_begin, kb_end, poisoned);
           tile += tile_stride) {
        // M-grouped: B is [G * n, k] and the tile multiplies its expert's rows. (A padding tile or an
        // empty K group has no K-blocks: nothing to load, the consumers write zeros or C.)
        const int b_row0 = (k_grouped ? 0 : group * p.n) + n_block * kBlockN;
        for (int kb = kb_begin; kb < kb_end; ++kb) {
          empty[stage].wait(phase ^ 1);
          full[stage].arrive_and_expect_tx(Traits::kTxBytes);
          auto* mbar = reinterpret_cast<uint64_t*>(&full[stage]);
          constexpr uint64_t kEvictNormal = 0x1000000000000000ull;  // CacheHintSm90::EVICT_NORMAL
          cute::SM90_TMA_LOAD_2D::copy(&tma_a, mbar, kEvictNormal, smem_a + stage * Traits::kSmemA,
                                       kb * kFp8BlockK, m_block * kBlockM);
          if constexpr (kClusterM == 1) {
            cute::SM90_TMA_LOAD_2D::copy(&tma_b, mbar, kEvictNormal, smem_b + stage * Traits::kSmemB,
                                         kb * kFp8BlockK, b_row0);
          } else {
            const int half = cta_rank * Traits::kBRowsPerCta;
            cute::SM90_TMA_LOAD_MULTICAST_2D::copy(&tma_b, mbar, uint16_t((1 << kClusterM) - 1), kEvictNormal,
                                                   smem_b + stage * Traits::kSmemB + half * kFp8BlockK,
                                                   kb * kFp8BlockK, b_row0 + half);
          }
          if constexpr (kBScale == BScale::kPerChannel)
            cute::SM90_TMA_LOAD_2D::copy(&tma_sfb, mbar, kEvictNormal, smem_sfb + stage * (Traits::kSmemSfb / 4),
                                         n_block * kBlockN, kb);
          if (++stage == num_stages) stage = 0, phase ^= 1;
        }
      }
    }
  } else {
    // ---------------- consumer warpgroups: WGMMA + FP32 promotion + epilogue ----------------
    cutlass::arch::warpgroup_reg_alloc<Traits::kNumMathWarpgroups == 1 ? 240 : 232>();
    const int warp_in_wg = (threadIdx.x / 32) % 4;
    const int quad = lane % 4;                               // column pair within each 8-column group
    const int row_in_tile = warpgroup * 64 + warp_in_wg * 16 + lane / 4;  // and row_in_tile + 8
    float accum[kAccums], final_acc[kAccums];
    int stage = 0, phase = 0;
    int m_block, n_block, group, kb_begin, kb_end;
    bool poisoned;
    for (int tile = first_tile; next_tile(tile, m_block, n_block, group, kb_begin, kb_end, poisoned);
         tile += tile_stride) {
      // m_block may be past M for the second CTA of a ragged last cluster pair: it computes on
      // zero-filled A and stores nothing.
      const int row0 = m_block * kBlockM + row_in_tile, row1 = row0 + 8;

      const int n0 = n_block * kBlockN;
      // The loops below count K-blocks from the tile's first (kb_begin, non-zero for K-grouped GEMMs).
      const int num_k_blocks = kb_end - kb_begin;
      // Scale pointers; rows past M are clamped (their results are never stored).
      const float* sfa0 = p.sfa + static_cast<int64_t>(min(row0, p.m - 1)) * p.num_k_blocks + kb_begin;
      const float* sfa1 = p.sfa + static_cast<int64_t>(min(row1, p.m - 1)) * p.num_k_blocks + kb_begin;
      // B scale rows covering this tile's columns: a BLOCK_N-wide tile may overlap up to
      // kScaleRows of the 128-column scale blocks (e.g. 3 for BLOCK_N = 176 starting at column 112).
      const float* sfb_rows[Traits::kScaleRows];
      const int col_offset = n0 % 128;  // this tile's first column inside its first scale block
      if constexpr (kBScale == BScale::kBlock128) {
        const int num_n_scale_rows = (p.n + 127) / 128;
#pragma unroll
        for (int r = 0; r < Traits::kScaleRows; ++r)
          sfb_rows[r] = p.sfb + static_cast<int64_t>(max(group, 0) * num_n_scale_rows +
                                                     min(n0 / 128 + r, num_n_scale_rows - 1)) * p.num_k_blocks + kb_begin;
      }
#pragma unroll
      for (int i = 0; i < kAccums; ++i) final_acc[i] = 0.0f;

      float sa0 = __ldg(sfa0), sa1 = __ldg(sfa1);
      float sb[Traits::kScaleRows];
      if constexpr (kBScale == BScale::kBlock128) {
#pragma unroll
        for (int r = 0; r < Traits::kScaleRows; ++r) sb[r] = __ldg(sfb_rows[r]);
      }

      // Issues one 128-K slice (4 x m64nBLOCK_Nk32 WGMMAs) from stage `s` into `acc` as one group.
      auto issue = [&](float* acc, int s) {
        const uint8_t* a_tile = smem_a + s * Traits::kSmemA + warpgroup * 64 * kFp8BlockK;
        const uint8_t* b_tile = smem_b + s * Traits::kSmemB;
#pragma unroll
        for (int i = 0; i < kAccums; ++i) cute::warpgroup_fence_operand(acc[i]);
        cute::warpgroup_arrive();
#pragma unroll
        for (int k = 0; k < kFp8BlockK / 32; ++k)
          WgmmaFma<Wgmma>(SmemDescK128B(a_tile + k * 32), SmemDescK128B(b_tile + k * 32), acc, k > 0,
                          std::make_index_sequence<kAccums>{});
        cute::warpgroup_commit_batch();
      };

      if (num_k_blocks <= 0) {
        // padding tile of an M-grouped GEMM or an empty K group: final_acc stays 0
      } else if constexpr (Traits::kPipelinedMma) {
        // Two accumulator sets: the WGMMAs of K-block kb+1 are issued before K-block kb is promoted,
        // so the tensor cores never wait for this warpgroup's FFMA promotion.
        float accum_next[kAccums];
        // Retires K-block kb (in `cur`, stage `stage`) after issuing kb+1 into `nxt`.
        auto step = [&](int kb, float* cur, float* nxt) {
          int next_stage = stage + 1, next_phase = phase;
          if (next_stage == num_stages) next_stage = 0, next_phase ^= 1;
          const bool has_next = kb + 1 < num_k_blocks;
          float next_sa0 = sa0, next_sa1 = sa1, next_sb = sb[0];
          if (has_next) {
            full[next_stage].wait(next_phase);
            issue(nxt, next_stage);
            next_sa0 = __ldg(sfa0 + kb + 1), next_sa1 = __ldg(sfa1 + kb + 1), next_sb = __ldg(sfb_rows[0] + kb + 1);
            cute::warpgroup_wait<1>();
          } else {
            cute::warpgroup_wait<0>();
          }
#pragma unroll
          for (int i = 0; i < kAccums; ++i) cute::warpgroup_fence_operand(cur[i]);
          ReleaseStage<kClusterM>(empty[stage], lane);
          const float s0 = sa0 * sb[0], s1 = sa1 * sb[0];
#pragma unroll
          for (int i = 0; i < kAccums; i += 4) {
            final_acc[i + 0] = fmaf(s0, cur[i + 0], final_acc[i + 0]);
            final_acc[i + 1] = fmaf(s0, cur[i + 1], final_acc[i + 1]);
            final_acc[i + 2] = fmaf(s1, cur[i + 2], final_acc[i + 2]);
            final_acc[i + 3] = fmaf(s1, cur[i + 3], final_acc[i + 3]);
          }
          sa0 = next_sa0, sa1 = next_sa1, sb[0] = next_sb;
          stage = next_stage, phase = next_phase;
        };
        full[stage].wait(phase);
        issue(accum, stage);
        for (int kb = 0; kb < num_k_blocks; kb += 2) {
          step(kb, accum, accum_next);
          if (kb + 1 < num_k_blocks) step(kb + 1, accum_next, accum);
        }
      } else {
        for (int kb = 0; kb < num_k_blocks; ++kb) {
          full[stage].wait(phase);
          issue(accum, stage);
          // Fetch the next slice's scales while the tensor cores work (L1-resident after the first).
          const int kb_next = min(kb + 1, num_k_blocks - 1);
          const float next_sa0 = __ldg(sfa0 + kb_next), next_sa1 = __ldg(sfa1 + kb_next);
          float next_sb[Traits::kScaleRows];
          if constexpr (kBScale == BScale::kBlock128) {
#pragma unroll
            for (int r = 0; r < Traits::kScaleRows; ++r) next_sb[r] = __ldg(sfb_rows[r] + kb_next);
          }
          cute::warpgroup_wait<0>();
#pragma unroll
          for (int i = 0; i < kAccums; ++i) cute::warpgroup_fence_operand(accum[i]);

          if constexpr (kBScale == BScale::kBlock128) {
            ReleaseStage<kClusterM>(empty[stage], lane);
#pragma unroll
            for (int g = 0; g < kBlockN / 8; ++g) {
              // Scale row of this 8-column group, selected without indexing registers at run time.
              const int row = (col_offset + 8 * g) >> 7;
              float b_scale = sb[0];
              if constexpr (Traits::kScaleRows > 1) b_scale = row >= 1 ? sb[1] : b_scale;
              if constexpr (Traits::kScaleRows > 2) b_scale = row >= 2 ? sb[2] : b_scale;
              const float s0 = sa0 * b_scale, s1 = sa1 * b_scale;
              final_acc[4 * g + 0] = fmaf(s0, accum[4 * g + 0], final_acc[4 * g + 0]);
              final_acc[4 * g + 1] = fmaf(s0, accum[4 * g + 1], final_acc[4 * g + 1]);
              final_acc[4 * g + 2] = fmaf(s1, accum[4 * g + 2], final_acc[4 * g + 2]);
              final_acc[4 * g + 3] = fmaf(s1, accum[4 * g + 3], final_acc[4 * g + 3]);
            }
          } else {
            // Per-column B scales of this slice sit in shared memory next to the stage's tiles.
            const float2* sfb_stage = reinterpret_cast<const float2*>(smem_sfb + stage * (Traits::kSmemSfb / 4));
            float2 col_scale[kBlockN / 8];
#pragma unroll
            for (int g = 0; g < kBlockN / 8; ++g) col_scale[g] = sfb_stage[4 * g + quad];
            __syncwarp();
            ReleaseStage<kClusterM>(empty[stage], lane);
#pragma unroll
            for (int g = 0; g < kBlockN / 8; ++g) {
              final_acc[4 * g + 0] = fmaf(sa0 * col_scale[g].x, accum[4 * g + 0], final_acc[4 * g + 0]);
              final_acc[4 * g + 1] = fmaf(sa0 * col_scale[g].y, accum[4 * g + 1], final_acc[4 * g + 1]);
              final_acc[4 * g + 2] = fmaf(sa1 * col_scale[g].x, accum[4 * g + 2], final_acc[4 * g + 2]);
              final_acc[4 * g + 3] = fmaf(sa1 * col_scale[g].y, accum[4 * g + 3], final_acc[4 * g + 3]);
            }
          }
          sa0 = next_sa0, sa1 = next_sa1;
          if constexpr (kBScale == BScale::kBlock128) {
#pragma unroll
            for (int r = 0; r < Traits::kScaleRows; ++r) sb[r] = next_sb[r];
          }
          if (++stage == num_stages) stage = 0, phase ^= 1;
        }
      }

      if (kBScale == BScale::kPerChannel && poisoned) {
#pragma unroll
        for (int i = 0; i < kAccums; ++i) final_acc[i] = __int_as_float(0x7fc00000);  // broken K layout: NaN
      }
      if (p.grouping.row_group != nullptr) {
        // Rows of the tile's expert keep their values, padding rows (-1) store 0, and a row of
        // another expert (a segment not aligned to BLOCK_M: the layout contract is broken) stores
        // NaN, so a bad device-side layout is visible instead of silently using the wrong weights.
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row_group = GemmRowGroup(p.grouping, p.m, h == 0 ? row0 : row1);
          const float fill = row_group < 0 ? 0.0f : __int_as_float(0x7fc00000);
          if (row_group != group || group < 0) {
#pragma unroll
            for (int g = 0; g < kBlockN / 8; ++g) final_acc[4 * g + 2 * h] = fill, final_acc[4 * g + 2 * h + 1] = fill;
          }
        }
      }

      // ---------------- epilogue ----------------
      // The rows this unit stores: the tile's rows below M, or (ragged) its group's rows in the tile.
      // A warpgroup whose 64 rows all belong to the unit stores with TMA; a ragged tile straddling
      // groups stores its group's rows through registers.
      int row_lo = m_block * kBlockM, row_hi = min(p.m, row_lo + kBlockM);  // empty past M (2nd CTA of a pair)
      bool wg_rows_whole = true;
      if constexpr (kRaggedWalk) {
        if (ragged) RaggedTileRows<kBlockM>(p.grouping, p.m, m_block, group, row_lo, row_hi);
        const int wg_row0 = m_block * kBlockM + warpgroup * 64;
        wg_rows_whole = row_lo <= wg_row0 && min(wg_row0 + 64, p.m) <= row_hi;
      }
      if constexpr (Traits::kTmaStoreD) {
        if (p.use_tma_store && wg_rows_whole) {
          // Registers -> swizzled shared memory (conflict-free: the 16-byte unit index is XORed with
          // the row) -> one TMA store per 64-column chunk of this warpgroup's 64 rows. The store is
          // asynchronous: the warpgroup goes on to the next tile and waits for the smem reads only
          // before it overwrites the staging buffer.
          const bool leader = threadIdx.x % 128 == 0;
          const uint32_t barrier_id = 1 + warpgroup;
          if (leader) cute::tma_store_wait<0>();
          cutlass::arch::NamedBarrier::sync(128, barrier_id);
          uint8_t* wg_staging = smem_d + warpgroup * 64 * 128;
#pragma unroll
          for (int g = 0; g < kBlockN / 8; ++g) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const int row = warp_in_wg * 16 + lane / 4 + 8 * h;
              uint8_t* dst = wg_staging + (g / 8) * (kBlockM * 128) + row * 128 + (((g % 8) ^ (row % 8)) << 4) + 4 * quad;
              *reinterpret_cast<__nv_bfloat162*>(dst) =
                  __floats2bfloat162_rn(final_acc[4 * g + 2 * h], final_acc[4 * g + 2 * h + 1]);
            }
          }
          cutlass::arch::fence_view_async_shared();
          cutlass::arch::NamedBarrier::sync(128, barrier_id);
          const int wg_row0 = m_block * kBlockM + warpgroup * 64;
          if (leader && wg_row0 < p.m) {
#pragma unroll
            for (int chunk = 0; chunk < kBlockN / 64; ++chunk)
              if (n0 + 64 * chunk < p.n)
                cute::SM90_TMA_STORE_2D::copy(&tma_d, wg_staging + chunk * (kBlockM * 128), n0 + 64 * chunk, wg_row0);
            cute::tma_store_arrive();
          }
          continue;
        }
      }
      // Registers -> global memory, bounds-checked (FP32 output, narrow tiles, or n % 8 != 0).
      const bool n_even = (p.n % 2) == 0;
      const int64_t d_row0 = k_grouped ? int64_t(group) * p.m : 0;  // K-grouped D is [G * m, n]
#pragma unroll
      for (int g = 0; g < kBlockN / 8; ++g) {
        const int col = n0 + 8 * g + 2 * quad;
        if (col >= p.n) continue;
        const bool pair = col + 1 < p.n;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = h == 0 ? row0 : row1;
          if (row >= row_hi || (kRaggedWalk && row < row_lo)) continue;
          const int64_t offset = (d_row0 + row) * p.n + col;
          float v0 = final_acc[4 * g + 2 * h], v1 = final_acc[4 * g + 2 * h + 1];
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
            if (p.c != nullptr) {  // p.c aliases p.d: each element is read, then written, by one thread
              v0 += p.c[offset];
              if (pair) v1 += p.c[offset + 1];
            }
            if (pair && n_even) {
              *reinterpret_cast<float2*>(d) = make_float2(v0, v1);
            } else {
              d[0] = v0;
              if (pair) d[1] = v1;
            }
          }
        }
      }
    }
    if constexpr (Traits::kTmaStoreD) {
      if (threadIdx.x % 128 == 0) cute::tma_store_wait<0>();  // staging smem must outlive the stores
    }
  }
  ExitStageRing<kClusterM>();
#endif
}

}  // namespace jdg
