// Paged FP8 and FP4 lightning-indexer logits with WGMMA + TMA (the fast path; the mma.sync kernel of
// sm90_paged_mqa_logits.cuh is the fallback under JAX_DEEPGEMM_MQA_MMA_SYNC=1).
//
// The DeepGEMM SM90 design on our schedule metadata. A CTA (one per SM, or ctas_per_row sharing a
// schedule row) walks its (atom, 256-token split) units: an atom is 1-2 query tokens of one batch
// row, a split 4 tiles of 64 tokens, and math warpgroup w (of 4) takes tile w of every split. Each
// math WG has its own KV ring, fed by its own producer warp (the producer WG's warp w): per tile it
// looks the tile's cache blocks up in the block table (a lane per block, one tile ahead) and
// TMA-loads the rows (a 3-D map {D, block_kv, num_blocks} over the fused cache) and their FP32 scales
// (a 2-D map over the blocks' scale tails). Warp 0 also loads each new atom's Q rows (all heads of
// its tokens, D-byte swizzled) and weights into a 2-stage Q ring shared by the math WGs.
// The math WG multiplies m64 (tokens) x N = min(atom tokens * H, 128) x K = D (two column chunks
// when an atom has 256 query-head rows: H = 128, next_n >= 2), reduces relu * weight over heads on
// the accumulator registers, scales, and stores from registers: -inf past each query token's context
// length when cleaning (the clean kernel covers the columns past the last tile).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/arch/mma_sm90_desc.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "kernels/cache_hints.cuh"
#include "kernels/sm90_mqa_logits_wgmma.cuh"
#include "kernels/sm90_paged_mqa_logits.cuh"

