// XLA FFI handler of the K-grouped FP8 GEMM (MoE weight gradients): the dense 1D1D kernel walking
// every group's M x N tile grid over that group's K range. The K sizes are device data, so nothing
// here reads them: no host synchronisation, CUDA-graph safe.
#include "k_grouped_fp8_gemm.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "common/device_info.h"
#include "common/ffi_utils.h"
#include "fp8_gemm_launch.h"
#include "heuristics/sm90_fp8_gemm.h"

namespace jdg {
namespace {

// D[g] = (C[g] +) A[:, range_g] . B[:, range_g]^T, with A [M, K], B [N, K] K-major and 1x128 scales
// along K on both (sfa [M, K/128] or, sfa_mn_major, [K/128, align(M, 4)]; sfb transposed [K/128, align(N, 4)]);
// D, C [G, M, N] FP32.
ffi::Error KGroupedFp8GemmNtContiguous(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa,
                                       ffi::AnyBuffer b, ffi::AnyBuffer sfb_t, ffi::AnyBuffer group_k,
                                       ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, int32_t block_m,
                                       int32_t block_n, int32_t cluster_m, int32_t num_sms, int32_t accumulate,
                                       int32_t sfa_mn_major) {
  constexpr const char* kOp = "k_grouped_fp8_gemm_nt_contiguous";
  JDG_RETURN_IF_ERROR(CheckAliasedOutput(kOp, aliased_d, *d, accumulate != 0));
  // decode
  if (a.dimensions().size() != 2 || b.dimensions().size() != 2 || group_k.dimensions().size() != 1)
    return ffi::Error::InvalidArgument("k_grouped_fp8_gemm_nt_contiguous: a, b must be rank 2, group_k rank 1");
  const int64_t m = a.dimensions()[0], k = a.dimensions()[1], n = b.dimensions()[0];
  const int64_t groups = group_k.dimensions()[0];
  const int64_t k_blocks = CeilDiv(k, 128);
  // check
  JDG_RETURN_IF_ERROR(ExpectBuffer(a, "a", ffi::DataType::F8E4M3FN, {m, k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(b, "b", ffi::DataType::F8E4M3FN, {n, k}));
  if (sfa_mn_major != 0)
    JDG_RETURN_IF_ERROR(ExpectBuffer(sfa, "a_scale (MN-major)", ffi::DataType::F32, {k_blocks, Fp8GemmSfaMnStride(m)}));
  else
    JDG_RETURN_IF_ERROR(ExpectBuffer(sfa, "a_scale", ffi::DataType::F32, {m, k_blocks}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(sfb_t, "b_scale (transposed)", ffi::DataType::F32, {k_blocks, (n + 3) / 4 * 4}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(group_k, "k_group_sizes", ffi::DataType::S32, {groups}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(*d, "d", ffi::DataType::F32, {groups, m, n}));
  if (k % 128 != 0)
    return ffi::Error::InvalidArgument("k_grouped_fp8_gemm_nt_contiguous: K must be a multiple of 128");
  if (groups * m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
    return ffi::Error::InvalidArgument("k_grouped_fp8_gemm_nt_contiguous: G*M, N and K must fit in int32");
  if (groups == 0 || m == 0 || n == 0 || k == 0) return ffi::Error::Success();  // Python handles these
  int sms = 0;
  JDG_RETURN_IF_ERROR(UsableSm90Sms(kOp, device, num_sms, sms));
  // decide: the tile for the groups' GEMMs at their mean K, waves counted over every group's tiles (MN-major A
  // scales: 128-row tiles stage them by TMA); the grid covers every group's tiles.
  const int mean_k = int(std::max<int64_t>(128, k / groups));
  Fp8GemmConfig cfg = PickFp8GemmConfig(int(m), int(n), mean_k, BScale::kPerChannel, sms, block_m, block_n,
                                        cluster_m, 0, 0, 0, sfa_mn_major != 0, /*force_split_k=*/1,
                                        /*masked_groups=*/0, /*k_groups=*/int(groups));
  if (cfg.block_m == 0)
    return ffi::Error::InvalidArgument(
        "k_grouped_fp8_gemm_nt_contiguous: requested block_m/block_n/cluster_m is not compiled");
  // Persistent grid over every group's cluster tiles (a cluster's CTAs share one group and N-block).
  const int cluster = cfg.cluster_m * cfg.cluster_n;
  const int64_t cluster_tiles =
      CeilDiv(m, int64_t(cfg.block_m) * cfg.cluster_m) * CeilDiv(n, int64_t(cfg.block_n) * cfg.cluster_n) * groups;
  cfg.grid = PersistentGrid(cluster_tiles, sms, cluster);
  // launch
  Fp8GemmOperands op = MakeFp8GemmOperands(device, m, n, k, a, sfa, b, sfb_t, *d);
  op.sfb_row_stride = int((n + 3) / 4 * 4);
  op.sfa_mn_stride = sfa_mn_major != 0 ? int(Fp8GemmSfaMnStride(m)) : 0;
  op.c = accumulate != 0 ? static_cast<const float*>(d->untyped_data()) : nullptr;
  op.grouping.num_groups = int(groups);
  op.grouping.group_k = static_cast<const int*>(group_k.untyped_data());
  return CudaStatus(DispatchFp8Gemm(BScale::kPerChannel, op, cfg, stream), "k_grouped_fp8_gemm_nt_contiguous launch");
}

// _v1 (exported programs from before MN-major A scales): a_scale [M, K/128] only.
ffi::Error KGroupedFp8GemmNtContiguousV1(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa,
                                         ffi::AnyBuffer b, ffi::AnyBuffer sfb_t, ffi::AnyBuffer group_k,
                                         ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, int32_t block_m,
                                         int32_t block_n, int32_t cluster_m, int32_t num_sms, int32_t accumulate) {
  return KGroupedFp8GemmNtContiguous(stream, device, a, sfa, b, sfb_t, group_k, aliased_d, d, block_m, block_n,
                                     cluster_m, num_sms, accumulate, 0);
}

}  // namespace
}  // namespace jdg

namespace {
auto KGroupedFp8GemmBinding() {
  return xla::ffi::Ffi::Bind()
      .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
      .Ctx<xla::ffi::DeviceOrdinal>()
      .Arg<xla::ffi::AnyBuffer>()   // a             e4m3 [M, K]
      .Arg<xla::ffi::AnyBuffer>()   // a_scale       f32  [M, K/128] (_v2 with sfa_mn_major = 1: [K/128, align(M, 4)])
      .Arg<xla::ffi::AnyBuffer>()   // b             e4m3 [N, K]
      .Arg<xla::ffi::AnyBuffer>()   // b_scale^T     f32  [K/128, align(N, 4)]
      .Arg<xla::ffi::AnyBuffer>()   // k_group_sizes s32  [G] (multiples of 128)
      .RemainingArgs()              // optional: d itself (aliased; C if accumulate)
      .Ret<xla::ffi::AnyBuffer>()   // d             f32  [G, M, N]
      .Attr<int32_t>("block_m")     // 0: heuristic
      .Attr<int32_t>("block_n")     // 0: heuristic
      .Attr<int32_t>("cluster_m")   // 0: heuristic; 2: CTA pairs share B tiles
      .Attr<int32_t>("num_sms")     // 0: all SMs of the device
      .Attr<int32_t>("accumulate");  // 1: d = c + ..., c aliased to d
}
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmKGroupedFp8GemmNtContiguous, jdg::KGroupedFp8GemmNtContiguous,
                              KGroupedFp8GemmBinding().Attr<int32_t>("sfa_mn_major"),
                              {xla::ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmKGroupedFp8GemmNtContiguousV1, jdg::KGroupedFp8GemmNtContiguousV1,
                              KGroupedFp8GemmBinding(), {xla::ffi::Traits::kCmdBufferCompatible});
