// FP8 and FP4 lightning-indexer logits with WGMMA + TMA, D in {32, 64, 128}: the shared WGMMA pieces
// (K-major swizzled descriptors, the m64n128k32 FP8 WGMMAs, the relu * weight head-sum on accumulator
// registers, the FP4 decode) and the ranged kernel (the fast path of the ranged ops; the mma.sync
// kernel of sm90_mqa_logits.cuh is the fallback when JAX_DEEPGEMM_MQA_MMA_SYNC=1 is set). FP8 rows
// of D bytes are K-major with a D-byte TMA swizzle (128B / 64B / 32B), matched by the descriptors'
// layout type.
//
// Cost per 64-row KV slice and 128 query-head columns: 64 x 128 x D x 2 flops of tensor work (256
// cycles of an SM's tensor cores at D = 128) against ~kH / 2 x 2 FMAs + 4 shuffles + kNQ / 2 stores per
// thread of epilogue: the epilogue is hidden only when other warpgroups have WGMMAs queued while one
// reduces, hence 4 math WGs sharing each 256-row KV stage (the previous 2-WG design with smem-staged
// stores, per-tile global scale loads and named barriers ran at 0.4x DeepGEMM).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include <cute/arch/copy_sm90_tma.hpp>
#include <cute/arch/mma_sm90_desc.hpp>
#include <cute/arch/mma_sm90_gmma.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "kernels/cache_hints.cuh"
#include "kernels/sm90_mqa_logits.cuh"

namespace jdg {
namespace mqa {

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

// The same with A (the KV rows) from registers: FP4 rows decoded into WGMMA fragments.
template <size_t... I>
__device__ __forceinline__ void WgMma64x128Rs(const uint32_t (&a)[4], uint64_t desc_b, float* d, bool accumulate,
                                              std::index_sequence<I...>) {
  cute::SM90::GMMA::MMA_64x128x32_F32E4M3E4M3_RS_TN<>::fma(
      a[0], a[1], a[2], a[3], desc_b, d[I]...,
      accumulate ? cute::SM90::GMMA::ScaleOut::One : cute::SM90::GMMA::ScaleOut::Zero);
}

// mbarrier wait / arrive and shared loads on 32-bit shared-window addresses computed once per
// kernel: the pointer forms convert a generic address (S2UR of the window base + 64-bit math) at
// every call, ~20 instructions per KV block in the math loop (SASS, ranged kernel).
__device__ __forceinline__ void MbarWait(uint32_t addr, uint32_t phase) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(addr),
      "r"(phase)
      : "memory");
}
__device__ __forceinline__ void MbarArriveExpectTx(uint32_t addr, uint32_t tx_bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(addr), "r"(tx_bytes) : "memory");
}
__device__ __forceinline__ void MbarArrive(uint32_t addr) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(addr) : "memory");
}
__device__ __forceinline__ float LdsF32(uint32_t addr) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];\n" : "=f"(v) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ int LdsS32(uint32_t addr) {
  int v;
  asm volatile("ld.shared.s32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ void StsV4(uint32_t addr, uint32_t x, uint32_t y, uint32_t z, uint32_t w) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(x), "r"(y), "r"(z), "r"(w) : "memory");
}
__device__ __forceinline__ uint2 LdsV2(uint32_t addr) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ uint4 LdsV4(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}

// This lane's part of relu(q.k) * w summed over one query token's kH heads, for its two accumulator
// rows (r and r + 8; the quad's 4 lanes hold the other columns): `acc` holds the token's kH / 2
// accumulators of an m64nNk32 WGMMA (acc[n * 4 + c]: column n * 8 + 2 * (lane % 4) + (c & 1), row + 8 *
// (c >> 1)), `w` the weights of exactly those columns (HeadWeights).
template <int kH>
__device__ __forceinline__ float2 ReluHeadPartial(const float* acc, const float* w) {
  float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int n = 0; n < kH / 8; ++n) {
#pragma unroll
    for (int c = 0; c < 4; ++c) s[c] = fmaf(fmaxf(acc[n * 4 + c], 0.f), w[n * 2 + (c & 1)], s[c]);
  }
  return make_float2(s[0] + s[1], s[2] + s[3]);
}

// Quad reduce-scatter of kNV per-lane values: on return lane t holds in out[g] the sum over the quad
// of value 4 g + t (garbage where 4 g + t >= kNV). Two butterfly steps that halve what is exchanged
// (lanes t, t ^ 2 keep one pair of each 4 and swap the other, then t, t ^ 1 one value): 3 shuffles
// per 4 values instead of the 8 of an all-reduce of each value.
template <int kNV>
__device__ __forceinline__ void QuadReduceScatter(const float (&v)[kNV], int t, float (&out)[(kNV + 3) / 4]) {
  constexpr int kGroups = (kNV + 3) / 4;
  const bool hi2 = (t & 2) != 0, hi1 = (t & 1) != 0;
#pragma unroll
  for (int g = 0; g < kGroups; ++g) {
    float pair[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float lo = 4 * g + j < kNV ? v[4 * g + j] : 0.f, hi = 4 * g + 2 + j < kNV ? v[4 * g + 2 + j] : 0.f;
      pair[j] = (hi2 ? hi : lo) + __shfl_xor_sync(0xffffffffu, hi2 ? lo : hi, 2);
    }
    out[g] = (hi1 ? pair[1] : pair[0]) + __shfl_xor_sync(0xffffffffu, hi1 ? pair[0] : pair[1], 1);
  }
}

