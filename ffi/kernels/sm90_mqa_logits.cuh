// Lightning-indexer (DeepSeek-V3.2) MQA logits on SM90: the shared tile machinery, the ranged
// (non-paged) kernel and the clean-logits kernel. The paged kernel and its schedule metadata live in
// sm90_paged_mqa_logits.cuh and reuse everything here.
//
//   logits[i, j] = sum_h relu(q[i, h] . kv[j]) * w[i, h] * kv_scale[j]           (FP8)
//   q[i, h] . kv[j] = sum_g 2^(eq[i,h,g] + ek[j,g]) * sum_{d in g} q_d k_d          (FP4, per-32 UE8M0)
//
// Tile: 64 KV rows (M, 16 per warp) x kNC query-head columns (N = tokens x H), K = D, FP32 accumulate
// with mma.sync m16n8k32 e4m3 (the KV rows are the M operand, so one KV tile is reused by every head
// of every query token of the block; the relu/weight/head-sum runs on the accumulator registers:
// 2 columns per thread per n-tile, then a 4-lane shuffle). FP4 operands are decoded to e4m3 on their
// way into shared memory (every E2M1 value is exact in e4m3); since a k32 MMA step is exactly one
// 32-element scale group, each step's partial sum goes to a fresh accumulator and is added with the
// product of the two power-of-two scales (exact in FP32), i.e. the per-32 scales are applied exactly.
//
// Pipeline: two shared-memory KV stages filled with cp.async (zero-filled past the end), the next
// tile loading while the current one is multiplied. Output: each tile's [tokens x 64] logits are
// staged in shared memory and written with coalesced stores (FP32 or BF16), masking as asked.
//
// Which kernel runs: FP8 -> the WGMMA + TMA kernels (sm90_mqa_logits_wgmma.cuh ranged,
// sm90_paged_mqa_logits_wgmma.cuh paged); FP4, and FP8 under JAX_DEEPGEMM_MQA_MMA_SYNC=1 -> the
// mma.sync kernels on the tile machinery here (ranged below, paged in sm90_paged_mqa_logits.cuh).
//
// Cost model vs the anchors (../shared/anchors.md, MQA): the ranged case is compute-bound over the
// tiles it runs (the anchors' TFLOPS count valid pairs only: 2*pairs*H*D, e.g. SQ 2048 x SK 8192
// x H 64 x D 128 non-CP = 2048*7168*64*128*2 = 240 GFLOP; 200 us needs 1.2 PFLOPS, WGMMA at ~60 %
// of the FP8 dense peak), hence WGMMA there; mma.sync (operands re-read from shared memory by every
// warp, ~2.25 32-bit LDS per m16n8k32) is shared-memory-bandwidth-bound well below that.
// The paged case is bandwidth-bound: B*L*(D+4) bytes of cache (B 256, L 8192, D 128: 277 MB at
// 2800 GB/s = 99 us) against 64 * tokens * H * D * 2 flops per 64-token tile (next_n 2, H 64:
// 2.1 MFLOP per 8.4 KB, i.e. ~700 TFLOPS at 2800 GB/s: at the edge of what mma.sync sustains);
// FP4 halves the bytes (64*(D/2+4)) but decodes on the CUDA cores and pays one scale FMA per group.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace jdg {
namespace mqa {

constexpr int kTileKv = 64;    // KV rows per tile (4 warps x 16)
constexpr int kThreads = 128;  // 4 warps
constexpr int kRowPad = 16;    // bytes of padding per shared-memory row: conflict-free fragment loads
constexpr int kSplitKv = 256;  // tokens per paged work unit (the metadata's split)

struct Params {
  // q: FP8 [rows, H, D] e4m3 bytes, or FP4 [rows, H, D/2] packed E2M1; rows = S or B*next_n
  const uint8_t* q;
  const int32_t* q_sf;     // FP4: [rows, H] packed UE8M0
  const uint8_t* kv;       // ranged: [S_kv, D] (FP4: [S_kv, D/2]); paged: the fused cache
  const float* kv_scale;   // ranged FP8: [S_kv]
  const int32_t* kv_sf;    // ranged FP4: [S_kv]
  const float* weights;    // [rows, H]
  const int32_t* ks;       // ranged: [S]
  const int32_t* ke;       // ranged: [S]
  const int32_t* context_lens;  // paged: [B, next_n]
  const int32_t* block_table;   // paged: [B, max_blocks]
  const int32_t* meta;          // paged: [num_sms + 1, 2]
  void* out;
  int num_q;        // query tokens: S, or B*next_n
  int s_kv;         // ranged: S_kv
  int out_cols;     // columns of the output: S_kv, max_seqlen_k or max_context_len
  int compressed;   // ranged: max_seqlen_k > 0
  int clean;        // write -inf outside each row's valid range
  int bf16;         // BF16 logits (else FP32)
  // paged
  int batch, next_n, atom_size, num_atoms;
  int block_kv, num_blocks, max_blocks;
  int64_t block_bytes;  // bytes per cache block
  int ctx_cap;          // min(max_context_len, max_blocks * block_kv)
  int ctas_per_row;     // CTAs sharing one schedule row (each takes every ctas_per_row-th tile)
};

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy, zero-filled when src_bytes == 0 (the source is then not read).
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(smem)), "l"(gmem), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// D(16x8, f32) += A(16x32 e4m3, row) . B(32x8 e4m3, col)
__device__ __forceinline__ void MmaE4m3(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t Lds32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// E2M1 code (4 bits) -> e4m3 byte. Magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6} are e4m3 {00 30 38 3C 40 44 48 4C}.
__device__ __forceinline__ uint32_t E2m1ToE4m3(uint32_t code) {
  constexpr unsigned long long kLut = 0x4C4844403C383000ull;
  const uint32_t mag = static_cast<uint32_t>(kLut >> ((code & 7u) * 8u)) & 0xFFu;
  return mag | ((code & 8u) << 4);
}

// 4 packed bytes (8 E2M1 codes, low nibble first) -> 8 e4m3 bytes (two words, element order kept).
__device__ __forceinline__ uint2 DecodeE2m1x8(uint32_t packed) {
  uint32_t lo = 0, hi = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    lo |= E2m1ToE4m3((packed >> (4 * i)) & 0xFu) << (8 * i);
    hi |= E2m1ToE4m3((packed >> (16 + 4 * i)) & 0xFu) << (8 * i);
  }
  return make_uint2(lo, hi);
}

