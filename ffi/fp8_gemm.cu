// XLA FFI handlers of the dense FP8 GEMM family. Each reads: decode -> check -> decide -> launch.
// Execute only launches: no allocation, no host synchronisation, so both are CUDA-graph safe.
#include "fp8_gemm.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "common/device_info.h"
#include "common/ffi_utils.h"
#include "fp8_gemm_launch.h"
#include "heuristics/sm90_fp8_gemm.h"
#include "instances/fp8_gemm_instances.h"
#include "kernels/sm90_fp8_gemv.cuh"

namespace jdg {

namespace {

// The dense 1D2D handler's decode rows: M <= kFp8GemvMaxM with K-major A scales (what fp8_gemm_nt passes below
// M = 1024), K >= kFp8GemvMinK, M x N <= kFp8GemvMaxMN and no tile, cluster or split forced (split_k 0 = the
// heuristic's, 1 = none) run the CUDA-core GEMV.
bool Fp8DenseTakesGemv(int m, int n, int k, bool sfa_mn_major, int block_m, int block_n, int cluster_m,
                       int cluster_n,
                       int split_k) {
  return !sfa_mn_major && m <= kFp8GemvMaxM && k >= kFp8GemvMinK && int64_t(m) * n <= kFp8GemvMaxMN &&
         block_m <= 0 && block_n <= 0 && cluster_m <= 0 && cluster_n <= 0 && (split_k == 0 || split_k == 1);
}

}  // namespace

cudaError_t DispatchFp8Gemm(BScale scale, const Fp8GemmOperands& op, const Fp8GemmConfig& cfg,
                            cudaStream_t stream) {
#define JDG_CASE(BM, BN, CLUSTER_M, CLUSTER_N, SCALE)                                                        \
  if (cfg.block_m == BM && cfg.block_n == BN && cfg.cluster_m == CLUSTER_M && cfg.cluster_n == CLUSTER_N) \
    return LaunchSm90Fp8Gemm<BM, BN, SCALE, CLUSTER_M, CLUSTER_N>(op, cfg, stream);
#define JDG_CASE_1D2D(BM, BN, CLUSTER_M, CLUSTER_N) JDG_CASE(BM, BN, CLUSTER_M, CLUSTER_N, BScale::kBlock128)
#define JDG_CASE_1D1D(BM, BN, CLUSTER_M, CLUSTER_N) JDG_CASE(BM, BN, CLUSTER_M, CLUSTER_N, BScale::kPerChannel)
  if (scale == BScale::kBlock128) {
    JDG_FP8_1D2D_ALL(JDG_CASE_1D2D)
  } else {
    JDG_FP8_1D1D_ALL(JDG_CASE_1D1D)
  }
#undef JDG_CASE_1D1D
#undef JDG_CASE_1D2D
#undef JDG_CASE
  return cudaErrorInvalidConfiguration;
}

bool Fp8GemmPrefersMnMajorSfa(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m,
                              int cluster_n) {
  return PickFp8GemmConfig(m, n, k, BScale::kBlock128, num_sms, block_m, block_n, cluster_m, cluster_n, 0, 0, true)
             .block_m >= 128;
}

int Fp8GemmSplitK(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m, int cluster_n, int split_k,
                  bool sfa_mn_major) {
  if (Fp8DenseTakesGemv(m, n, k, sfa_mn_major, block_m, block_n, cluster_m, cluster_n, split_k)) return 1;
  const Fp8GemmConfig cfg = PickFp8GemmConfig(m, n, k, BScale::kBlock128, num_sms, block_m, block_n, cluster_m,
                                              cluster_n, 0, 0, sfa_mn_major, split_k);
  return cfg.block_m == 0 ? 1 : cfg.split_k;
}

int64_t Fp8GemmSplitWorkspaceBytes(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m,
                                   int cluster_n, int split_k, bool sfa_mn_major) {
  if (Fp8DenseTakesGemv(m, n, k, sfa_mn_major, block_m, block_n, cluster_m, cluster_n, split_k)) return 0;
  const Fp8GemmConfig cfg = PickFp8GemmConfig(m, n, k, BScale::kBlock128, num_sms, block_m, block_n, cluster_m,
                                              cluster_n, 0, 0, sfa_mn_major, split_k);
  return cfg.block_m == 0 ? 0 : Fp8GemmSplitPartialBytes(cfg, m, n);
}

std::array<int, 5> Fp8GemmBlockTile(int m, int n, int k, int num_sms, bool sfa_mn_major) {
  if (Fp8DenseTakesGemv(m, n, k, sfa_mn_major, 0, 0, 0, 0, 0)) return {kFp8GemvMaxM, kFp8GemvRows, 1, 1, 1};
  const Fp8GemmConfig cfg = PickFp8GemmConfig(m, n, k, BScale::kBlock128, num_sms, 0, 0, 0, 0, 0, 0, sfa_mn_major,
                                              /*force_split_k=*/0);
  return {cfg.block_m, cfg.block_n, cfg.cluster_m, cfg.cluster_n, cfg.split_global ? -cfg.split_k : cfg.split_k};
}

std::array<int, 4> Fp8GemmPerChannelTile(int m, int n, int k, int num_sms, int k_groups, bool sfa_mn_major) {
  const Fp8GemmConfig cfg = PickFp8GemmConfig(m, n, k, BScale::kPerChannel, num_sms, 0, 0, 0, 0, 0, 0, sfa_mn_major,
                                              /*force_split_k=*/1, /*masked_groups=*/0, k_groups);
  return {cfg.block_m, cfg.block_n, cfg.cluster_m, cfg.cluster_n};
}

namespace {

ffi::Error Fp8GemmNt(cudaStream_t stream, int32_t device, BScale scale, const ffi::AnyBuffer& a, const ffi::AnyBuffer& sfa,
                     const ffi::AnyBuffer& b, const ffi::AnyBuffer& sfb, const ffi::AnyBuffer* c, ffi::AnyBuffer d,
                     int32_t block_m, int32_t block_n, int32_t cluster_m, int32_t cluster_n, int32_t num_sms,
                     bool sfa_mn_major = false, int32_t split_k = 0, ffi::AnyBuffer* split_partials = nullptr) {
  // decode
  if (a.dimensions().size() != 2 || b.dimensions().size() != 2)
    return ffi::Error::InvalidArgument("fp8_gemm: a and b must be rank 2 (batch dims are folded in Python)");
  const int64_t m = a.dimensions()[0], k = a.dimensions()[1], n = b.dimensions()[0];
  const int64_t k_blocks = CeilDiv(k, 128);
  // check
  JDG_RETURN_IF_ERROR(ExpectBuffer(a, "a", ffi::DataType::F8E4M3FN, {m, k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(b, "b", ffi::DataType::F8E4M3FN, {n, k}));
  const int64_t sfa_mn_stride = sfa_mn_major ? Fp8GemmSfaMnStride(m) : 0;
  if (sfa_mn_major)
    JDG_RETURN_IF_ERROR(ExpectBuffer(sfa, "a_scale (MN-major)", ffi::DataType::F32, {k_blocks, sfa_mn_stride}));
  else
    JDG_RETURN_IF_ERROR(ExpectBuffer(sfa, "a_scale", ffi::DataType::F32, {m, k_blocks}));
  const int64_t sfb_row_stride = (n + 3) / 4 * 4;
  if (scale == BScale::kBlock128) {
    JDG_RETURN_IF_ERROR(ExpectBuffer(sfb, "b_scale", ffi::DataType::F32, {CeilDiv(n, 128), k_blocks}));
    JDG_RETURN_IF_ERROR(ExpectBuffer(d, "d", ffi::DataType::BF16, {m, n}));
  } else {
    JDG_RETURN_IF_ERROR(ExpectBuffer(sfb, "b_scale (transposed)", ffi::DataType::F32, {k_blocks, sfb_row_stride}));
    JDG_RETURN_IF_ERROR(ExpectBuffer(d, "d", ffi::DataType::F32, {m, n}));
  }
  if (k == 0 || k % 16 != 0)
    return ffi::Error::InvalidArgument("fp8_gemm: K must be a positive multiple of 16 (TMA row pitch)");
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
    return ffi::Error::InvalidArgument("fp8_gemm: dimensions must fit in int32");
  if (m == 0 || n == 0) return ffi::Error::Success();
  int sms = 0;
  JDG_RETURN_IF_ERROR(UsableSm90Sms("fp8_gemm", device, num_sms, sms));
  // decide
  if (scale == BScale::kBlock128 &&
      Fp8DenseTakesGemv(int(m), int(n), int(k), sfa_mn_major, block_m, block_n, cluster_m, cluster_n, split_k))
    return CudaStatus(LaunchFp8Gemv(a.untyped_data(), static_cast<const float*>(sfa.untyped_data()), b.untyped_data(),
                                    static_cast<const float*>(sfb.untyped_data()), d.untyped_data(), int(m), int(n),
                                    int(k), stream),
                      "fp8_gemm GEMV launch");
  const Fp8GemmConfig cfg = PickFp8GemmConfig(int(m), int(n), int(k), scale, sms, block_m, block_n, cluster_m,
                                              cluster_n, 0, 0, sfa_mn_major, split_k);
  if (cfg.block_m == 0)
    return ffi::Error::InvalidArgument(
        "fp8_gemm: requested block_m/block_n/cluster_m/cluster_n/split_k is not a compiled kernel");
  // launch
  Fp8GemmOperands op = MakeFp8GemmOperands(device, m, n, k, a, sfa, b, sfb, d);
  op.sfb_row_stride = int(sfb_row_stride);
  op.sfa_mn_stride = int(sfa_mn_stride);
  op.c = c != nullptr ? static_cast<const float*>(c->untyped_data()) : nullptr;
  if (split_partials != nullptr) {
    op.split_partials = split_partials->untyped_data();
    op.split_partials_bytes = split_partials->size_bytes();
  }
  return CudaStatus(DispatchFp8Gemm(scale, op, cfg, stream), "fp8_gemm kernel launch");
}

ffi::Error Fp8GemmNt1d2d(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa, ffi::AnyBuffer b,
                         ffi::AnyBuffer sfb, ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d,
                         int32_t block_m, int32_t block_n, int32_t cluster_m, int32_t cluster_n, int32_t num_sms,
                         ffi::Result<ffi::AnyBuffer> workspace, int32_t sfa_mn_major, int32_t split_k) {
  JDG_RETURN_IF_ERROR(CheckAliasedOutput("fp8_gemm", aliased_d, *d, false));
  return Fp8GemmNt(stream, device, BScale::kBlock128, a, sfa, b, sfb, nullptr, *d, block_m, block_n, cluster_m,
                   cluster_n, num_sms, sfa_mn_major != 0, split_k, &(*workspace));
}

// _v3 (exported programs from before split-K): no workspace output and no split_k attribute (the heuristic decides).
ffi::Error Fp8GemmNt1d2dV3(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa, ffi::AnyBuffer b,
                           ffi::AnyBuffer sfb, ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d,
                           int32_t block_m, int32_t block_n, int32_t cluster_m, int32_t cluster_n, int32_t num_sms,
                           int32_t sfa_mn_major) {
  JDG_RETURN_IF_ERROR(CheckAliasedOutput("fp8_gemm", aliased_d, *d, false));
  return Fp8GemmNt(stream, device, BScale::kBlock128, a, sfa, b, sfb, nullptr, *d, block_m, block_n, cluster_m,
                   cluster_n, num_sms, sfa_mn_major != 0);
}

// _v2 (exported programs from before MN-major A scales): K-major a_scale only.
ffi::Error Fp8GemmNt1d2dV2(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa, ffi::AnyBuffer b,
                           ffi::AnyBuffer sfb, ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d,
                           int32_t block_m, int32_t block_n, int32_t cluster_m, int32_t cluster_n, int32_t num_sms) {
  return Fp8GemmNt1d2dV3(stream, device, a, sfa, b, sfb, aliased_d, d, block_m, block_n, cluster_m, cluster_n, num_sms, 0);
}

ffi::Error Fp8GemmNt1d1d(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa, ffi::AnyBuffer b,
                         ffi::AnyBuffer sfb_t, ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d,
                         int32_t block_m, int32_t block_n, int32_t cluster_m, int32_t cluster_n, int32_t num_sms,
                         int32_t accumulate) {
  JDG_RETURN_IF_ERROR(CheckAliasedOutput("fp8_gemm", aliased_d, *d, accumulate != 0));
  const ffi::AnyBuffer* c = accumulate != 0 ? &(*d) : nullptr;
  return Fp8GemmNt(stream, device, BScale::kPerChannel, a, sfa, b, sfb_t, c, *d, block_m, block_n, cluster_m,
                   cluster_n, num_sms);
}

}  // namespace
}  // namespace jdg

namespace {
// What every dense FP8 GEMM target binds: a (e4m3 [M, K]), a_scale (f32, 1x128), b (e4m3 [N, K]), b_scale
// (f32: see each target) [, d itself, aliased] -> d, and the tile attributes (0: the heuristic's choice).
auto DenseFp8GemmBinding() {
  return jdg::ScaledGemmOperandsBinding()
      .RemainingArgs()             // optional: d itself (aliased)
      .Ret<xla::ffi::AnyBuffer>()  // d
      .Attr<int32_t>("block_m")
      .Attr<int32_t>("block_n")
      .Attr<int32_t>("cluster_m")  // 2: CTA pairs sharing B
      .Attr<int32_t>("cluster_n")  // 2: CTA pairs sharing A
      .Attr<int32_t>("num_sms");   // 0: all SMs of the device
}
}  // namespace

// bf16 d [M, N]; b_scale [ceil(N/128), ceil(K/128)]; a_scale [M, ceil(K/128)] or, with sfa_mn_major = 1,
// [ceil(K/128), align(M, 4)]; workspace: u8, the FP32 partials of a split-K through global memory
// (Fp8GemmSplitWorkspaceBytes, sized in Python; one byte when the config has none: then any split goes through
// clusters); split_k: 0 = heuristic, 1 = none, > 1 forced, < -1 forced through global memory.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmFp8GemmNt1d2d, jdg::Fp8GemmNt1d2d,
                              DenseFp8GemmBinding()
                                  .Ret<xla::ffi::AnyBuffer>()  // workspace
                                  .Attr<int32_t>("sfa_mn_major")
                                  .Attr<int32_t>("split_k"),
                              {xla::ffi::Traits::kCmdBufferCompatible});

// _v3 (before split-K): no workspace.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmFp8GemmNt1d2dV3, jdg::Fp8GemmNt1d2dV3,
                              DenseFp8GemmBinding().Attr<int32_t>("sfa_mn_major"),
                              {xla::ffi::Traits::kCmdBufferCompatible});

// _v2 (before MN-major A scales): a_scale [M, ceil(K/128)] only.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmFp8GemmNt1d2dV2, jdg::Fp8GemmNt1d2dV2, DenseFp8GemmBinding(),
                              {xla::ffi::Traits::kCmdBufferCompatible});

// f32 d [M, N]; b_scale^T [ceil(K/128), align(N, 4)] (per-row B scales, transposed); accumulate = 1: d += a.b^T.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmFp8GemmNt1d1d, jdg::Fp8GemmNt1d1d,
                              DenseFp8GemmBinding().Attr<int32_t>("accumulate"),
                              {xla::ffi::Traits::kCmdBufferCompatible});
