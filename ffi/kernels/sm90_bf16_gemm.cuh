// SM90 BF16 GEMM: D[M,N] = A[M,K] . B[N,K]^T (+ C), BF16 in, FP32 accumulate, BF16 or FP32 out.
//
// The FP8 kernel's skeleton (sm90_fp8_gemm.cuh) without scales:
//   * persistent CTAs walk output tiles with the shared tile walk (gemm_tile_walk.cuh): dense,
//     M-grouped contiguous (per-row expert ids), masked and ragged (a row tile straddling groups
//     runs once per group, each unit storing only its group's rows [row_lo, row_hi));
//   * one producer warpgroup (a single elected thread) streams 64-K slices of A and B (64 bf16 =
//     one 128-byte row, 128B-swizzled by TMA) through a `num_stages`-deep ring with full/empty mbarriers;
//   * BLOCK_M/64 consumer warpgroups each own 64 rows and issue 4 x wgmma.m64nBLOCK_Nk16.f32.bf16.bf16
//     per slice, accumulating the whole K in the WGMMA registers (no promotion: the tensor cores
//     accumulate BF16 products in FP32). The WGMMAs of slice kb+1 are queued before slice kb's
//     stage is released (wait<1>), so the tensor cores never idle on the release;
//   * epilogue: BF16 through 128B-swizzled shared memory and TMA stores (n % 8 == 0), otherwise
//     (FP32 output, optional + C, or odd pitches) bounds-checked register stores;
//   * operand majors (kMajor): A and/or B may be MN-major in global memory (A stored [K, M], B
//     stored [K, N]: the nn/tn/tt forms; M-grouped GEMMs also take B as [G, K, N], the NN form their
//     dgrad needs). Such an operand is loaded as 64 x 64 boxes (64 K rows of 64 M/N elements = 128
//     bytes, 128B-swizzled), and the WGMMA reads it with an MN-major descriptor (bf16 WGMMA supports
//     transposed shared-memory operands): no transpose pass over global memory.
// Split-K (dense NT decode shapes, Bf16GemmConfig::split_k): the grid is one CTA per (tile, split); each CTA runs its
// share of the tile's K-blocks and hands its FP32 partial over through global memory (kernels/split_k_global.cuh);
// the tile's last CTA sums them in split order and stores the tile.
// K-grouped form (MoE weight gradients, NT or TN operands): D[g] (+= C[g]) = A[:, K range g] .
// B[:, K range g]^T over [G * M, N] FP32 rows; every group walks the whole M x N tile grid over
// its K-blocks (gemm_tile_walk.cuh's NextKGroupedTile), the sizes read on the device.
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
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "bf16_gemm_launch.h"
#include "kernels/cache_hints.cuh"
#include "kernels/gemm_tile_walk.cuh"
#include "kernels/split_k_global.cuh"
#include "kernels/stage_ring.cuh"
#include "kernels/staged_store.cuh"
#include "kernels/swizzled_stage.cuh"
#include "kernels/wgmma_desc.cuh"

