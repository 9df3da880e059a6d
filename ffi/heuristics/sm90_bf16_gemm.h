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

// What a 64-K slice costs a narrow 64-row tile at least, whatever its tensor and feed time: the WGMMA wait, the stage
// release and the next stage's arrival. H200, session 54, kernel us at K = 7168 (112 slices, one wave): 64 x 16 tiles
// 18.0 at N = 576 (~318 cycles per slice), 64 x 64 18.9 (~334).
constexpr double kBf16SliceFloorCycles = 320;
// The split-K hand-over, after a CTA's stream: the partials' round trip through L2 and the arrival (~1500 cycles,
// assumed), plus a cycle per 16 bytes of all the tile's partials: fitted so that the wide and deep splits that lost at
// 1 x 4096 x 7168 lose in the model too (why they lose is open: benchmarks/RESULTS.md, "Session 54").
constexpr double kBf16SplitHandOverCycles = 1500;
// What DRAM delivers to a decode GEMM on the whole chip, ~1150 B/cycle (~2 TB/s at 1.755 GHz, H100), below the FP8
// model's 1650: H100, session 54, kernel us, B 30 MB at 1 x 2112 x 7168: XLA's dot 16.6, ours at best 16.7 (64 x 64
// tiles split 2); B 59 MB at 1 x 4096 x 7168: XLA 25.0, ours 22.2 (session 52) on unsplit 64 x 32 tiles.
constexpr double kBf16ChipDramBytesPerCycle = 1150;

// Modelled cycles for one problem: waves x per-CTA time, the per-CTA time being its 64-K slices, each the slowest of
// the tensor cores (~4096 dense BF16 FLOP/cycle/SM; WGMMAs with N < 64 run at the N=64 rate), the L2->SM feed
// (~48 B/cycle/SM when every SM streams) and the slice floor above, plus the epilogue; floored by DRAM traffic, which
// one SM pulls at only ~20 B/cycle (the chip: kBf16ChipDramBytesPerCycle); then a split's hand-over, which starts when
// the stream ends. The FP8 kernel's model (heuristics/sm90_fp8_gemm.h) with BF16 rates and 64-K slices.
// `split`: CTAs per tile (split-K); `sm_cycles`: the per-CTA part alone (stream and hand-over). `decode` (dense
// M <= 128, what session 54 measured): the slice floor and the chip's decode DRAM rate apply (else each slice costs its
// tensor or feed time and the chip's DRAM rate is the FP8 model's 1650 B/cycle, as fitted before).
//
// H100, session 54, kernel us (the first fit's pick first; XLA's bf16 dot): 1 x 576 x 7168 64 x 32 split 7 8.72 (unsplit
// 64 x 16 18.07, 64 x 32 split 4 9.68; XLA 5.35), 128 x 576 x 7168 64 x 64 split 7 12.52 (split 2 14.05; XLA 10.29);
// 1 x 2112 x 7168 64 x 64 split 2 16.69 (split 4 18.17, unsplit 64 x 16 18.47; XLA 16.55); 1 x 4096 x 7168 64 x 128
// split 4 29.65 and 64 x 64 split 2 26.62 against 22.2 unsplit 64 x 32 (session 52). This fit's picks (split 6 / 5 at
// N = 576, 64 x 32 split 2 at 1 x 2112, 4096 unsplit) have not run yet: benchmarks/RESULTS.md, "Session 54".
inline double Bf16GemmCost(int m, int n, int k, int num_groups, Bf16BlockShape s, int num_sms, int out_bytes,
                           bool tma_store, int split = 1, double* sm_cycles = nullptr, bool decode = false) {
  const double tiles = double((m + s.m * s.cluster_m - 1) / (s.m * s.cluster_m)) * s.cluster_m * ((n + s.n - 1) / s.n);
  const double ctas = tiles * split;
  const double waves = std::ceil(ctas / (num_sms / s.cluster_m * s.cluster_m));
  const double active_sms = std::min<double>(ctas, num_sms);
  const int k_blocks = (k + kBf16BlockK - 1) / kBf16BlockK;
  const double cta_k_blocks = (k_blocks + split - 1) / split;
  const double mma = s.m * std::max(s.n, 64) * kBf16BlockK * 2 / 4096.0;
  const double feed = (s.m + double(s.n) / s.cluster_m) * 128 / 48.0;  // B is multicast across the cluster
  const double epilogue = s.m * s.n * out_bytes / (tma_store ? 64.0 : 16.0);
  const double hand_over = split > 1 ? waves * (kBf16SplitHandOverCycles + split * s.m * s.n * 4 / 16.0) : 0.0;
  const double slice = std::max({mma, feed, decode ? kBf16SliceFloorCycles : 0.0});
  const double stream = waves * (cta_k_blocks * slice + epilogue);
  const double dram_bytes = 2.0 * m * k + 2.0 * n * k * num_groups + double(m) * n * out_bytes;
  const double dram = dram_bytes / std::min(decode ? kBf16ChipDramBytesPerCycle : 1650.0, active_sms * 20.0);
  if (sm_cycles != nullptr) *sm_cycles = stream + hand_over;
  return std::max(stream, dram) + hand_over;
}

