// WGMMA shared-memory matrix descriptors of the tiles TMA writes with CU_TENSOR_MAP_SWIZZLE_128B
// (FP8 and BF16 GEMM kernels). A kernel builds each operand's descriptor once and moves it to another
// stage / K-step by adding to the start-address field (16-byte units, 14 bits: shared memory is
// < 256 KB, so the add never carries into the other fields).
#pragma once

#include <cstdint>

#include <cute/arch/mma_sm90_desc.hpp>

namespace jdg {

// K-major tile whose rows are 128 bytes: 8-row core groups are 1024 bytes apart; a K-step inside
// the swizzle atom advances the start address by its width in bytes.
__device__ __forceinline__ uint64_t SmemDescK128B(const void* smem) {
  cute::GmmaDescriptor desc;
  desc.bitfield.start_address_ = static_cast<uint16_t>(cute::cast_smem_ptr_to_uint(smem) >> 4);
  desc.bitfield.leading_byte_offset_ = 0;  // unused for swizzled K-major layouts
  desc.bitfield.stride_byte_offset_ = 1024 >> 4;
  desc.bitfield.base_offset_ = 0;
  desc.bitfield.layout_type_ = static_cast<uint8_t>(cute::SM90::GMMA::LayoutType::B128);
  return desc.desc_;
}

// MN-major tile stored as [MN/64 chunks][K rows][128 B] (64 16-bit MN elements per 128-byte row):
// CuTe's canonical MN-major SW128 form ((8,n),(8,k)):((1,LBO),(8,SBO)) in 16-byte units, LBO = the
// stride between 64-element MN chunks (`chunk_bytes`), SBO = the stride between 8-row K groups (1 KiB).
__device__ __forceinline__ uint64_t SmemDescMN128B(const void* smem, int chunk_bytes) {
  cute::GmmaDescriptor desc;
  desc.bitfield.start_address_ = static_cast<uint16_t>(cute::cast_smem_ptr_to_uint(smem) >> 4);
  desc.bitfield.leading_byte_offset_ = static_cast<uint16_t>(chunk_bytes >> 4);
  desc.bitfield.stride_byte_offset_ = 1024 >> 4;
  desc.bitfield.base_offset_ = 0;
  desc.bitfield.layout_type_ = static_cast<uint8_t>(cute::SM90::GMMA::LayoutType::B128);
  return desc.desc_;
}

}  // namespace jdg