// The logits of kTok query tokens at this thread's two rows, scattered over the quad (value 2 i + h:
// token i, row h; lane t gets values t, t + 4, ... in out[0], out[1], ...): the accumulators' relu *
// weight head-sums times the rows' KV scales (lane t's values are all of row t & 1).
template <int kH, int kTok>
__device__ __forceinline__ void TokenLogits(const float* acc, const float (&w)[kTok][kH / 4], float sc0, float sc1,
                                            int t, float (&out)[(2 * kTok + 3) / 4]) {
  float v[2 * kTok];
#pragma unroll
  for (int i = 0; i < kTok; ++i) {
    const float2 p = ReluHeadPartial<kH>(acc + i * (kH / 2), w[i]);
    v[2 * i] = p.x, v[2 * i + 1] = p.y;
  }
  QuadReduceScatter<2 * kTok>(v, t, out);
  const float sc = (t & 1) ? sc1 : sc0;
#pragma unroll
  for (int g = 0; g < (2 * kTok + 3) / 4; ++g) out[g] *= sc;
}

// Stores lane t's values from TokenLogits (kNV = 2 x tokens): store(token, h, value), one store per lane
// per 4 values, called with runtime token and h.
template <int kNV, class Store>
__device__ __forceinline__ void StoreLaneValues(const float (&out)[(kNV + 3) / 4], int t, Store&& store) {
#pragma unroll
  for (int g = 0; g < (kNV + 3) / 4; ++g) {
    if (4 * g + t < kNV) store((4 * g + t) >> 1, t & 1, out[g]);
  }
}

// The weights of this thread's accumulator columns for kNQ tokens of kH heads (row-major [kNQ][kH]
// in shared memory): w[i][n * 2 + b] = weight of head n * 8 + 2 * (lane % 4) + b of token i.
template <int kH, int kNQ>
__device__ __forceinline__ void HeadWeights(const float* s_w, int lane, float (&w)[kNQ][kH / 4]) {
#pragma unroll
  for (int i = 0; i < kNQ; ++i) {
#pragma unroll
    for (int j = 0; j < kH / 4; ++j) w[i][j] = s_w[i * kH + (j / 2) * 8 + (lane % 4) * 2 + (j & 1)];
  }
}

// ---- FP4 (E2M1 values, UE8M0 scales per 32 elements) decoded to e4m3 on the math warpgroups ----
// A row's four (D/32) groups are decoded relative to one reference exponent e_ref: each value becomes
// e2m1 * 2^(e_g - e_ref) in e4m3, and 2^(e_ref - 127) multiplies the row's result (the KV row's goes
// with its logit, the query row's, one per head, into the head's weight: relu commutes with positive
// scales). e4m3 holds e2m1 * 2^k exactly for k in [-8, 6] (6 * 2^6 = 384 <= 448; 0.5 * 2^-8 = 2^-9, its
// smallest subnormal), so with e_ref = e_max - clamp(spread - 8, 0, 6) the decode is exact whenever a
// row's group exponents span at most 14 binades; beyond, the smallest groups (2^-14 below the largest)
// round towards zero.
// kE2m1Lut[k + 6] = e4m3 bytes of the 8 E2M1 magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6} x 2^-k, k = -6..15,
// codes 0-3 / 4-7 (the byte-permute table of DecodeE2m1Word).
constexpr int kE2m1LutSize = 22;
__constant__ const uint32_t kE2m1Lut[kE2m1LutSize][2] = {
    {0x6c686000u, 0x7c787470u}, {0x64605800u, 0x74706c68u}, {0x5c585000u, 0x6c686460u},
    {0x54504800u, 0x64605c58u}, {0x4c484000u, 0x5c585450u}, {0x44403800u, 0x54504c48u},
    {0x3c383000u, 0x4c484440u}, {0x34302800u, 0x44403c38u}, {0x2c282000u, 0x3c383430u},
    {0x24201800u, 0x34302c28u}, {0x1c181000u, 0x2c282420u}, {0x14100800u, 0x24201c18u},
    {0x0c080400u, 0x1c181410u}, {0x06040200u, 0x14100c08u}, {0x03020100u, 0x0c080604u},
    {0x02010000u, 0x06040302u}, {0x01000000u, 0x03020201u}, {0x00000000u, 0x02010100u},
    {0x00000000u, 0x01000000u}, {0x00000000u, 0x00000000u}, {0x00000000u, 0x00000000u},
    {0x00000000u, 0x00000000u}};

// PTX prmt: selector nibble i picks byte i (bit 3: replicate that byte's sign bit); the selector's upper 16 bits
// are ignored. CUDA's __byte_perm masks each nibble to 3 bits instead, which costs a LOP3 per call with a runtime
// selector (and one more where the selector is a shifted word: its upper half is cleared too).
__device__ __forceinline__ uint32_t Prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}

// 8 E2M1 codes (one word, element i in nibble i) -> 8 e4m3 bytes (elements 0-3, 4-7): magnitudes through the
// byte-permute table `lut` (selector nibbles = the codes with their sign bits cleared; the high half's selector is
// the word rotated by 16); signs from the top bits of x's bytes (the odd elements') and of (x << 4)'s (the even
// elements'), moved into place by two byte permutes. 9 instructions per word, 8 on the ALU pipe (x << 4 is an IMAD).
__device__ __forceinline__ uint2 DecodeE2m1Word(uint32_t x, uint2 lut) {
  const uint32_t sel = x & 0x77777777u;
  const uint32_t mag_lo = Prmt(lut.x, lut.y, sel);
  const uint32_t mag_hi = Prmt(lut.x, lut.y, __funnelshift_r(sel, sel, 16));
  const uint32_t x4 = x << 4;
  const uint32_t sign_lo = Prmt(x, x4, 0x1504u);  // elements 0, 1, 2, 3: x4.b0, x.b0, x4.b1, x.b1
  const uint32_t sign_hi = Prmt(x, x4, 0x3726u);  // elements 4, 5, 6, 7: x4.b2, x.b2, x4.b3, x.b3
  return make_uint2(mag_lo | (sign_lo & 0x80808080u), mag_hi | (sign_hi & 0x80808080u));
}

