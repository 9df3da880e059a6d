// Host launcher for Sm90Fp8GemmKernel: TMA descriptors, shared-memory opt-in, launch.
// Included only by the instance translation units (ffi/instances/*.cu).
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "common/device_info.h"
#include "common/persistent_launch.h"
#include "common/tma.h"
#include "kernels/sm90_fp8_gemm.cuh"
#include "fp8_gemm_launch.h"

namespace jdg {

template <int kBlockM, int kBlockN, BScale kBScale, int kClusterM, int kClusterN>
cudaError_t LaunchSm90Fp8Gemm(const Fp8GemmOperands& op, const Fp8GemmConfig& cfg, cudaStream_t stream) {
  using Traits = Fp8GemmTraits<kBlockM, kBlockN, kBScale, kClusterM, kClusterN>;
  auto* kernel = &Sm90Fp8GemmKernel<kBlockM, kBlockN, kBScale, kClusterM, kClusterN>;
  struct SmemOptIn {};  // one tag per instance: the attribute is per kernel and per device
  const cudaError_t opt_in = OncePerDevice<SmemOptIn>(op.device, [&] {
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSm90SmemCapacity);
  });
  if (opt_in != cudaSuccess) return opt_in;

  // The last M-block's rows of A (all of them when M < BLOCK_M: decode) load in a box of the rows there are, rounded
  // up to the 8-row swizzle atom (tma_a_tail), instead of a whole BLOCK_M rows of which TMA zero-fills the rest: the
  // fill cost more the more A loads an SM issues (kernel us, M < BLOCK_M, H200, session 51: 1 x 2112 x 7168
  // 20.0 -> 9.9, 32 x 2112 x 7168 16.3 -> 10.0, 1 x 4096 x 7168 20.2 -> 12.6; the last block, H100, session 52:
  // 100 x 2112 x 7168 15.6 -> 12.6, 200 x 2112 x 7168 19.9 -> 15.4, 96 x 4096 x 7168 20.1 -> 16.0). The
  // accumulator rows past the box hold whatever the stage last held; each is its own A row's product and never
  // stored. (Not for A pairs along N, whose CTAs each load half the rows.)
  const int a_tail_box_rows = kClusterN == 1 ? TailBoxRows(op.m, Traits::kARowsPerCta) : Traits::kARowsPerCta;
  CUtensorMap tma_a, tma_a_tail, tma_b, tma_sfb, tma_sfa, tma_d;
  bool ok = MakeTensorMap2D(&tma_a, op.a, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, op.m, op.k, op.k, Traits::kARowsPerCta,
                            kFp8BlockK, CU_TENSOR_MAP_SWIZZLE_128B) &&
            MakeTensorMap2D(&tma_a_tail, op.a, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, op.m, op.k, op.k, a_tail_box_rows,
                            kFp8BlockK, CU_TENSOR_MAP_SWIZZLE_128B) &&
            MakeTensorMap2D(&tma_b, op.b, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, uint64_t(op.n) * (op.grouping.k_grouped() ? 1 : op.grouping.num_groups), op.k, op.k, Traits::kBRowsPerCta,
                            kFp8BlockK, CU_TENSOR_MAP_SWIZZLE_128B);
  if constexpr (kBScale == BScale::kPerChannel) {
    ok = ok && MakeTensorMap2D(&tma_sfb, op.sfb, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, op.num_k_blocks,
                               op.sfb_row_stride, op.sfb_row_stride, 1, kBlockN, CU_TENSOR_MAP_SWIZZLE_NONE);
  } else {
    tma_sfb = tma_a;  // unused
  }
  // MN-major A scales of 128/256-row tiles: one [1, BLOCK_M] box per stage (rows past M read as zero).
  const bool sfa_smem = (Traits::kScalesInSmem || Traits::kSfaMaySmem) && op.sfa_mn_stride != 0;
  if (sfa_smem) {
    ok = ok && MakeTensorMap2D(&tma_sfa, op.sfa, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, op.num_k_blocks, op.m,
                               op.sfa_mn_stride, 1, kBlockM, CU_TENSOR_MAP_SWIZZLE_NONE);
  } else {
    tma_sfa = tma_a;  // unused
  }
  // TMA stores need a 16-byte aligned row pitch of D.
  const bool use_tma_store = Traits::kTmaStoreD && op.n % 8 == 0;
  if (use_tma_store) {
    ok = ok && MakeTensorMap2D(&tma_d, op.d, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, op.m, op.n, op.n, 64, 64,
                               CU_TENSOR_MAP_SWIZZLE_128B);
  } else {
    tma_d = tma_a;  // unused
  }
  if (!ok) return cudaErrorInvalidValue;

