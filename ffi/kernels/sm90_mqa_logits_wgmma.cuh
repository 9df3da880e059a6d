// Ranged FP8 lightning-indexer logits with WGMMA + TMA, D in {32, 64, 128} (the fast path of the
// ranged FP8 op; the mma.sync kernel of sm90_mqa_logits.cuh covers FP4 and is the fallback when
// JAX_DEEPGEMM_MQA_MMA_SYNC=1 is set). Rows of D bytes are K-major with a D-byte TMA swizzle
// (128B / 64B / 32B), matched by the WGMMA descriptors' layout type.
//
// CTA = 3 warpgroups: WG 2 is the producer (one thread issues TMA loads), WGs 0 and 1 are math.
//   * Q of the CTA's query block (128/H tokens x H heads = 128 rows of 128 bytes, 128B-swizzled) is
//     loaded once; it is the WGMMA B operand (N = 128).
//   * KV tiles of 64 rows (the A operand, M = 64) stream through a 6-stage ring; tile it goes to
//     stage it % 6 and is consumed by math WG it % 2. The two math WGs therefore work on different
//     tiles: one's epilogue (relu * weight head-sum on its accumulator registers, shuffles, x kv
//     scale, store) overlaps the other's WGMMAs.
//   * per tile: D/32 WGMMAs m64n128k32 into a fresh FP32 accumulator (64 registers).
//   * KV tiles outside [min ks, max ke) of the query block are skipped (written -inf when cleaning).
//
// Cost per tile: 64 x 128 x 128 x 2 = 2.1 MFLOP of tensor work against ~64 x 128 FMAs + 16 shuffles
// per thread of epilogue; the anchors' 1.1 PFLOPS needs the epilogue hidden behind the other WG's
// MMAs, which this structure allows but has not been measured.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/arch/mma_sm90_desc.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>

#include "kernels/sm90_mqa_logits.cuh"