// K order of the FP4 operands. The KV rows are decoded straight into WGMMA A fragments (register
// operand, no shared-memory round trip): lane t (= lane % 4) of a quad holds, in k step kk (32
// columns), bytes 4t..4t+3 and 16+4t..16+4t+3 of its two rows, and takes them from its own run of
// kD/8 packed bytes (kD/4 values, one 32-element scale group or part of one): packed word kk of the
// run (8 values) fills both halves. The dot product does not depend on the order of K, so the query
// rows (the shared-memory B operand) are decoded into the same order: packed word wi of a row lands
// at column Fp4KColumn(wi) (values 0-3) and 16 columns on (values 4-7).
template <int kD>
__device__ __forceinline__ int Fp4KColumn(int wi) {
  constexpr int kWordsPerLane = kD / 32;
  return (wi % kWordsPerLane) * 32 + 4 * (wi / kWordsPerLane);
}

// Byte offset of (row, byte) in a K-major tile of kD-byte rows under the D-byte TMA swizzle (16-byte
// units XORed with address bits 7+: Swizzle<log2(kD/16), 4, 3>), as the WGMMA descriptors expect.
template <int kD>
__device__ __forceinline__ int SwizzledOffset(int row, int byte) {
  const int o = row * kD + byte;
  return o ^ (((o >> 7) & (kD / 16 - 1)) << 4);
}

// The reference exponent of a packed UE8M0 word's kGroups exponents (see above): the largest, lowered
// by up to 6 so that groups up to 14 binades below it stay exact (and kept >= 1: exponent byte 0 reads
// as scale 0).
template <int kGroups>
__device__ __forceinline__ int RowRefExponent(uint32_t sf) {
  int e_max = sf & 0xFF, e_min = e_max;
#pragma unroll
  for (int g = 1; g < kGroups; ++g) {
    const int e = (sf >> (8 * g)) & 0xFF;
    e_max = max(e_max, e), e_min = min(e_min, e);
  }
  return e_max - max(0, min(min(e_max - e_min - 8, 6), e_max - 1));
}

// The byte-permute table (kE2m1Lut row) of group `g` of a row with UE8M0 word `sf` and reference
// exponent e_ref.
__device__ __forceinline__ int GroupTableIndex(uint32_t sf, int g, int e_ref) {
  return min(max(e_ref - int((sf >> (8 * g)) & 0xFF), -6), 15) + 6;
}