namespace jdg {
namespace mqa {

// The m64nNk32 FP8 WGMMAs of a column chunk: Ss with both operands in shared memory (FP8 KV tiles), Rs
// with A (the KV tile) from registers (FP4 rows decoded into WGMMA fragments).
template <int kN>
struct PagedWgmmaOp;
template <>
struct PagedWgmmaOp<32> {
  using Ss = cute::SM90::GMMA::MMA_64x32x32_F32E4M3E4M3_SS_TN<>;
  using Rs = cute::SM90::GMMA::MMA_64x32x32_F32E4M3E4M3_RS_TN<>;
};
template <>
struct PagedWgmmaOp<64> {
  using Ss = cute::SM90::GMMA::MMA_64x64x32_F32E4M3E4M3_SS_TN<>;
  using Rs = cute::SM90::GMMA::MMA_64x64x32_F32E4M3E4M3_RS_TN<>;
};
template <>
struct PagedWgmmaOp<128> {
  using Ss = cute::SM90::GMMA::MMA_64x128x32_F32E4M3E4M3_SS_TN<>;
  using Rs = cute::SM90::GMMA::MMA_64x128x32_F32E4M3E4M3_RS_TN<>;
};

template <class Op, size_t... I>
__device__ __forceinline__ void PagedWgmmaFmaRs(const uint32_t (&a)[4], uint64_t desc_b, float* d, bool accumulate,
                                                std::index_sequence<I...>) {
  Op::fma(a[0], a[1], a[2], a[3], desc_b, d[I]...,
          accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}

template <class Op, size_t... I>
__device__ __forceinline__ void PagedWgmmaFma(uint64_t desc_a, uint64_t desc_b, float* d, bool accumulate,
                                              std::index_sequence<I...>) {
  Op::fma(desc_a, desc_b, d[I]..., accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}

constexpr int kPgMathWgs = kSplitKv / kTileKv;  // 4: math WG w takes tile w of each split
constexpr int kPgThreads = (kPgMathWgs + 1) * 128;
constexpr int kPgQStages = 2;
constexpr int kPgKvStages = 4;                   // per math WG
constexpr int kPgMathRegs = 112;                 // 512 x 112 + 128 x 32 = 640 x 96, the launch allocation
constexpr int kPgProducerRegs = 32;
// The relu x weight head sum on the tensor cores (HeadSumMma) in the FP8 instances too. The FP4 ones always use it:
// their math warps also decode, and the CUDA-core sum was two thirds of a tile's instructions (H200, session 24:
// FP4 B 256 n 1 H 64 96.0 -> 85.3 us, B 4096 n 2 1758 -> 1520 us). Off for FP8: there it cost 77.6 -> 83.5 us at
// B 256 (the head-sum WGMMA's round trip lengthens each tile) and gained 3.5 % at B 4096.
constexpr bool kPgHeadMmaFp8 = false;

template <int kD, int kH, bool kFp4>
struct PagedWgSmem {
  static constexpr int kRowBytes = kFp4 ? kD / 2 : kD;  // bytes of one staged (TMA-loaded) row
  static constexpr int kQRows = 2 * kH;                 // rows of one atom (<= 2 tokens x H heads)
  static constexpr int kQBytes = kQRows * kRowBytes;
  static constexpr int kTileBytes = kTileKv * kRowBytes;
  static constexpr int kQ = 0;                                              // [q stages][kQRows][row]
  static constexpr int kKv = kQ + kPgQStages * kQBytes;                     // [WGs][kv stages][64][row]
  static constexpr int kW = kKv + kPgMathWgs * kPgKvStages * kTileBytes;    // [q stages][kQRows] f32
  static constexpr int kScale = kW + kPgQStages * kQRows * 4;               // [WGs][kv stages][slot] f32/int32
  // a tile's scale slot: one 128-byte aligned run per box (32 floats apart for 16-row boxes)
  static constexpr int kScaleSlot = 2 * kTileKv;
  static constexpr int kFp4Area = kScale + kPgMathWgs * kPgKvStages * kScaleSlot * 4;
  // FP4 only: the query rows decoded to e4m3 (the B operand, D-byte swizzled) and their weights times
  // their powers of two
  static constexpr int kQsf = kFp4Area;                                     // [q stages][kQRows] int32
  static constexpr int kQDec = kFp4 ? (kQsf + kPgQStages * kQRows * 4 + 1023) / 1024 * 1024 : kQsf;  // [kQRows][kD]
  static constexpr int kQWeight = kQDec + (kFp4 ? kQRows * kD : 0);        // [kQRows] f32
  static constexpr int kLut = kQWeight + (kFp4 ? kQRows * 4 : 0);          // [22] uint2
  // Per math WG: the atom's head weights as the B operand of the head-sum WGMMAs (HeadWeightMatrix)
  static constexpr bool kHeadMma = kFp4 || kPgHeadMmaFp8;
  static constexpr int kHeadW = (kLut + (kFp4 ? kE2m1LutSize * 8 : 0) + 127) / 128 * 128;  // [WGs][kQRows * 16 B]
  static constexpr int kBar = kHeadW + (kHeadMma ? kPgMathWgs * kQRows * 16 : 0);
  // q_full[2], q_empty[2], kv_full[WGs][stages], kv_empty[WGs][stages]
  static constexpr int kBytes = kBar + (2 * kPgQStages + 2 * kPgMathWgs * kPgKvStages) * 8 + 1024;
  static_assert(kKv % 128 == 0 && kTileBytes % 128 == 0 && kW % 128 == 0 && kScale % 128 == 0 &&
                    kQsf % 128 == 0 && (!kFp4 || kQDec % 1024 == 0),
                "swizzle-atom aligned operand tiles, 128-B aligned TMA destinations");
  static_assert(kFp4 || kKv % 1024 == 0, "FP8 rows are the WGMMA operands: swizzle-atom aligned");
  static_assert(kBytes <= 227 * 1024, "shared memory per CTA");
};

// Physical cache block of logical token t >= 0 of batch row b (clamped: never out of bounds);
// block_shift = log2(block_kv), a power of two.
__device__ __forceinline__ int PagedBlock(const Params& p, int b, int t, int block_shift) {
  const int idx = min(t >> block_shift, p.max_blocks - 1);
  return min(max(__ldg(p.block_table + int64_t(b) * p.max_blocks + idx), 0), p.num_blocks - 1);
}

// This CTA's (atom, 256-token split) units in order: the schedule row's [start, end) range, every
// ctas_per_row-th existing unit (PagedSettle's walk). The atom's batch row, first token, token count
// and context are refreshed only when the atom changes (an atom is 1 or 2 query tokens, num_atoms
// per batch row is 1 or 2), so a step costs no division and no global load.
struct PagedUnitCursor {
  int atom, split, counter, end_atom, end_split, mine, total_atoms;
  int b, j0, count, ctx;
  // Splits of the current atom below fast_end are all units of this CTA (one CTA per schedule row): Next's fast
  // path, an increment and one compare per tile instead of Settle's tests (~20 instructions per warp per tile).
  int fast_end;

  __device__ __forceinline__ void LoadAtom(const Params& p) {
    fast_end = 0;
    if (atom >= total_atoms) return;
    b = p.num_atoms == 2 ? atom >> 1 : atom;
    j0 = p.num_atoms == 2 ? (atom & 1) * p.atom_size : 0;
    count = min(p.atom_size, p.next_n - j0);
    ctx = PagedCtxLast(p, b);
    if (p.ctas_per_row == 1 && atom <= end_atom)
      fast_end = min((ctx + kSplitKv - 1) / kSplitKv, atom == end_atom ? end_split : INT32_MAX);
  }
  // The first existing unit at or after (atom, split); false past the range.
  __device__ __forceinline__ bool Settle(const Params& p) {
    while (true) {
      if (atom >= total_atoms || atom > end_atom || (atom == end_atom && split >= end_split)) return false;
      if (split * kSplitKv < ctx) return true;
      ++atom, split = 0;  // this split starts past the context: the atom is done
      LoadAtom(p);
    }
  }
  __device__ __forceinline__ bool SettleMine(const Params& p) {
    while (Settle(p)) {
      if (p.ctas_per_row == 1 || counter % p.ctas_per_row == mine) return true;
      ++split, ++counter;
    }
    return false;
  }
  __device__ __forceinline__ bool Next(const Params& p) {
    ++split, ++counter;
    return split < fast_end || SettleMine(p);
  }
};

__device__ __forceinline__ PagedUnitCursor FirstPagedUnit(const Params& p, bool& have) {
  PagedUnitCursor c;
  c.total_atoms = p.batch * p.num_atoms;
  const int row = blockIdx.x / p.ctas_per_row;
  c.mine = blockIdx.x % p.ctas_per_row;
  c.atom = min(max(__ldg(p.meta + 2 * row), 0), c.total_atoms);
  c.split = max(__ldg(p.meta + 2 * row + 1), 0);
  c.end_atom = min(max(__ldg(p.meta + 2 * row + 2), 0), c.total_atoms);
  c.end_split = max(__ldg(p.meta + 2 * row + 3), 0);
  c.counter = 0;
  c.b = c.j0 = c.count = c.ctx = c.fast_end = 0;
  c.LoadAtom(p);
  have = c.SettleMine(p);
  return c;
}

template <int kD, int kH, int kNC, bool kFp4>
__global__ void __launch_bounds__(kPgThreads, 1)
    PagedMqaLogitsWgmmaKernel(const __grid_constant__ CUtensorMap tma_q, const __grid_constant__ CUtensorMap tma_kv,
                              const __grid_constant__ CUtensorMap tma_scale, const __grid_constant__ CUtensorMap tma_w,
                              const __grid_constant__ CUtensorMap tma_qsf, const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  using L = PagedWgSmem<kD, kH, kFp4>;
  using Op = typename PagedWgmmaOp<kNC>::Ss;
  using RsOp = typename PagedWgmmaOp<kNC>::Rs;
  constexpr bool kHeadMma = L::kHeadMma;
  // FP4 with 128 columns and the CUDA-core head sum: the weights are read per tile, not held (the A fragments leave
  // no registers)
  constexpr bool kWeightsPerTile = kFp4 && kNC == 128 && !kHeadMma;
  constexpr int kAcc = kNC / 2;
  constexpr int kTokPerChunk = kNC / kH;
  static_assert(kNC % kH == 0 && kNC <= L::kQRows, "tile columns hold whole tokens");
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  float* s_w = reinterpret_cast<float*>(smem + L::kW);
  Barrier* q_full = reinterpret_cast<Barrier*>(smem + L::kBar);
  Barrier* q_empty = q_full + kPgQStages;
  Barrier* kv_full = q_empty + kPgQStages;
  Barrier* kv_empty = kv_full + kPgMathWgs * kPgKvStages;
  const int warp = __shfl_sync(0xffffffffu, int(threadIdx.x / 32), 0);
  const int warpgroup = warp / 4, lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kPgQStages; ++s) q_full[s].init(1), q_empty[s].init(kPgMathWgs * 4);
    for (int s = 0; s < kPgMathWgs * kPgKvStages; ++s) kv_full[s].init(1), kv_empty[s].init(4);
    cutlass::arch::fence_barrier_init();
  }
  uint2* lut = reinterpret_cast<uint2*>(smem + L::kLut);
  if constexpr (kFp4) {
    if (threadIdx.x < kE2m1LutSize) lut[threadIdx.x] = make_uint2(kE2m1Lut[threadIdx.x][0], kE2m1Lut[threadIdx.x][1]);
  }
  __syncthreads();

  const int box_rows = min(p.block_kv, kTileKv);
  const int box_shift = __ffs(box_rows) - 1;
  const int block_shift = __ffs(p.block_kv) - 1;  // block_kv: a power of two (checked in Python)
  const int scale_stride = max(box_rows, 32);  // floats between boxes' scales: 128-B aligned TMA destinations
  const int q_boxes = (p.atom_size * kH + kNC - 1) / kNC;

  if (warpgroup == kPgMathWgs) {
    // ---------------- producer warps: warp w feeds math WG w (warp 0 also loads Q) ----------------
    cutlass::arch::warpgroup_reg_dealloc<kPgProducerRegs>();
    const int wg = warp % 4;
    if (lane == 0) {
      cute::prefetch_tma_descriptor(&tma_kv);
      cute::prefetch_tma_descriptor(&tma_scale);
      if (wg == 0) cute::prefetch_tma_descriptor(&tma_q), cute::prefetch_tma_descriptor(&tma_w);
      if (kFp4 && wg == 0) cute::prefetch_tma_descriptor(&tma_qsf);
    }
    Barrier* full = kv_full + wg * kPgKvStages;
    const uint32_t full_u32 = cute::cast_smem_ptr_to_uint(full);
    const uint32_t empty_u32 = cute::cast_smem_ptr_to_uint(kv_empty + wg * kPgKvStages);
    int q_atom = -1, q_it = 0;
    uint32_t kv_it = 0;  // unsigned: stage and phase by mask and shift
    bool have;
    PagedUnitCursor cur = FirstPagedUnit(p, have);
    // Block-table lookups by windows of this warp's tiles: one warp-wide load serves 32 / n_boxes consecutive
    // splits of a batch row (lane j: box j % n_boxes of the tile at split s0 + j / n_boxes), so a lookup's latency
    // is exposed once per window (32 tiles at block_kv 64) instead of once per tile. The per-tile lookup it replaced
    // (one tile ahead) set this warp's pace: ~1 us per tile per warp, FP8 and FP4 alike, whatever the bytes. The
    // producer warps have 32 registers, so the window is one register of blocks and one of position. Windows are
    // aligned (s0 a multiple of their width) and keyed by the ordinal b * padded_splits + s0, the row's splits
    // padded to a multiple of the width, so a window never spans two rows (the next row's first splits are
    // never served blocks looked up for this one) and keys are unique below 2^31 (checked by the Python side).
    // Lanes past a short row's context look up clamped blocks that no tile uses.
    constexpr int kTileShift = 6;
    static_assert(1 << kTileShift == kTileKv);
    uint32_t win_o = 0x80000000u;  // no window yet: unreachable by any key < 2^31
    int win_blk = 0;
    // The lane holding box 0 of the tile at (b, split) in win_blk (warp-uniform arguments).
    auto window_lane = [&](int b, int split) {
      const int nb_shift = kTileShift - box_shift;  // log2(n_boxes)
      const int width_mask = (32 >> nb_shift) - 1;  // window width: 32 / n_boxes splits, a power of two
      const int padded_splits = (((p.max_blocks << block_shift) + kSplitKv - 1) / kSplitKv + width_mask) & ~width_mask;
      const int s0 = split & ~width_mask;
      const uint32_t key = uint32_t(b * padded_splits + s0);
      if (key != win_o) {
        win_o = key;
        int l;  // the lane, re-read here: held from before the loop, its mix with wg was spilled
        asm volatile("mov.u32 %0, %%laneid;" : "=r"(l));
        const int t = (s0 + (l >> nb_shift)) * kSplitKv + wg * kTileKv + ((l << box_shift) & (kTileKv - 1));
        win_blk = PagedBlock(p, b, t, block_shift);
      }
      return (split & width_mask) << nb_shift;
    };
    // A window's lookup stalls this warp's loads until it returns, and one that misses L2 (each entry is
    // read once) stalls them longest: pull the first batch row's table into L2 now, and each next row's
    // when a row starts (a lane per 128 bytes, addresses inside the row).
    auto prefetch_table_row = [&](int r) {
      if (r >= p.batch) return;
      const int32_t* row = p.block_table + int64_t(r) * p.max_blocks;
      for (int i = lane; i <= p.max_blocks / 32; i += 32)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(row + min(32 * i, p.max_blocks - 1)));
    };
    if (have) prefetch_table_row(cur.b);
    while (have) {
      const int t0 = cur.split * kSplitKv + wg * kTileKv;
      const bool has_tile = t0 < cur.ctx;
      if (cur.split == 0 && cur.j0 == 0) prefetch_table_row(cur.b + 1);
      if (wg == 0 && cur.atom != q_atom) {
        q_atom = cur.atom;
        const int s = q_it % kPgQStages, phase = (q_it / kPgQStages) & 1;
        ++q_it;
        if (lane == 0) {
          q_empty[s].wait(phase ^ 1);
          q_full[s].arrive_and_expect_tx(q_boxes * kNC * L::kRowBytes + p.atom_size * kH * 4 * (kFp4 ? 2 : 1));
          auto* mbar = reinterpret_cast<uint64_t*>(&q_full[s]);
          const int tok0 = cur.b * p.next_n + cur.j0;
          for (int c = 0; c < q_boxes; ++c)
            cute::SM90_TMA_LOAD_2D::copy(&tma_q, mbar, kEvictNormal,
                                         smem + L::kQ + s * L::kQBytes + c * kNC * L::kRowBytes, 0,
                                         tok0 * kH + c * kNC);
          cute::SM90_TMA_LOAD_2D::copy(&tma_w, mbar, kEvictNormal, s_w + s * L::kQRows, 0, tok0);
          if constexpr (kFp4)
            cute::SM90_TMA_LOAD_2D::copy(&tma_qsf, mbar, kEvictNormal, smem + L::kQsf + s * L::kQRows * 4, 0, tok0);
        }
      }
      const int blk_lane = has_tile ? window_lane(cur.b, cur.split) : 0;
      const int cur_t0 = t0;
      have = cur.Next(p);
      if (has_tile) {
        const int s = int(kv_it % kPgKvStages), phase = int(kv_it / kPgKvStages) & 1;
        ++kv_it;
        uint8_t* dst = smem + L::kKv + (wg * kPgKvStages + s) * L::kTileBytes;
        float* dst_scale = reinterpret_cast<float*>(smem + L::kScale) + (wg * kPgKvStages + s) * L::kScaleSlot;
        auto* mbar = reinterpret_cast<uint64_t*>(&full[s]);
        if (lane == 0) {
          MbarWait(empty_u32 + 8 * s, phase ^ 1);
          MbarArriveExpectTx(full_u32 + 8 * s, kTileKv * (L::kRowBytes + 4));
        }
        __syncwarp();
        // The lanes holding the tile's blocks issue its boxes' loads themselves (no shuffles to lane 0).
        const int i = lane - blk_lane;  // this lane's box of the tile
        if ((unsigned(i) << box_shift) < unsigned(kTileKv)) {  // i < n_boxes (no register held for n_boxes)
          const int in_block = (cur_t0 + i * box_rows) & (p.block_kv - 1);  // block_kv: a power of two
          cute::SM90_TMA_LOAD_3D::copy(&tma_kv, mbar, kEvictFirst, dst + i * box_rows * L::kRowBytes, 0, in_block,
                                       win_blk);
          cute::SM90_TMA_LOAD_2D::copy(&tma_scale, mbar, kEvictFirst, dst_scale + i * scale_stride, in_block, win_blk);
        }
      }
    }
    return;
  }

