// Host launcher for Sm90Bf16GemmKernel: TMA descriptors, shared-memory opt-in, launch.
// Included only by the BF16 instance translation units (generated from ffi/instances/bf16_gemm_instance.cu.in).
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "bf16_gemm_launch.h"
#include "common/device_info.h"
#include "common/persistent_launch.h"
#include "common/tma.h"
#include "kernels/sm90_bf16_gemm.cuh"

namespace jdg {

template <int kBlockM, int kBlockN, int kClusterM, int kMajor>
cudaError_t LaunchSm90Bf16Gemm(const Bf16GemmOperands& op, const Bf16GemmConfig& cfg, cudaStream_t stream) {
  using Traits = Bf16GemmTraits<kBlockM, kBlockN, kClusterM, kMajor>;
  auto* kernel = &Sm90Bf16GemmKernel<kBlockM, kBlockN, kClusterM, kMajor>;
  struct SmemOptIn {};  // one tag per instance: the attribute is per kernel and per device
  const cudaError_t opt_in = OncePerDevice<SmemOptIn>(op.device, [&] {
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBf16SmemCapacity);
  });
  if (opt_in != cudaSuccess) return opt_in;

  const bool use_tma_store = Bf16GemmUsesTmaStore(op.out_fp32, op.n, kBlockN);
  const bool use_staged_store = Bf16GemmUsesStagedStore(op.out_fp32, op.n);
  // (the stage budget assumed the other D layout)
  if (use_tma_store != cfg.tma_store || use_staged_store != cfg.staged_store) return cudaErrorInvalidValue;
  if (op.out_fp32 == false && op.c != nullptr) return cudaErrorInvalidValue;  // + C only with FP32 output
  // A 2-CTA cluster shares one B tile between two M-blocks, which may belong to different experts.
  const bool m_grouped = op.grouping.m_grouped();
  const bool k_grouped = op.grouping.k_grouped();
  if ((m_grouped || k_grouped) && kClusterM > 1) return cudaErrorInvalidConfiguration;
  if (op.major != kMajor || (m_grouped && (Traits::kAMnMajor || k_grouped))) return cudaErrorInvalidConfiguration;
  // An M-grouped MN-major B ([G * K, N]): a 64-row box must not reach into the next expert's rows.
  if (m_grouped && Traits::kBMnMajor && op.k % kBf16BlockK != 0) return cudaErrorInvalidValue;
  if (k_grouped && (!Traits::kKGroupedWalk || !op.out_fp32)) return cudaErrorInvalidConfiguration;
  // An MN-major operand's row pitch is M (A) or N (B) elements: TMA needs it 16-byte aligned.
  if ((Traits::kAMnMajor && op.m % 8 != 0) || (Traits::kBMnMajor && op.n % 8 != 0)) return cudaErrorInvalidValue;
  if (!op.grouping.masked_layout_fits(op.m, kBlockM)) return cudaErrorInvalidValue;
  // Split-K: dense NT only, one CTA per (tile, split) (the kernel parks its verdict in the idle stage ring), the
  // arrival counters and partials sized for the tiles.
  if (cfg.split_k > 1) {
    const int64_t tiles = Bf16GemmTiles(cfg, op.m, op.n);
    if (!Traits::kMaySplitK || m_grouped || k_grouped || cfg.split_k > kBf16MaxSplitK || tiles > kBf16SplitMaxTiles ||
        cfg.grid != tiles * cfg.split_k || op.split_partials == nullptr ||
        int64_t(op.split_partials_bytes) < Bf16GemmSplitPartialBytes(cfg, op.m, op.n))
      return cudaErrorInvalidValue;
  }
  const int smem_bytes = Traits::SmemBytes(cfg.num_stages, use_tma_store, use_staged_store);
  if (cfg.num_stages < 1 || smem_bytes > kBf16SmemCapacity) return cudaErrorInvalidValue;

  CUtensorMap tma_a, tma_a_tail, tma_b, tma_d;
  // K-major operands: [rows, K] in boxes of [rows per tile, 64 K]; MN-major ones: [K, M or N] in
  // boxes of [64 K, 64 M or N] (one 128-byte swizzled row per K). A K-major A's last M-block (all of it when M <
  // BLOCK_M: decode) loads in a box of the rows there are, rounded up to the 8-row swizzle atom (tma_a_tail), as in
  // the FP8 kernel: TMA's zero fill of the other rows was most of the time at small M (H100, session 52, kernel us:
  // 1 x 2112 x 7168 29.3 -> 18.4, 100 x 2112 x 7168 24.9 -> 19.4, 1 x 4096 x 7168 32.9 -> 22.2).
  const int a_tail_box_rows = !Traits::kAMnMajor ? TailBoxRows(op.m, kBlockM) : kBlockM;
  bool ok = Traits::kAMnMajor
                ? MakeTensorMap2D(&tma_a, op.a, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, op.k, op.m, op.m, kBf16BlockK, 64,
                                  CU_TENSOR_MAP_SWIZZLE_128B)
                : MakeTensorMap2D(&tma_a, op.a, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, op.m, op.k, op.k, kBlockM,
                                  kBf16BlockK, CU_TENSOR_MAP_SWIZZLE_128B) &&
                      MakeTensorMap2D(&tma_a_tail, op.a, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, op.m, op.k, op.k,
                                      a_tail_box_rows, kBf16BlockK, CU_TENSOR_MAP_SWIZZLE_128B);
  if (Traits::kAMnMajor) tma_a_tail = tma_a;  // unused
  ok = ok && (Traits::kBMnMajor
                  ? MakeTensorMap2D(&tma_b, op.b, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
                                    uint64_t(op.k) * (m_grouped ? op.grouping.num_groups : 1), op.n, op.n, kBf16BlockK, 64,
                                    CU_TENSOR_MAP_SWIZZLE_128B)
                  : MakeTensorMap2D(&tma_b, op.b, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
                                    uint64_t(op.n) * (k_grouped ? 1 : op.grouping.num_groups),
                                    op.k, op.k, Traits::kBRowsPerCta, kBf16BlockK, CU_TENSOR_MAP_SWIZZLE_128B));
  if (use_tma_store) {
    ok = ok && MakeTensorMap2D(&tma_d, op.d, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, op.m, op.n, op.n, 64, 64,
                               CU_TENSOR_MAP_SWIZZLE_128B);
  } else {
    tma_d = tma_a;  // unused
  }
  if (!ok) return cudaErrorInvalidValue;

  Bf16GemmParams params;
  params.m = op.m;
  params.n = op.n;
  params.k = op.k;
  params.a_tail_box_rows = a_tail_box_rows;
  params.num_k_blocks = (op.k + kBf16BlockK - 1) / kBf16BlockK;
  params.c = op.c;
  params.d = op.d;
  params.out_fp32 = op.out_fp32 ? 1 : 0;
  params.use_tma_store = use_tma_store ? 1 : 0;
  params.use_staged_store = use_staged_store ? 1 : 0;
  params.raster_band = cfg.raster_band;
  params.grouping = op.grouping;
  params.split_k = cfg.split_k;
  params.split_partials = static_cast<float*>(op.split_partials);

  struct MaxClusters {};  // one occupancy query per instance and device
  const PersistentLaunch launch(MaxClusters{}, op.device, kernel, cfg.grid, Traits::kNumThreads, smem_bytes, kClusterM,
                                kBf16SmemCapacity, stream, "bf16_gemm");
  return cudaLaunchKernelEx(launch.config(), kernel, tma_a, tma_a_tail, tma_b, tma_d, params, cfg.num_stages);
}

}  // namespace jdg
