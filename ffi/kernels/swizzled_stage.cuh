// The BF16 epilogue's staging for TMA stores (FP8 and BF16 GEMMs): one warp's 16 rows of WGMMA accumulators, rounded
// to BF16, written into 64-column chunks of [rows][128 bytes] whose 16-byte unit index is XORed with row % 8 (the TMA
// map's 128-byte swizzle, conflict-free), one `stmatrix` per 16 x 16 block.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace jdg {

__device__ __forceinline__ uint32_t PackBf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// acc[4 g .. 4 g + 3]: column group g (8 columns) of this lane's rows lane / 4 and lane / 4 + 8, as the WGMMA
// accumulators hold them; `slice` is the shared address of row 0 (chunk 0) of the warpgroup's slice, the warp's rows
// start at 16 * warp_in_wg, and chunk c lies kChunkBytes after chunk c - 1. Each stmatrix (x4) stores four 8 x 8
// matrices: rows 0-7 / 8-15 of column groups g and g + 1, whose fragments are exactly the accumulators' (lane l: row
// l / 4, columns 2 (l % 4) and + 1); lane l gives the address of row l % 8 of matrix l / 8. A quarter of the 4-byte
// STS instructions that writing each lane's pairs takes (DeepGEMM's epilogue stages with stmatrix too).
template <int kBlockN, int kChunkBytes>
__device__ __forceinline__ void StageBf16Swizzled(const float* acc, uint32_t slice, int warp_in_wg, int lane) {
  static_assert(kBlockN % 16 == 0, "column groups are stored in pairs");
  const uint32_t row = uint32_t(warp_in_wg * 16 + ((lane / 8) % 2) * 8 + lane % 8);
  const uint32_t unit = uint32_t((lane / 16) ^ (lane % 8));  // the pair's second group (lane / 16), swizzled by row
  const uint32_t row_addr = slice + row * 128;
#pragma unroll
  for (int g = 0; g < kBlockN / 8; g += 2) {
    const uint32_t addr = row_addr + uint32_t((g / 8) * kChunkBytes) + ((uint32_t(g % 8) ^ unit) << 4);
    asm volatile("stmatrix.sync.aligned.x4.m8n8.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr),
                 "r"(PackBf16x2(acc[4 * g], acc[4 * g + 1])), "r"(PackBf16x2(acc[4 * g + 2], acc[4 * g + 3])),
                 "r"(PackBf16x2(acc[4 * g + 4], acc[4 * g + 5])), "r"(PackBf16x2(acc[4 * g + 6], acc[4 * g + 7]))
                 : "memory");
  }
}

}  // namespace jdg