  // ---------------- math warpgroups: tile `warpgroup` of each split ----------------
  cutlass::arch::warpgroup_reg_alloc<kPgMathRegs>();
  const int t4 = lane % 4;
  const int r0 = (warp % 4) * 16 + lane / 4;  // this thread's first row of the tile
  const uint8_t* kv_ring = smem + L::kKv + warpgroup * kPgKvStages * L::kTileBytes;
  const float* scale_ring = reinterpret_cast<const float*>(smem + L::kScale) + warpgroup * kPgKvStages * L::kScaleSlot;
  auto scale_slot = [&](int r) { return (r >> box_shift) * scale_stride + (r & (box_rows - 1)); };
  const float* q_weight = reinterpret_cast<const float*>(smem + L::kQWeight);  // FP4: weights x powers of two
  // 32-bit shared addresses of this WG's barriers and stage-0 descriptors, computed once (a stage, a
  // column chunk or a k step adds its byte offset / 16 to the descriptor's start address, as in the
  // ranged kernel): building them per tile cost ~70 uniform-datapath instructions per warp per tile.
  const uint32_t full_u32 = cute::cast_smem_ptr_to_uint(kv_full + warpgroup * kPgKvStages);
  const uint32_t empty_u32 = cute::cast_smem_ptr_to_uint(kv_empty + warpgroup * kPgKvStages);
  const uint64_t desc_kv0 = WgDescK<kD>(kv_ring);
  const uint32_t kv_ring_u32 = cute::cast_smem_ptr_to_uint(kv_ring);
  const uint32_t scale_ring_u32 = cute::cast_smem_ptr_to_uint(scale_ring);
  const uint32_t lut_u32 = cute::cast_smem_ptr_to_uint(lut);
  const uint64_t desc_q0 = WgDescK<kD>(smem + (kFp4 ? L::kQDec : L::kQ));
  // kHeadMma: this WG's head-weight matrix (the B operand of the head-sum WGMMAs), rewritten at each atom switch
  const uint32_t head_w_u32 = cute::cast_smem_ptr_to_uint(smem + L::kHeadW) + warpgroup * L::kQRows * 16;
  const uint64_t desc_w0 = HeadWeightDesc(head_w_u32);
  float acc[kAcc], w[kTokPerChunk][kH / 4];  // (w: unused with kHeadMma)
  int loaded_atom = -1, loaded_chunk = -1, q_it = 0, qs = 0;
  uint32_t kv_it = 0;  // unsigned: stage and phase by mask and shift
  int ctx_tok[2] = {0, 0};  // context length of each token of the atom
  bool have;
  PagedUnitCursor cur = FirstPagedUnit(p, have);

