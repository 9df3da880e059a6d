// XLA FFI handlers of the ranged (non-paged) lightning-indexer logits, FP8 and FP4.
// decode -> check -> decide (grid) -> launch; execute allocates nothing and never syncs the host.
#include "mqa_logits.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "common/device_info.h"
#include "common/ffi_utils.h"
#include "common/tma.h"
#include "kernels/sm90_mqa_logits.cuh"
#include "kernels/sm90_mqa_logits_wgmma.cuh"

namespace jdg {
namespace {

// Grid of the ranged kernels: one CTA row per 128/H query tokens; when there are few query blocks,
// enough CTAs per block (each taking every y-th KV tile) for ~4 CTAs per SM.
dim3 RangedGrid(const DeviceInfo& info, const mqa::Params& p, int tokens_per_block) {
  const int64_t blocks_x = (int64_t(p.num_q) + tokens_per_block - 1) / tokens_per_block;
  const int64_t tiles = (int64_t(p.s_kv) + mqa::kTileKv - 1) / mqa::kTileKv;
  const int64_t want_y = (4 * int64_t(info.num_sms) + blocks_x - 1) / blocks_x;
  return dim3(unsigned(blocks_x), unsigned(std::clamp<int64_t>(want_y, 1, std::min<int64_t>(tiles, 65535))));
}

template <int kD, int kH, bool kFp4>
struct RangedTag {};

template <int kD, int kH, bool kFp4>
cudaError_t LaunchRanged(int device, const DeviceInfo& info, const mqa::Params& p, cudaStream_t stream) {
  constexpr int kNQ = 128 / kH;
  constexpr int kSmem = mqa::Smem<kD, 128>::kBytes;
  auto kernel = mqa::MqaLogitsKernel<kD, kH, kFp4>;
  const cudaError_t attr = OncePerDevice<RangedTag<kD, kH, kFp4>>(
      device, [&] { return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem); });
  if (attr != cudaSuccess) return attr;
  kernel<<<RangedGrid(info, p, kNQ), mqa::kThreads, kSmem, stream>>>(p);
  return cudaGetLastError();
}

template <int kD, int kH, bool kFp4>
struct WgmmaTag {};

// The WGMMA + TMA kernel (sm90_mqa_logits_wgmma.cuh): one persistent 640-thread CTA per SM over
// (query block, KV part) units; KV parts only when there are fewer query blocks than SMs. FP8 rows
// are TMA-loaded D-byte swizzled (the WGMMA operands); FP4 rows land packed and are decoded on the
// math WGs.
template <int kD, int kH, bool kFp4>
cudaError_t LaunchRangedWgmma(int device, const DeviceInfo& info, const mqa::Params& p, cudaStream_t stream) {
  using L = mqa::RangedSmem<kD, kFp4>;
  constexpr int kNQ = 128 / kH;
  constexpr int kSmem = L::kBytes;
  constexpr CUtensorMapSwizzle kSwizzle = kFp4        ? CU_TENSOR_MAP_SWIZZLE_NONE
                                          : kD == 128 ? CU_TENSOR_MAP_SWIZZLE_128B
                                          : kD == 64  ? CU_TENSOR_MAP_SWIZZLE_64B
                                                      : CU_TENSOR_MAP_SWIZZLE_32B;
  auto kernel = mqa::MqaLogitsWgmmaKernel<kD, kH, kFp4>;
  const cudaError_t attr = OncePerDevice<WgmmaTag<kD, kH, kFp4>>(
      device, [&] { return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem); });
  if (attr != cudaSuccess) return attr;
  // q [S*H, row] in 128-row boxes; kv [S_kv, row] in 256-row boxes; kv_scale (FP4: kv_sf) as one row
  // of S_kv words in 256-word boxes (a box starts at a multiple of 4 rows: 16-byte aligned); weights
  // (FP4: and q_sf) [S, H] in boxes of one query block's tokens.
  const void* kv_words = kFp4 ? static_cast<const void*>(p.kv_sf) : static_cast<const void*>(p.kv_scale);
  CUtensorMap tma_q, tma_kv, tma_scale, tma_w, tma_qsf;
  const bool ok =
      MakeTensorMap2D(&tma_q, p.q, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, uint64_t(p.num_q) * kH, L::kRowBytes,
                      L::kRowBytes, 128, L::kRowBytes, kSwizzle) &&
      MakeTensorMap2D(&tma_kv, p.kv, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, uint64_t(p.s_kv), L::kRowBytes, L::kRowBytes,
                      mqa::kRgBlockKv, L::kRowBytes, kSwizzle) &&
      MakeTensorMap2D(&tma_scale, kv_words, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, 1, uint64_t(p.s_kv),
                      (uint64_t(p.s_kv) + 3) / 4 * 4, 1, mqa::kRgBlockKv, CU_TENSOR_MAP_SWIZZLE_NONE) &&
      MakeTensorMap2D(&tma_w, p.weights, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, uint64_t(p.num_q), kH, kH, kNQ, kH,
                      CU_TENSOR_MAP_SWIZZLE_NONE) &&
      (!kFp4 || MakeTensorMap2D(&tma_qsf, p.q_sf, CU_TENSOR_MAP_DATA_TYPE_INT32, 4, uint64_t(p.num_q), kH, kH, kNQ,
                                kH, CU_TENSOR_MAP_SWIZZLE_NONE));
  if (!ok) return cudaErrorInvalidValue;
  if constexpr (!kFp4) tma_qsf = tma_w;  // unused
  const int64_t q_blocks = (int64_t(p.num_q) + kNQ - 1) / kNQ;
  const int64_t kv_blocks = (int64_t(p.s_kv) + mqa::kRgBlockKv - 1) / mqa::kRgBlockKv;
  const int splits =
      int(q_blocks >= info.num_sms ? 1 : std::min<int64_t>((info.num_sms + q_blocks - 1) / q_blocks, kv_blocks));
  const unsigned grid = unsigned(std::min<int64_t>(q_blocks * splits, info.num_sms));
  kernel<<<grid, mqa::kRgThreads, kSmem, stream>>>(tma_q, tma_kv, tma_scale, tma_w, tma_qsf, p, splits);
  return cudaGetLastError();
}

