// Which output tile a persistent CTA computes next, for every GEMM kernel of the library (FP8 and
// BF16): dense, M-grouped contiguous (per-row expert ids) and M-grouped masked. Device code only.
#pragma once

#include "kernels/tile_scheduler.cuh"

namespace jdg {

// The M-grouping of a GEMM launch; all-null/zero for a dense GEMM.
struct GemmGrouping {
  // Contiguous (MoE prefill/training): per-row expert ids [m]; B is [num_groups * n, k].
  const int* row_group = nullptr;
  int num_groups = 1;
  // Masked (MoE decode): A/D are [num_groups * max_m, ...]; group g computes only its first
  // masked_m[g] rows (whole BLOCK_M tiles).
  const int* masked_m = nullptr;
  int max_m = 0;
};

// Group of a row of a contiguous M-grouped GEMM (0 for a dense one): the id, with anything outside
// [0, num_groups) read as padding (-1).
__device__ __forceinline__ int GemmRowGroup(const GemmGrouping& grouping, int m, int row) {
  if (grouping.row_group == nullptr) return 0;
  const int g = __ldg(grouping.row_group + min(row, m - 1));
  return g >= 0 && g < grouping.num_groups ? g : -1;
}

// The next tile of this CTA's walk: (m_block, n_block) and the expert whose B slice it multiplies
// (0 for a dense GEMM, -1 for a padding tile of a contiguous grouped GEMM: its tile's first row is
// padding; segments are BLOCK_M-aligned by contract). Dense and contiguous tiles follow the
// L2-banded TileScheduler (the kClusterM M-blocks of a cluster pair together); masked GEMMs walk
// group by group over only the ceil(masked_m[g] / BLOCK_M) M-blocks each group needs.
template <int kBlockM, int kBlockN, int kClusterM>
__device__ __forceinline__ bool NextGemmTile(const TileScheduler& sched, const GemmGrouping& grouping, int m, int n,
                                             int tile, int cta_rank, int& m_block, int& n_block, int& group) {
  if (grouping.masked_m == nullptr) {
    if (!sched.Get(tile, m_block, n_block)) return false;
    m_block = m_block * kClusterM + cta_rank;  // past M for the second CTA of a ragged last pair
    group = GemmRowGroup(grouping, m, m_block * kBlockM);
    return true;
  }
  const int num_n_blocks = (n + kBlockN - 1) / kBlockN;
  for (int g = 0; g < grouping.num_groups; ++g) {
    const int rows = min(max(__ldg(grouping.masked_m + g), 0), grouping.max_m);  // out-of-range counts clamp
    const int tiles = (rows + kBlockM - 1) / kBlockM * num_n_blocks;
    if (tile < tiles) {
      m_block = g * (grouping.max_m / kBlockM) + tile / num_n_blocks;
      n_block = tile % num_n_blocks;
      group = g;
      return true;
    }
    tile -= tiles;
  }
  return false;
}

}  // namespace jdg