  // The next atom's query stage: release the previous one (its weights are read until now), wait for
  // the new one, and (FP4) decode its query rows with all 4 math WGs: first every WG is past its
  // WGMMAs on the previous atom, then the decoded rows are visible to all of them.
  auto next_q_stage = [&]() {
    if (q_it > 0) {
      __syncwarp();
      if (lane == 0) q_empty[qs].arrive();
    }
    qs = q_it % kPgQStages;
    const int q_phase = (q_it / kPgQStages) & 1;
    ++q_it;
    q_full[qs].wait(q_phase);
    if constexpr (kFp4) {
      cutlass::arch::NamedBarrier::sync(kPgMathWgs * 128, 1);
      DecodeFp4QRows<kD>(smem + L::kQ + qs * L::kQBytes,
                         reinterpret_cast<const uint32_t*>(smem + L::kQsf + qs * L::kQRows * 4), q_boxes * kNC, lut,
                         smem + L::kQDec, s_w + qs * L::kQRows, reinterpret_cast<float*>(smem + L::kQWeight),
                         threadIdx.x, kPgMathWgs * 128);
      cutlass::arch::NamedBarrier::sync(kPgMathWgs * 128, 1);
    }
  };
  // The new atom's head weights: held in registers, or (kHeadMma) written as this WG's head-weight matrix once every
  // warp of the WG is past its head-sum WGMMAs of the previous atom (named barriers 2 + WG; 1 is the 4-WG barrier of
  // the FP4 query decode).
  auto build_head_weights = [&]() {
    cutlass::arch::NamedBarrier::sync(128, 2 + warpgroup);
    HeadWeightMatrix<kH, kNC, L::kQRows>(kFp4 ? q_weight : s_w + qs * L::kQRows, head_w_u32, threadIdx.x % 128);
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // generic-proxy writes -> WGMMA reads
    cutlass::arch::NamedBarrier::sync(128, 2 + warpgroup);
  };
  auto load_ctx_tok = [&](int (&out)[2], const PagedUnitCursor& u) {
#pragma unroll
    for (int i = 0; i < 2; ++i)
      out[i] = i < u.count ? min(max(__ldg(p.context_lens + u.b * p.next_n + u.j0 + i), 0), u.ctx) : 0;
  };
  // FP4: this thread's rows of the next stage's tile (first row t0, context ctx), decoded into A
  // fragments with their scales (rows past the context: 0), then the stage is free.
  // (this lane's run in its first row, and its scale group's byte selector: computed once, not per tile)
  const uint32_t lane_run = uint32_t(r0 * L::kRowBytes) + Fp4RunOffset<kD>(t4);
  const uint32_t group_selector = Fp4GroupSelector<kD>(t4);
  auto decode_fp4_tile = [&](int t0, int ctx, uint32_t (&frag)[kD / 32][4], float& sc0, float& sc1) {
    const int s = int(kv_it % kPgKvStages), phase = int(kv_it / kPgKvStages) & 1;
    ++kv_it;
    MbarWait(full_u32 + 8 * s, phase);
    const uint32_t tile = kv_ring_u32 + s * L::kTileBytes;
    const uint32_t sf = scale_ring_u32 + 4 * (s * L::kScaleSlot);
    const float2 pw = DecodeFp4Fragment<kD>(tile + lane_run, tile + lane_run + 8 * L::kRowBytes,
                                            sf + 4 * scale_slot(r0), sf + 4 * scale_slot(r0 + 8), group_selector,
                                            lut_u32, frag);
    sc0 = t0 + r0 < ctx ? pw.x : 0.f;
    sc1 = t0 + r0 + 8 < ctx ? pw.y : 0.f;
    // one lane releases the stage once the whole warp has read it (elect.sync converges the warp and picks the
    // lane; `lane == 0` re-read the thread index every tile)
    if (cute::elect_one_sync()) MbarArrive(empty_u32 + 8 * s);
  };
  // The logits of column chunk c of a tile (first row t0) of batch row b, tokens j0.. (count), from the
  // accumulators; -inf past each token's context length when cleaning.
  // kHeadMma: lane t of each quad holds token c * kTokPerChunk + t's head sums of rows r0 and r0 + 8.
  auto store_tile = [&](int c, int b, int j0, int count, int t0, const int (&ctx_of)[2], float sc0, float sc1) {
    if constexpr (kHeadMma) {
      float d[4];
      HeadSumMma(acc, desc_w0 + uint64_t(c * kNC), d, std::make_index_sequence<kNC / 16>{});
      const int jt = c * kTokPerChunk + t4;  // token of the atom
      if (t4 >= kTokPerChunk || jt >= count) return;
      const int ctx_j = jt == 0 ? ctx_of[0] : ctx_of[1];
      const int64_t row = int64_t(b * p.next_n + j0 + jt) * p.out_cols;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int t = t0 + r0 + 8 * h;
        const float v = h == 0 ? d[0] * sc0 : d[2] * sc1;
        if (t < p.out_cols) StoreLogit(p, row + t, (p.clean && t >= ctx_j) ? -INFINITY : v);
      }
      return;
    }
    float vals[(2 * kTokPerChunk + 3) / 4];
    TokenLogits<kH, kTokPerChunk>(acc, w, sc0, sc1, t4, vals);
    StoreLaneValues<2 * kTokPerChunk>(vals, t4, [&](int tok, int h, float v) {
      const int jt = c * kTokPerChunk + tok;  // token of the atom
      const int t = t0 + r0 + 8 * h;
      if (jt >= count || t >= p.out_cols) return;
      const int ctx_j = jt == 0 ? ctx_of[0] : ctx_of[1];
      StoreLogit(p, int64_t(b * p.next_n + j0 + jt) * p.out_cols + t, (p.clean && t >= ctx_j) ? -INFINITY : v);
    });
  };
  auto fence_fragments = [&](uint32_t (&frag)[kD / 32][4]) {  // the WGMMAs read the fragments until here
#pragma unroll
    for (int kk = 0; kk < kD / 32; ++kk) {
#pragma unroll
      for (int j = 0; j < 4; ++j) cute::warpgroup_fence_operand(frag[kk][j]);
    }
  };

