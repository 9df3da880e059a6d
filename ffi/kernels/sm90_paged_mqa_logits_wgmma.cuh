// Paged FP8 lightning-indexer logits with WGMMA + TMA (the FP8 fast path; the mma.sync kernel of
// sm90_paged_mqa_logits.cuh covers FP4 and is the fallback under JAX_DEEPGEMM_MQA_MMA_SYNC=1).
//
// Same schedule and walk as the mma.sync kernel (PagedSettle over the metadata's unit range, split
// between ctas_per_row CTAs). CTA = 3 warpgroups:
//   * WG 2, one thread: per 64-token tile, TMA-loads the tile's rows straight from the fused cache
//     (a 3-D tensor map {D, block_kv, num_blocks} with the cache's block stride: each box is
//     min(block_kv, 64) rows of one block, found through the block table) into a 6-stage ring;
//   * WGs 0 / 1 take alternate tiles (tile k -> stage k % 6 -> WG k % 2), so one WG's epilogue
//     overlaps the other's WGMMAs. Each WG keeps the Q rows of its current atom (all heads of its
//     1-2 query tokens, 128B/64B/32B-swizzled like the KV rows) in its own buffer, reloaded by TMA
//     when the atom changes, and multiplies: m64 (tokens) x N = min(atom tokens * H, 128) x K = D,
//     two column chunks when an atom has 256 query-head rows (H = 128, next_n >= 2).
//   * epilogue: relu * weight head-sum on the accumulator registers, 4-lane shuffles, x the token's
//     FP32 scale (read from the cache block), staged per WG and stored coalesced, -inf past each
//     query token's context length when cleaning (the clean kernel covers the columns past the last
//     tile, as for the mma.sync kernel).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/arch/mma_sm90_desc.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>

#include "kernels/sm90_mqa_logits_wgmma.cuh"
#include "kernels/sm90_paged_mqa_logits.cuh"

