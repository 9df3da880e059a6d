// The grouping of a GEMM call (MoE layouts), shared by the FP8 and BF16 handlers, their launch code and the
// kernels' tile walk (kernels/gemm_tile_walk.cuh). A plain struct: included by host-only code too.
#pragma once

namespace jdg {

// The M- or K-grouping of a GEMM launch; all-null/zero for a dense GEMM.
struct GemmGrouping {
  // Contiguous (MoE prefill/training): per-row expert ids [m]; B is [num_groups * n, k].
  const int* row_group = nullptr;
  int num_groups = 1;
  // Masked (MoE decode): A/D are [num_groups * max_m, ...]; group g computes only its first
  // masked_m[g] rows (whole BLOCK_M tiles).
  const int* masked_m = nullptr;
  int max_m = 0;
  // Ragged (lax.ragged_dot's layout, any group sizes): cumulative row ends [num_groups] of the groups
  // of A [m, k]; rows past the last end are zeros. B is [num_groups * n, k].
  const int* group_ends = nullptr;
  // K-grouped (weight gradients): K sizes [num_groups] of consecutive K ranges of A [m, k] and
  // B [n, k]; D is [num_groups * m, n]. Each size must be a multiple of 128 (one scale block).
  const int* group_k = nullptr;

  constexpr bool m_grouped() const { return row_group != nullptr || masked_m != nullptr || group_ends != nullptr; }
  constexpr bool k_grouped() const { return group_k != nullptr; }
  // A masked launch needs whole BLOCK_M tiles per group and A/D of num_groups * max_m rows.
  constexpr bool masked_layout_fits(int m, int block_m) const {
    return masked_m == nullptr || (max_m % block_m == 0 && m == max_m * num_groups);
  }
};

// The K-grouped FP8 walk takes the groups in descending order of K (ties by index), from a table each CTA builds
// in shared memory (gemm_tile_walk.cuh): with a static round-robin walk, the last tiles a CTA takes are then the
// cheapest ones. One slot per group; more than kKGroupedWalkMaxGroups groups are walked in index order.
struct KGroupedSlot {
  int group, kb_begin, kb_end, poisoned;
};
constexpr int kKGroupedWalkMaxGroups = 256;
constexpr int KGroupedWalkTableBytes(int num_groups) {
  return num_groups <= kKGroupedWalkMaxGroups ? (num_groups * int(sizeof(KGroupedSlot)) + 127) / 128 * 128 : 0;
}

}  // namespace jdg