  // FP4 with one column chunk (kNC <= 64: the atom's query-head rows fit one WGMMA N): the next tile's
  // KV rows are decoded while this tile's WGMMAs run, and the atom switches (query decode) wait until
  // this tile's logits are stored. Deadlock-free with one tile of lookahead: a WG's KV ring is fed by
  // its own producer warp, and warp 0's query loads need only stages that every WG released when it
  // switched to the current atom.
  constexpr bool kLookahead = kFp4 && kNC <= 64;
  // FP4 with 128 columns holding a whole atom (H 64, two tokens): the same walk (a tile's logit row worked out once
  // per atom, predicated stores, the unit cursor's fast path), one tile at a time: the lookahead's second fragment
  // set does not fit beside the 64 accumulators (it spilled, session 35).
  constexpr bool kPlainWalk = kFp4 && kNC == 128 && L::kQRows <= kNC;
  if constexpr (kLookahead || kPlainWalk) {
    static_assert(kHeadMma, "the FP4 kernels sum over heads on the tensor cores");
    // A tile's logits destination, worked out once per atom (find_tile) instead of at every store: this lane's
    // token row as a byte address, the column bound of its stores (0 for lanes that hold no token of the atom) and
    // the first column cleaned to -inf (past the token's context, or never). The per-tile store then costs ~30 warp
    // instructions instead of ~40 (SASS: no row index, clean or count tests, 64-bit address pairs per tile).
    struct LogitRow {
      char* addr;  // a pointer, not an integer: the stores stay global (STG), not generic
      int store_end, mask_from;
    };
    struct Tile {
      LogitRow out;
      int t0;
      float sc0, sc1;
    };
    int walk_atom = -1;
    LogitRow walk_out{nullptr, 0, 0};
    const int elem_shift = p.bf16 ? 1 : 2;
    auto atom_logit_row = [&](const PagedUnitCursor& u) {
      int ctx_of[2];
      load_ctx_tok(ctx_of, u);
      const int jt = t4;  // one column chunk: lane t of a quad holds token t's head sums
      const bool stores = jt < kTokPerChunk && jt < u.count;
      const int64_t row = int64_t(u.b * p.next_n + u.j0 + (stores ? jt : 0)) * p.out_cols;
      return LogitRow{static_cast<char*>(p.out) + (row << elem_shift), stores ? p.out_cols : 0,
                      p.clean ? (jt == 0 ? ctx_of[0] : ctx_of[1]) : INT32_MAX};
    };
    // The head sums of the tile just multiplied, scaled per row and stored (lane t of each quad holds token t's sums
    // of rows r0 and r0 + 8).
    auto store_tile_row = [&](const Tile& tile) {
      float d[4];
      HeadSumMma(acc, desc_w0, d, std::make_index_sequence<kNC / 16>{});
      // Both rows' values and tests first, then predicated stores: no branch around them (a divergent one: only the
      // lanes holding a token store), which cost a BSSY / BRA / BSYNC and a re-read of p.bf16 per row.
      const bool bf16 = p.bf16;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int t = tile.t0 + r0 + 8 * h;
        const float v = h == 0 ? d[0] * tile.sc0 : d[2] * tile.sc1;
        const float logit = t >= tile.out.mask_from ? -INFINITY : v;
        const bool store = t < tile.out.store_end;
        if (store && bf16) reinterpret_cast<__nv_bfloat16*>(tile.out.addr)[t] = __float2bfloat16_rn(logit);
        if (store && !bf16) reinterpret_cast<float*>(tile.out.addr)[t] = logit;
      }
    };
    // Advances the walk to the next unit holding a tile of this WG (the current unit first), counting
    // the atoms entered on the way (each needs its query switch); false past the last unit.
    auto find_tile = [&](int& switches) {
      // The common case first, outside the walk's loop: the current unit, of the atom already entered, holds a tile
      // of this WG. (With the loop alone, the compiler hoisted the walk's invariants (atom and row arithmetic) into
      // the loop's preheader, ~12 uniform-datapath instructions at every tile.)
      if (have && cur.atom == walk_atom && cur.split * kSplitKv + warpgroup * kTileKv < cur.ctx) return true;
      for (; have; have = cur.Next(p)) {
        if (cur.atom != walk_atom) {
          walk_atom = cur.atom, ++switches;
          walk_out = atom_logit_row(cur);
        }
        if (cur.split * kSplitKv + warpgroup * kTileKv < cur.ctx) return true;
      }
      return false;
    };
    auto take_tile = [&](uint32_t (&frag)[kD / 32][4], Tile& tile) {
      tile.out = walk_out;
      tile.t0 = cur.split * kSplitKv + warpgroup * kTileKv;
      decode_fp4_tile(tile.t0, cur.ctx, frag, tile.sc0, tile.sc1);
      have = cur.Next(p);
    };
    auto switch_atoms = [&](int switches) {
      for (int k = 0; k < switches; ++k) next_q_stage();
      if (switches == 0) return;
      build_head_weights();  // (both walks imply kHeadMma, asserted above)
    };
    // A tile's QK^T: its WGMMAs on the decoded fragments issued (A from registers, B the atom's decoded queries),
    // then, after whatever overlaps them, their wait.
    auto issue_qk = [&](uint32_t (&frag)[kD / 32][4]) {
#pragma unroll
      for (int i = 0; i < kAcc; ++i) cute::warpgroup_fence_operand(acc[i]);
      cute::warpgroup_arrive();
#pragma unroll
      for (int kk = 0; kk < kD / 32; ++kk)
        PagedWgmmaFmaRs<RsOp>(frag[kk], desc_q0 + 2 * kk, acc, kk > 0, std::make_index_sequence<kAcc>{});
      cute::warpgroup_commit_batch();
    };
    auto wait_qk = [&](uint32_t (&frag)[kD / 32][4]) {
      cute::warpgroup_wait<0>();
#pragma unroll
      for (int i = 0; i < kAcc; ++i) cute::warpgroup_fence_operand(acc[i]);
      fence_fragments(frag);
    };
    // One tile: WGMMAs on `frag` (this tile), the next tile decoded into `next` meanwhile, logits.
    auto step = [&](uint32_t (&frag)[kD / 32][4], Tile& tile, uint32_t (&next)[kD / 32][4], Tile& next_tile) {
      issue_qk(frag);
      int switches = 0;
      const bool more = find_tile(switches);
      if (more) take_tile(next, next_tile);
      wait_qk(frag);
      store_tile_row(tile);
      switch_atoms(switches);
      return more;
    };
    // kPlainWalk's tile: QK^T WGMMAs on `frag`, their wait, the logits, then the next tile decoded into `frag`.
    auto plain_step = [&](uint32_t (&frag)[kD / 32][4], Tile& tile) {
      issue_qk(frag);
      wait_qk(frag);
      store_tile_row(tile);
      int switches = 0;
      const bool more = find_tile(switches);
      if (more) take_tile(frag, tile);
      switch_atoms(switches);
      return more;
    };
    uint32_t frag_a[kD / 32][4];
    Tile tile_a;
    // The first atom's query switch (its decode by all four WGs) before the first KV tile's wait: the two loads are
    // in flight together from the start, and the query is decoded while the first KV tile is still arriving (H100,
    // session 37: FP4 paged 0.8-1.6 % faster on the H 64 L 8192 rows; it had waited ~1.1 us for the tile first).
    int switches = 0;
    bool more = find_tile(switches);
    switch_atoms(switches);
    if (more) take_tile(frag_a, tile_a);
    if constexpr (kPlainWalk) {
      while (more) more = plain_step(frag_a, tile_a);
    } else {
      // two steps per iteration, the fragment buffers swapping roles (static register indexing)
      uint32_t frag_b[kD / 32][4];
      Tile tile_b;
      while (more) {
        more = step(frag_a, tile_a, frag_b, tile_b);
        if (!more) break;
        more = step(frag_b, tile_b, frag_a, tile_a);
      }
    }
  } else {
    for (; have; have = cur.Next(p)) {
      const int b = cur.b, j0 = cur.j0, count = cur.count, ctx = cur.ctx;
      if (cur.atom != loaded_atom) {
        load_ctx_tok(ctx_tok, cur);  // in flight during the stage wait
        next_q_stage();
        if constexpr (kHeadMma) build_head_weights();
        loaded_atom = cur.atom, loaded_chunk = -1;
      }
      const int t0 = cur.split * kSplitKv + warpgroup * kTileKv;
      if (t0 >= ctx) continue;  // this split's tile `warpgroup` is past the context
      float sc0, sc1;
      uint32_t a_frag[kD / 32][4];
      int s = 0;
      if constexpr (kFp4) {
        decode_fp4_tile(t0, ctx, a_frag, sc0, sc1);
      } else {
        const int phase = int(kv_it / kPgKvStages) & 1;
        s = int(kv_it % kPgKvStages);
        ++kv_it;
        MbarWait(full_u32 + 8 * s, phase);
        // rows past the context read other blocks' data: scale 0, as the mma.sync kernel's zero-filled rows
        const uint32_t sf = scale_ring_u32 + 4 * (s * L::kScaleSlot);  // LDS (through a generic pointer: LD)
        sc0 = t0 + r0 < ctx ? LdsF32(sf + 4 * scale_slot(r0)) : 0.f;
        sc1 = t0 + r0 + 8 < ctx ? LdsF32(sf + 4 * scale_slot(r0 + 8)) : 0.f;
      }
      const uint64_t desc_a = desc_kv0 + uint64_t((s * L::kTileBytes) >> 4);
      const uint64_t desc_b = desc_q0 + uint64_t(((kFp4 ? 0 : qs * L::kQBytes)) >> 4);
      const int chunks = (count * kH + kNC - 1) / kNC;
      for (int c = 0; c < chunks; ++c) {
        if (!kHeadMma && !kWeightsPerTile && c != loaded_chunk) {  // once per atom, unless the atom has two column chunks
          HeadWeights<kH, kTokPerChunk>((kFp4 ? q_weight : s_w + qs * L::kQRows) + c * kNC, lane, w);
          loaded_chunk = c;
        }
#pragma unroll
        for (int i = 0; i < kAcc; ++i) cute::warpgroup_fence_operand(acc[i]);
        cute::warpgroup_arrive();
#pragma unroll
        for (int kk = 0; kk < kD / 32; ++kk) {
          const uint64_t desc_b_k = desc_b + uint64_t((c * kNC * kD) >> 4) + 2 * kk;
          if constexpr (kFp4)
            PagedWgmmaFmaRs<RsOp>(a_frag[kk], desc_b_k, acc, kk > 0, std::make_index_sequence<kAcc>{});
          else
            PagedWgmmaFma<Op>(desc_a + 2 * kk, desc_b_k, acc, kk > 0, std::make_index_sequence<kAcc>{});
        }
        cute::warpgroup_commit_batch();
        cute::warpgroup_wait<0>();
#pragma unroll
        for (int i = 0; i < kAcc; ++i) cute::warpgroup_fence_operand(acc[i]);
        if constexpr (kFp4) fence_fragments(a_frag);
        if (!kFp4 && c == chunks - 1) {
          __syncwarp();
          if (lane == 0) MbarArrive(empty_u32 + 8 * s);
        }
        if constexpr (kWeightsPerTile) HeadWeights<kH, kTokPerChunk>(q_weight + c * kNC, lane, w);
        store_tile(c, b, j0, count, t0, ctx_tok, sc0, sc1);
      }
    }
  }
#endif
}

}  // namespace mqa
}  // namespace jdg
