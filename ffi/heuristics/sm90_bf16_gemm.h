// Tile-shape choice for the SM90 BF16 GEMM: a pure function of the problem and the device, choosing
// only among the compiled shapes (instances/bf16_gemm_instances.h). Set JAX_DEEPGEMM_PRINT_CONFIGS=1
// to print each new choice once.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <mutex>
#include <set>
#include <tuple>

#include "bf16_gemm_launch.h"
#include "instances/bf16_gemm_instances.h"

namespace jdg {

struct Bf16BlockShape {
  int m, n, cluster_m, major;
};

#define JDG_BF16_BLOCK_SHAPE(BM, BN, CLUSTER, MAJOR) Bf16BlockShape{BM, BN, CLUSTER, MAJOR},
inline constexpr Bf16BlockShape kBf16Shapes[] = {JDG_BF16_ALL(JDG_BF16_BLOCK_SHAPE)};
#undef JDG_BF16_BLOCK_SHAPE

// Pipeline depth: what fits next to the (optional) BF16 output staging, at most 16 stages (16 x 64 K
// in flight is plenty for the memory-bound small-M shapes).
inline int Bf16GemmStages(Bf16BlockShape s, bool tma_store, bool staged_store) {
  const int budget = kBf16SmemCapacity - Bf16GemmDStagingBytes(tma_store, staged_store, s.m, s.n);
  return std::min(16, budget / Bf16GemmStageBytes(s.m, s.n));
}

// Modelled cycles for one problem: waves x per-tile time, the per-tile time being the slower of
// the tensor cores (~4096 dense BF16 FLOP/cycle/SM; WGMMAs with N < 64 run at the N=64 rate) and the
// L2->SM feed (~48 B/cycle/SM when every SM streams), plus the epilogue; floored by DRAM traffic,
// which one SM pulls at only ~20 B/cycle (the chip: ~1650 B/cycle). Same model as the FP8 kernel's
// (heuristics/sm90_fp8_gemm.h) with BF16 rates and 64-K slices.
inline double Bf16GemmCost(int m, int n, int k, int num_groups, Bf16BlockShape s, int num_sms, int out_bytes,
                           bool tma_store) {
  const double tiles = double((m + s.m * s.cluster_m - 1) / (s.m * s.cluster_m)) * s.cluster_m * ((n + s.n - 1) / s.n);
  const double waves = std::ceil(tiles / (num_sms / s.cluster_m * s.cluster_m));
  const double active_sms = std::min<double>(tiles, num_sms);
  const double k_blocks = (k + kBf16BlockK - 1) / kBf16BlockK;
  const double mma = s.m * std::max(s.n, 64) * kBf16BlockK * 2 / 4096.0;
  const double feed = (s.m + double(s.n) / s.cluster_m) * 128 / 48.0;  // B is multicast across the cluster
  const double epilogue = s.m * s.n * out_bytes / (tma_store ? 64.0 : 16.0);
  const double per_sm = waves * (k_blocks * std::max(mma, feed) + epilogue);
  const double dram_bytes = 2.0 * m * k + 2.0 * n * k * num_groups + double(m) * n * out_bytes;
  const double dram = dram_bytes / std::min(1650.0, active_sms * 20.0);
  return std::max(per_sm, dram);
}

// force_block_m/n/cluster_m > 0 select a compiled shape explicitly (tests, tuning, grouped layouts).
// `num_groups` only weighs B's DRAM traffic (grouped GEMMs read every expert's weights). `major` (the
// operand-major mask, see bf16_gemm_instances.h) restricts the choice to kernels of that layout.
inline Bf16GemmConfig PickBf16GemmConfig(int m, int n, int k, int num_groups, bool out_fp32, int num_sms,
                                         int force_block_m, int force_block_n, int force_cluster_m, int major = 0) {
  const int out_bytes = out_fp32 ? 4 : 2;
  Bf16GemmConfig best;
  double best_cost = 0;
  for (const Bf16BlockShape s : kBf16Shapes) {
    if (s.major != major) continue;
    if (force_block_m > 0 && s.m != force_block_m) continue;
    if (force_block_n > 0 && s.n != force_block_n) continue;
    if (force_cluster_m > 0 && s.cluster_m != force_cluster_m) continue;
    if (s.cluster_m > num_sms) continue;
    // A 128-row tile over M <= 64 would run half its tensor-core work on padding.
    if (force_block_m <= 0 && s.m == 128 && m <= 64) continue;
    const bool tma_store = Bf16GemmUsesTmaStore(out_fp32, n, s.n);
    if (Bf16GemmStages(s, tma_store, Bf16GemmUsesStagedStore(out_fp32, n)) < 2) continue;
    const double cost = Bf16GemmCost(m, n, k, num_groups, s, num_sms, out_bytes, tma_store);
    // Within 2 %, prefer the larger tile (fewer B/A re-reads than the model counts).
    const int rank = s.m * s.n * s.cluster_m, best_rank = best.block_m * best.block_n * best.cluster_m;
    const bool better = best.block_m == 0 || cost < best_cost * 0.98 || (cost < best_cost * 1.02 && rank > best_rank);
    if (better) {
      best_cost = cost;
      best.block_m = s.m;
      best.block_n = s.n;
      best.cluster_m = s.cluster_m;
      best.major = s.major;
    }
  }
  if (best.block_m == 0) return best;  // forced shape not compiled: caller reports it
  // Persistent grid: one CTA per SM at most, a whole number of clusters.
  const int cluster_tiles = ((m + best.block_m * best.cluster_m - 1) / (best.block_m * best.cluster_m)) *
                            ((n + best.block_n - 1) / best.block_n);
  best.grid = std::max(1, std::min(cluster_tiles, num_sms / best.cluster_m)) * best.cluster_m;
  best.tma_store = Bf16GemmUsesTmaStore(out_fp32, n, best.block_n);
  best.staged_store = Bf16GemmUsesStagedStore(out_fp32, n);
  best.num_stages =
      Bf16GemmStages({best.block_m, best.block_n, best.cluster_m, best.major}, best.tma_store, best.staged_store);
  best.raster_band = 8;

  static const bool print = std::getenv("JAX_DEEPGEMM_PRINT_CONFIGS") != nullptr;
  if (print) {
    static std::mutex mu;
    static std::set<std::tuple<int, int, int, int, int, int>> seen;
    std::lock_guard<std::mutex> lock(mu);
    if (seen.insert({m, n, k, num_groups, int(out_fp32), major}).second)
      std::fprintf(stderr, "jax_deepgemm bf16_gemm m=%d n=%d k=%d groups=%d fp32=%d major=%d -> block %dx%d cluster %d "
                   "stages=%d grid=%d tma_store=%d\n", m, n, k, num_groups, int(out_fp32), major, best.block_m,
                   best.block_n, best.cluster_m, best.num_stages, best.grid, int(best.tma_store));
  }
  return best;
}

}  // namespace jdg