// force_block_m/n/cluster_m > 0 select a compiled shape explicitly (tests, tuning, grouped layouts).
// `num_groups` only weighs B's DRAM traffic (grouped GEMMs read every expert's weights). `major` (the
// operand-major mask, see bf16_gemm_instances.h) restricts the choice to kernels of that layout.
// force_split_k: 0 = decide (the dense handler), 1 = never (grouped GEMMs), > 1 = that split (at most the K-blocks
// and kBf16MaxSplitK; a tile without split-K is then an error the caller reports).
inline Bf16GemmConfig PickBf16GemmConfig(int m, int n, int k, int num_groups, bool out_fp32, int num_sms,
                                         int force_block_m, int force_block_n, int force_cluster_m, int major = 0,
                                         int force_split_k = 1) {
  const int out_bytes = out_fp32 ? 4 : 2;
  const int k_blocks = (k + kBf16BlockK - 1) / kBf16BlockK;
  const bool dense = num_groups == 1;
  Bf16GemmConfig best;
  double best_cost = 0, best_sm_cost = 0;
  // Dense decode (M <= 128, the dense handler's call): the model's decode terms and split-K. Of two candidates within
  // 2 %, both near the DRAM floor as a rule, the one with less SM time wins (as in the FP8 heuristic), not the larger
  // tile: A is a few rows, so a larger tile saves no reads. (H100, session 54: 128 x 32768 x 512 on unpaired 128 x 256
  // tiles, one wave, 18.54 us against 21.88 on the pairs the rank preferred, two waves; XLA 18.11.)
  const bool decode = dense && m <= 128 && force_split_k != 1;
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
    const bool may_split = dense && Bf16GemmMaySplitK(s.n, s.cluster_m, s.major);
    const int64_t tiles = int64_t((m + s.m - 1) / s.m) * ((n + s.n - 1) / s.n);
    // A forced split needs a tile compiled with split-K and few enough tiles for the arrival counters.
    if (force_split_k > 1 && (!may_split || tiles > kBf16SplitMaxTiles)) continue;
    const int max_split = !may_split || force_split_k == 1 || (force_split_k == 0 && !decode)
                              ? 1
                              : std::min(kBf16MaxSplitK, k_blocks);
    for (int split = force_split_k > 1 ? std::min(force_split_k, max_split) : 1; split <= max_split; ++split) {
      // Splits chosen here fill at most one wave, each CTA at least 4 slices; a forced split is taken as it is.
      if (force_split_k == 0 && split > 1 &&
          (tiles * split > num_sms || k_blocks / split < 4 || tiles > kBf16SplitMaxTiles))
        break;
      double sm_cost = 0;
      const double cost =
          Bf16GemmCost(m, n, k, num_groups, s, num_sms, out_bytes, tma_store, split, &sm_cost, decode);
      // Within 2 %, prefer the larger tile (fewer B/A re-reads than the model counts), then fewer splits (the order
      // of the loop); at decode, less SM time.
      const int rank = s.m * s.n * s.cluster_m, best_rank = best.block_m * best.block_n * best.cluster_m;
      const bool close = cost < best_cost * 1.02 && best_cost < cost * 1.02;
      bool better = best.block_m == 0 || cost < best_cost * 0.98;
      if (!better && close) better = decode ? sm_cost < best_sm_cost * 0.98 : rank > best_rank;
      if (better) {
        best_cost = cost, best_sm_cost = sm_cost;
        best.block_m = s.m;
        best.block_n = s.n;
        best.cluster_m = s.cluster_m;
        best.major = s.major;
        best.split_k = split;
      }
      if (force_split_k > 1) break;
    }
  }
  if (best.block_m == 0) return best;  // forced shape not compiled: caller reports it
  // Persistent grid: one CTA per SM at most, a whole number of clusters.
  const int cluster_tiles = ((m + best.block_m * best.cluster_m - 1) / (best.block_m * best.cluster_m)) *
                            ((n + best.block_n - 1) / best.block_n);
  // Split-K: one CTA per (tile, split).
  best.grid = best.split_k > 1 ? cluster_tiles * best.split_k
                               : std::max(1, std::min(cluster_tiles, num_sms / best.cluster_m)) * best.cluster_m;
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
                   "split %d stages=%d grid=%d tma_store=%d\n", m, n, k, num_groups, int(out_fp32), major,
                   best.block_m, best.block_n, best.cluster_m, best.split_k, best.num_stages, best.grid,
                   int(best.tma_store));
  }
  return best;
}

}  // namespace jdg