namespace jdg {
namespace mqa {

constexpr int kWgStages = 6;  // KV ring depth (even: stage parity = consumer WG)
constexpr int kWgThreads = 384;

template <int kD>
struct WgSmem {
  static constexpr int kTileBytes = kTileKv * kD;  // per stage: 64 rows of D bytes
  static constexpr int kQBytes = 128 * kD;         // 128 query-head rows
  static constexpr int kQ = 0;
  static constexpr int kKv = kQ + kQBytes;                           // multiples of the swizzle atom
  static constexpr int kW = kKv + kWgStages * kTileBytes;            // [128] f32 weights
  static constexpr int kOut = kW + 128 * 4;                         // [2 WGs][4 tokens][64] f32
  static constexpr int kMisc = kOut + 2 * 4 * kTileKv * 4;          // ks[4], ke[4], lo, hi
  static constexpr int kBar = kMisc + 64;                           // full[6], empty[6], q_full (8 B each)
  static constexpr int kBytes = kBar + (2 * kWgStages + 1) * 8 + 1024;  // + slack for 1024-B alignment
};

// K-major tile whose rows are kD bytes, swizzled over kD bytes (TMA CU_TENSOR_MAP_SWIZZLE_{kD}B):
// CuTe's canonical K-major layouts ((8,n),2):((kD/16,SBO),1) in 16-byte units, i.e. 8-row core groups
// 8 * kD bytes apart; a k32 step advances the start address by 32 bytes (tile bases are aligned to
// the swizzle repeat, so base_offset stays 0).
template <int kD>
__device__ __forceinline__ uint64_t WgDescK(const void* smem) {
  static_assert(kD == 32 || kD == 64 || kD == 128, "swizzle width = row bytes");
  cute::GmmaDescriptor desc;
  desc.bitfield.start_address_ = static_cast<uint16_t>(cute::cast_smem_ptr_to_uint(smem) >> 4);
  desc.bitfield.leading_byte_offset_ = 1;  // CuTe's canonical swizzled K-major value (unused by the MMA)
  desc.bitfield.stride_byte_offset_ = (8 * kD) >> 4;
  desc.bitfield.base_offset_ = 0;
  desc.bitfield.layout_type_ = static_cast<uint8_t>(kD == 128  ? cute::SM90::GMMA::LayoutType::B128
                                                    : kD == 64 ? cute::SM90::GMMA::LayoutType::B64
                                                               : cute::SM90::GMMA::LayoutType::B32);
  return desc.desc_;
}

template <size_t... I>
__device__ __forceinline__ void WgMma64x128(uint64_t desc_a, uint64_t desc_b, float* d, bool accumulate,
                                            std::index_sequence<I...>) {
  cute::SM90::GMMA::MMA_64x128x32_F32E4M3E4M3_SS_TN<>::fma(
      desc_a, desc_b, d[I]..., accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}

__device__ __forceinline__ void NamedBarrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

template <int kD, int kH>
__global__ void __launch_bounds__(kWgThreads, 1)
    MqaLogitsWgmmaKernel(const __grid_constant__ CUtensorMap tma_q, const __grid_constant__ CUtensorMap tma_kv,
                         const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using FullBarrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  constexpr int kNQ = 128 / kH;
  using L = WgSmem<kD>;
  extern __shared__ uint8_t smem_raw[];
  // 128B-swizzled TMA destinations and WGMMA descriptors need 1024-byte alignment
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  float* s_w = reinterpret_cast<float*>(smem + L::kW);
  int* s_misc = reinterpret_cast<int*>(smem + L::kMisc);
  FullBarrier* full = reinterpret_cast<FullBarrier*>(smem + L::kBar);
  EmptyBarrier* empty = reinterpret_cast<EmptyBarrier*>(full + kWgStages);
  FullBarrier* q_full = reinterpret_cast<FullBarrier*>(empty + kWgStages);
  const int warpgroup = threadIdx.x / 128;
  const int q0 = blockIdx.x * kNQ;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kWgStages; ++s) {
      full[s].init(1);   // the producer's arrive_and_expect_tx
      empty[s].init(4);  // one arrive per warp of the consuming WG
    }
    q_full->init(1);
    cutlass::arch::fence_barrier_init();
  }
  if (threadIdx.x < kNQ) {
    const int i = q0 + threadIdx.x;
    int ks = 0, ke = 0;
    if (i < p.num_q) {
      ks = min(max(__ldg(p.ks + i), 0), p.s_kv);
      ke = min(max(__ldg(p.ke + i), ks), p.s_kv);
    }
    s_misc[threadIdx.x] = ks;
    s_misc[4 + threadIdx.x] = ke;
  }
  if (threadIdx.x < 128) {
    const int64_t r = int64_t(q0) * kH + threadIdx.x;
    s_w[threadIdx.x] = r < int64_t(p.num_q) * kH ? __ldg(p.weights + r) : 0.f;
  }
  __syncthreads();
  int lo = INT32_MAX, hi = 0;
  for (int t = 0; t < kNQ; ++t)
    if (s_misc[4 + t] > s_misc[t]) lo = min(lo, s_misc[t]), hi = max(hi, s_misc[4 + t]);
  if (hi == 0) lo = 0;
  const int num_tiles = (p.s_kv + kTileKv - 1) / kTileKv;
  const int t_lo = lo / kTileKv, t_hi = hi > lo ? (hi + kTileKv - 1) / kTileKv : t_lo;
  const int first = t_lo + blockIdx.y;
  const int count = first < t_hi ? (t_hi - first + gridDim.y - 1) / gridDim.y : 0;
  const int valid_q = min(kNQ, p.num_q - q0);

  if (warpgroup == 2) {
    // ---------------- producer: one thread issues every TMA load ----------------
    if (threadIdx.x == 256 && count > 0) {
      constexpr uint64_t kEvictNormal = 0x1000000000000000ull;
      cute::prefetch_tma_descriptor(&tma_q);
      cute::prefetch_tma_descriptor(&tma_kv);
      q_full->arrive_and_expect_tx(L::kQBytes);
      cute::SM90_TMA_LOAD_2D::copy(&tma_q, reinterpret_cast<uint64_t*>(q_full), kEvictNormal, smem + L::kQ, 0,
                                   q0 * kH);
      for (int it = 0; it < count; ++it) {
        const int s = it % kWgStages, phase = (it / kWgStages) & 1;
        empty[s].wait(phase ^ 1);
        full[s].arrive_and_expect_tx(L::kTileBytes);
        cute::SM90_TMA_LOAD_2D::copy(&tma_kv, reinterpret_cast<uint64_t*>(&full[s]), kEvictNormal,
                                     smem + L::kKv + s * L::kTileBytes, 0, (first + it * gridDim.y) * kTileKv);
      }
    }
    return;
  }

