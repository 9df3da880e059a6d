// Host-side TMA descriptor construction. The driver entry point is fetched through the CUDA
// runtime (no link-time libcuda dependency); descriptors are built per call on the host and
// passed to kernels by value (__grid_constant__), which is legal under CUDA-graph capture.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace jdg {

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

inline EncodeTiledFn GetEncodeTiled() {
  static EncodeTiledFn fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &status) !=
            cudaSuccess ||
        status != cudaDriverEntryPointSuccess)
      return static_cast<EncodeTiledFn>(nullptr);
    return reinterpret_cast<EncodeTiledFn>(ptr);
  }();
  return fn;
}

// A row-major 2-D tensor [rows, cols] (cols contiguous, row stride `row_stride_elems`), loaded in
// boxes of [box_rows, box_cols]. Out-of-bounds elements of a box read as zero.
inline bool MakeTensorMap2D(CUtensorMap* map, const void* base, CUtensorMapDataType dtype, int elem_bytes,
                            uint64_t rows, uint64_t cols, uint64_t row_stride_elems, uint32_t box_rows,
                            uint32_t box_cols, CUtensorMapSwizzle swizzle) {
  EncodeTiledFn encode = GetEncodeTiled();
  if (encode == nullptr) return false;
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint64_t strides[1] = {row_stride_elems * elem_bytes};
  const cuuint32_t box[2] = {box_cols, box_rows};
  const cuuint32_t elem_strides[2] = {1, 1};
  return encode(map, dtype, 2, const_cast<void*>(base), dims, strides, box, elem_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Rows of the box that loads the last block of a [rows, K] operand tiled `block_rows` at a time: the rows left,
// rounded up to the 8-row swizzle atom (or a whole block when none are left over). A kernel loading that block
// through this box instead of a whole one keeps TMA from zero-filling rows past the end (the FP8 and BF16 GEMMs'
// tma_a_tail).
inline int TailBoxRows(int64_t rows, int block_rows) {
  const int left = int(rows % block_rows);
  return left == 0 ? block_rows : (left + 7) / 8 * 8;
}

}  // namespace jdg