// JAX_DEEPGEMM_MQA_MMA_SYNC=1 forces the mma.sync kernel everywhere (A/B comparisons, bisection).
bool ForceMmaSync() {
  static const bool force = EnvFlagIsOne("JAX_DEEPGEMM_MQA_MMA_SYNC");
  return force;
}

template <bool kFp4>
cudaError_t DispatchRanged(int device, const DeviceInfo& info, int d, int h, const mqa::Params& p,
                           cudaStream_t stream) {
  if (!ForceMmaSync()) {
#define JDG_MQA_WG_CASE(D, H) \
  if (d == D && h == H) return LaunchRangedWgmma<D, H, kFp4>(device, info, p, stream);
    JDG_MQA_WG_CASE(32, 32) JDG_MQA_WG_CASE(32, 64) JDG_MQA_WG_CASE(32, 128)
    JDG_MQA_WG_CASE(64, 32) JDG_MQA_WG_CASE(64, 64) JDG_MQA_WG_CASE(64, 128)
    JDG_MQA_WG_CASE(128, 32) JDG_MQA_WG_CASE(128, 64) JDG_MQA_WG_CASE(128, 128)
#undef JDG_MQA_WG_CASE
  }
#define JDG_MQA_CASE(D, H) \
  if (d == D && h == H) return LaunchRanged<D, H, kFp4>(device, info, p, stream);
  JDG_MQA_CASE(32, 32) JDG_MQA_CASE(32, 64) JDG_MQA_CASE(32, 128)
  JDG_MQA_CASE(64, 32) JDG_MQA_CASE(64, 64) JDG_MQA_CASE(64, 128)
  JDG_MQA_CASE(128, 32) JDG_MQA_CASE(128, 64) JDG_MQA_CASE(128, 128)
#undef JDG_MQA_CASE
  return cudaErrorInvalidValue;
}

bool SupportedHeadsDim(int64_t h, int64_t d) {
  return (h == 32 || h == 64 || h == 128) && (d == 32 || d == 64 || d == 128);
}