// UE8M0 byte -> 2^(byte - 127) as float (byte 0 -> 0, 255 -> inf).
__device__ __forceinline__ float Ue8m0ToFloat(uint32_t byte) { return __uint_as_float((byte & 0xFFu) << 23); }

// Copies one operand row (D values) into shared memory: FP8 by cp.async, FP4 by load + decode.
// `src` may be nullptr (row past the end): zeros (`any_global` is a valid global address that the
// zero-filling cp.async is given but does not read).
template <int kD, bool kFp4>
__device__ __forceinline__ void LoadRowChunk(uint8_t* smem_row, const uint8_t* src, int chunk,
                                             const void* any_global) {
  // chunk: 16 decoded bytes (16 elements) of the row
  if constexpr (!kFp4) {
    CpAsync16(smem_row + chunk * 16, src != nullptr ? src + chunk * 16 : any_global, src != nullptr ? 16 : 0);
  } else {
    uint4 v = make_uint4(0, 0, 0, 0);
    if (src != nullptr) {
      const uint2 packed = __ldg(reinterpret_cast<const uint2*>(src + chunk * 8));
      const uint2 a = DecodeE2m1x8(packed.x), b = DecodeE2m1x8(packed.y);
      v = make_uint4(a.x, a.y, b.x, b.y);
    }
    *reinterpret_cast<uint4*>(smem_row + chunk * 16) = v;
  }
}

// Shared-memory layout of a tile kernel (byte offsets), for kQRows query-head rows.
template <int kD, int kQRows>
struct Smem {
  static constexpr int kLd = kD + kRowPad;
  static constexpr int kGroups = kD / 32;
  static constexpr int kQ = 0;                                   // [kQRows][kLd] e4m3
  static constexpr int kKv = kQ + kQRows * kLd;                   // [2][64][kLd] e4m3
  static constexpr int kW = kKv + 2 * kTileKv * kLd;              // [kQRows] f32
  static constexpr int kQs = kW + kQRows * 4;                     // [kQRows][kGroups] f32 (FP4)
  static constexpr int kKs = kQs + kQRows * kGroups * 4;          // [2][64][kGroups] f32 (FP8: [2][64])
  static constexpr int kOut = kKs + 2 * kTileKv * kGroups * 4;    // [4][64] f32 staged logits
  static constexpr int kMisc = kOut + 4 * kTileKv * 4;            // a few ints
  static constexpr int kBytes = kMisc + 64;
  static_assert(kLd % 16 == 0 && kKv % 16 == 0, "16-byte aligned rows");
};

