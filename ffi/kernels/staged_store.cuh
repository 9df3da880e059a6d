// The staged register epilogue shared by the FP8 and BF16 kernels: a warp's WGMMA accumulators leave as
// row-contiguous 16-byte pieces through an 8-row slab of shared memory, instead of the accumulator layout's
// 8 rows x 8 (FP32) or 4 (BF16) bytes per warp store instruction (8 lines touched per instruction).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace jdg {

// Shared memory one warp's slab needs: 8 rows of one 128-byte (FP32: 32 columns) or 64-byte (BF16: 32 columns)
// column chunk.
template <typename T>
constexpr int kStagedSlabRowBytes = sizeof(T) == 4 ? 128 : 64;
template <typename T>
constexpr int kStagedSlabBytes = 8 * kStagedSlabRowBytes<T>;

// A warp's accumulators, 16 rows x BLOCK_N per 128-row wave (rows lane / 4 and + 8, columns 8 g + 2 (lane % 4) and
// + 1 of each 8-column group g), written to global memory as row-contiguous 16-byte pieces. Per 8-row half and
// column chunk, the warp writes its values into its slab (16-byte units XOR-swizzled by the row: at most 2-way bank
// conflicts), then each lane re-reads one 16-byte unit of one row and stores it: whole 32-byte sectors (whole
// 128-byte lines for FP32). `d` points at row 0 of D (its group's, K-grouped), `row_base` is the warp's first row in
// wave 0; rows outside [row_lo, row_hi) and columns past n are not stored. Needs n * sizeof(T) % 16 == 0 (16-byte
// aligned rows; a piece then never straddles n). C, if any, is in `acc` already: read here, between the stores to
// D it may alias, each 16-byte load would wait for the store before it (session 34 measured the K-grouped + C row
// 45 % slower that way); read up front, all of a tile's C loads are in flight at once.
template <typename T, int kBlockN, int kWaves>
__device__ __forceinline__ void StagedStore(const float (&acc)[kWaves][kBlockN / 2], uint8_t* slab, T* d, int row_base,
                                            int n0, int n, int row_lo, int row_hi, int lane) {
  constexpr int kRowBytes = kStagedSlabRowBytes<T>;
  constexpr int kUnits = kRowBytes / 16;  // 16-byte units per slab row
  constexpr int kChunkCols = kRowBytes / int(sizeof(T));
  constexpr int kChunkGroups = kChunkCols / 8;
  constexpr int kPieceCols = 16 / int(sizeof(T));
  constexpr int kRowsPerRead = 32 / kUnits;  // slab rows one warp-wide read covers
  const int write_row = lane / 4, quad = lane % 4;
#pragma unroll
  for (int w = 0; w < kWaves; ++w) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int slice_row0 = row_base + w * 128 + 8 * h;
#pragma unroll
      for (int chunk = 0; chunk * kChunkCols < kBlockN; ++chunk) {
#pragma unroll
        for (int gi = 0; gi < kChunkGroups; ++gi) {
          const int g = chunk * kChunkGroups + gi;
          if (g >= kBlockN / 8) break;
          const int byte = int(sizeof(T)) * (8 * gi + 2 * quad);
          uint8_t* dst = slab + write_row * kRowBytes + (((byte / 16) ^ (write_row % kUnits)) * 16) + byte % 16;
          const float v0 = acc[w][4 * g + 2 * h], v1 = acc[w][4 * g + 2 * h + 1];
          if constexpr (sizeof(T) == 4) *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
          else *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(v0, v1);
        }
        __syncwarp();
#pragma unroll
        for (int i = 0; i < 8 / kRowsPerRead; ++i) {
          const int r = i * kRowsPerRead + lane / kUnits, unit = lane % kUnits;
          const uint4 v = *reinterpret_cast<const uint4*>(slab + r * kRowBytes + ((unit ^ (r % kUnits)) * 16));
          const int row = slice_row0 + r, col = n0 + chunk * kChunkCols + unit * kPieceCols;
          if (col - n0 < kBlockN && col < n && row >= row_lo && row < row_hi)
            *reinterpret_cast<uint4*>(d + int64_t(row) * n + col) = v;
        }
        __syncwarp();  // the slab is rewritten by the next chunk
      }
    }
  }
}

}  // namespace jdg