namespace jdg {

struct Bf16GemmParams {
  int m, n, k;
  int num_k_blocks;       // ceil(k / 64)
  int a_tail_box_rows;    // rows of a K-major A that a tail tile's stage loads (tma_a_tail; BLOCK_M: no tail box)
  const float* c;         // optional FP32 [m, n] added to the product (aliases d; FP32 output only)
  void* d;                // BF16 or FP32 [m, n]
  int out_fp32;           // 1: FP32 D (register stores), 0: BF16 D
  int use_tma_store;      // BF16 D through swizzled shared memory + TMA store (needs n % 8 == 0)
  int use_staged_store;   // FP32 D (+ C) through per-warp slabs (kernels/staged_store.cuh; needs n % 4 == 0)
  int raster_band;        // tiles per band of the L2 rasterisation
  GemmGrouping grouping;  // M-grouped MoE layouts (B is [num_groups * n, k]); default: dense
  int split_k;            // > 1: walk entry e = split e % split_k of tile e / split_k, one entry per CTA
  float* split_partials;  // split-K: [tiles, split_k, BLOCK_M * BLOCK_N] FP32 partials (SplitKGlobalHandOver's order)
};

// Arrivals of each output tile's splits in a split-K launch (kernels/split_k_global.cuh).
static __device__ unsigned int g_bf16_split_arrivals[kBf16SplitMaxTiles];

template <int N, cute::SM90::GMMA::Major kMajorA, cute::SM90::GMMA::Major kMajorB>
struct Bf16Wgmma;
#define JDG_DEFINE_BF16_WGMMA(N)                                            \
  template <cute::SM90::GMMA::Major kMajorA, cute::SM90::GMMA::Major kMajorB> \
  struct Bf16Wgmma<N, kMajorA, kMajorB> {                                   \
    using Op = cute::SM90::GMMA::MMA_64x##N##x16_F32BF16BF16_SS<kMajorA, kMajorB>; \
  };
JDG_DEFINE_BF16_WGMMA(16)
JDG_DEFINE_BF16_WGMMA(32)
JDG_DEFINE_BF16_WGMMA(64)
JDG_DEFINE_BF16_WGMMA(128)
JDG_DEFINE_BF16_WGMMA(192)
JDG_DEFINE_BF16_WGMMA(256)
#undef JDG_DEFINE_BF16_WGMMA

// D += A.B over one k16 step (scale-d is always 1: the accumulators are zeroed per tile).
template <class Op, size_t... I>
__device__ __forceinline__ void Bf16WgmmaFma(uint64_t desc_a, uint64_t desc_b, float* d, std::index_sequence<I...>) {
  Op::fma(desc_a, desc_b, d[I]..., cute::SM90::GMMA::ScaleOut::One);
}

// kMajor: bit 0 = A is MN-major (stored [K, M]), bit 1 = B is MN-major (stored [K, N]); 0 = NT.
template <int kBlockM, int kBlockN, int kClusterM, int kMajor>
struct Bf16GemmTraits {
  static constexpr bool kAMnMajor = (kMajor & 1) != 0;
  static constexpr bool kBMnMajor = (kMajor & 2) != 0;
  static_assert(kMajor >= 0 && kMajor <= 3, "kMajor is a 2-bit mask");
  static_assert(kMajor == 0 || kClusterM == 1, "MN-major operands: no B multicast");
  static_assert(kBlockM == 64 || kBlockM == 128, "BLOCK_M is 64 (one consumer warpgroup) or 128 (two)");
  static_assert(kBlockN % 16 == 0 && kBlockN <= 256, "BLOCK_N: a multiple of 16 up to 256");
  static_assert(kBlockN % 64 == 0 || !kBMnMajor, "MN-major B is loaded in 64-column boxes");
  static constexpr bool kTmaStoreD = kBlockN % 64 == 0;  // whole 64-column chunks: D may go through TMA
  static_assert(kClusterM == 1 || kClusterM == 2, "B multicast over at most two CTAs");
  static constexpr int kBRowsPerCta = kBlockN / kClusterM;  // rows of the B tile each CTA of a cluster loads
  static_assert(kBRowsPerCta % 8 == 0, "each CTA's half of B must be whole 1024-byte swizzle atoms");
  // The K-grouped walk is compiled into the NT and TN kernels (its operands are both K-major or
  // both MN-major, the token-major wgrad layout), without clusters (a pair may straddle groups).
  static constexpr bool kKGroupedWalk = (kMajor == 0 || kMajor == 3) && kClusterM == 1;
  static constexpr bool kMaySplitK = Bf16GemmMaySplitK(kBlockN, kClusterM, kMajor);
  static constexpr int kNumMathWarpgroups = kBlockM / 64;
  static constexpr int kNumMathThreads = kNumMathWarpgroups * 128;
  static constexpr int kNumThreads = kNumMathThreads + 128;  // + one producer warpgroup
  static constexpr int kSmemA = kBlockM * 128;               // bytes per stage, multiple of 1024
  static constexpr int kSmemB = kBlockN * 128;
  static constexpr int kSmemD = Bf16GemmSmemDBytes(kBlockM, kBlockN);  // used only with TMA stores
  static constexpr int kTxBytes = kSmemA + kSmemB;
  static_assert(kSmemA + kSmemB + kBf16GemmBarrierBytesPerStage == Bf16GemmStageBytes(kBlockM, kBlockN),
                "stage layout and the heuristic's stage budget must agree");
  static constexpr int kSmemSlabs = Bf16GemmStagedSlabBytes(kBlockM);  // used only with staged stores
  static_assert(kSmemSlabs == kNumMathWarpgroups * 4 * kStagedSlabBytes<float>, "one FP32 slab per math warp");
  static constexpr int SmemBytes(int num_stages, bool tma_store, bool staged_store) {
    return Bf16GemmDStagingBytes(tma_store, staged_store, kBlockM, kBlockN) +
           num_stages * Bf16GemmStageBytes(kBlockM, kBlockN);
  }
};

// The register-store epilogue: this thread's two rows (row0, row0 + 8) and, per 8-column group g,
// columns col0 + 8g and +1. Only rows in [row_lo, row_hi) (the tile's unit, within M) and columns
// below N are stored, at D row d_row0 + row (K-grouped: group g's [M, N] slice starts at row g * M);
// pairs are stored together when N is even (then they are 8- or 4-byte aligned). FP32: adds C
// (which aliases D) when given.
template <bool kFp32, int kBlockN>
__device__ __forceinline__ void StoreRowsDirect(const Bf16GemmParams& p, const float* accum, int row0, int col0,
                                                int row_lo, int row_hi, int64_t d_row0) {
  const bool n_even = (p.n % 2) == 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + 8 * h;
    if (row < row_lo || row >= row_hi) continue;
    const int64_t row_offset = (d_row0 + row) * p.n;
    float* d32 = static_cast<float*>(p.d) + row_offset;
    __nv_bfloat16* d16 = static_cast<__nv_bfloat16*>(p.d) + row_offset;
    const float* c = p.c != nullptr ? p.c + row_offset : nullptr;
#pragma unroll
    for (int g = 0; g < kBlockN / 8; ++g) {
      const int col = col0 + 8 * g;
      if (col >= p.n) break;
      const bool pair = col + 1 < p.n;
      float v0 = accum[4 * g + 2 * h], v1 = accum[4 * g + 2 * h + 1];
      if constexpr (kFp32) {
        if (c != nullptr) {  // C aliases D: each element is read, then written, by one thread
          v0 += c[col];
          if (pair) v1 += c[col + 1];
        }
        if (pair && n_even) {
          *reinterpret_cast<float2*>(d32 + col) = make_float2(v0, v1);
        } else {
          d32[col] = v0;
          if (pair) d32[col + 1] = v1;
        }
      } else {
        if (pair && n_even) {
          *reinterpret_cast<__nv_bfloat162*>(d16 + col) = __floats2bfloat162_rn(v0, v1);
        } else {
          d16[col] = __float2bfloat16_rn(v0);
          if (pair) d16[col + 1] = __float2bfloat16_rn(v1);
        }
      }
    }
  }
}