// One 64-row x kNC-column tile product on warp `warp`'s 16 rows. q_rows: shared rows of this chunk.
template <int kD, int kNC, bool kFp4>
__device__ __forceinline__ void TileMma(const uint8_t* s_kv, const uint8_t* s_q, const float* s_ks, const float* s_qs,
                                        float (&acc)[kNC / 8][4], int warp, int lane) {
  constexpr int kLd = kD + kRowPad;
  constexpr int kGroups = kD / 32;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int n = 0; n < kNC / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  const uint8_t* a0 = s_kv + (warp * 16 + g) * kLd + t * 4;
  const uint8_t* a1 = a0 + 8 * kLd;
  auto step = [&](int k) {
    const uint32_t a[4] = {Lds32(a0 + k * 32), Lds32(a1 + k * 32), Lds32(a0 + k * 32 + 16), Lds32(a1 + k * 32 + 16)};
    float s0 = 1.f, s1 = 1.f;
    if constexpr (kFp4) {
      s0 = s_ks[(warp * 16 + g) * kGroups + k];
      s1 = s_ks[(warp * 16 + g + 8) * kGroups + k];
    }
#pragma unroll
    for (int n = 0; n < kNC / 8; ++n) {
      const uint8_t* b = s_q + (n * 8 + g) * kLd + k * 32 + t * 4;
      if constexpr (!kFp4) {
        MmaE4m3(acc[n], a, Lds32(b), Lds32(b + 16));
      } else {
        float part[4] = {0.f, 0.f, 0.f, 0.f};
        MmaE4m3(part, a, Lds32(b), Lds32(b + 16));
        const float q0 = s_qs[(n * 8 + t * 2) * kGroups + k], q1 = s_qs[(n * 8 + t * 2 + 1) * kGroups + k];
        acc[n][0] += part[0] * (s0 * q0);
        acc[n][1] += part[1] * (s0 * q1);
        acc[n][2] += part[2] * (s1 * q0);
        acc[n][3] += part[3] * (s1 * q1);
      }
    }
  };
  if constexpr (kFp4) {
    // one scale group per step; not unrolled across groups (keeps the FP4 kernels within 255 registers)
#pragma unroll 1
    for (int k = 0; k < kGroups; ++k) step(k);
  } else {
#pragma unroll
    for (int k = 0; k < kGroups; ++k) step(k);
  }
}

// relu(acc) . w summed over each token's H columns -> s_out[token][row] (times the row's FP8 scale).
template <int kH, int kNC, bool kFp4>
__device__ __forceinline__ void TileReduce(const float (&acc)[kNC / 8][4], const float* s_w, const float* s_ks,
                                           float* s_out, int warp, int lane) {
  static_assert(kNC % kH == 0, "a tile holds whole tokens");
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int tok = 0; tok < kNC / kH; ++tok) {
    float r0 = 0.f, r1 = 0.f;
#pragma unroll
    for (int nn = 0; nn < kH / 8; ++nn) {
      const int n = tok * (kH / 8) + nn;  // compile-time after unrolling: acc stays in registers
      const float w0 = s_w[n * 8 + t * 2], w1 = s_w[n * 8 + t * 2 + 1];
      r0 += fmaxf(acc[n][0], 0.f) * w0 + fmaxf(acc[n][1], 0.f) * w1;
      r1 += fmaxf(acc[n][2], 0.f) * w0 + fmaxf(acc[n][3], 0.f) * w1;
    }
    r0 += __shfl_xor_sync(0xffffffffu, r0, 1);
    r1 += __shfl_xor_sync(0xffffffffu, r1, 1);
    r0 += __shfl_xor_sync(0xffffffffu, r0, 2);
    r1 += __shfl_xor_sync(0xffffffffu, r1, 2);
    if (t == 0) {
      const int row = warp * 16 + g;
      if constexpr (!kFp4) {
        r0 *= s_ks[row];
        r1 *= s_ks[row + 8];
      }
      s_out[tok * kTileKv + row] = r0;
      s_out[tok * kTileKv + row + 8] = r1;
    }
  }
}

__device__ __forceinline__ void StoreLogit(const Params& p, int64_t index, float v) {
  if (p.bf16)
    static_cast<__nv_bfloat16*>(p.out)[index] = __float2bfloat16_rn(v);
  else
    static_cast<float*>(p.out)[index] = v;
}