  // A cluster along M shares one B tile between two M-blocks, which may belong to different experts
  // (a cluster along N shares A between two N-blocks of one expert: fine). M-grouped GEMMs are 1D2D
  // (BF16 out), ragged ones of one 128-row wave at most; K-grouped ones 1D1D (FP32 out, per-row scales
  // on both sides).
  const bool m_grouped = op.grouping.m_grouped();
  if (m_grouped && (kClusterM > 1 || !Traits::kMGrouped)) return cudaErrorInvalidConfiguration;
  if (op.grouping.group_ends != nullptr && !Traits::kRaggedWalk) return cudaErrorInvalidConfiguration;
  if (op.grouping.k_grouped() && (kBScale != BScale::kPerChannel || m_grouped)) return cudaErrorInvalidConfiguration;
  if (!op.grouping.masked_layout_fits(op.m, kBlockM)) return cudaErrorInvalidValue;
  Fp8GemmParams params;
  params.m = op.m;
  params.n = op.n;
  params.k = op.k;
  params.a_tail_box_rows = a_tail_box_rows;
  params.num_k_blocks = op.num_k_blocks;
  params.sfa = op.sfa;
  params.sfa_mn_stride = op.sfa_mn_stride;
  params.sfb = op.sfb;
  params.c = op.c;
  params.d = op.d;
  params.grouping = op.grouping;
  params.raster_band = cfg.raster_band;
  params.use_tma_store = use_tma_store ? 1 : 0;
  int split_k = cfg.split_k, grid = cfg.grid;
  // Split-K through global memory when the config asks for it and the caller's scratch holds the partials (an exported
  // program from before it has a one-byte scratch: its split goes through clusters, lowered to fit).
  const bool split_global = Traits::kMaySplitGlobal && split_k > 1 && cfg.split_global &&
                            op.split_partials != nullptr &&
                            int64_t(op.split_partials_bytes) >= Fp8GemmSplitPartialBytes(cfg, op.m, op.n) &&
                            Fp8GemmTiles(cfg, op.m, op.n) <= kFp8SplitGlobalMaxTiles;
  if (split_k > 1 && !split_global) {
    // One cluster of split_k CTAs per output tile; each CTA parks its FP32 partial in its stage ring for the others
    // to read, so the ring must hold them.
    if (!Traits::kMaySplitK || m_grouped || split_k > kFp8MaxSplitK) return cudaErrorInvalidValue;
    // (Every math thread parks kBlockN / 2 floats: a dual-chain tile's second chain parks zeros.)
    if (Traits::kNumMathThreads * kBlockN * 2 > cfg.num_stages * (Traits::kSmemA + Traits::kSmemB))
      return cudaErrorInvalidConfiguration;
  }
  // Dual-chain tiles split the ring in two halves, each holding at least one K-block batch (sm90_fp8_gemm.cuh).
  if (Traits::kDualChain && (cfg.num_stages % 2 != 0 || cfg.num_stages / 2 < Traits::kKBatch))
    return cudaErrorInvalidConfiguration;
  struct MaxClusters {};  // one occupancy query per instance and device
  struct MaxClustersTwoPerSm {};  // the same with half the shared memory per CTA (cfg.two_per_sm)
  // The 128-row tiles' optional A-scale area (the heuristic counted it in cfg.num_stages).
  // K-grouped: the walk's table of groups (Fp8GemmStages reserved it).
  const int smem_bytes = Traits::SmemBytes(cfg.num_stages) +
                         (Traits::kSfaMaySmem && sfa_smem ? cfg.num_stages * Fp8GemmOptionalSfaStageBytes(kBlockM) : 0) +
                         (op.grouping.k_grouped() ? KGroupedWalkTableBytes(op.grouping.num_groups) : 0);
  if (smem_bytes > kSm90SmemCapacity) return cudaErrorInvalidConfiguration;
  if (split_k > 1 && !split_global) {
    // Clusters that cannot all be resident at once would run in a second wave: a chosen split is lowered until
    // they fit (a cluster must sit in one GPC, so fewer clusters of 4 than SMs / 4 fit, for example).
    const int64_t tiles = Fp8GemmTiles(cfg, op.m, op.n);
    while (cfg.split_k_fits && split_k > 1) {
      const int fit = cfg.two_per_sm ? ResidentClusters(MaxClustersTwoPerSm{}, op.device, kernel, Traits::kNumThreads,
                                                        kSm90SmemTwoPerSm, split_k)
                                     : ResidentClusters(MaxClusters{}, op.device, kernel, Traits::kNumThreads,
                                                        kSm90SmemCapacity, split_k);
      if (fit <= 0 || tiles <= fit) break;  // (0: the query failed)
      --split_k;
    }
    grid = split_k > 1 ? int(tiles) * split_k : int(std::min<int64_t>(tiles, GetDeviceInfo(op.device).num_sms));
  }
  params.split_k = split_k;
  if (split_global) {
    if (m_grouped || split_k > kFp8MaxSplitGlobal) return cudaErrorInvalidValue;
    params.split_partials = static_cast<float*>(op.split_partials);
    grid = int(Fp8GemmTiles(cfg, op.m, op.n)) * split_k;
  }
  const PersistentLaunch launch(MaxClusters{}, op.device, kernel, grid, Traits::kNumThreads, smem_bytes,
                                split_k > 1 && !split_global ? split_k : Traits::kClusterSize, kSm90SmemCapacity,
                                stream, "fp8_gemm", /*persistent=*/split_k == 1);
  return cudaLaunchKernelEx(launch.config(), kernel, tma_a, tma_a_tail, tma_b, tma_sfb, tma_sfa, tma_d, params,
                            cfg.num_stages);
}

}  // namespace jdg