// Decodes the query rows [0, rows) of a packed FP4 tile (row r: kD / 2 bytes at src + r * kD / 2, its
// UE8M0 word sf[r]) into the swizzled e4m3 B operand `dst` in the fragment K order, and writes each
// row's (query token, head) weight times the row's power of two to weight_out[r] (relu commutes with
// the positive scale); threads first, first + stride, ... take one 32-element group each, then fence
// the writes for the WGMMAs (the caller's barrier makes them visible to its warpgroups).
template <int kD>
__device__ __forceinline__ void DecodeFp4QRows(const uint8_t* src, const uint32_t* sf, int rows, const uint2* lut,
                                               uint8_t* dst, const float* weight_in, float* weight_out, int first,
                                               int stride) {
  constexpr int kGroups = kD / 32;
  for (int u = first; u < rows * kGroups; u += stride) {
    const int r = u / kGroups, g = u % kGroups;
    const uint32_t word = sf[r];
    const int e_ref = RowRefExponent<kGroups>(word);
    const uint2 table = lut[GroupTableIndex(word, g, e_ref)];
    const uint4 packed = *reinterpret_cast<const uint4*>(src + r * (kD / 2) + 16 * g);
    const uint32_t w[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint2 v = DecodeE2m1Word(w[i], table);
      const int col = Fp4KColumn<kD>(4 * g + i);
      *reinterpret_cast<uint32_t*>(dst + SwizzledOffset<kD>(r, col)) = v.x;
      *reinterpret_cast<uint32_t*>(dst + SwizzledOffset<kD>(r, col + 16)) = v.y;
    }
    if (g == 0) weight_out[r] = weight_in[r] * Ue8m0ToFloat(uint32_t(e_ref));
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // generic-proxy writes -> WGMMA reads
}

// This lane's WGMMA A fragments (a[kk]: k step kk, registers {row r, row r + 8} x {columns 4t.., 16 + 4t..})
// of two packed FP4 rows (the lane's runs at shared addresses run_r / run_r8: row + Fp4RunOffset, their UE8M0 words
// at sf_r / sf_r8); returns the rows' powers of two (scale their logits). 32-bit shared addresses: no generic-address math.
// The KV rows take the reference exponent e_max - 6 (e_max: the row's largest group exponent): the largest group
// becomes e2m1 x 2^6 (<= 384, exact in e4m3) and groups down to 2^-14 below it stay exact, the same 14 binades as
// RowRefExponent's choice and the same products up to one power of two, so the logits are bitwise those of the
// query rows' scheme. Its point is the cost: the quad's four lanes hold the same two rows and one group each
// (lanes 2g, 2g + 1 at D = 64; all of them at D = 32), so e_max is up to two quad shuffles of a max over both rows at
// once (16-bit halves), not 4 exponents extracted and compared per row by every lane.
// The lane-dependent arguments (t = lane % 4), loop-invariant, so that callers compute them once: the byte offset of
// the lane's run in a row, to add to both row addresses, and the byte selector of its scale group in the UE8M0 words.
template <int kD>
__device__ __forceinline__ uint32_t Fp4RunOffset(int t) {
  return uint32_t(t * (kD / 8));
}
template <int kD>
__device__ __forceinline__ uint32_t Fp4GroupSelector(int t) {
  const uint32_t g = uint32_t(t * kD / 128);  // the scale group of this lane's run
  // bytes {e_g(r), e_g(r), e_g(r8), e_g(r8)} of (word_r, word_r8)
  return g * 0x0011u + (4 + g) * 0x1100u;
}
template <int kD>
__device__ __forceinline__ float2 DecodeFp4Fragment(uint32_t run_r, uint32_t run_r8, uint32_t sf_r, uint32_t sf_r8,
                                                    uint32_t group_selector, uint32_t lut, uint32_t (&a)[kD / 32][4]) {
  constexpr int kWords = kD / 32;  // packed words of this lane's run = k steps
  const uint32_t word_r = uint32_t(LdsS32(sf_r)), word_r8 = uint32_t(LdsS32(sf_r8));
  uint32_t w[2][kWords];
  const uint32_t rows[2] = {run_r, run_r8};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if constexpr (kWords == 4) {
      const uint4 v = LdsV4(rows[h]);
      w[h][0] = v.x, w[h][1] = v.y, w[h][2] = v.z, w[h][3] = v.w;
    } else if constexpr (kWords == 2) {
      const uint2 v = LdsV2(rows[h]);
      w[h][0] = v.x, w[h][1] = v.y;
    } else {
      w[h][0] = uint32_t(LdsS32(rows[h]));
    }
  }
  // bytes {e_g(r), e_g(r), e_g(r8), e_g(r8)}: a 16-bit half compares as its exponent, and max - this word leaves
  // 257 x (e_max - e_g) per half (no borrow)
  const uint32_t e_g = Prmt(word_r, word_r8, group_selector);
  // lanes t and t ^ 1 share a group below D = 128, and all four do at D = 32: only shuffle across groups
  uint32_t e_max = e_g;
  if constexpr (kD >= 128) e_max = __vmaxu2(e_max, __shfl_xor_sync(0xFFFFFFFFu, e_max, 1));
  if constexpr (kD >= 64) e_max = __vmaxu2(e_max, __shfl_xor_sync(0xFFFFFFFFu, e_max, 2));
  // kE2m1Lut row e_ref - e_g + 6 = e_max - e_g, the last (all zeros) past 21: bytes 0 and 2 of `row`
  const uint32_t row = __vminu2(e_max - e_g, 0x15151515u);
  const uint2 table_r = LdsV2(lut + 8 * (row & 0xFFu));
  const uint2 table_r8 = LdsV2(lut + 8 * Prmt(row, 0, 0x4442u));
#pragma unroll
  for (int kk = 0; kk < kWords; ++kk) {
    const uint2 v0 = DecodeE2m1Word(w[0][kk], table_r), v1 = DecodeE2m1Word(w[1][kk], table_r8);
    a[kk][0] = v0.x, a[kk][1] = v1.x, a[kk][2] = v0.y, a[kk][3] = v1.y;
  }
  // 2^(e_max - 6 - 127); below e_max = 7 a subnormal float, as exact (no flush: the kernels do not use -ftz)
  return make_float2(Ue8m0ToFloat(e_max) * 0x1p-6f, Ue8m0ToFloat(e_max >> 16) * 0x1p-6f);
}