// Loads kRows query-head rows starting at global row `row0` (of `total_rows`) with their weights
// (and FP4 scales) into shared memory. FP8 rows go through cp.async (caller commits).
template <int kD, int kH, bool kFp4>
__device__ __forceinline__ void LoadQ(const Params& p, uint8_t* smem, int s_q, int s_w, int s_qs, int64_t row0,
                                      int rows, int64_t total_rows) {
  constexpr int kLd = kD + kRowPad;
  constexpr int kChunks = kD / 16;
  constexpr int kSrcRow = kFp4 ? kD / 2 : kD;
  for (int c = threadIdx.x; c < rows * kChunks; c += kThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    const int64_t gr = row0 + r;
    const uint8_t* src = gr < total_rows ? p.q + gr * kSrcRow : nullptr;
    LoadRowChunk<kD, kFp4>(smem + s_q + r * kLd, src, ch, p.q);
  }
  float* w = reinterpret_cast<float*>(smem + s_w);
  for (int r = threadIdx.x; r < rows; r += kThreads) {
    const int64_t gr = row0 + r;
    w[r] = gr < total_rows ? __ldg(p.weights + gr) : 0.f;
    if constexpr (kFp4) {
      constexpr int kGroups = kD / 32;
      const uint32_t word = gr < total_rows ? static_cast<uint32_t>(__ldg(p.q_sf + gr)) : 0u;
      float* qs = reinterpret_cast<float*>(smem + s_qs);
#pragma unroll
      for (int gi = 0; gi < kGroups; ++gi) qs[r * kGroups + gi] = Ue8m0ToFloat(word >> (8 * gi));
    }
  }
}

// Issues the loads of one 64-row KV tile of the ranged kernel: rows [j0, j0 + 64), zeros past s_kv.
template <int kD, bool kFp4>
__device__ __forceinline__ void LoadKvTileRanged(const Params& p, uint8_t* s_kv, float* s_ks, int j0) {
  constexpr int kLd = kD + kRowPad;
  constexpr int kChunks = kD / 16;
  constexpr int kSrcRow = kFp4 ? kD / 2 : kD;
  constexpr int kGroups = kD / 32;
  for (int c = threadIdx.x; c < kTileKv * kChunks; c += kThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    const int j = j0 + r;
    const uint8_t* src = j < p.s_kv ? p.kv + int64_t(j) * kSrcRow : nullptr;
    LoadRowChunk<kD, kFp4>(s_kv + r * kLd, src, ch, p.kv);
  }
  if (threadIdx.x < kTileKv) {
    const int j = j0 + threadIdx.x;
    if constexpr (!kFp4) {
      s_ks[threadIdx.x] = j < p.s_kv ? __ldg(p.kv_scale + j) : 0.f;
    } else {
      const uint32_t word = j < p.s_kv ? static_cast<uint32_t>(__ldg(p.kv_sf + j)) : 0u;
#pragma unroll
      for (int gi = 0; gi < kGroups; ++gi) s_ks[threadIdx.x * kGroups + gi] = Ue8m0ToFloat(word >> (8 * gi));
    }
  }
}

