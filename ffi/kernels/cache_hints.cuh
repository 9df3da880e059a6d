// L2 cache-policy operands for TMA copies and hinted stores: cute's CacheHintSm90 values as the 64-bit integers that
// its copy functions (and `.L2::cache_hint` PTX) take, defined once for every kernel.
#pragma once

#include <cstdint>

#include <cute/arch/copy_sm90_desc.hpp>

namespace jdg {

// Operands that other CTAs (or later K-blocks) read again: A and B tiles, queries, weights.
inline constexpr uint64_t kEvictNormal = uint64_t(cute::TMA::CacheHintSm90::EVICT_NORMAL);
// Bytes touched once: the paged KV cache stream, D tiles written by TMA.
inline constexpr uint64_t kEvictFirst = uint64_t(cute::TMA::CacheHintSm90::EVICT_FIRST);

}  // namespace jdg