template <bool kFp4>
ffi::Error RangedImpl(const char* op, cudaStream_t stream, int32_t device, ffi::AnyBuffer q, ffi::AnyBuffer* q_sf,
                      ffi::AnyBuffer kv, ffi::AnyBuffer kv_sf, ffi::AnyBuffer weights, ffi::AnyBuffer ks,
                      ffi::AnyBuffer ke, ffi::RemainingArgs& aliased, ffi::AnyBuffer out, int32_t clean_logits,
                      int32_t max_seqlen_k, int32_t bf16_logits) {
  JDG_RETURN_IF_ERROR(CheckAliasedOutput(op, aliased, out, false));
  // decode
  if (q.dimensions().size() != 3 || kv.dimensions().size() != 2)
    return ffi::Error::InvalidArgument(std::string(op) + ": q must be rank 3 and kv rank 2");
  const int64_t s = q.dimensions()[0], h = q.dimensions()[1], dq = q.dimensions()[2];
  const int64_t s_kv = kv.dimensions()[0];
  const int64_t d = kFp4 ? 2 * dq : dq;
  const int64_t cols = max_seqlen_k > 0 ? max_seqlen_k : s_kv;
  // check
  if (!SupportedHeadsDim(h, d))
    return ffi::Error::InvalidArgument(std::string(op) + ": H must be 32, 64 or 128 and D 32, 64 or 128");
  if constexpr (kFp4) {
    JDG_RETURN_IF_ERROR(ExpectBuffer(q, "q", ffi::DataType::U8, {s, h, dq}));
    JDG_RETURN_IF_ERROR(ExpectBuffer(*q_sf, "q_sf", ffi::DataType::S32, {s, h}));
    JDG_RETURN_IF_ERROR(ExpectBuffer(kv, "kv", ffi::DataType::U8, {s_kv, dq}));
    JDG_RETURN_IF_ERROR(ExpectBuffer(kv_sf, "kv_sf", ffi::DataType::S32, {s_kv}));
  } else {
    JDG_RETURN_IF_ERROR(ExpectBuffer(q, "q", ffi::DataType::F8E4M3FN, {s, h, d}));
    JDG_RETURN_IF_ERROR(ExpectBuffer(kv, "kv", ffi::DataType::F8E4M3FN, {s_kv, d}));
    JDG_RETURN_IF_ERROR(ExpectBuffer(kv_sf, "kv_scale", ffi::DataType::F32, {s_kv}));
  }
  JDG_RETURN_IF_ERROR(ExpectBuffer(weights, "weights", ffi::DataType::F32, {s, h}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(ks, "ks", ffi::DataType::S32, {s}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(ke, "ke", ffi::DataType::S32, {s}));
  JDG_RETURN_IF_ERROR(
      ExpectBuffer(out, "logits", bf16_logits ? ffi::DataType::BF16 : ffi::DataType::F32, {s, cols}));
  if (s > INT32_MAX || s_kv > INT32_MAX || s * h > INT32_MAX)
    return ffi::Error::InvalidArgument(std::string(op) + ": S, S_kv and S*H must fit in int32");
  if (s == 0 || cols == 0) return ffi::Error::Success();
  const DeviceInfo* device_info = nullptr;
  JDG_RETURN_IF_ERROR(Sm90DeviceInfo(op, device, device_info));
  const DeviceInfo& info = *device_info;
  // decide
  mqa::Params p{};
  p.q = static_cast<const uint8_t*>(q.untyped_data());
  p.q_sf = kFp4 ? static_cast<const int32_t*>(q_sf->untyped_data()) : nullptr;
  p.kv = static_cast<const uint8_t*>(kv.untyped_data());
  p.kv_scale = kFp4 ? nullptr : static_cast<const float*>(kv_sf.untyped_data());
  p.kv_sf = kFp4 ? static_cast<const int32_t*>(kv_sf.untyped_data()) : nullptr;
  p.weights = static_cast<const float*>(weights.untyped_data());
  p.ks = static_cast<const int32_t*>(ks.untyped_data());
  p.ke = static_cast<const int32_t*>(ke.untyped_data());
  p.out = out.untyped_data();
  p.num_q = int(s);
  p.s_kv = int(s_kv);
  p.out_cols = int(cols);
  p.compressed = max_seqlen_k > 0;
  p.clean = clean_logits != 0;
  p.bf16 = bf16_logits != 0;
  // launch
  if (s_kv > 0) {
    JDG_RETURN_IF_ERROR(CudaStatus(DispatchRanged<kFp4>(device, info, int(d), int(h), p, stream), op));
  }
  if (p.clean && (p.compressed || s_kv == 0)) {
    mqa::CleanLogitsKernel<<<unsigned(s), 256, 0, stream>>>(p, 0);
    JDG_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), std::string(op) + " clean"));
  }
  return ffi::Error::Success();
}