template <int kBlockM, int kBlockN, int kClusterM, int kMajor>
__global__ void __launch_bounds__(Bf16GemmTraits<kBlockM, kBlockN, kClusterM, kMajor>::kNumThreads, 1)
    Sm90Bf16GemmKernel(const __grid_constant__ CUtensorMap tma_a, const __grid_constant__ CUtensorMap tma_a_tail,
                       const __grid_constant__ CUtensorMap tma_b,
                       const __grid_constant__ CUtensorMap tma_d, const Bf16GemmParams p, const int num_stages) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Traits = Bf16GemmTraits<kBlockM, kBlockN, kClusterM, kMajor>;
  using Barrier = RingBarrier;
  using Major = cute::SM90::GMMA::Major;
  using Wgmma = typename Bf16Wgmma<kBlockN, Traits::kAMnMajor ? Major::MN : Major::K,
                                   Traits::kBMnMajor ? Major::MN : Major::K>::Op;
  constexpr int kAccums = kBlockN / 2;  // FP32 accumulators per thread for a 64 x BLOCK_N slice

  extern __shared__ __align__(1024) uint8_t smem[];
  // [D staging: BF16 for TMA stores, [BLOCK_N/64 chunks][BLOCK_M rows][128 B], 128B-swizzled; or FP32 slabs of the
  // staged stores, [math warps][8 rows][128 B]; or nothing]
  uint8_t* smem_d = smem;
  uint8_t* smem_a = smem + (p.use_tma_store ? Traits::kSmemD : p.use_staged_store ? Traits::kSmemSlabs : 0);
  uint8_t* smem_b = smem_a + num_stages * Traits::kSmemA;
  Barrier* full = reinterpret_cast<Barrier*>(smem_b + num_stages * Traits::kSmemB);
  Barrier* empty = full + num_stages;

  const int warpgroup = __shfl_sync(0xffffffffu, int(threadIdx.x / 128), 0);  // warp-uniform (see the FP8 kernel)
  const int lane = threadIdx.x % 32;

  // In a cluster the two CTAs work on vertically adjacent tiles (M-blocks 2i and 2i+1) that share
  // the B tile: each loads half of it and multicasts it to both, so a stage may be refilled only
  // when the consumers of both CTAs have released it.
  const int cta_rank = kClusterM > 1 ? int(cute::block_rank_in_cluster()) : 0;
  InitStageRing<kClusterM>(full, empty, num_stages, Traits::kNumMathWarpgroups * 4);

  TileScheduler sched(p.m, p.n, kBlockM * kClusterM, kBlockN, p.raster_band);
  const int first_tile = blockIdx.x / kClusterM, tile_stride = gridDim.x / kClusterM;
  const bool k_grouped = Traits::kKGroupedWalk && p.grouping.group_k != nullptr;
  // Tile `tile` of this CTA's walk: its M/N blocks, its group (expert; -1 = padding: zeros), its
  // K-block range [kb_begin, kb_end) (a K-grouped group's, else all of K; empty for padding), whether
  // its group's K layout is broken (K-grouped only) and the rows [row_lo, row_hi) it stores (the
  // whole tile within M, except for a ragged unit).
  auto next_tile = [&](int tile, int& m_block, int& n_block, int& group, int& kb_begin, int& kb_end, bool& poisoned,
                       int& row_lo, int& row_hi) -> bool {
    kb_begin = 0, poisoned = false;
    if (!Traits::kAMnMajor && p.grouping.group_ends != nullptr) {  // M-grouped GEMMs: A K-major
      if (!NextRaggedTile<kBlockM, kBlockN>(p.grouping, p.m, p.n, tile, 0, m_block, n_block, group)) return false;
      RaggedTileRows<kBlockM>(p.grouping, p.m, m_block, group, row_lo, row_hi);
      kb_end = group < 0 ? 0 : p.num_k_blocks;
      return true;
    }
    if (k_grouped) {
      if (!NextKGroupedTile<kBf16BlockK>(sched, p.grouping, p.num_k_blocks, tile, m_block, n_block, group, kb_begin,
                                         kb_end, poisoned))
        return false;
    } else {
      // Split-K: the entry is split `tile % split_k` of output tile `tile / split_k`, a share of its K-blocks.
      int split = 0;
      if (Traits::kMaySplitK && p.split_k > 1) split = tile % p.split_k, tile /= p.split_k;
      if (!NextGemmTile<kBlockM, kBlockN, kClusterM>(sched, p.grouping, p.m, p.n, tile, cta_rank, m_block, n_block,
                                                     group))
        return false;
      kb_end = group < 0 ? 0 : p.num_k_blocks;
      if (Traits::kMaySplitK && p.split_k > 1) {
        kb_begin = split * p.num_k_blocks / p.split_k;
        kb_end = (split + 1) * p.num_k_blocks / p.split_k;
      }
    }
    row_lo = m_block * kBlockM, row_hi = min(p.m, row_lo + kBlockM);  // empty past M (2nd CTA of a pair)
    return true;
  };

  if (warpgroup == Traits::kNumMathWarpgroups) {
    // ---------------- producer warpgroup: one thread issues every TMA load ----------------
    cutlass::arch::warpgroup_reg_dealloc<40>();
    if (threadIdx.x == Traits::kNumMathThreads) {
      cute::prefetch_tma_descriptor(&tma_a);
      if (!Traits::kAMnMajor && p.a_tail_box_rows < kBlockM) cute::prefetch_tma_descriptor(&tma_a_tail);
      cute::prefetch_tma_descriptor(&tma_b);
      const uint32_t tail_tx_bytes = Traits::kTxBytes - (kBlockM - p.a_tail_box_rows) * kBf16BlockK * 2;
      int stage = 0, phase = 0;
      int m_block, n_block, group, kb_begin, kb_end, row_lo, row_hi;
      bool poisoned;
      for (int tile = first_tile; next_tile(tile, m_block, n_block, group, kb_begin, kb_end, poisoned, row_lo, row_hi);
           tile += tile_stride) {
        // A padding tile (or an empty K range) loads nothing; the consumers write zeros (or C).
        // M-grouped: B is [G * N, K] ([G * K, N] if MN-major) and the tile multiplies its expert's
        // slice (K-grouped: all of B, over the group's K range).
        const int expert = k_grouped ? 0 : max(group, 0);
        const int b_row0 = expert * p.n + n_block * kBlockN, b_k0 = expert * p.k;
        // The K-major A's tail box where it holds every row left (the last M-block's; a ragged tile may start
        // elsewhere).
        const bool a_tail = !Traits::kAMnMajor && m_block * kBlockM + p.a_tail_box_rows >= p.m;
        for (int kb = kb_begin; kb < kb_end; ++kb) {
          empty[stage].wait(phase ^ 1);
          full[stage].arrive_and_expect_tx(a_tail ? tail_tx_bytes : Traits::kTxBytes);
          auto* mbar = reinterpret_cast<uint64_t*>(&full[stage]);
          if constexpr (Traits::kAMnMajor) {
            // A stored [K, M]: BLOCK_M/64 boxes of 64 K rows x 64 M columns
#pragma unroll
            for (int c = 0; c < kBlockM / 64; ++c)
              cute::SM90_TMA_LOAD_2D::copy(&tma_a, mbar, kEvictNormal, smem_a + stage * Traits::kSmemA + c * 64 * 128,
                                           m_block * kBlockM + 64 * c, kb * kBf16BlockK);
          } else {
            cute::SM90_TMA_LOAD_2D::copy(a_tail ? &tma_a_tail : &tma_a, mbar, kEvictNormal,
                                         smem_a + stage * Traits::kSmemA, kb * kBf16BlockK, m_block * kBlockM);
          }
          if constexpr (Traits::kBMnMajor) {
            // B stored [K, N] ([G * K, N]): BLOCK_N/64 boxes of 64 K rows x 64 N columns
#pragma unroll
            for (int c = 0; c < kBlockN / 64; ++c)
              cute::SM90_TMA_LOAD_2D::copy(&tma_b, mbar, kEvictNormal, smem_b + stage * Traits::kSmemB + c * 64 * 128,
                                           n_block * kBlockN + 64 * c, b_k0 + kb * kBf16BlockK);
          } else if constexpr (kClusterM == 1) {
            cute::SM90_TMA_LOAD_2D::copy(&tma_b, mbar, kEvictNormal, smem_b + stage * Traits::kSmemB,
                                         kb * kBf16BlockK, b_row0);
          } else {
            const int half = cta_rank * Traits::kBRowsPerCta;
            cute::SM90_TMA_LOAD_MULTICAST_2D::copy(&tma_b, mbar, uint16_t((1 << kClusterM) - 1), kEvictNormal,
                                                   smem_b + stage * Traits::kSmemB + half * 128,
                                                   kb * kBf16BlockK, b_row0 + half);
          }
          if (++stage == num_stages) stage = 0, phase ^= 1;
        }
      }
    }
  } else {
    // ---------------- consumer warpgroups: WGMMA over the whole K + epilogue ----------------
    cutlass::arch::warpgroup_reg_alloc<Traits::kNumMathWarpgroups == 1 ? 248 : 232>();
    const int warp_in_wg = (threadIdx.x / 32) % 4;
    const int quad = lane % 4;                                            // column pair within each 8-column group
    const int row_in_tile = warpgroup * 64 + warp_in_wg * 16 + lane / 4;  // and row_in_tile + 8
    float accum[kAccums];
    // WGMMA descriptors of stage 0, K-step 0 (A: this warpgroup's 64 rows of 128 bytes if K-major, its
    // 64-column chunk (also 8 KiB) if MN-major); a K-step (k16) moves K-major starts by 32 bytes and
    // MN-major ones by 16 rows of 128 bytes.
    const uint64_t desc_a0 = Traits::kAMnMajor ? SmemDescMN128B(smem_a + warpgroup * 64 * 128, kBf16BlockK * 128)
                                               : SmemDescK128B(smem_a + warpgroup * 64 * 128);
    const uint64_t desc_b0 = Traits::kBMnMajor ? SmemDescMN128B(smem_b, kBf16BlockK * 128) : SmemDescK128B(smem_b);
    constexpr int kADescStep = (Traits::kAMnMajor ? 16 * 128 : 32) >> 4;
    constexpr int kBDescStep = (Traits::kBMnMajor ? 16 * 128 : 32) >> 4;
    int stage = 0, phase = 0;
    int m_block, n_block, group, kb_begin, kb_end, row_lo, row_hi;
    bool poisoned;

    // Releases stage `s` of the ring: one arrive per warp (lane i of a cluster releases CTA i's copy).
    auto release = [&](int s) {
      ReleaseStage<kClusterM>(empty[s], lane);
    };

    for (int tile = first_tile; next_tile(tile, m_block, n_block, group, kb_begin, kb_end, poisoned, row_lo, row_hi);
         tile += tile_stride) {
      // m_block may be past M for the second CTA of a ragged last cluster pair: it computes on
      // zero-filled A and stores nothing.
      const int row0 = m_block * kBlockM + row_in_tile, row1 = row0 + 8;
      const int n0 = n_block * kBlockN;
      // M-grouped: a padding tile (group -1) runs no K-blocks and stores zeros; K-grouped: an empty
      // group runs none and stores C[g] (or zeros).
      const int num_k_blocks = kb_end - kb_begin;

      // The accumulators start at zero and every WGMMA accumulates (scale-d = 1): a run-time
      // "first K-step overwrites" flag makes ptxas spill the 128-register accumulator of BLOCK_N = 256.
#pragma unroll
      for (int i = 0; i < kAccums; ++i) accum[i] = 0.0f;
      if (num_k_blocks > 0) {
        int prev_stage = 0;
        for (int kb = 0; kb < num_k_blocks; ++kb) {
          full[stage].wait(phase);
          const uint64_t desc_a = desc_a0 + uint64_t((stage * Traits::kSmemA) >> 4);
          const uint64_t desc_b = desc_b0 + uint64_t((stage * Traits::kSmemB) >> 4);
#pragma unroll
          for (int i = 0; i < kAccums; ++i) cute::warpgroup_fence_operand(accum[i]);
          cute::warpgroup_arrive();
#pragma unroll
          for (int k = 0; k < kBf16BlockK / 16; ++k)
            Bf16WgmmaFma<Wgmma>(desc_a + k * kADescStep, desc_b + k * kBDescStep, accum,
                                std::make_index_sequence<kAccums>{});
          cute::warpgroup_commit_batch();
          // Slice kb stays queued behind kb-1; once kb-1 has retired its stage can be refilled.
          cute::warpgroup_wait<1>();
#pragma unroll
          for (int i = 0; i < kAccums; ++i) cute::warpgroup_fence_operand(accum[i]);
          if (kb > 0) release(prev_stage);
          prev_stage = stage;
          if (++stage == num_stages) stage = 0, phase ^= 1;
        }
        cute::warpgroup_wait<0>();
#pragma unroll
        for (int i = 0; i < kAccums; ++i) cute::warpgroup_fence_operand(accum[i]);
        release(prev_stage);
      }

      if constexpr (Traits::kMaySplitK) {
        // Split-K: this CTA's partial goes to global memory; the tile's last CTA gets the sum and stores the tile. The
        // verdict goes through the stage ring's first word: the CTA has no other entry, so the ring is idle now.
        if (p.split_k > 1 &&
            !SplitKGlobalHandOver<kBlockN / 8, Traits::kNumMathThreads, kBf16MaxSplitK>(
                accum, p.split_partials, g_bf16_split_arrivals, tile / p.split_k, tile % p.split_k, p.split_k,
                int(threadIdx.x), reinterpret_cast<volatile int*>(smem_a)))
          continue;
      }
      if (Traits::kKGroupedWalk && poisoned) {
#pragma unroll
        for (int i = 0; i < kAccums; ++i) accum[i] = __int_as_float(0x7fc00000);  // broken K layout: NaN
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
            for (int g = 0; g < kBlockN / 8; ++g) accum[4 * g + 2 * h] = fill, accum[4 * g + 2 * h + 1] = fill;
          }
        }
      }

      // ---------------- epilogue ----------------
      // A warpgroup stores its 64 rows with TMA only when they all belong to this tile's unit (a
      // ragged tile straddling groups stores just its group's rows, through registers).
      const int wg_row0 = m_block * kBlockM + warpgroup * 64;
      const bool wg_rows_whole = row_lo <= wg_row0 && min(wg_row0 + 64, p.m) <= row_hi;
      if (Traits::kTmaStoreD && p.use_tma_store && wg_rows_whole) {
        // Registers -> swizzled shared memory (conflict-free: the 16-byte unit index is XORed with
        // the row) -> one TMA store per 64-column chunk of this warpgroup's 64 rows. The store is
        // asynchronous: the warpgroup goes on to the next tile and waits for the smem reads only
        // before it overwrites the staging buffer.
        const bool leader = threadIdx.x % 128 == 0;
        const uint32_t barrier_id = 1 + warpgroup;
        if (leader) cute::tma_store_wait<0>();
        cutlass::arch::NamedBarrier::sync(128, barrier_id);
        uint8_t* wg_staging = smem_d + warpgroup * 64 * 128;
        StageBf16Swizzled<kBlockN, kBlockM * 128>(accum, cute::cast_smem_ptr_to_uint(wg_staging), warp_in_wg, lane);
        cutlass::arch::fence_view_async_shared();
        cutlass::arch::NamedBarrier::sync(128, barrier_id);
        if (leader && wg_row0 < p.m) {
#pragma unroll
          for (int chunk = 0; chunk < kBlockN / 64; ++chunk)
            if (n0 + 64 * chunk < p.n)
              cute::SM90_TMA_STORE_2D::copy(&tma_d, wg_staging + chunk * (kBlockM * 128), n0 + 64 * chunk, wg_row0);
          cute::tma_store_arrive();
        }
        continue;
      }
      // Registers -> global memory, bounds-checked: FP32 output (+ C) staged (16-byte rows), else direct.
      const int64_t d_row0 = k_grouped ? int64_t(group) * p.m : 0;  // K-grouped D is [G * M, N]
      if (p.use_staged_store) {
        if (p.c != nullptr) {
          // C (aliasing D) is read in full before any store: no load then waits behind a store (staged_store.cuh).
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int row = row0 + 8 * h;
            if (row < row_lo || row >= row_hi) continue;
            const float* c = p.c + (d_row0 + row) * p.n + n0 + 2 * quad;
#pragma unroll
            for (int g = 0; g < kBlockN / 8; ++g) {
              if (n0 + 8 * g + 2 * quad >= p.n) break;  // n % 4 == 0: a pair is whole
              const float2 v = *reinterpret_cast<const float2*>(c + 8 * g);
              accum[4 * g + 2 * h] += v.x, accum[4 * g + 2 * h + 1] += v.y;
            }
          }
        }
        StagedStore<float, kBlockN, 1>(reinterpret_cast<const float(&)[1][kAccums]>(accum),
                                       smem_d + (threadIdx.x / 32) * kStagedSlabBytes<float>,
                                       static_cast<float*>(p.d) + d_row0 * p.n, row0 - lane / 4, n0, p.n, row_lo,
                                       row_hi, lane);
        continue;
      }
      if (p.out_fp32) {
        StoreRowsDirect<true, kBlockN>(p, accum, row0, n0 + 2 * quad, row_lo, row_hi, d_row0);
      } else {
        StoreRowsDirect<false, kBlockN>(p, accum, row0, n0 + 2 * quad, row_lo, row_hi, d_row0);
      }
    }
    if (Traits::kTmaStoreD && p.use_tma_store) {
      if (threadIdx.x % 128 == 0) cute::tma_store_wait<0>();  // staging smem must outlive the stores
    }
  }
  ExitStageRing<kClusterM>();
#endif
}

}  // namespace jdg