// Ranged kernel. Grid: x = blocks of kNQ = 128/H query tokens, y = CTAs sharing one query block's KV
// tiles (strided). Each CTA computes the tiles of [min ks, max ke) of its query block; with
// clean_logits (non-compressed) it also writes -inf over the tiles outside that range.
template <int kD, int kH, bool kFp4>
__global__ void __launch_bounds__(kThreads, 1) MqaLogitsKernel(const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int kNC = 128;
  constexpr int kNQ = kNC / kH;
  using L = Smem<kD, kNC>;
  constexpr int kGroups = L::kGroups;
  extern __shared__ __align__(128) uint8_t smem[];
  float* s_w = reinterpret_cast<float*>(smem + L::kW);
  float* s_qs = reinterpret_cast<float*>(smem + L::kQs);
  float* s_out = reinterpret_cast<float*>(smem + L::kOut);
  int* s_misc = reinterpret_cast<int*>(smem + L::kMisc);  // [0..3] ks, [4..7] ke, [8] lo, [9] hi
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int q0 = blockIdx.x * kNQ;

  if (threadIdx.x < kNQ) {
    const int i = q0 + threadIdx.x;
    int ks = 0, ke = 0;  // a padding token: empty range
    if (i < p.num_q) {
      ks = min(max(__ldg(p.ks + i), 0), p.s_kv);
      ke = min(max(__ldg(p.ke + i), ks), p.s_kv);
    }
    s_misc[threadIdx.x] = ks;
    s_misc[4 + threadIdx.x] = ke;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int lo = INT32_MAX, hi = 0;
    for (int t = 0; t < kNQ; ++t)
      if (s_misc[4 + t] > s_misc[t]) lo = min(lo, s_misc[t]), hi = max(hi, s_misc[4 + t]);
    if (hi == 0) lo = 0;
    s_misc[8] = lo;
    s_misc[9] = hi;
  }
  LoadQ<kD, kH, kFp4>(p, smem, L::kQ, L::kW, L::kQs, int64_t(q0) * kH, kNC, int64_t(p.num_q) * kH);
  CpAsyncCommit();
  __syncthreads();
  const int lo = s_misc[8], hi = s_misc[9];
  const int num_tiles = (p.s_kv + kTileKv - 1) / kTileKv;
  const int t_lo = lo / kTileKv, t_hi = hi > lo ? (hi + kTileKv - 1) / kTileKv : t_lo;
  const int valid_q = min(kNQ, p.num_q - q0);

  // -inf over the tiles no row of this block needs
  if (p.clean && !p.compressed) {
    for (int tile = blockIdx.y; tile < num_tiles; tile += gridDim.y) {
      if (tile >= t_lo && tile < t_hi) continue;
      for (int idx = threadIdx.x; idx < valid_q * kTileKv; idx += kThreads) {
        const int j = tile * kTileKv + idx % kTileKv;
        if (j < p.s_kv) StoreLogit(p, int64_t(q0 + idx / kTileKv) * p.out_cols + j, -INFINITY);
      }
    }
  }

  const int first = t_lo + blockIdx.y;
  const int count = first < t_hi ? (t_hi - first + gridDim.y - 1) / gridDim.y : 0;
  if (count > 0) {
    LoadKvTileRanged<kD, kFp4>(p, smem + L::kKv, reinterpret_cast<float*>(smem + L::kKs), first * kTileKv);
  }
  CpAsyncCommit();
  for (int it = 0; it < count; ++it) {
    const int stage = it & 1;
    const int tile = first + it * gridDim.y;
    if (it + 1 < count) {
      LoadKvTileRanged<kD, kFp4>(p, smem + L::kKv + (stage ^ 1) * kTileKv * L::kLd,
                                 reinterpret_cast<float*>(smem + L::kKs) + (stage ^ 1) * kTileKv * kGroups,
                                 (tile + gridDim.y) * kTileKv);
      CpAsyncCommit();
      CpAsyncWait<1>();
    } else {
      CpAsyncWait<0>();
    }
    __syncthreads();
    const uint8_t* s_kv = smem + L::kKv + stage * kTileKv * L::kLd;
    const float* s_ks = reinterpret_cast<const float*>(smem + L::kKs) + stage * kTileKv * kGroups;
    {
      float acc[kNC / 8][4];
      TileMma<kD, kNC, kFp4>(s_kv, smem + L::kQ, s_ks, s_qs, acc, warp, lane);
      TileReduce<kH, kNC, kFp4>(acc, s_w, s_ks, s_out, warp, lane);
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < valid_q * kTileKv; idx += kThreads) {
      const int tok = idx / kTileKv;
      const int j = tile * kTileKv + idx % kTileKv;
      if (j >= p.s_kv) continue;
      const int ks = s_misc[tok], ke = s_misc[4 + tok];
      const int64_t row = int64_t(q0 + tok) * p.out_cols;
      const float v = s_out[idx];
      if (p.compressed) {
        if (j >= ks && j < ke && j - ks < p.out_cols) StoreLogit(p, row + (j - ks), v);
      } else {
        StoreLogit(p, row + j, (p.clean && (j < ks || j >= ke)) ? -INFINITY : v);
      }
    }
  }
#endif
}

// Writes -inf to columns [start(row), out_cols) of every row: compressed ranged logits (start =
// ke - ks) or paged logits (start = the end of the last 64-token tile the paged kernel wrote).
static __global__ void __launch_bounds__(256) CleanLogitsKernel(const __grid_constant__ Params p, int paged) {
  const int row = blockIdx.x;
  if (row >= p.num_q) return;
  int start;
  if (!paged) {
    const int ks = min(max(__ldg(p.ks + row), 0), p.s_kv);
    const int ke = min(max(__ldg(p.ke + row), ks), p.s_kv);
    start = ke - ks;
  } else {
    const int b = row / p.next_n;
    const int ctx = min(max(__ldg(p.context_lens + int64_t(b) * p.next_n + p.next_n - 1), 0), p.ctx_cap);
    start = (ctx + kTileKv - 1) / kTileKv * kTileKv;
  }
  for (int c = min(start, p.out_cols) + threadIdx.x; c < p.out_cols; c += blockDim.x)
    StoreLogit(p, int64_t(row) * p.out_cols + c, -INFINITY);
}

}  // namespace mqa
}  // namespace jdg