ffi::Error Fp8MqaLogits(cudaStream_t stream, int32_t device, ffi::AnyBuffer q, ffi::AnyBuffer kv,
                        ffi::AnyBuffer kv_scale, ffi::AnyBuffer weights, ffi::AnyBuffer ks, ffi::AnyBuffer ke,
                        ffi::RemainingArgs aliased, ffi::Result<ffi::AnyBuffer> out, int32_t clean_logits,
                        int32_t max_seqlen_k, int32_t bf16_logits) {
  return RangedImpl<false>("fp8_mqa_logits", stream, device, q, nullptr, kv, kv_scale, weights, ks, ke, aliased, *out,
                           clean_logits, max_seqlen_k, bf16_logits);
}

ffi::Error Fp4MqaLogits(cudaStream_t stream, int32_t device, ffi::AnyBuffer q, ffi::AnyBuffer q_sf, ffi::AnyBuffer kv,
                        ffi::AnyBuffer kv_sf, ffi::AnyBuffer weights, ffi::AnyBuffer ks, ffi::AnyBuffer ke,
                        ffi::RemainingArgs aliased, ffi::Result<ffi::AnyBuffer> out, int32_t clean_logits,
                        int32_t max_seqlen_k, int32_t bf16_logits) {
  return RangedImpl<true>("fp4_mqa_logits", stream, device, q, &q_sf, kv, kv_sf, weights, ks, ke, aliased, *out,
                          clean_logits, max_seqlen_k, bf16_logits);
}

}  // namespace
}  // namespace jdg

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmFp8MqaLogits, jdg::Fp8MqaLogits,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<xla::ffi::DeviceOrdinal>()
                                  .Arg<xla::ffi::AnyBuffer>()  // q        e4m3 [S, H, D]
                                  .Arg<xla::ffi::AnyBuffer>()  // kv       e4m3 [S_kv, D]
                                  .Arg<xla::ffi::AnyBuffer>()  // kv_scale f32  [S_kv]
                                  .Arg<xla::ffi::AnyBuffer>()  // weights  f32  [S, H]
                                  .Arg<xla::ffi::AnyBuffer>()  // ks       s32  [S]
                                  .Arg<xla::ffi::AnyBuffer>()  // ke       s32  [S]
                                  .RemainingArgs()             // optional: logits itself (aliased)
                                  .Ret<xla::ffi::AnyBuffer>()  // logits   f32/bf16 [S, S_kv or max_seqlen_k]
                                  .Attr<int32_t>("clean_logits")
                                  .Attr<int32_t>("max_seqlen_k")
                                  .Attr<int32_t>("bf16_logits"),
                              {xla::ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmFp4MqaLogits, jdg::Fp4MqaLogits,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<xla::ffi::DeviceOrdinal>()
                                  .Arg<xla::ffi::AnyBuffer>()  // q        u8  [S, H, D/2] packed E2M1
                                  .Arg<xla::ffi::AnyBuffer>()  // q_sf     s32 [S, H] packed UE8M0
                                  .Arg<xla::ffi::AnyBuffer>()  // kv       u8  [S_kv, D/2]
                                  .Arg<xla::ffi::AnyBuffer>()  // kv_sf    s32 [S_kv]
                                  .Arg<xla::ffi::AnyBuffer>()  // weights  f32 [S, H]
                                  .Arg<xla::ffi::AnyBuffer>()  // ks       s32 [S]
                                  .Arg<xla::ffi::AnyBuffer>()  // ke       s32 [S]
                                  .RemainingArgs()             // optional: logits itself (aliased)
                                  .Ret<xla::ffi::AnyBuffer>()  // logits   f32/bf16
                                  .Attr<int32_t>("clean_logits")
                                  .Attr<int32_t>("max_seqlen_k")
                                  .Attr<int32_t>("bf16_logits"),
                              {xla::ffi::Traits::kCmdBufferCompatible});
