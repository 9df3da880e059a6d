// Tile-shape choice for the SM90 FP8 GEMM: a pure function of the problem and the device, choosing
// only among the compiled shapes (instances/fp8_gemm_instances.h). Set JAX_DEEPGEMM_PRINT_CONFIGS=1
// to print each new choice once.
#pragma once

#include <algorithm>
#include <cmath>
#include <iterator>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "fp8_gemm_launch.h"
#include "instances/fp8_gemm_instances.h"

namespace jdg {

struct BlockShape {
  int m, n, cluster_m, cluster_n;
  int cluster_size() const { return cluster_m * cluster_n; }
};

#define JDG_BLOCK_SHAPE(BM, BN, CLUSTER_M, CLUSTER_N) BlockShape{BM, BN, CLUSTER_M, CLUSTER_N},
inline constexpr BlockShape kFp8Block128Shapes[] = {JDG_FP8_1D2D_ALL(JDG_BLOCK_SHAPE)};
inline constexpr BlockShape kFp8PerChannelShapes[] = {JDG_FP8_1D1D_ALL(JDG_BLOCK_SHAPE)};
#undef JDG_BLOCK_SHAPE

// `reserved_bytes`: shared memory the launch adds beyond the stages and D (the K-grouped walk's table).
inline int Fp8GemmStages(BlockShape s, BScale scale, bool sfa_mn_major = false, bool two_per_sm = false,
                         int reserved_bytes = 0) {
  const int per_stage =
      Fp8GemmStageBytes(s.m, s.n, scale) + (sfa_mn_major ? Fp8GemmOptionalSfaStageBytes(s.m) : 0);
  // More stages keep more bytes in flight (what small-M, memory-bound shapes need); beyond ~24
  // nothing improves and the barrier bookkeeping grows.
  const int smem = two_per_sm ? kSm90SmemTwoPerSm : kSm90SmemCapacity;
  const int stages = std::min(24, (smem - Fp8GemmSmemDBytes(s.m, s.n, scale) - reserved_bytes) / per_stage);
  // Dual-chain tiles split the ring into two halves, one per chain.
  return Fp8GemmDualChain(s.m, s.n, scale) ? stages / 2 * 2 : stages;
}

// Modelled cycles for one problem: waves x per-tile time, the per-tile time being the slower of
// the tensor cores (~8192 dense FP8 FLOP/cycle/SM; WGMMAs with N < 64 run at the N=64 rate) and the
// L2->SM feed (~48 B/cycle/SM when every SM streams); floored by DRAM traffic, which one SM can pull
// at only ~20 B/cycle, so a grid with few CTAs cannot reach the chip's ~1650 B/cycle. `groups` problems of this
// size share one persistent grid (the K-grouped form): the waves are counted over all of their tiles.
inline double Fp8GemmCost(int m, int n, int k, BlockShape s, BScale scale, int num_sms, int out_bytes,
                          int groups = 1, double* sm_cycles = nullptr, bool credit_dual_chain = false) {
  // A cluster runs its CTAs in lock step on a pair of tiles; a pair whose second M-block (N-block)
  // is past M (N) still occupies both SMs.
  const double tiles = double((m + s.m * s.cluster_m - 1) / (s.m * s.cluster_m)) * s.cluster_m *
                       ((n + s.n * s.cluster_n - 1) / (s.n * s.cluster_n)) * s.cluster_n * groups;
  const double waves = std::ceil(tiles / (num_sms / s.cluster_size() * s.cluster_size()));
  const double active_sms = std::min<double>(tiles, num_sms);
  const double k_blocks = (k + 127) / 128;
  // Tiles wider than 128 straddle B scale blocks (up to 3 scale rows per tile) and, unless a multiple of
  // 64, store from registers. Session 4 measured ~1.2x the 128-wide tile's time per FLOP at M = 4096; since
  // each tile's scale-block offset is a compile-time case of the K loop (session 12) the 128 x 176 pair runs
  // 4096 x 2112 x 7168 in 111.0 us against 140.8 for 128 x 128 pairs: a small margin is left.
  const double mma = s.m * std::max(s.n, 64) * 128 * 2 / 8192.0 * (s.n > 128 ? 1.05 : 1.0);
  // B (A) is multicast across a cluster along M (N).
  const double feed = (double(s.m) / s.cluster_n + double(s.n) / s.cluster_m) * 128 / 48.0;
  // What a K-block costs besides tensor or feed time, whatever the tile: the WGMMA wait, the promotion and the
  // stage release (~300 cycles). Fitted on session 12's H200 sweeps: 4096/2048/8192/1024 x 2112 x 7168, 4096 x
  // 576 x 7168, 1024 x 4096 x 7168 and the six masked anchors over 128 x {128 paired, 144, 160, 176, 192}; the
  // model without it picked 128 x 128 pairs, 18-39 % slower than the measured best, in 7 of those 12.
  constexpr double kKBlockOverhead = 300;
  // TMA-stored tiles write D in full lines, asynchronously; register stores cost ~4x more.
  const double epilogue = s.m * s.n * out_bytes / (Fp8GemmHasSmemD(s.n, scale) ? 64.0 : 16.0);
  // credit_dual_chain (dense M <= 128 only: measured there): dual-chain tiles (64 x 64) run two K chains per SM,
  // alternating batches of 4 K-blocks, so with two batches or more one chain's overhead overlaps the other's tensor
  // work. H100, session 53, kernel us: 64 x 24576 x 1536 on 64 x 64 17.93 against 19.16 for the 64 x 128 tiles the
  // model preferred, 1 x 24576 x 1536 16.58 against 17.97; at 4 K-blocks (one batch) 64 x 32768 x 512 stays on
  // 64 x 128, 11.43 against 12.11 on 64 x 64.
  const double overhead = credit_dual_chain && Fp8GemmDualChain(s.m, s.n, scale) && k_blocks >= 8
                              ? kKBlockOverhead / 2
                              : kKBlockOverhead;
  const double per_sm = waves * (k_blocks * (std::max(mma, feed) + overhead) + epilogue);
  const double dram_bytes = (double(m) * k + double(n) * k + double(m) * n * out_bytes) * groups;
  const double dram = dram_bytes / std::min(1650.0, active_sms * 20.0);
  if (sm_cycles != nullptr) *sm_cycles = per_sm;
  return std::max(per_sm, dram);
}

// The masked M-grouped form's expected cost: `groups` experts of rows_per_group * f rows each, f uniform on
// [0.7, 1.3] and independent per expert (DeepGEMM's test and benchmark convention; the counts are device data),
// every expert's rows rounded up to whole tiles. The tile count of the whole problem then has a distribution (the
// convolution of the experts' ones) and so has the wave count: near a wave boundary, the tile that is cheapest at
// the hint can cost a whole extra wave for a quarter of the draws. Session 12 costed 0.75, 1 and 1.25 times the
// hint. On the bench's draws (H200, session 13) those three points picked 128 x 192 at 2 x 512 x 4096 x 7168
// (79.7 us; 128 x 160: 71.9) and 128 x 128 pairs at 4 x 256 x 4096 x 7168 (95.4; 128 x 192: 83.3); the
// distribution picks 128 x 160 and 128 x 192 there, and the same tiles as before on the other four anchors.
inline double Fp8GemmMaskedCost(int groups, int rows_per_group, int n, int k, BlockShape s, int num_sms) {
  // One expert's tile count over a 64-point grid of f.
  constexpr int kPoints = 64;
  const int min_tiles = (std::max(1, int(rows_per_group * 0.7 + 0.5)) + s.m - 1) / s.m;
  std::vector<double> expert;
  for (int i = 0; i < kPoints; ++i) {
    const double f = 0.7 + 0.6 * (i + 0.5) / kPoints;
    const int tiles = (std::max(1, int(rows_per_group * f + 0.5)) + s.m - 1) / s.m - min_tiles;
    if (tiles >= int(expert.size())) expert.resize(tiles + 1, 0.0);
    expert[tiles] += 1.0 / kPoints;
  }
  // All experts' tile count, offset by groups * min_tiles: exact convolution while it stays small; beyond that
  // (many experts with many tiles each) its normal approximation at 65 points over +-4 sigma.
  std::vector<std::pair<double, double>> total;  // (tile count, probability)
  const int support = groups * (int(expert.size()) - 1) + 1;
  if (support <= 512) {
    std::vector<double> dist{1.0};
    for (int g = 0; g < groups; ++g) {
      std::vector<double> next(dist.size() + expert.size() - 1, 0.0);
      for (size_t i = 0; i < dist.size(); ++i)
        for (size_t j = 0; j < expert.size(); ++j) next[i + j] += dist[i] * expert[j];
      dist.swap(next);
    }
    for (size_t t = 0; t < dist.size(); ++t)
      if (dist[t] > 1e-9) total.push_back({double(t), dist[t]});
  } else {
    double mean = 0, var = 0;
    for (size_t t = 0; t < expert.size(); ++t) mean += t * expert[t];
    for (size_t t = 0; t < expert.size(); ++t) var += (t - mean) * (t - mean) * expert[t];
    const double sigma = std::sqrt(groups * var);
    double norm = 0;
    for (int i = 0; i <= 64; ++i) {
      const double z = -4.0 + 8.0 * i / 64, w = std::exp(-0.5 * z * z);
      const double t = std::clamp(std::round(groups * mean + z * sigma), 0.0, double(support - 1));
      total.push_back({t, w});
      norm += w;
    }
    for (auto& [t, w] : total) w /= norm;
  }
  double cost = 0;
  for (const auto& [t, prob] : total)
    cost += prob * Fp8GemmCost(int((t + groups * min_tiles) * s.m), n, k, s, BScale::kBlock128, num_sms, 2);
  // Measured per wave on the six masked anchors, pairs cost ~1.1x what the model gives relative to unpaired wide tiles.
  return cost * (s.cluster_size() > 1 ? 1.1 : 1.0);
}

// force_block_m/n > 0 select a compiled shape explicitly (tests and tuning sweeps); max_block_n > 0
// excludes wider tiles (e.g. those not compiled with the ragged walk). masked_groups > 0: the masked form,
// m being the expected rows per group (Fp8GemmMaskedCost). k_groups > 1: the K-grouped form, k the mean K of its
// k_groups m x n problems.
inline Fp8GemmConfig PickFp8GemmConfigUncached(int m, int n, int k, BScale scale, int num_sms, int force_block_m,
                                               int force_block_n, int force_cluster_m, int force_cluster_n,
                                               int max_block_n, int max_block_m, bool sfa_mn_major, int force_split_k,
                                               int masked_groups, int k_groups) {
  // force_split_k < -1: that split (negated), its partials handed over through global memory (split_global).
  const bool force_split_global = force_split_k < -1;
  if (force_split_global) force_split_k = -force_split_k;
  const BlockShape* shapes = scale == BScale::kBlock128 ? kFp8Block128Shapes : kFp8PerChannelShapes;
  const int num_shapes = scale == BScale::kBlock128 ? int(std::size(kFp8Block128Shapes))
                                                    : int(std::size(kFp8PerChannelShapes));
  const int out_bytes = scale == BScale::kBlock128 ? 2 : 4;
  Fp8GemmConfig best;
  double best_cost = 0, best_sm_cost = 0;
  bool best_on_floor = false;
  // Dense M <= 128: where two tiles both sit on the model's DRAM floor, the one with less SM time (fewer waves) wins,
  // not the rank below. H100, session 53, kernel us, on one wave of 128 x 192 tiles against two waves of the 128 x 128
  // pairs the rank preferred: 128 / 100 x 24576 x 1536 19.71 / 19.35 against 22.26 / 22.10, 128 x 24576 x 512 10.51
  // against 12.08. (At 128 x 32768 x 512 128 x 192 has more SM time and stays out: 14.66 against 13.27 unpaired.)
  const bool floor_by_sm_time = scale == BScale::kBlock128 && max_block_m == 0 && masked_groups == 0 && m <= 128;
  for (int i = 0; i < num_shapes; ++i) {
    const BlockShape s = shapes[i];
    if (force_block_m > 0 && s.m != force_block_m) continue;
    if (force_block_n > 0 && s.n != force_block_n) continue;
    if (force_cluster_m > 0 && s.cluster_m != force_cluster_m) continue;
    if (force_cluster_n > 0 && s.cluster_n != force_cluster_n) continue;
    if (max_block_n > 0 && s.n > max_block_n) continue;
    if (max_block_m > 0 && s.m > max_block_m) continue;
    if (s.cluster_size() > num_sms) continue;
    // A 128-row tile over M <= 64 would run half its tensor-core work on padding.
    if (force_block_m <= 0 && s.m == 128 && m <= 64) continue;
    if (force_block_m <= 0 && s.m == 256 && m <= 128) continue;
    // Pairs along M over a single row tile: the second CTA has no rows and its B multicast feeds nobody
    // (128 x 7168 x 2048: 12.3 us with 128 x 128 pairs; 9.5 us with the unpaired 64 x 128 tiles picked instead, 11.0
    // with 64 x 64; session 16).
    if (force_cluster_m <= 0 && max_block_m == 0 && masked_groups == 0 && s.cluster_m > 1 && m <= s.m) continue;
    // Pairs along N over a single 128-row tile with short K (< 32 K-blocks): the A tile they share is too small to pay
    // for running the two CTAs in lock step (H100, session 53, kernel us: 128 x 32768 x 512 13.27 on
    // unpaired 128 x 128 tiles against 13.78 / 13.86 paired, 128 x 24576 x 1536 22.07 against 22.26 / 22.54).
    if (force_cluster_n <= 0 && max_block_m == 0 && masked_groups == 0 && s.m == 128 && s.cluster_n > 1 &&
        m <= s.m && k < 32 * 128)
      continue;
    // 64-row pairs share A, which pays when most SMs run one tile each and would all re-read A from L2
    // (64 x 2112 x 7168: 13.4 us paired 64 x 32 vs 15.5 us for any unpaired tile). Over more than one
    // wave a wider unpaired tile wins (64 x 7168 x 16384: 39.5 us 64 x 64 vs 54.8 us paired 64 x 32), and
    // with few CTAs each CTA's own feed rate is the limit, which pairing does not raise.
    // (Dense GEMMs only: the M-grouped callers, which pass max_block_m, have not had them measured.)
    if (force_cluster_n <= 0 && s.m == 64 && s.cluster_n > 1) {
      if (max_block_m > 0) continue;
      if (m < 64) continue;  // A is a few rows: nothing to share (1 x 4096 x 7168: 27.1 us paired, 22.3 unpaired)
      const int64_t ctas = int64_t(m + 63) / 64 * ((n + s.n - 1) / s.n);
      if (ctas > num_sms || 2 * ctas < num_sms) continue;
    }
    double sm_cost = 0;
    double cost = masked_groups > 0 ? Fp8GemmMaskedCost(masked_groups, m, n, k, s, num_sms)
                                    : Fp8GemmCost(m, n, k, s, scale, num_sms, out_bytes, k_groups, &sm_cost,
                                                  floor_by_sm_time);
    const bool on_floor = sm_cost < cost;
    // 1D1D 128 x 128 tiles run two accumulator sets, so their per-column promotion overlaps the other set's WGMMAs,
    // which the per-K-block overhead above does not credit. Fitted on one row, the dense channel-scaled 7168 x 2048
    // x 2048 (session 28, H100): (128, 128, 2, 1) 88.7 us against the (256, 128, 1, 2) the model picked, 95.7 us;
    // the model had them at 1.02 : 1. (K-grouped 16 x 7168 x 2048 x 2048 stays on 256 rows, as measured: 1274 us
    // against 1341 for unpaired 128 x 128.)
    if (scale == BScale::kPerChannel && s.m == 128 && s.n == 128) cost *= 0.91;
    // MN-major A scales (4096 x N x K, session 9): 256-row tiles take them by TMA, 10-18 % faster than
    // with K-major scales; 64-row tiles read them from registers one K-block ahead, now one cache line
    // per K-block instead of one per row (128 x 128 pairs did so: ~17 % slower). 128-row tiles now take
    // them by TMA too (session 10: 6-12 % faster than K-major at 4096 x {2112, 24576, 4096, 7168} x K).
    if (sfa_mn_major) {
      const double f = s.m == 256 ? 0.87 : s.m == 128 ? 0.92 : 1.15;
      cost *= f, sm_cost *= f;
    }
    // Within 2 %, prefer a tile whose width divides 128 (one B scale row, a 128-byte-multiple TMA
    // store: measured 10 % faster at 4096x32768x512 than the modelled-equal 128x192), then the larger.
    // Among clusters, A multicast (pairs along N) measured 1-3 % faster than B multicast at M = 4096.
    auto rank = [](int bm, int bn, int cluster_m, int cluster_n) {
      return (128 % bn == 0 ? 1 << 30 : 0) + 2 * bm * bn * cluster_m * cluster_n + (cluster_n > 1 ? 1 : 0);
    };
    const bool both_on_floor = floor_by_sm_time && best.block_m != 0 && on_floor && best_on_floor &&
                               cost < best_cost * 1.02 && best_cost < cost * 1.02;
    const bool better = best.block_m == 0 ||
                        (both_on_floor ? sm_cost < best_sm_cost * 0.98
                                       : cost < best_cost * (masked_groups > 0 ? 1.0 : 0.98) ||
                                             (masked_groups == 0 && cost < best_cost * 1.02 &&
                                              rank(s.m, s.n, s.cluster_m, s.cluster_n) >
                                                  rank(best.block_m, best.block_n, best.cluster_m, best.cluster_n)));
    if (better) {
      best_cost = cost, best_sm_cost = sm_cost, best_on_floor = on_floor;
      best.block_m = s.m;
      best.block_n = s.n;
      best.cluster_m = s.cluster_m;
      best.cluster_n = s.cluster_n;
    }
  }
  if (best.block_m == 0) return best;  // forced shape not compiled: caller reports it
  // Split-K (dense 1D2D unpaired tiles of one 128-row wave, up to 128 wide; force_split_k: 0 = decide, 1 = never (the
  // default: only the dense handler asks for it), > 1 = forced, at most the K-blocks and kFp8MaxSplitK). With few
  // tiles and long K each CTA runs one long chain of 128-K slices while SMs idle. So when the tiles fill at most half
  // the SMs, each tile's K-blocks are shared by a cluster of up to num_sms / CTAs CTAs, at least 8 K-blocks each;
  // each CTA of the cluster sums a share of the tile's columns over all the FP32 partials (sm90_fp8_gemm.cuh).
  const int num_k_blocks = (k + 127) / 128;
  const bool dense_1d2d = scale == BScale::kBlock128 && max_block_m == 0;
  auto split_for = [&](int ctas) {
    return 2 * ctas <= num_sms ? std::max(1, std::min({num_sms / ctas, num_k_blocks / 8, kFp8MaxSplitK})) : 1;
  };
  const bool forced = force_block_m > 0 || force_block_n > 0 || force_cluster_m > 0 || force_cluster_n > 0;
  // Narrower 64-row tiles, unsplit, where they fill most SMs one each (DeepGEMM's own picks at these shapes): the 64 x
  // 16 or 64 x 32 tiles (16 first) whose count is more than three quarters of the SMs and no more than all of them. No
  // split-K hand-over, one K chain per SM of 16 or 32 columns (the 4-set batched K loop). Taken at small M with long K
  // (H100, session 41, kernel us with the earlier picks, 64 x 64 split 7 two per SM, 128 x 64 split 4 lowered to fit,
  // 64 x 64 split 4 two per SM: 64 x 2112 x 7168 on 64 x 16 12.9 -> 12.3, 128 x 2112 x 7168 on 64 x 32 14.3 -> 13.4,
  // 64 x 4096 x 7168 on 64 x 32 17.4 -> 16.7; the nine other small-M bench shapes keep their picks), and at M <= 64
  // with 8-31 K-blocks instead of the cost model's 64 x 32 pairs (H100, session 42, 3 repetitions, diff 2.2e-7 /
  // 2.7e-7 against the reference: 64 x 2112 x 1024 4.47 against 5.01 us, 64 x 2112 x 2048 5.74 against 6.30).
  int narrow_n = 0;
  if (force_split_k == 0 && dense_1d2d && !forced &&
      ((m <= 128 && num_k_blocks >= 32) || (m <= 64 && num_k_blocks >= 8))) {
    for (const int bn : {16, 32}) {
      const int tiles = (m + 63) / 64 * ((n + bn - 1) / bn);
      if (narrow_n == 0 && 4 * tiles > 3 * num_sms && tiles <= num_sms) narrow_n = bn;
    }
  }
  if (narrow_n > 0) {
    best = Fp8GemmConfig{};
    best.block_m = 64, best.block_n = narrow_n;
    // The 64 x 16 tiles at M <= 64 with >= 56 K-blocks split K in 2 and run two one-chain CTAs per SM: each SM then
    // has two K loops of half the K-blocks in flight, where one CTA's single chain waits on its stages (session 48's
    // clocks: ~3 us of an 8.8 us K loop at 64 x 2112 x 7168). H100, session 48, kernel us, unsplit -> split 2, two
    // sweeps: 64 x 2112 x 7168 11.92 / 11.87 -> 11.61 / 11.54, 64 x 2048 x 7168 11.85 -> 11.43, 64 x 1792 x 7168
    // 11.69 -> 10.67. Not at K = 4096 (64 x 2112 x 4096 8.13 -> 9.20), nor the 64 x 32 tiles (128 x 2112 x 7168 12.74
    // -> 14.52, 64 x 4096 x 7168 15.72 -> 16.08).
    // The partials go through global memory, not a cluster: H100, session 50, same machine, 64 x 2112 x 7168 11.95 ->
    // 11.15 us (the cluster launch of two-per-SM CTAs costs more than the round trip through L2).
    if (narrow_n == 16 && m <= 64 && num_k_blocks >= 56)
      best.split_k = 2, best.two_per_sm = true, best.split_global = true;
  } else if (force_split_k == 0 && dense_1d2d && !forced && m <= 128 && num_k_blocks >= 32) {
    // Small M, long K (H200, session 10, 128-K slices per CTA vs time): at 64 x 2112 x 7168 the 64 x 32 pairs
    // (66 CTAs, 56 slices each) took 15.5 us, split in 2 13.8 us, 64 x 64 tiles split in 4 (132 CTAs, 14 slices)
    // 12.9 us; at 128 x 2112 x 7168 the pairs 15.9 us, 128 x 64 split in 4 or 64 x 64 split in 2 14.6-14.7 us.
    // So here the tile is BLOCK_M x 64, unpaired, and its K is split to fill the SMs (unless narrower tiles fill them
    // unsplit, above).
    // When 128 x 64 tiles are too many to split (more than half the SMs), 128 x 128 tiles split in 2: 128 x 7168 x
    // 16384 took 40.5-43.6 us so (56 clusters of 2) against 69.6 us with 128 x 128 pairs, 61.3 us with 64 x 64 tiles
    // and 49.3 us with 64 x 128 ones (session 16). At M <= 64 (64 x 7168 x 16384) 64 x 128 split 2 and unsplit
    // 64 x 64 tiles measured within noise of each other (36.1-39.2 us against 36.6-36.8): kept unsplit. Not wider
    // splits of 128-wide tiles: 128 x 128 split 4 took 14.9 us at 128 x 2112 x 7168, 128 x 64 split 3 13.2 us.
    // (Until session 44, 64 x 64 tiles ran two CTAs per SM here, each one K chain, with deeper splits; now each CTA
    // runs two chains (Fp8GemmDualChain), one per SM: 64 x 7168 x 16384 47.1 us split 2 -> 44.6 unsplit, H100.)
    const int bm = m <= 64 ? 64 : 128;
    const int ctas = (m + bm - 1) / bm * ((n + 63) / 64);
    const int wide_tiles = (m + bm - 1) / bm * ((n + 127) / 128);
    const int tiles_64x64 = (m + 63) / 64 * ((n + 63) / 64);
    // Few N-blocks (the unfused DeepSeek projections, N = 576 or 1536): 64 x 32 tiles, fewer than half the SMs of
    // them, split to reach the SMs (in 4 from 96 K-blocks; two CTAs per SM past them; clusters of 4 that do not all
    // fit are lowered at launch). H100, session 49, kernel us against the earlier picks: 64 / 128 x 576 x 7168
    // 8.89 / 9.65 -> 7.53 / 8.24 (split 4), 64 x 1536 x 7168 10.68 -> 10.06 (split 3; split 2 10.33), 64 / 128 x 576
    // x 4096 7.94 / 8.67 -> 6.35 / 7.02, 64 x 1536 x 4096 9.03 -> 8.45, 64 / 128 x 576 x 16384 10.72 / 13.08 -> 10.17 /
    // 12.54, 64 x 1536 x 16384 15.76 -> 14.98 (split 4; split 3 16.16). Not 128 x 1536 x 7168 (96 tiles: unsplit
    // 12.12, split 2 12.24 against 128 x 64 split 4's 11.79), nor 64 x 32 split 6-7 (64 x 576 x 7168 11.76).
    const int tiles_64x32 = (m + 63) / 64 * ((n + 31) / 32);
    if (2 * tiles_64x32 < num_sms && 4 * tiles_64x32 * 2 >= num_sms) {
      best = Fp8GemmConfig{};
      best.block_m = 64, best.block_n = 32, best.split_k_fits = true;
      best.split_k = num_k_blocks >= 96 ? 4 : std::min(4, (num_sms + tiles_64x32 - 1) / tiles_64x32);
      best.two_per_sm = tiles_64x32 * best.split_k > num_sms;
    } else if (bm == 128 && 4 * tiles_64x64 > 3 * num_sms && tiles_64x64 <= num_sms) {
      // 64 < M <= 128 where unsplit 64 x 64 tiles fill most SMs one each: no split-K hand-over, and they measured
      // faster than 128 x 64 split 2 at 128 x 4096 x 7168 (16.40 / 16.54 / 16.68 us against 17.70 / 17.53 in three
      // session-16 calls).
      best = Fp8GemmConfig{};
      best.block_m = 64, best.block_n = 64;
    } else if (split_for(ctas) > 1) {
      best = Fp8GemmConfig{};
      best.block_m = bm, best.block_n = 64, best.split_k = split_for(ctas), best.split_k_fits = true;
    } else if (bm == 128 && 2 * wide_tiles <= num_sms) {
      best = Fp8GemmConfig{};
      best.block_m = bm, best.block_n = 128, best.split_k = 2, best.split_k_fits = true;
    }
  }
  const int cluster_size = best.cluster_m * best.cluster_n;
  const int cluster_tiles = ((m + best.block_m * best.cluster_m - 1) / (best.block_m * best.cluster_m)) *
                            ((n + best.block_n * best.cluster_n - 1) / (best.block_n * best.cluster_n));
  const bool may_split = dense_1d2d && best.block_m <= 128 && best.block_n <= kFp8SplitKMaxBlockN && cluster_size == 1;
  if (force_split_k > 1) {
    if (!may_split) return Fp8GemmConfig{};  // no such compiled kernel: caller reports it
    best.split_k = std::min({force_split_k, num_k_blocks, force_split_global ? kFp8MaxSplitGlobal : kFp8MaxSplitK});
    best.split_global = force_split_global;
    if (force_split_global &&
        (cluster_tiles > kFp8SplitGlobalMaxTiles || !Fp8GemmMaySplitGlobal(best.block_m, best.block_n)))
      return Fp8GemmConfig{};
    // More CTAs than SMs: 64-row tiles then run two per SM, except the dual-chain ones, whose two consumer
    // warpgroups take a whole SM (Fp8GemmDualChain).
    best.two_per_sm = best.block_m == 64 && !Fp8GemmDualChain(best.block_m, best.block_n, scale) &&
                      int64_t(cluster_tiles) * best.split_k > num_sms;
  } else if (force_split_k == 0 && may_split && best.split_k == 1 && num_k_blocks >= 16) {
    best.split_k = split_for(cluster_tiles);
    best.split_k_fits = true;
  }
  // Persistent grid: one CTA per SM at most, a whole number of clusters. Split-K: one CTA per (tile, split).
  best.grid = best.split_k > 1 ? cluster_tiles * best.split_k
                               : std::max(1, std::min(cluster_tiles, num_sms / cluster_size)) * cluster_size;
  // (1D1D: room for a K-grouped walk table of k_groups groups; a dense call's single group costs 128 bytes.)
  best.num_stages = Fp8GemmStages({best.block_m, best.block_n}, scale, sfa_mn_major, best.two_per_sm,
                                  scale == BScale::kPerChannel ? KGroupedWalkTableBytes(k_groups) : 0);
  best.raster_band = 8;

  static const bool print = std::getenv("JAX_DEEPGEMM_PRINT_CONFIGS") != nullptr;
  if (print) {
    static std::mutex mu;
    static std::set<std::tuple<int, int, int, int>> seen;
    std::lock_guard<std::mutex> lock(mu);
    if (seen.insert({m, n, k, int(scale)}).second)
      std::fprintf(stderr, "jax_deepgemm fp8_gemm m=%d n=%d k=%d scale=%d -> block %dx%d cluster %dx%d "
                   "stages=%d grid=%d split_k=%d\n", m, n, k, int(scale), best.block_m, best.block_n, best.cluster_m,
                   best.cluster_n, best.num_stages, best.grid, best.split_k);
  }
  return best;
}

// The pick for a problem. Masked picks, whose cost sums over the distribution of tile counts (up to a few
// thousand cost evaluations), are computed once per distinct argument list: the handler asks at every call.
inline Fp8GemmConfig PickFp8GemmConfig(int m, int n, int k, BScale scale, int num_sms, int force_block_m,
                                       int force_block_n, int force_cluster_m, int force_cluster_n,
                                       int max_block_n = 0, int max_block_m = 0, bool sfa_mn_major = false,
                                       int force_split_k = 1, int masked_groups = 0, int k_groups = 1) {
  auto pick = [&] {
    return PickFp8GemmConfigUncached(m, n, k, scale, num_sms, force_block_m, force_block_n, force_cluster_m,
                                     force_cluster_n, max_block_n, max_block_m, sfa_mn_major, force_split_k,
                                     masked_groups, k_groups);
  };
  if (masked_groups == 0) return pick();
  using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, int, bool, int, int>;
  static std::mutex mu;
  static std::map<Key, Fp8GemmConfig> cache;
  const Key key{m, n, k, int(scale), num_sms, force_block_m, force_block_n, force_cluster_m, force_cluster_n,
                max_block_n, max_block_m, sfa_mn_major, force_split_k, masked_groups};
  {
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
  }
  const Fp8GemmConfig cfg = pick();
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() >= 4096) cache.clear();  // e.g. a sweep over expected_m: memory stays bounded
  return cache.emplace(key, cfg).first->second;
}

}  // namespace jdg