// ---- The relu x weight head sum on the tensor cores ----
// A tile's logits are a [64 x N] x [N x 8] product: the relu'd accumulators of the m64nNk32 WGMMA, rounded to BF16,
// are exactly the register A fragments of m64n8k16 BF16 WGMMAs (columns 16 j .. 16 j + 15 of the accumulators are
// k step j: acc[8 j .. 8 j + 7], as FlashAttention-3 feeds P to its second GEMM), and B is an 8-row K-major matrix
// of the atom's weights (HeadWeightMatrix). Per thread and tile: N / 4 conversions and N / 16 WGMMAs instead of N
// FMNMX / FFMAs, the quad shuffles and selects. Scores and weights are rounded to BF16 (the sum stays FP32).
__device__ __forceinline__ uint32_t ReluBf16x2(float lo, float hi) {
  uint32_t v;
  asm("cvt.rn.relu.bf16x2.f32 %0, %1, %2;\n" : "=r"(v) : "f"(hi), "f"(lo));
  return v;
}
// K-major, no swizzle: element (n, k) at byte (k / 8) * 128 + n * 16 + (k % 8) * 2, i.e. CuTe's INTERLEAVE atom
// ((8, n), 2) : ((1, SBO), LBO) in 16-byte units with LBO = 128 bytes (the next 8 columns).
__device__ __forceinline__ uint64_t HeadWeightDesc(uint32_t smem_addr) {
  cute::GmmaDescriptor desc;
  desc.bitfield.start_address_ = static_cast<uint16_t>(smem_addr >> 4);
  desc.bitfield.leading_byte_offset_ = 128 >> 4;
  desc.bitfield.stride_byte_offset_ = 256 >> 4;  // one 8-row group: unused
  desc.bitfield.base_offset_ = 0;
  desc.bitfield.layout_type_ = static_cast<uint8_t>(cute::SM90::GMMA::LayoutType::INTERLEAVE);
  return desc.desc_;
}
// Writes the head-weight matrix of an atom (weights[k]: query row k = token * kH + head, kRows rows) for one math
// WG (its 128 threads, tid 0..127): row n = 2 i of column chunk c holds token c * (kNC / kH) + i's weights in its
// heads' columns (so that token i's logit lands in lane i of each quad), the other rows are zero.
template <int kH, int kNC, int kRows>
__device__ __forceinline__ void HeadWeightMatrix(const float* weights, uint32_t dst, int tid) {
  for (int u = tid; u < kRows; u += 128) {  // 16-byte unit u: columns 8 (u / 8) .., row u % 8
    const int k0 = 8 * (u / 8), n = u % 8;
    const int token_in_chunk = (k0 % kNC) / kH;
    uint32_t v[4] = {0u, 0u, 0u, 0u};
    if (n == 2 * token_in_chunk) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const __nv_bfloat162 pair = __floats2bfloat162_rn(weights[k0 + 2 * i], weights[k0 + 2 * i + 1]);
        v[i] = *reinterpret_cast<const uint32_t*>(&pair);
      }
    }
    StsV4(dst + 16 * u, v[0], v[1], v[2], v[3]);
  }
}
template <size_t... I>
__device__ __forceinline__ void HeadSumMma(const float* acc, uint64_t desc_w, float (&d)[4],
                                           std::index_sequence<I...>) {
  uint32_t a[sizeof...(I)][4];
  ((a[I][0] = ReluBf16x2(acc[8 * I + 0], acc[8 * I + 1]), a[I][1] = ReluBf16x2(acc[8 * I + 2], acc[8 * I + 3]),
    a[I][2] = ReluBf16x2(acc[8 * I + 4], acc[8 * I + 5]), a[I][3] = ReluBf16x2(acc[8 * I + 6], acc[8 * I + 7])),
   ...);
#pragma unroll
  for (int i = 0; i < 4; ++i) cute::warpgroup_fence_operand(d[i]);
  cute::warpgroup_arrive();
  (cute::SM90::GMMA::MMA_64x8x16_F32BF16BF16_RS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>::fma(
       a[I][0], a[I][1], a[I][2], a[I][3], desc_w + uint64_t(16 * I), d[0], d[1], d[2], d[3],
       I == 0 ? cute::SM90::GMMA::ScaleOut::Zero : cute::SM90::GMMA::ScaleOut::One),
   ...);
  cute::warpgroup_commit_batch();
  cute::warpgroup_wait<0>();
#pragma unroll
  for (int i = 0; i < 4; ++i) cute::warpgroup_fence_operand(d[i]);
}

// ---------------------------------------------------------------------------------------------
// Ranged FP8 kernel (the DeepGEMM SM90 design): persistent CTAs of 4 math warpgroups + 1 producer
// warpgroup walk work units (query block of 128/H tokens, and a KV part when there are fewer query
// blocks than SMs). Per unit the producer TMA-loads Q (128 query-head rows) with the block's
// weights and its tokens' [ks, ke) into a 3-stage Q ring (the next unit's Q is issued before this
// unit's KV, so it never waits), then streams 256-row KV blocks and their FP32 scales into a
// 4-stage ring. All 4 math WGs consume every KV block, each its own 64 rows (WGMMA m64n128, A = KV,
// B = Q), so the tensor cores always have 3 WGs' work queued while one reduces: relu * weight
// head-sum straight from the accumulators (weights held in registers for the whole unit), x scale,
// stored from registers. The producer WG's other 3 warps write the -inf columns outside the
// computed blocks (clean, non-compressed) while the math runs.
// ---------------------------------------------------------------------------------------------
constexpr int kRgMathWgs = 4;
constexpr int kRgBlockKv = kRgMathWgs * kTileKv;        // 256 KV rows per stage
constexpr int kRgThreads = (kRgMathWgs + 1) * 128;      // 640
constexpr int kRgQStages = 3;
constexpr int kRgKvStages = 4;
constexpr int kRgMathRegs = 112;  // 512 x 112 + 128 x 32 = 640 x 96, the launch allocation
constexpr int kRgProducerRegs = 32;

template <int kD, bool kFp4>
struct RangedSmem {
  static constexpr int kRowBytes = kFp4 ? kD / 2 : kD;  // bytes of one staged (TMA-loaded) row
  static constexpr int kQBytes = 128 * kRowBytes;
  static constexpr int kKvBytes = kRgBlockKv * kRowBytes;
  static constexpr int kQ = 0;                                           // [q stages][128][row]
  static constexpr int kKv = kQ + kRgQStages * kQBytes;                  // [kv stages][256][row]
  static constexpr int kW = kKv + kRgKvStages * kKvBytes;                // [q stages][128] f32
  static constexpr int kScale = kW + kRgQStages * 128 * 4;               // [kv stages][256] f32 (FP4: int32 sf)
  static constexpr int kRange = kScale + kRgKvStages * kRgBlockKv * 4;   // [q stages][8] int: ks[4], ke[4]
  static constexpr int kFp4Area = kRange + kRgQStages * 8 * 4;
  // FP4 only: the query rows decoded to e4m3 (the B operand, D-byte swizzled) and their weights times
  // their powers of two
  static constexpr int kQsf = kFp4 ? (kFp4Area + 127) / 128 * 128 : kFp4Area;       // [q stages][128] int32
  static constexpr int kQDec = kFp4 ? (kQsf + kRgQStages * 128 * 4 + 1023) / 1024 * 1024 : kQsf;  // [128][kD]
  static constexpr int kQWeight = kQDec + (kFp4 ? 128 * kD : 0);                    // [128] f32
  static constexpr int kLut = kQWeight + (kFp4 ? 128 * 4 : 0);                      // [22] uint2
  // per math WG, the unit's head weights as the B operand of the head-sum WGMMAs (HeadWeightMatrix)
  static constexpr int kHeadW = (kLut + (kFp4 ? kE2m1LutSize * 8 : 0) + 127) / 128 * 128;  // [WGs][128 * 16 B]
  static constexpr int kBar = kHeadW + kRgMathWgs * 128 * 16;
  static constexpr int kBytes = kBar + 2 * (kRgQStages + kRgKvStages) * 8 + 1024;  // + 1024-B alignment slack
  static_assert(kKv % 128 == 0 && kKvBytes % 128 == 0 && kW % 128 == 0 && kScale % 128 == 0 &&
                    (!kFp4 || kQDec % 1024 == 0),
                "swizzle-atom aligned operand tiles, 128-B aligned TMA destinations");
  static_assert(kFp4 || (kKv % 1024 == 0 && kKvBytes % 1024 == 0), "FP8 rows are the WGMMA operands");
  static_assert(kBytes <= 227 * 1024, "shared memory per CTA");
};

