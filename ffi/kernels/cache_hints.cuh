// L2 cache-policy operands for TMA copies and hinted stores: cute's CacheHintSm90 values as the 64-bit integers that
// its copy functions (and `.L2::cache_hint` PTX) take, defined once for every kernel; and the hinted TMA store.
#pragma once

#include <cstdint>

#include <cute/arch/copy_sm90_desc.hpp>
#include <cute/arch/util.hpp>

namespace jdg {

// Operands that other CTAs (or later K-blocks) read again: A and B tiles, queries, weights.
inline constexpr uint64_t kEvictNormal = uint64_t(cute::TMA::CacheHintSm90::EVICT_NORMAL);
// Bytes touched once: the paged KV cache stream, D tiles written by TMA.
inline constexpr uint64_t kEvictFirst = uint64_t(cute::TMA::CacheHintSm90::EVICT_FIRST);

// TMA store of one D box with an L2 evict-first hint: D is written once and never re-read by the kernel, so its lines
// should not push the A and B tiles that other CTAs still read out of L2 (the FP8 GEMM, session 36: 4096 x 32768 x 512,
// whose 268 MB of D is 5x L2, 150.8 -> 144.9 us; the other dense, contiguous and masked rows within 0.8 %).
__device__ __forceinline__ void TmaStoreEvictFirst2D(const void* tma, const void* smem, int32_t x, int32_t y) {
  asm volatile(
      "cp.async.bulk.tensor.2d.global.shared::cta.bulk_group.L2::cache_hint [%0, {%2, %3}], [%1], %4;"
      :
      : "l"(reinterpret_cast<uint64_t>(tma)), "r"(cute::cast_smem_ptr_to_uint(smem)), "r"(x), "r"(y),
        "l"(kEvictFirst)
      : "memory");
}

}  // namespace jdg