namespace jdg {
namespace mqa {

template <int kN>
struct PagedWgmmaOp;
template <>
struct PagedWgmmaOp<32> {
  using Op = cute::SM90::GMMA::MMA_64x32x32_F32E4M3E4M3_SS_TN<>;
};
template <>
struct PagedWgmmaOp<64> {
  using Op = cute::SM90::GMMA::MMA_64x64x32_F32E4M3E4M3_SS_TN<>;
};
template <>
struct PagedWgmmaOp<128> {
  using Op = cute::SM90::GMMA::MMA_64x128x32_F32E4M3E4M3_SS_TN<>;
};

template <class Op, size_t... I>
__device__ __forceinline__ void PagedWgmmaFma(uint64_t desc_a, uint64_t desc_b, float* d, bool accumulate,
                                              std::index_sequence<I...>) {
  Op::fma(desc_a, desc_b, d[I]..., accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}

template <int kD, int kH>
struct PagedWgSmem {
  static constexpr int kQRows = 2 * kH;                 // rows of one atom (<= 2 tokens x H heads)
  static constexpr int kQBytes = kQRows * kD;           // per math WG
  static constexpr int kTileBytes = kTileKv * kD;
  static constexpr int kQ = 0;                          // [2 WGs][kQRows][kD]
  static constexpr int kKv = kQ + 2 * kQBytes;          // [6][64][kD]
  static constexpr int kW = kKv + kWgStages * kTileBytes;   // [2 WGs][kQRows] f32
  static constexpr int kOut = kW + 2 * kQRows * 4;          // [2 WGs][4][64] f32
  static constexpr int kBar = kOut + 2 * 4 * kTileKv * 4;   // full[6], empty[6], q[2]
  static constexpr int kBytes = kBar + (2 * kWgStages + 2) * 8 + 1024;
  static_assert(kKv % 1024 == 0 && kTileBytes % 1024 == 0, "swizzle-atom aligned operand tiles");
};

// Physical cache block of logical token t of batch row b (clamped: never out of bounds).
__device__ __forceinline__ int PagedBlock(const Params& p, int b, int t) {
  const int idx = min(t / p.block_kv, p.max_blocks - 1);
  return min(max(__ldg(p.block_table + int64_t(b) * p.max_blocks + idx), 0), p.num_blocks - 1);
}

template <int kD, int kH, int kNC>
__global__ void __launch_bounds__(kWgThreads, 1)
    PagedMqaLogitsWgmmaKernel(const __grid_constant__ CUtensorMap tma_q, const __grid_constant__ CUtensorMap tma_kv,
                              const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  using L = PagedWgSmem<kD, kH>;
  using Op = typename PagedWgmmaOp<kNC>::Op;
  constexpr int kAcc = kNC / 2;
  constexpr int kTokPerChunk = kNC / kH;
  static_assert(kNC % kH == 0 && kNC <= L::kQRows, "tile columns hold whole tokens");
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  FullBarrier* full = reinterpret_cast<FullBarrier*>(smem + L::kBar);
  EmptyBarrier* empty = reinterpret_cast<EmptyBarrier*>(full + kWgStages);
  FullBarrier* q_bar = reinterpret_cast<FullBarrier*>(empty + kWgStages);
  const int warpgroup = threadIdx.x / 128;
  const int total_atoms = p.batch * p.num_atoms;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kWgStages; ++s) {
      full[s].init(1);
      empty[s].init(4);
    }
    q_bar[0].init(1);
    q_bar[1].init(1);
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  const int row = blockIdx.x / p.ctas_per_row, mine = blockIdx.x % p.ctas_per_row;
  const int start_atom = min(max(__ldg(p.meta + 2 * row), 0), total_atoms);
  const int start_split = max(__ldg(p.meta + 2 * row + 1), 0);
  const int end_atom = min(max(__ldg(p.meta + 2 * row + 2), 0), total_atoms);
  const int end_split = max(__ldg(p.meta + 2 * row + 3), 0);
  // The CTA's tiles, in order: (atom, split, sub) cursors advanced over this CTA's share.
  auto settle_mine = [&](int& a, int& s, int& sb, int& counter) -> bool {
    while (PagedSettle(p, a, s, sb, end_atom, end_split)) {
      if (counter % p.ctas_per_row == mine) return true;
      ++sb;
      ++counter;
    }
    return false;
  };
  int atom = start_atom, split = start_split, sub = 0, counter = 0;
  bool have = settle_mine(atom, split, sub, counter);
  const int box_rows = min(p.block_kv, kTileKv);

  if (warpgroup == 2) {
    // ---------------- producer: one thread issues the KV loads ----------------
    if (threadIdx.x == 256) {
      constexpr uint64_t kEvictFirst = 0x12F0000000000000ull;  // CacheHintSm90::EVICT_FIRST: streamed once
      cute::prefetch_tma_descriptor(&tma_kv);
      for (int k = 0; have; ++k) {
        const int s = k % kWgStages, phase = (k / kWgStages) & 1;
        const int b = atom / p.num_atoms;
        const int t0 = split * kSplitKv + sub * kTileKv;
        empty[s].wait(phase ^ 1);
        full[s].arrive_and_expect_tx(L::kTileBytes);
        for (int i = 0; i < kTileKv / box_rows; ++i) {
          const int t = t0 + i * box_rows;
          cute::SM90_TMA_LOAD_3D::copy(&tma_kv, reinterpret_cast<uint64_t*>(&full[s]), kEvictFirst,
                                       smem + L::kKv + s * L::kTileBytes + i * box_rows * kD, 0, t % p.block_kv,
                                       PagedBlock(p, b, t));
        }
        ++sub;
        ++counter;
        have = settle_mine(atom, split, sub, counter);
      }
    }
    return;
  }

  // ---------------- math warpgroups: tiles k with k % 2 == warpgroup ----------------
  const int tid = threadIdx.x % 128;
  const int warp = tid / 32, lane = tid % 32;
  const int g = lane >> 2, t4 = lane & 3;
  uint8_t* s_q = smem + L::kQ + warpgroup * L::kQBytes;
  float* s_w = reinterpret_cast<float*>(smem + L::kW) + warpgroup * L::kQRows;
  float* s_out = reinterpret_cast<float*>(smem + L::kOut) + warpgroup * 4 * kTileKv;
  int loaded_atom = -1, q_phase = 0;
  const int64_t total_rows = int64_t(p.batch) * p.next_n * kH;
  float acc[kAcc];
  for (int k = 0; have; ++k) {
    if (k % 2 == warpgroup) {
      const int s = k % kWgStages, phase = (k / kWgStages) & 1;
      const int b = atom / p.num_atoms;
      const int j0 = (atom % p.num_atoms) * p.atom_size;
      const int count = min(p.atom_size, p.next_n - j0);
      const int ctx = PagedCtxLast(p, b);
      const int t0 = split * kSplitKv + sub * kTileKv;
      const int chunks = (count * kH + kNC - 1) / kNC;
      if (atom != loaded_atom) {  // this WG's previous readers of s_q / s_w passed its last barrier
        const int64_t row0 = (int64_t(b) * p.next_n + j0) * kH;
        if (tid == 0) {
          q_bar[warpgroup].arrive_and_expect_tx(chunks * kNC * kD);
          for (int c = 0; c < chunks; ++c)
            cute::SM90_TMA_LOAD_2D::copy(&tma_q, reinterpret_cast<uint64_t*>(&q_bar[warpgroup]),
                                         0x1000000000000000ull, s_q + c * kNC * kD, 0, int(row0) + c * kNC);
        }
        for (int r = tid; r < chunks * kNC; r += 128)
          s_w[r] = row0 + r < total_rows ? __ldg(p.weights + row0 + r) : 0.f;
        NamedBarrier(1 + warpgroup, 128);
        q_bar[warpgroup].wait(q_phase);
        q_phase ^= 1;
        loaded_atom = atom;
      }
      // this thread's two rows and their scales (0 past the context: those logits are never kept)
      const int r0 = warp * 16 + g, r1 = r0 + 8;
      float sc0 = 0.f, sc1 = 0.f;
      const int64_t scale_base = int64_t(p.block_kv) * kD;
      if (t0 + r0 < ctx)
        sc0 = __ldg(reinterpret_cast<const float*>(p.kv + PagedBlock(p, b, t0 + r0) * p.block_bytes + scale_base) +
                    (t0 + r0) % p.block_kv);
      if (t0 + r1 < ctx)
        sc1 = __ldg(reinterpret_cast<const float*>(p.kv + PagedBlock(p, b, t0 + r1) * p.block_bytes + scale_base) +
                    (t0 + r1) % p.block_kv);
      full[s].wait(phase);
      const uint8_t* a_tile = smem + L::kKv + s * L::kTileBytes;
      for (int c = 0; c < chunks; ++c) {
#pragma unroll
        for (int i = 0; i < kAcc; ++i) cute::warpgroup_fence_operand(acc[i]);
        cute::warpgroup_arrive();
#pragma unroll
        for (int kk = 0; kk < kD / 32; ++kk)
          PagedWgmmaFma<Op>(WgDescK<kD>(a_tile + kk * 32), WgDescK<kD>(s_q + c * kNC * kD + kk * 32), acc, kk > 0,
                            std::make_index_sequence<kAcc>{});
        cute::warpgroup_commit_batch();
        cute::warpgroup_wait<0>();
#pragma unroll
        for (int i = 0; i < kAcc; ++i) cute::warpgroup_fence_operand(acc[i]);
#pragma unroll
        for (int tok = 0; tok < kTokPerChunk; ++tok) {
          float v0 = 0.f, v1 = 0.f;
#pragma unroll
          for (int nn = 0; nn < kH / 8; ++nn) {
            const int n = tok * (kH / 8) + nn;
            const float w0 = s_w[c * kNC + n * 8 + t4 * 2], w1 = s_w[c * kNC + n * 8 + t4 * 2 + 1];
            v0 += fmaxf(acc[n * 4 + 0], 0.f) * w0 + fmaxf(acc[n * 4 + 1], 0.f) * w1;
            v1 += fmaxf(acc[n * 4 + 2], 0.f) * w0 + fmaxf(acc[n * 4 + 3], 0.f) * w1;
          }
          v0 += __shfl_xor_sync(0xffffffffu, v0, 1);
          v1 += __shfl_xor_sync(0xffffffffu, v1, 1);
          v0 += __shfl_xor_sync(0xffffffffu, v0, 2);
          v1 += __shfl_xor_sync(0xffffffffu, v1, 2);
          if (t4 == 0) {
            s_out[(c * kTokPerChunk + tok) * kTileKv + r0] = v0 * sc0;
            s_out[(c * kTokPerChunk + tok) * kTileKv + r1] = v1 * sc1;
          }
        }
      }
      if (lane == 0) empty[s].arrive();
      NamedBarrier(1 + warpgroup, 128);
      for (int idx = tid; idx < count * kTileKv; idx += 128) {
        const int tok = idx / kTileKv;
        const int t = t0 + idx % kTileKv;
        if (t >= p.out_cols) continue;
        const int out_row = b * p.next_n + j0 + tok;
        const int ctx_j = min(max(__ldg(p.context_lens + out_row), 0), ctx);
        StoreLogit(p, int64_t(out_row) * p.out_cols + t, (p.clean && t >= ctx_j) ? -INFINITY : s_out[idx]);
      }
      NamedBarrier(1 + warpgroup, 128);
    }
    ++sub;
    ++counter;
    have = settle_mine(atom, split, sub, counter);
  }
#endif
}

}  // namespace mqa
}  // namespace jdg