// A work unit of the ranged kernel: query block `q_block`, KV part `part` of `splits` (blocks part,
// part + splits, ...); its KV blocks start at the union of its tokens' [ks, ke), rounded down to 4
// rows (the scale box's 16-byte start).
struct RangedWork {
  int q_block, part;
  int start;     // first KV row of block 0
  int n_blocks;  // 256-row blocks covering the union (all parts)
  int count;     // blocks of this part
};

__device__ __forceinline__ int2 RangedRange(const Params& p, int q) {
  if (q >= p.num_q) return make_int2(0, 0);
  const int ks = min(max(__ldg(p.ks + q), 0), p.s_kv);
  return make_int2(ks, min(max(__ldg(p.ke + q), ks), p.s_kv));
}

template <int kNQ>
__device__ __forceinline__ RangedWork RangedWorkOf(const Params& p, int splits, int unit) {
  RangedWork w;
  w.q_block = unit / splits, w.part = unit % splits;
  int lo = INT32_MAX, hi = 0;
#pragma unroll
  for (int i = 0; i < kNQ; ++i) {
    const int2 r = RangedRange(p, w.q_block * kNQ + i);
    if (r.y > r.x) lo = min(lo, r.x), hi = max(hi, r.y);
  }
  w.start = hi > 0 ? lo & ~3 : 0;
  w.n_blocks = hi > 0 ? (hi - w.start + kRgBlockKv - 1) / kRgBlockKv : 0;
  w.count = w.n_blocks > w.part ? (w.n_blocks - w.part + splits - 1) / splits : 0;
  return w;
}

// Logit of query row `q` (row offset row_base) at KV column j, masked as the op defines it.
__device__ __forceinline__ void StoreRangedLogit(const Params& p, int64_t row_base, int j, int ks, int ke, float v) {
  if (p.compressed) {
    if (j >= ks && j < ke && j - ks < p.out_cols) StoreLogit(p, row_base + (j - ks), v);
  } else if (j < p.s_kv) {
    StoreLogit(p, row_base + j, (p.clean && (j < ks || j >= ke)) ? -INFINITY : v);
  }
}