  // ---------------- math warpgroups ----------------
  const int tid = threadIdx.x % 128;
  const int warp = tid / 32, lane = tid % 32;
  float* s_out = reinterpret_cast<float*>(smem + L::kOut) + warpgroup * 4 * kTileKv;
  if (p.clean && !p.compressed) {  // -inf over the tiles no row of this block needs
    for (int tile = blockIdx.y; tile < num_tiles; tile += gridDim.y) {
      if (tile >= t_lo && tile < t_hi) continue;
      for (int idx = threadIdx.x; idx < valid_q * kTileKv; idx += 256) {
        const int j = tile * kTileKv + idx % kTileKv;
        if (j < p.s_kv) StoreLogit(p, int64_t(q0 + idx / kTileKv) * p.out_cols + j, -INFINITY);
      }
    }
  }
  if (count == 0) return;
  q_full->wait(0);
  float acc[64];
  for (int it = warpgroup; it < count; it += 2) {
    const int s = it % kWgStages, phase = (it / kWgStages) & 1;
    const int tile = first + it * gridDim.y;
    full[s].wait(phase);
    const uint8_t* a_tile = smem + L::kKv + s * L::kTileBytes;
    const uint8_t* b_tile = smem + L::kQ;
#pragma unroll
    for (int i = 0; i < 64; ++i) cute::warpgroup_fence_operand(acc[i]);
    cute::warpgroup_arrive();
#pragma unroll
    for (int k = 0; k < kD / 32; ++k)
      WgMma64x128(WgDescK<kD>(a_tile + k * 32), WgDescK<kD>(b_tile + k * 32), acc, k > 0,
                  std::make_index_sequence<64>{});
    cute::warpgroup_commit_batch();
    cute::warpgroup_wait<0>();
#pragma unroll
    for (int i = 0; i < 64; ++i) cute::warpgroup_fence_operand(acc[i]);
    if (lane == 0) empty[s].arrive();

    // relu(q.k) * w summed over each token's heads; acc[j*4 + c] is the mma.sync C layout of n-tile j
    const int g = lane >> 2, t = lane & 3;
    const int row = warp * 16 + g;
    const int j0 = tile * kTileKv;
    const float sc0 = j0 + row < p.s_kv ? __ldg(p.kv_scale + j0 + row) : 0.f;
    const float sc1 = j0 + row + 8 < p.s_kv ? __ldg(p.kv_scale + j0 + row + 8) : 0.f;
#pragma unroll
    for (int tok = 0; tok < kNQ; ++tok) {
      float r0 = 0.f, r1 = 0.f;
#pragma unroll
      for (int nn = 0; nn < kH / 8; ++nn) {
        const int n = tok * (kH / 8) + nn;
        const float w0 = s_w[n * 8 + t * 2], w1 = s_w[n * 8 + t * 2 + 1];
        r0 += fmaxf(acc[n * 4 + 0], 0.f) * w0 + fmaxf(acc[n * 4 + 1], 0.f) * w1;
        r1 += fmaxf(acc[n * 4 + 2], 0.f) * w0 + fmaxf(acc[n * 4 + 3], 0.f) * w1;
      }
      r0 += __shfl_xor_sync(0xffffffffu, r0, 1);
      r1 += __shfl_xor_sync(0xffffffffu, r1, 1);
      r0 += __shfl_xor_sync(0xffffffffu, r0, 2);
      r1 += __shfl_xor_sync(0xffffffffu, r1, 2);
      if (t == 0) {
        s_out[tok * kTileKv + row] = r0 * sc0;
        s_out[tok * kTileKv + row + 8] = r1 * sc1;
      }
    }
    NamedBarrier(1 + warpgroup, 128);
    for (int idx = tid; idx < valid_q * kTileKv; idx += 128) {
      const int tok = idx / kTileKv;
      const int j = j0 + idx % kTileKv;
      if (j >= p.s_kv) continue;
      const int ks = s_misc[tok], ke = s_misc[4 + tok];
      const int64_t out_row = int64_t(q0 + tok) * p.out_cols;
      const float v = s_out[idx];
      if (p.compressed) {
        if (j >= ks && j < ke && j - ks < p.out_cols) StoreLogit(p, out_row + (j - ks), v);
      } else {
        StoreLogit(p, out_row + j, (p.clean && (j < ks || j >= ke)) ? -INFINITY : v);
      }
    }
    NamedBarrier(1 + warpgroup, 128);
  }
#endif
}

}  // namespace mqa
}  // namespace jdg
