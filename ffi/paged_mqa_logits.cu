// XLA FFI handlers of the paged lightning-indexer logits (FP8 and FP4 fused caches) and of the
// device-side schedule metadata. Execute only launches: no allocation, no host synchronisation.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "common/device_info.h"
#include "common/ffi_utils.h"
#include "common/tma.h"
#include "kernels/sm90_paged_mqa_logits.cuh"
#include "kernels/sm90_paged_mqa_logits_wgmma.cuh"
#include "mqa_logits.h"

namespace jdg {
namespace {

template <int kD, int kH, int kNC, bool kFp4>
struct PagedTag {};
struct MetadataTag {};

template <int kD, int kH, int kNC, bool kFp4>
cudaError_t LaunchPaged(int device, int grid, const mqa::Params& p, cudaStream_t stream) {
  constexpr int kSmem = mqa::Smem<kD, 2 * kH>::kBytes;
  auto kernel = mqa::PagedMqaLogitsKernel<kD, kH, kNC, kFp4>;
  const cudaError_t attr = OncePerDevice<PagedTag<kD, kH, kNC, kFp4>>(
      device, [&] { return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem); });
  if (attr != cudaSuccess) return attr;
  kernel<<<unsigned(grid * p.ctas_per_row), mqa::kThreads, kSmem, stream>>>(p);
  return cudaGetLastError();
}

// JAX_DEEPGEMM_MQA_MMA_SYNC=1 forces the mma.sync kernels (A/B comparisons, bisection).
bool ForceMmaSync() {
  static const bool force = EnvFlagIsOne("JAX_DEEPGEMM_MQA_MMA_SYNC");
  return force;
}

// The fused cache's values as a 3-D tensor {D, block_kv, num_blocks} (row stride D bytes, block
// stride block_bytes), boxes of {D, min(block_kv, 64), 1}, swizzled over D bytes.
bool MakeCacheTensorMap(CUtensorMap* map, const mqa::Params& p, int d, CUtensorMapSwizzle swizzle) {
  EncodeTiledFn encode = GetEncodeTiled();
  if (encode == nullptr) return false;
  const cuuint64_t dims[3] = {cuuint64_t(d), cuuint64_t(p.block_kv), cuuint64_t(p.num_blocks)};
  const cuuint64_t strides[2] = {cuuint64_t(d), cuuint64_t(p.block_bytes)};
  const cuuint32_t box[3] = {cuuint32_t(d), cuuint32_t(std::min(p.block_kv, mqa::kTileKv)), 1};
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, const_cast<uint8_t*>(p.kv), dims, strides, box, elem_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <int kD, int kH, int kNC, bool kFp4>
struct PagedWgmmaTag {};

// The WGMMA + TMA kernel (sm90_paged_mqa_logits_wgmma.cuh), one 640-thread CTA per SM. FP8 rows are
// TMA-loaded D-byte swizzled (the WGMMA operands); FP4 rows land packed and are decoded on the math WGs.
template <int kD, int kH, int kNC, bool kFp4>
cudaError_t LaunchPagedWgmma(int device, const DeviceInfo& info, int rows, mqa::Params p, cudaStream_t stream) {
  using L = mqa::PagedWgSmem<kD, kH, kFp4>;
  constexpr int kSmem = L::kBytes;
  constexpr CUtensorMapSwizzle kSwizzle = kFp4        ? CU_TENSOR_MAP_SWIZZLE_NONE
                                          : kD == 128 ? CU_TENSOR_MAP_SWIZZLE_128B
                                          : kD == 64  ? CU_TENSOR_MAP_SWIZZLE_64B
                                                      : CU_TENSOR_MAP_SWIZZLE_32B;
  auto kernel = mqa::PagedMqaLogitsWgmmaKernel<kD, kH, kNC, kFp4>;
  const cudaError_t attr = OncePerDevice<PagedWgmmaTag<kD, kH, kNC, kFp4>>(
      device, [&] { return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem); });
  if (attr != cudaSuccess) return attr;
  // q [B*next_n*H, row] in kNC-row boxes; the cache's rows and (a 2-D map over the blocks' scale tails,
  // {block_kv words, num_blocks} with the block stride) its scales; weights [B*next_n, H] (and FP4
  // q_sf, same shape) in boxes of one atom's tokens.
  CUtensorMap tma_q, tma_kv, tma_scale, tma_w, tma_qsf;
  const bool ok =
      MakeTensorMap2D(&tma_q, p.q, CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, uint64_t(p.num_q) * kH, L::kRowBytes,
                      L::kRowBytes, kNC, L::kRowBytes, kSwizzle) &&
      MakeCacheTensorMap(&tma_kv, p, L::kRowBytes, kSwizzle) &&
      MakeTensorMap2D(&tma_scale, p.kv + int64_t(p.block_kv) * L::kRowBytes, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4,
                      uint64_t(p.num_blocks), uint64_t(p.block_kv), uint64_t(p.block_bytes / 4), 1,
                      uint32_t(std::min(p.block_kv, mqa::kTileKv)), CU_TENSOR_MAP_SWIZZLE_NONE) &&
      MakeTensorMap2D(&tma_w, p.weights, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, uint64_t(p.num_q), kH, kH,
                      uint32_t(p.atom_size), kH, CU_TENSOR_MAP_SWIZZLE_NONE) &&
      (!kFp4 || MakeTensorMap2D(&tma_qsf, p.q_sf, CU_TENSOR_MAP_DATA_TYPE_INT32, 4, uint64_t(p.num_q), kH, kH,
                                uint32_t(p.atom_size), kH, CU_TENSOR_MAP_SWIZZLE_NONE));
  if (!ok) return cudaErrorInvalidValue;
  if constexpr (!kFp4) tma_qsf = tma_w;  // unused
  p.ctas_per_row = int(std::clamp<int64_t>((int64_t(info.num_sms) + rows - 1) / rows, 1, 8));
  kernel<<<unsigned(rows * p.ctas_per_row), mqa::kPgThreads, kSmem, stream>>>(tma_q, tma_kv, tma_scale, tma_w,
                                                                              tma_qsf, p);
  return cudaGetLastError();
}

template <bool kFp4>
cudaError_t DispatchPaged(int device, const DeviceInfo& info, int grid, int d, int h, int nc, const mqa::Params& p,
                          cudaStream_t stream) {
  if (!ForceMmaSync()) {
#define JDG_PAGED_WG_CASE(D, H, NC) \
  if (d == D && h == H && nc == NC) return LaunchPagedWgmma<D, H, NC, kFp4>(device, info, grid, p, stream);
#define JDG_PAGED_WG_D(D)                                                                     \
  JDG_PAGED_WG_CASE(D, 32, 32) JDG_PAGED_WG_CASE(D, 32, 64) JDG_PAGED_WG_CASE(D, 64, 64) \
  JDG_PAGED_WG_CASE(D, 64, 128) JDG_PAGED_WG_CASE(D, 128, 128)
    JDG_PAGED_WG_D(32) JDG_PAGED_WG_D(64) JDG_PAGED_WG_D(128)
#undef JDG_PAGED_WG_D
#undef JDG_PAGED_WG_CASE
  }
#define JDG_PAGED_CASE(D, H, NC) \
  if (d == D && h == H && nc == NC) return LaunchPaged<D, H, NC, kFp4>(device, grid, p, stream);
#define JDG_PAGED_D(D)                                                                  \
  JDG_PAGED_CASE(D, 32, 32) JDG_PAGED_CASE(D, 32, 64) JDG_PAGED_CASE(D, 64, 64) \
  JDG_PAGED_CASE(D, 64, 128) JDG_PAGED_CASE(D, 128, 128)
  JDG_PAGED_D(32) JDG_PAGED_D(64) JDG_PAGED_D(128)
#undef JDG_PAGED_D
#undef JDG_PAGED_CASE
  return cudaErrorInvalidValue;
}

template <bool kFp4>
ffi::Error PagedImpl(const char* op, cudaStream_t stream, int32_t device, ffi::AnyBuffer q, ffi::AnyBuffer* q_sf,
                     ffi::AnyBuffer cache, ffi::AnyBuffer weights, ffi::AnyBuffer lens, ffi::AnyBuffer table,
                     ffi::AnyBuffer meta, ffi::RemainingArgs& aliased, ffi::AnyBuffer out, int32_t clean_logits,
                     int32_t max_context_len, int32_t bf16_logits) {
  JDG_RETURN_IF_ERROR(CheckAliasedOutput(op, aliased, out, false));
  // decode
  if (q.dimensions().size() != 4 || cache.dimensions().size() != 4 || table.dimensions().size() != 2 ||
      meta.dimensions().size() != 2)
    return ffi::Error::InvalidArgument(std::string(op) + ": q, kv_cache must be rank 4, block_table and "
                                       "schedule_meta rank 2");
  const int64_t b = q.dimensions()[0], next_n = q.dimensions()[1], h = q.dimensions()[2], dq = q.dimensions()[3];
  const int64_t d = kFp4 ? 2 * dq : dq;
  const int64_t num_blocks = cache.dimensions()[0], block_kv = cache.dimensions()[1];
  const int64_t max_blocks = table.dimensions()[1];
  const int64_t num_sms = meta.dimensions()[0] - 1;
  // check
  if (!((h == 32 || h == 64 || h == 128) && (d == 32 || d == 64 || d == 128)))
    return ffi::Error::InvalidArgument(std::string(op) + ": H must be 32, 64 or 128 and D 32, 64 or 128");
  if (next_n < 1 || next_n > 4) return ffi::Error::InvalidArgument(std::string(op) + ": next_n must be 1 to 4");
  if (!(block_kv == 16 || block_kv == 32 || block_kv == 64 || block_kv == 128))
    return ffi::Error::InvalidArgument(std::string(op) + ": block_kv must be 16, 32, 64 or 128");
  if constexpr (kFp4) {
    JDG_RETURN_IF_ERROR(ExpectBuffer(q, "q", ffi::DataType::U8, {b, next_n, h, dq}));
    JDG_RETURN_IF_ERROR(ExpectBuffer(*q_sf, "q_sf", ffi::DataType::S32, {b, next_n, h}));
  } else {
    JDG_RETURN_IF_ERROR(ExpectBuffer(q, "q", ffi::DataType::F8E4M3FN, {b, next_n, h, d}));
  }
  const int64_t row_bytes = (kFp4 ? d / 2 : d) + 4;
  JDG_RETURN_IF_ERROR(ExpectBuffer(cache, "kv_cache", ffi::DataType::U8, {num_blocks, block_kv, 1, row_bytes}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(weights, "weights", ffi::DataType::F32, {b * next_n, h}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(lens, "context_lens", ffi::DataType::S32, {b, next_n}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(table, "block_table", ffi::DataType::S32, {b, max_blocks}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(meta, "schedule_meta", ffi::DataType::S32, {num_sms + 1, 2}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(out, "logits", bf16_logits ? ffi::DataType::BF16 : ffi::DataType::F32,
                                   {b * next_n, int64_t(max_context_len)}));
  if (num_sms < 1 || num_sms > 65535 || num_blocks < 1 || max_blocks < 1)
    return ffi::Error::InvalidArgument(std::string(op) + ": needs 1..65535 SMs in schedule_meta, >= 1 cache block "
                                       "and >= 1 block-table column");
  if (b * next_n * h > INT32_MAX || num_blocks > INT32_MAX || b * max_blocks > INT64_C(1) << 40)
    return ffi::Error::InvalidArgument(std::string(op) + ": B*next_n*H and num_blocks must fit in int32");
  if (b == 0 || max_context_len == 0) return ffi::Error::Success();
  const DeviceInfo* device_info = nullptr;
  JDG_RETURN_IF_ERROR(Sm90DeviceInfo(op, device, device_info));
  const DeviceInfo& info = *device_info;
  // decide
  mqa::Params p{};
  p.q = static_cast<const uint8_t*>(q.untyped_data());
  p.q_sf = kFp4 ? static_cast<const int32_t*>(q_sf->untyped_data()) : nullptr;
  p.kv = static_cast<const uint8_t*>(cache.untyped_data());
  p.weights = static_cast<const float*>(weights.untyped_data());
  p.context_lens = static_cast<const int32_t*>(lens.untyped_data());
  p.block_table = static_cast<const int32_t*>(table.untyped_data());
  p.meta = static_cast<const int32_t*>(meta.untyped_data());
  p.out = out.untyped_data();
  p.num_q = int(b * next_n);
  p.out_cols = max_context_len;
  p.clean = clean_logits != 0;
  p.bf16 = bf16_logits != 0;
  p.batch = int(b);
  p.next_n = int(next_n);
  p.atom_size = next_n >= 2 ? 2 : 1;
  p.num_atoms = int((next_n + p.atom_size - 1) / p.atom_size);
  p.block_kv = int(block_kv);
  p.num_blocks = int(num_blocks);
  p.max_blocks = int(max_blocks);
  p.block_bytes = block_kv * row_bytes;
  p.ctx_cap = int(std::min<int64_t>(max_context_len, max_blocks * block_kv));
  // ~4 CTAs per SM in all (each keeps 2 KV tiles in flight): schedule rows are split between CTAs
  p.ctas_per_row = int(std::clamp<int64_t>((4 * int64_t(info.num_sms) + num_sms - 1) / num_sms, 1, 8));
  const int nc = int(std::min<int64_t>(p.atom_size * h, 128));
  // launch: the persistent kernel (one CTA per schedule row), then -inf past the tiles it wrote
  JDG_RETURN_IF_ERROR(
      CudaStatus(DispatchPaged<kFp4>(device, info, int(num_sms), int(d), int(h), nc, p, stream), op));
  if (p.clean) {
    mqa::CleanLogitsKernel<<<unsigned(b * next_n), 256, 0, stream>>>(p, 1);
    JDG_RETURN_IF_ERROR(CudaStatus(cudaGetLastError(), std::string(op) + " clean"));
  }
  return ffi::Error::Success();
}

ffi::Error Fp8PagedMqaLogits(cudaStream_t stream, int32_t device, ffi::AnyBuffer q, ffi::AnyBuffer cache,
                             ffi::AnyBuffer weights, ffi::AnyBuffer lens, ffi::AnyBuffer table, ffi::AnyBuffer meta,
                             ffi::RemainingArgs aliased, ffi::Result<ffi::AnyBuffer> out, int32_t clean_logits,
                             int32_t max_context_len, int32_t bf16_logits) {
  return PagedImpl<false>("fp8_paged_mqa_logits", stream, device, q, nullptr, cache, weights, lens, table, meta,
                          aliased, *out, clean_logits, max_context_len, bf16_logits);
}

ffi::Error Fp4PagedMqaLogits(cudaStream_t stream, int32_t device, ffi::AnyBuffer q, ffi::AnyBuffer q_sf,
                             ffi::AnyBuffer cache, ffi::AnyBuffer weights, ffi::AnyBuffer lens, ffi::AnyBuffer table,
                             ffi::AnyBuffer meta, ffi::RemainingArgs aliased, ffi::Result<ffi::AnyBuffer> out,
                             int32_t clean_logits, int32_t max_context_len, int32_t bf16_logits) {
  return PagedImpl<true>("fp4_paged_mqa_logits", stream, device, q, &q_sf, cache, weights, lens, table, meta, aliased,
                         *out, clean_logits, max_context_len, bf16_logits);
}

ffi::Error PagedMqaLogitsMetadata(cudaStream_t stream, int32_t device, ffi::AnyBuffer lens,
                                  ffi::Result<ffi::AnyBuffer> meta) {
  constexpr const char* kOp = "get_paged_mqa_logits_metadata";
  if (lens.dimensions().size() != 2 || meta->dimensions().size() != 2)
    return ffi::Error::InvalidArgument(std::string(kOp) + ": context_lens and the schedule must be rank 2");
  const int64_t b = lens.dimensions()[0], next_n = lens.dimensions()[1];
  const int64_t num_sms = meta->dimensions()[0] - 1;
  JDG_RETURN_IF_ERROR(ExpectBuffer(lens, "context_lens", ffi::DataType::S32, {b, next_n}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(*meta, "schedule_meta", ffi::DataType::S32, {num_sms + 1, 2}));
  if (next_n < 1 || next_n > 4 || num_sms < 1 || num_sms > 65535)
    return ffi::Error::InvalidArgument(std::string(kOp) + ": next_n must be 1 to 4 and num_sms 1 to 65535");
  const DeviceInfo& info = GetDeviceInfo(device);
  const int64_t smem = std::max<int64_t>(b, 1) * 4;
  if (smem > info.max_smem_per_block)
    return ffi::Error::InvalidArgument(std::string(kOp) + ": batch too large for the one-warp schedule kernel (" +
                                       std::to_string(info.max_smem_per_block / 4) + " rows at most)");
  const cudaError_t attr = OncePerDevice<MetadataTag>(device, [&] {
    return cudaFuncSetAttribute(mqa::PagedMqaLogitsMetadataKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                info.max_smem_per_block);
  });
  JDG_RETURN_IF_ERROR(CudaStatus(attr, std::string(kOp) + " set-up"));
  mqa::PagedMqaLogitsMetadataKernel<<<1, 32, unsigned(smem), stream>>>(
      static_cast<const int32_t*>(lens.untyped_data()), int(b), int(next_n), int(num_sms),
      static_cast<int32_t*>(meta->untyped_data()));
  return CudaStatus(cudaGetLastError(), kOp);
}

}  // namespace
}  // namespace jdg

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmFp8PagedMqaLogits, jdg::Fp8PagedMqaLogits,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<xla::ffi::DeviceOrdinal>()
                                  .Arg<xla::ffi::AnyBuffer>()  // q             e4m3 [B, next_n, H, D]
                                  .Arg<xla::ffi::AnyBuffer>()  // kv_cache      u8   [num_blocks, block_kv, 1, D+4]
                                  .Arg<xla::ffi::AnyBuffer>()  // weights       f32  [B*next_n, H]
                                  .Arg<xla::ffi::AnyBuffer>()  // context_lens  s32  [B, next_n]
                                  .Arg<xla::ffi::AnyBuffer>()  // block_table   s32  [B, max_blocks]
                                  .Arg<xla::ffi::AnyBuffer>()  // schedule_meta s32  [num_sms + 1, 2]
                                  .RemainingArgs()             // optional: logits itself (aliased)
                                  .Ret<xla::ffi::AnyBuffer>()  // logits        f32/bf16 [B*next_n, max_context_len]
                                  .Attr<int32_t>("clean_logits")
                                  .Attr<int32_t>("max_context_len")
                                  .Attr<int32_t>("bf16_logits"),
                              {xla::ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmFp4PagedMqaLogits, jdg::Fp4PagedMqaLogits,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<xla::ffi::DeviceOrdinal>()
                                  .Arg<xla::ffi::AnyBuffer>()  // q             u8  [B, next_n, H, D/2]
                                  .Arg<xla::ffi::AnyBuffer>()  // q_sf          s32 [B, next_n, H]
                                  .Arg<xla::ffi::AnyBuffer>()  // kv_cache      u8  [num_blocks, block_kv, 1, D/2+4]
                                  .Arg<xla::ffi::AnyBuffer>()  // weights       f32 [B*next_n, H]
                                  .Arg<xla::ffi::AnyBuffer>()  // context_lens  s32 [B, next_n]
                                  .Arg<xla::ffi::AnyBuffer>()  // block_table   s32 [B, max_blocks]
                                  .Arg<xla::ffi::AnyBuffer>()  // schedule_meta s32 [num_sms + 1, 2]
                                  .RemainingArgs()             // optional: logits itself (aliased)
                                  .Ret<xla::ffi::AnyBuffer>()  // logits
                                  .Attr<int32_t>("clean_logits")
                                  .Attr<int32_t>("max_context_len")
                                  .Attr<int32_t>("bf16_logits"),
                              {xla::ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmPagedMqaLogitsMetadata, jdg::PagedMqaLogitsMetadata,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<xla::ffi::DeviceOrdinal>()
                                  .Arg<xla::ffi::AnyBuffer>()   // context_lens s32 [B, next_n]
                                  .Ret<xla::ffi::AnyBuffer>(),  // schedule     s32 [num_sms + 1, 2]
                              {xla::ffi::Traits::kCmdBufferCompatible});