template <int kD, int kH, bool kFp4>
__global__ void __launch_bounds__(kRgThreads, 1)
    MqaLogitsWgmmaKernel(const __grid_constant__ CUtensorMap tma_q, const __grid_constant__ CUtensorMap tma_kv,
                         const __grid_constant__ CUtensorMap tma_scale, const __grid_constant__ CUtensorMap tma_w,
                         const __grid_constant__ CUtensorMap tma_qsf, const __grid_constant__ Params p,
                         const int splits) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  constexpr int kNQ = 128 / kH;
  using L = RangedSmem<kD, kFp4>;
  extern __shared__ uint8_t smem_raw[];
  // 128B-swizzled TMA destinations and WGMMA descriptors need 1024-byte alignment
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  float* s_w = reinterpret_cast<float*>(smem + L::kW);
  float* s_scale = reinterpret_cast<float*>(smem + L::kScale);
  int* s_range = reinterpret_cast<int*>(smem + L::kRange);
  Barrier* q_full = reinterpret_cast<Barrier*>(smem + L::kBar);
  Barrier* q_empty = q_full + kRgQStages;
  Barrier* kv_full = q_empty + kRgQStages;
  Barrier* kv_empty = kv_full + kRgKvStages;
  const int warp = __shfl_sync(0xffffffffu, int(threadIdx.x / 32), 0);
  const int warpgroup = warp / 4, lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kRgQStages; ++s) q_full[s].init(1), q_empty[s].init(kRgMathWgs * 4);
    for (int s = 0; s < kRgKvStages; ++s) kv_full[s].init(1), kv_empty[s].init(kRgMathWgs * 4);
    cutlass::arch::fence_barrier_init();
  }
  uint2* lut = reinterpret_cast<uint2*>(smem + L::kLut);
  if constexpr (kFp4) {
    if (threadIdx.x < kE2m1LutSize) lut[threadIdx.x] = make_uint2(kE2m1Lut[threadIdx.x][0], kE2m1Lut[threadIdx.x][1]);
  }
  __syncthreads();
  const int num_units = (p.num_q + kNQ - 1) / kNQ * splits;

  if (warpgroup == kRgMathWgs) {
    // ---------------- producer warpgroup ----------------
    cutlass::arch::warpgroup_reg_dealloc<kRgProducerRegs>();
    if (warp % 4 == 0) {
      if (lane != 0) return;
      cute::prefetch_tma_descriptor(&tma_q);
      cute::prefetch_tma_descriptor(&tma_kv);
      cute::prefetch_tma_descriptor(&tma_scale);
      cute::prefetch_tma_descriptor(&tma_w);
      if constexpr (kFp4) cute::prefetch_tma_descriptor(&tma_qsf);
      auto next_work = [&](int& unit, RangedWork& w) {
        for (; unit < num_units; unit += gridDim.x) {
          w = RangedWorkOf<kNQ>(p, splits, unit);
          if (w.count > 0) return true;
        }
        return false;
      };
      int q_it = 0;
      uint32_t kv_it = 0;  // unsigned: stage and phase by mask and shift
      auto issue_q = [&](const RangedWork& w) {
        const int s = q_it % kRgQStages, phase = (q_it / kRgQStages) & 1;
        ++q_it;
        q_empty[s].wait(phase ^ 1);
#pragma unroll
        for (int i = 0; i < kNQ; ++i) {
          const int2 r = RangedRange(p, w.q_block * kNQ + i);
          s_range[s * 8 + i] = r.x, s_range[s * 8 + 4 + i] = r.y;
        }
        q_full[s].arrive_and_expect_tx(L::kQBytes + 128 * 4 * (kFp4 ? 2 : 1));  // the arrive releases s_range too
        auto* mbar = reinterpret_cast<uint64_t*>(&q_full[s]);
        cute::SM90_TMA_LOAD_2D::copy(&tma_q, mbar, kEvictNormal, smem + L::kQ + s * L::kQBytes, 0, w.q_block * 128);
        cute::SM90_TMA_LOAD_2D::copy(&tma_w, mbar, kEvictNormal, s_w + s * 128, 0, w.q_block * kNQ);
        if constexpr (kFp4)
          cute::SM90_TMA_LOAD_2D::copy(&tma_qsf, mbar, kEvictNormal, smem + L::kQsf + s * 128 * 4, 0, w.q_block * kNQ);
      };
      int unit = blockIdx.x;
      RangedWork w;
      bool have = next_work(unit, w);
      if (have) issue_q(w);
      while (have) {
        int next_unit = unit + gridDim.x;
        RangedWork next;
        const bool have_next = next_work(next_unit, next);
        if (have_next) issue_q(next);  // 3 Q stages: waits only for the unit before this one
        for (int c = 0; c < w.count; ++c) {
          const int kv0 = w.start + (w.part + c * splits) * kRgBlockKv;
          const int s = int(kv_it % kRgKvStages), phase = int(kv_it / kRgKvStages) & 1;
          ++kv_it;
          kv_empty[s].wait(phase ^ 1);
          kv_full[s].arrive_and_expect_tx(L::kKvBytes + kRgBlockKv * 4);
          auto* mbar = reinterpret_cast<uint64_t*>(&kv_full[s]);
          cute::SM90_TMA_LOAD_2D::copy(&tma_kv, mbar, kEvictNormal, smem + L::kKv + s * L::kKvBytes, 0, kv0);
          cute::SM90_TMA_LOAD_2D::copy(&tma_scale, mbar, kEvictNormal, s_scale + s * kRgBlockKv, kv0, 0);
        }
        unit = next_unit, w = next, have = have_next;
      }
    } else if (p.clean && !p.compressed) {
      // -inf over the columns outside the unit's computed blocks (the math WGs mask inside them)
      const int tid = threadIdx.x - kRgMathWgs * 128 - 32;
      for (int unit = blockIdx.x; unit < num_units; unit += gridDim.x) {
        if (unit % splits != 0) continue;
        const RangedWork w = RangedWorkOf<kNQ>(p, splits, unit);
        const int c_lo = w.start, c_hi = min(w.start + w.n_blocks * kRgBlockKv, p.s_kv);
        for (int i = 0; i < kNQ; ++i) {
          const int q = w.q_block * kNQ + i;
          if (q >= p.num_q) break;
          const int64_t row_base = int64_t(q) * p.out_cols;
          for (int j = tid; j < c_lo; j += 96) StoreLogit(p, row_base + j, -INFINITY);
          for (int j = c_hi + tid; j < p.s_kv; j += 96) StoreLogit(p, row_base + j, -INFINITY);
        }
      }
    }
    return;
  }

  // ---------------- math warpgroups ----------------
  cutlass::arch::warpgroup_reg_alloc<kRgMathRegs>();
  const int t = lane % 4;
  const int row = warpgroup * 64 + (warp % 4) * 16 + lane / 4;  // this thread's first row of a KV block
  const uint32_t smem_u32 = cute::cast_smem_ptr_to_uint(smem);
  const uint32_t kv_full_u32 = cute::cast_smem_ptr_to_uint(kv_full);
  const uint32_t kv_empty_u32 = cute::cast_smem_ptr_to_uint(kv_empty);
  // Stage-0 descriptors; a stage / k step adds its byte offset / 16 to the start address field (14 bits
  // of 16-byte units: no carry, shared memory is < 256 KB).
  const uint64_t desc_kv0 = WgDescK<kD>(smem + L::kKv + warpgroup * kTileKv * kD);
  const uint64_t desc_q0 = WgDescK<kD>(smem + L::kQ);
  // The head sum on the tensor cores (HeadSumMma), with this WG's head-weight matrix rewritten per unit; lane t of
  // each quad then holds token t's sums, and its [ks, ke) is read once per unit. At every D: session 28 measured
  // the CUDA-core sum it replaced at D = 128 slower on the H100 (S 2048 H 64 D 128: 230.7 -> 225.0 us).
  const uint32_t head_w_u32 = smem_u32 + L::kHeadW + warpgroup * 128 * 16;
  const uint64_t desc_w0 = HeadWeightDesc(head_w_u32);
  float acc[64];
  int q_it = 0;
  uint32_t kv_it = 0;  // unsigned: stage and phase by mask and shift
  for (int unit = blockIdx.x; unit < num_units; unit += gridDim.x) {
    const RangedWork work = RangedWorkOf<kNQ>(p, splits, unit);
    if (work.count == 0) continue;
    const int qs = q_it % kRgQStages, q_phase = (q_it / kRgQStages) & 1;
    ++q_it;
    q_full[qs].wait(q_phase);
    const uint32_t range_u32 = smem_u32 + L::kRange + qs * 32;
    uint64_t desc_q = desc_q0 + uint64_t((qs * L::kQBytes) >> 4);
    const float* q_weight = reinterpret_cast<const float*>(smem + L::kQWeight);
    if constexpr (kFp4) {
      // The 4 math WGs decode the unit's 128 query rows into the one decoded Q buffer (after every WG
      // is past its WGMMAs on the previous unit), with each row's power of two joining its weight.
      cutlass::arch::NamedBarrier::sync(kRgMathWgs * 128, 1);
      DecodeFp4QRows<kD>(smem + L::kQ + qs * L::kQBytes,
                         reinterpret_cast<const uint32_t*>(smem + L::kQsf + qs * 128 * 4), 128, lut,
                         smem + L::kQDec, s_w + qs * 128, reinterpret_cast<float*>(smem + L::kQWeight), threadIdx.x,
                         kRgMathWgs * 128);
      cutlass::arch::NamedBarrier::sync(kRgMathWgs * 128, 1);
      desc_q = WgDescK<kD>(smem + L::kQDec);
    }
    // every warp of this WG is past its head-sum WGMMAs of the previous unit (named barriers 2 + WG)
    cutlass::arch::NamedBarrier::sync(128, 2 + warpgroup);
    HeadWeightMatrix<kH, 128, 128>(kFp4 ? q_weight : s_w + qs * 128, head_w_u32, threadIdx.x % 128);
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // generic-proxy writes -> WGMMA reads
    cutlass::arch::NamedBarrier::sync(128, 2 + warpgroup);
    int my_ks = 0, my_ke = 0;  // the range of this lane's token (t < kNQ)
    if (t < kNQ) my_ks = LdsS32(range_u32 + 4 * t), my_ke = LdsS32(range_u32 + 16 + 4 * t);
    for (int c = 0; c < work.count; ++c) {
      const int kv0 = work.start + (work.part + c * splits) * kRgBlockKv;
      const int s = int(kv_it % kRgKvStages), phase = int(kv_it / kRgKvStages) & 1;
      ++kv_it;
      MbarWait(kv_full_u32 + 8 * s, phase);
      uint64_t desc_kv = desc_kv0 + uint64_t((s * L::kKvBytes) >> 4);
      float sc0, sc1;
      uint32_t a_frag[kFp4 ? kD / 32 : 1][4];
      if constexpr (kFp4) {
        // this thread's rows of the stage, decoded into A fragments, then the stage is free
        const uint32_t block = smem_u32 + L::kKv + s * L::kKvBytes;
        const uint32_t sf = smem_u32 + L::kScale + 4 * (s * kRgBlockKv + row);
        const float2 pw = DecodeFp4Fragment<kD>(block + row * L::kRowBytes + Fp4RunOffset<kD>(t),
                                                block + (row + 8) * L::kRowBytes + Fp4RunOffset<kD>(t), sf, sf + 32,
                                                Fp4GroupSelector<kD>(t), smem_u32 + L::kLut, a_frag);
        sc0 = pw.x, sc1 = pw.y;
        __syncwarp();
        if (lane == 0) MbarArrive(kv_empty_u32 + 8 * s);
      }
#pragma unroll
      for (int i = 0; i < 64; ++i) cute::warpgroup_fence_operand(acc[i]);
      cute::warpgroup_arrive();
#pragma unroll
      for (int k = 0; k < kD / 32; ++k) {
        if constexpr (kFp4)
          WgMma64x128Rs(a_frag[k], desc_q + 2 * k, acc, k > 0, std::make_index_sequence<64>{});
        else
          WgMma64x128(desc_kv + 2 * k, desc_q + 2 * k, acc, k > 0, std::make_index_sequence<64>{});
      }
      cute::warpgroup_commit_batch();
      if constexpr (!kFp4) {
        const uint32_t scale_u32 = smem_u32 + L::kScale + (s * kRgBlockKv + row) * 4;
        sc0 = LdsF32(scale_u32), sc1 = LdsF32(scale_u32 + 32);
      }
      cute::warpgroup_wait<0>();
#pragma unroll
      for (int i = 0; i < 64; ++i) cute::warpgroup_fence_operand(acc[i]);
      if constexpr (kFp4) {  // the WGMMAs read the fragments until here
#pragma unroll
        for (int k = 0; k < kD / 32; ++k) {
#pragma unroll
          for (int j = 0; j < 4; ++j) cute::warpgroup_fence_operand(a_frag[k][j]);
        }
      } else {
        __syncwarp();
        if (lane == 0) MbarArrive(kv_empty_u32 + 8 * s);
      }

      float d[4];
      HeadSumMma(acc, desc_w0, d, std::make_index_sequence<8>{});
      const int q = work.q_block * kNQ + t;
      if (t < kNQ && q < p.num_q) {
        StoreRangedLogit(p, int64_t(q) * p.out_cols, kv0 + row, my_ks, my_ke, d[0] * sc0);
        StoreRangedLogit(p, int64_t(q) * p.out_cols, kv0 + row + 8, my_ks, my_ke, d[2] * sc1);
      }
    }
    __syncwarp();
    if (lane == 0) q_empty[qs].arrive();
  }
#endif
}

}  // namespace mqa
}  // namespace jdg
