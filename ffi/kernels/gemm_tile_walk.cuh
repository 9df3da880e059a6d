// Which output tile a persistent CTA computes next, for every GEMM kernel of the library (FP8 and
// BF16): dense, M-grouped contiguous (per-row expert ids), masked and ragged, and K-grouped.
// Device code only.
#pragma once

#include "common/gemm_grouping.h"
#include "kernels/tile_scheduler.cuh"

namespace jdg {

// Group of a row of a contiguous M-grouped GEMM (0 for a dense one): the id, with anything outside
// [0, num_groups) read as padding (-1).
__device__ __forceinline__ int GemmRowGroup(const GemmGrouping& grouping, int m, int row) {
  if (grouping.row_group == nullptr) return 0;
  const int g = __ldg(grouping.row_group + min(row, m - 1));
  return g >= 0 && g < grouping.num_groups ? g : -1;
}

// Rows of masked group g that the kernel computes: masked_m[g], out-of-range device counts clamped to [0, max_m].
__device__ __forceinline__ int MaskedGroupRows(const GemmGrouping& grouping, int g) {
  return min(max(__ldg(grouping.masked_m + g), 0), grouping.max_m);
}

// The next tile of this CTA's walk: (m_block, n_block) and the expert whose B slice it multiplies
// (0 for a dense GEMM, -1 for a padding tile of a contiguous grouped GEMM: its tile's first row is
// padding; segments are BLOCK_M-aligned by contract). Dense and contiguous tiles follow the
// L2-banded TileScheduler, built over cluster tiles (kClusterM M-blocks x kClusterN N-blocks: the
// CTAs of a cluster pair up on adjacent tiles); masked GEMMs walk group by group over only the
// ceil(masked_m[g] / BLOCK_M) M-blocks each group needs. A cluster spans M or N, not both.
template <int kBlockM, int kBlockN, int kClusterM, int kClusterN = 1>
__device__ __forceinline__ bool NextGemmTile(const TileScheduler& sched, const GemmGrouping& grouping, int m, int n,
                                             int tile, int cta_rank, int& m_block, int& n_block, int& group) {
  static_assert(kClusterM == 1 || kClusterN == 1, "a cluster spans M or N");
  if (grouping.masked_m == nullptr) {
    if (!sched.Get(tile, m_block, n_block)) return false;
    // Past M (N) for the second CTA of a ragged last pair: it computes on zero-filled operands.
    if constexpr (kClusterM > 1) m_block = m_block * kClusterM + cta_rank;
    if constexpr (kClusterN > 1) n_block = n_block * kClusterN + cta_rank;
    group = GemmRowGroup(grouping, m, m_block * kBlockM);
    return true;
  }
  const int num_n_units = (n + kBlockN * kClusterN - 1) / (kBlockN * kClusterN);
  for (int g = 0; g < grouping.num_groups; ++g) {
    const int rows = MaskedGroupRows(grouping, g);
    const int tiles = (rows + kBlockM - 1) / kBlockM * num_n_units;
    if (tile < tiles) {
      m_block = g * (grouping.max_m / kBlockM) + tile / num_n_units;
      n_block = tile % num_n_units * kClusterN + (kClusterN > 1 ? cta_rank : 0);
      group = g;
      return true;
    }
    tile -= tiles;
  }
  return false;
}

// Rows [start, end) of ragged group g (g = num_groups: the zero tail past the last end), from the
// cumulative ends clamped to [0, m). Ends are non-decreasing when built by the Python op; anything
// else still never leads outside [0, m).
__device__ __forceinline__ void RaggedGroupRows(const GemmGrouping& grouping, int m, int g, int& start, int& end) {
  auto clamped_end = [&](int i) { return min(max(__ldg(grouping.group_ends + i), 0), m); };
  start = g > 0 ? clamped_end(g - 1) : 0;
  end = g < grouping.num_groups ? clamped_end(g) : m;
}

// A 256-row tile of a contiguous M-grouped GEMM covers two 128-row blocks of the layout (experts are
// aligned to 128 rows), each with the expert of its first row. Given `group`, the first block's, this
// returns the second block's expert when the two differ and both are experts: the tile then runs its K
// range once per 128-row wave, each with its own expert's B (the whole A tile is loaded both times;
// with thousands of rows per expert few tiles straddle). Otherwise it returns -1 and sets `group` to
// the expert of the single pass (the second block's if the first is padding).
__device__ __forceinline__ int ContiguousSecondWaveGroup(const GemmGrouping& grouping, int m, int tile_row0,
                                                         int& group) {
  if (grouping.row_group == nullptr) return -1;
  const int second = tile_row0 + 128 < m ? GemmRowGroup(grouping, m, tile_row0 + 128) : -1;
  if (group >= 0 && second >= 0 && second != group) return second;
  if (group < 0) group = second;
  return -1;
}

// The next tile of a ragged M-grouped GEMM: group g owns rows [end[g-1], end[g]) of A and D. A
// BLOCK_M row tile that straddles groups is computed once per group in it, each unit storing only
// its group's rows (RaggedTileRows). The units are walked group by group (N-blocks fastest), then
// the tiles of the rows past the last end (group -1: zeros). At most ceil(m / BLOCK_M) + num_groups
// M-units, so straddling costs at most num_groups extra tile rows.
template <int kBlockM, int kBlockN, int kClusterN = 1>
__device__ __forceinline__ bool NextRaggedTile(const GemmGrouping& grouping, int m, int n, int tile, int cta_rank,
                                               int& m_block, int& n_block, int& group) {
  const int num_n_units = (n + kBlockN * kClusterN - 1) / (kBlockN * kClusterN);  // clusters pair along N
  for (int g = 0; g <= grouping.num_groups; ++g) {
    int start, end;
    RaggedGroupRows(grouping, m, g, start, end);
    if (end > start) {
      const int first = start / kBlockM;
      const int tiles = ((end - 1) / kBlockM - first + 1) * num_n_units;
      if (tile < tiles) {
        m_block = first + tile / num_n_units;
        n_block = tile % num_n_units * kClusterN + (kClusterN > 1 ? cta_rank : 0);
        group = g < grouping.num_groups ? g : -1;
        return true;
      }
      tile -= tiles;
    }
  }
  return false;
}

// The rows [row_lo, row_hi) of tile (m_block, group) that a ragged unit stores: its group's rows
// inside the tile (recomputed in the epilogue rather than kept live through the main loop).
template <int kBlockM>
__device__ __forceinline__ void RaggedTileRows(const GemmGrouping& grouping, int m, int m_block, int group,
                                               int& row_lo, int& row_hi) {
  int start, end;
  RaggedGroupRows(grouping, m, group < 0 ? grouping.num_groups : group, start, end);
  row_lo = max(start, m_block * kBlockM);
  row_hi = min(end, m_block * kBlockM + kBlockM);
}

// K sizes of a K-grouped GEMM are multiples of this (one FP8 scale block along K; the BF16 kernel
// keeps the same contract, so the two serve the same routed-token layouts).
constexpr int kKGroupAlignment = 128;

// The next tile of a K-grouped GEMM: group-major (every group covers the whole M x N tile grid),
// with the K-block range [kb_begin, kb_end) of the group, in the kernel's kBlockK-deep K-blocks
// (empty for an empty group). Device sizes are read as DeepGEMM's contract demands: negative counts
// as 0, the ranges are clipped to the K of the operands, and from the first size that is not a
// multiple of 128 on, every group is `poisoned` (its offsets no longer fall on 128-row blocks: the
// kernel writes NaN there).
// With `table` (BuildKGroupedWalk), the groups are walked in its order and their ranges read from it.
template <int kBlockK>
__device__ __forceinline__ bool NextKGroupedTile(const TileScheduler& sched, const GemmGrouping& grouping,
                                                 int num_k_blocks, int tile, int& m_block, int& n_block, int& group,
                                                 int& kb_begin, int& kb_end, bool& poisoned,
                                                 const KGroupedSlot* table = nullptr) {
  static_assert(kKGroupAlignment % kBlockK == 0, "a group's K range is whole K-blocks");
  group = tile / sched.num_tiles;
  if (group >= grouping.num_groups || !sched.Get(tile - group * sched.num_tiles, m_block, n_block)) return false;
  if (table != nullptr) {
    const KGroupedSlot slot = table[group];
    group = slot.group, kb_begin = slot.kb_begin, kb_end = slot.kb_end, poisoned = slot.poisoned != 0;
    return true;
  }
  int offset = 0;  // in rows of K
  poisoned = false;
  for (int g = 0; g < group; ++g) {
    const int size = max(__ldg(grouping.group_k + g), 0);
    poisoned |= size % kKGroupAlignment != 0;
    offset += size;
  }
  const int size = max(__ldg(grouping.group_k + group), 0);
  poisoned |= size % kKGroupAlignment != 0;
  kb_begin = min(offset / kBlockK, num_k_blocks);
  kb_end = poisoned ? kb_begin : min((offset + size) / kBlockK, num_k_blocks);
  return true;
}

// Fills `table` (shared memory, KGroupedWalkTableBytes) with every group's slot, in descending order of K (ties by
// index), with its K-block range and poisoning exactly as NextKGroupedTile reads them without a table. All threads
// of the CTA call it; `scratch` (num_groups ints of shared memory) is free again once it returns.
template <int kBlockK>
__device__ void BuildKGroupedWalk(const GemmGrouping& grouping, int num_k_blocks, KGroupedSlot* table, int* scratch) {
  const int num_groups = grouping.num_groups;
  for (int g = threadIdx.x; g < num_groups; g += blockDim.x) scratch[g] = max(__ldg(grouping.group_k + g), 0);
  __syncthreads();
  for (int g = threadIdx.x; g < num_groups; g += blockDim.x) {
    const int size = scratch[g];
    int offset = 0, rank = 0;  // offset in rows of K
    bool poisoned = false;
    for (int h = 0; h < num_groups; ++h) {
      const int other = scratch[h];
      offset += h < g ? other : 0;
      poisoned |= h <= g && other % kKGroupAlignment != 0;
      rank += other > size || (other == size && h < g);
    }
    KGroupedSlot slot;
    slot.group = g;
    slot.kb_begin = min(offset / kBlockK, num_k_blocks);
    slot.kb_end = poisoned ? slot.kb_begin : min((offset + size) / kBlockK, num_k_blocks);
    slot.poisoned = poisoned ? 1 : 0;
    table[rank] = slot;
  }
  __syncthreads();
}

}  // namespace jdg
