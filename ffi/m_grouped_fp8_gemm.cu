// XLA FFI handlers of the M-grouped (MoE) FP8 GEMMs, all on the dense 1D2D kernel with B viewed as
// [G*N, K] and a per-tile expert: contiguous (expert of each 128-row tile from the per-row ids),
// masked (A/D viewed as [G*max_m, ...], only the ceil(masked_m[g]/BLOCK_M) tiles of each group run)
// and ragged (any group sizes; tiles straddling groups run once per group, storing its rows).
// Execute only launches: no allocation, no host synchronisation (CUDA-graph safe).
#include "m_grouped_fp8_gemm.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "common/device_info.h"
#include "common/ffi_utils.h"
#include "fp8_gemm_launch.h"
#include "heuristics/sm90_fp8_gemm.h"

namespace jdg {
namespace {

// The group alignment of the contiguous layout: one 128-row block, one expert.
constexpr int kContiguousBlockM = 128;
// Contiguous and ragged tiles are 256 rows (two 128-row waves sharing each B tile: the dense kernel's fastest
// tile at M = 4096, 13-17 % faster than 128-row pairs at N >= 4096) when the experts average at least this
// many rows, else 128. A contiguous 256-row tile whose two blocks belong to two experts runs its K range once
// per wave (ContiguousSecondWaveGroup), ~1.5x a tile's time; a ragged one runs once per group, each unit
// computing only the waves holding its rows. There is at most one such tile per expert boundary, i.e. <= 1
// in 8 tiles here.
constexpr int64_t kTallTileMinRowsPerGroup = 2048;

// The operands shared by the contiguous and ragged forms: A [M, K] rows of all experts, B [G, N, K],
// their scales, a per-row or per-group int32 layout of `layout_len` entries and D [M, N] BF16.
// Decodes the shape into (m, k, groups, n) and checks everything, naming the operand.
struct RowGroupedShape {
  int64_t m = 0, k = 0, groups = 0, n = 0;
};
ffi::Error DecodeRowGrouped(const std::string& op, const ffi::AnyBuffer& a, const ffi::AnyBuffer& sfa,
                            const ffi::AnyBuffer& b, const ffi::AnyBuffer& sfb, const ffi::AnyBuffer& layout,
                            const char* layout_name, bool layout_per_row, const ffi::AnyBuffer& d,
                            RowGroupedShape& shape, bool sfa_mn_major = false) {
  if (a.dimensions().size() != 2 || b.dimensions().size() != 3)
    return ffi::Error::InvalidArgument(op + ": a must be rank 2 and b rank 3");
  const int64_t m = a.dimensions()[0], k = a.dimensions()[1];
  const int64_t groups = b.dimensions()[0], n = b.dimensions()[1];
  const int64_t k_blocks = CeilDiv(k, 128);
  JDG_RETURN_IF_ERROR(ExpectBuffer(a, "a", ffi::DataType::F8E4M3FN, {m, k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(b, "b", ffi::DataType::F8E4M3FN, {groups, n, k}));
  if (sfa_mn_major)
    JDG_RETURN_IF_ERROR(ExpectBuffer(sfa, "a_scale (MN-major)", ffi::DataType::F32, {k_blocks, Fp8GemmSfaMnStride(m)}));
  else
    JDG_RETURN_IF_ERROR(ExpectBuffer(sfa, "a_scale", ffi::DataType::F32, {m, k_blocks}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(sfb, "b_scale", ffi::DataType::F32, {groups, CeilDiv(n, 128), k_blocks}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(layout, layout_name, ffi::DataType::S32, {layout_per_row ? m : groups}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(d, "d", ffi::DataType::BF16, {m, n}));
  if (k == 0 || k % 16 != 0) return ffi::Error::InvalidArgument(op + ": K must be a positive multiple of 16");
  if (groups == 0 || m > INT32_MAX || groups * n > INT32_MAX || k > INT32_MAX)
    return ffi::Error::InvalidArgument(op + ": G >= 1 and G*N, M, K must fit in int32");
  shape = {m, k, groups, n};
  return ffi::Error::Success();
}

ffi::Error MGroupedFp8GemmNtContiguous(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa,
                                       ffi::AnyBuffer b, ffi::AnyBuffer sfb, ffi::AnyBuffer row_group,
                                       ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, int32_t block_m,
                                       int32_t block_n, int32_t num_sms, int32_t sfa_mn_major) {
  constexpr const char* kOp = "m_grouped_fp8_gemm_nt_contiguous";
  JDG_RETURN_IF_ERROR(CheckAliasedOutput(kOp, aliased_d, *d, false));
  if (block_m != 0 && block_m != kContiguousBlockM && block_m != 2 * kContiguousBlockM)
    return ffi::Error::InvalidArgument("m_grouped_fp8_gemm_nt_contiguous: block_m must be 0, 128 or 256");
  // decode, check
  RowGroupedShape shape;
  JDG_RETURN_IF_ERROR(
      DecodeRowGrouped(kOp, a, sfa, b, sfb, row_group, "grouped_layout", true, *d, shape, sfa_mn_major != 0));
  const auto [m, k, groups, n] = shape;
  if (m == 0 || n == 0) return ffi::Error::Success();
  int sms = 0;
  JDG_RETURN_IF_ERROR(UsableSm90Sms(kOp, device, num_sms, sms));
  // decide: 128- or 256-row tiles (never 64: a 128-row block is computed with its first row's expert);
  // clusters only along N (tiles paired along M may differ in expert, along N they share it and its A tile)
  const int tile_m = block_m != 0 ? block_m
                                  : (m >= kTallTileMinRowsPerGroup * groups ? 2 * kContiguousBlockM
                                                                                      : kContiguousBlockM);
  const Fp8GemmConfig cfg = PickFp8GemmConfig(int(m), int(n), int(k), BScale::kBlock128, sms, tile_m, block_n, 1, 0,
                                              0, 0, sfa_mn_major != 0);  // (MN-major A scales: staged by TMA)
  if (cfg.block_m == 0)
    return ffi::Error::InvalidArgument("m_grouped_fp8_gemm_nt_contiguous: requested block_n is not a compiled kernel");
  // launch
  Fp8GemmOperands op = MakeFp8GemmOperands(device, m, n, k, a, sfa, b, sfb, *d);
  op.sfa_mn_stride = sfa_mn_major != 0 ? int(Fp8GemmSfaMnStride(m)) : 0;
  op.grouping.row_group = static_cast<const int*>(row_group.untyped_data());
  op.grouping.num_groups = int(groups);
  return CudaStatus(DispatchFp8Gemm(BScale::kBlock128, op, cfg, stream), "m_grouped_fp8_gemm_nt_contiguous launch");
}

// The earlier targets: _v2 without block_m (heuristic), _v1 also without MN-major A scales.
ffi::Error MGroupedFp8GemmNtContiguousV2(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa,
                                         ffi::AnyBuffer b, ffi::AnyBuffer sfb, ffi::AnyBuffer row_group,
                                         ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, int32_t block_n,
                                         int32_t num_sms, int32_t sfa_mn_major) {
  return MGroupedFp8GemmNtContiguous(stream, device, a, sfa, b, sfb, row_group, aliased_d, d, 0, block_n, num_sms,
                                     sfa_mn_major);
}
ffi::Error MGroupedFp8GemmNtContiguousV1(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa,
                                         ffi::AnyBuffer b, ffi::AnyBuffer sfb, ffi::AnyBuffer row_group,
                                         ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, int32_t block_n,
                                         int32_t num_sms) {
  return MGroupedFp8GemmNtContiguous(stream, device, a, sfa, b, sfb, row_group, aliased_d, d, 0, block_n, num_sms, 0);
}

// D[g, :masked_m[g]] = A[g, :masked_m[g]] . B[g]^T; A, D viewed as [G * max_m, ...] rows.
ffi::Error MGroupedFp8GemmNtMasked(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa,
                                   ffi::AnyBuffer b, ffi::AnyBuffer sfb, ffi::AnyBuffer masked_m,
                                   ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, int32_t expected_m,
                                   int32_t block_m, int32_t block_n, int32_t num_sms, int32_t sfa_mn_major) {
  constexpr const char* kOp = "m_grouped_fp8_gemm_nt_masked";
  JDG_RETURN_IF_ERROR(CheckAliasedOutput(kOp, aliased_d, *d, false));
  if (a.dimensions().size() != 3 || b.dimensions().size() != 3)
    return ffi::Error::InvalidArgument("m_grouped_fp8_gemm_nt_masked: a and b must be rank 3");
  const int64_t groups = a.dimensions()[0], max_m = a.dimensions()[1], k = a.dimensions()[2];
  const int64_t n = b.dimensions()[1];
  const int64_t k_blocks = CeilDiv(k, 128);
  JDG_RETURN_IF_ERROR(ExpectBuffer(a, "a", ffi::DataType::F8E4M3FN, {groups, max_m, k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(b, "b", ffi::DataType::F8E4M3FN, {groups, n, k}));
  if (sfa_mn_major)  // the [G * max_m, ceil(K/128)] scales transposed, as the contiguous form takes them
    JDG_RETURN_IF_ERROR(ExpectBuffer(sfa, "a_scale (MN-major)", ffi::DataType::F32,
                                     {k_blocks, Fp8GemmSfaMnStride(groups * max_m)}));
  else
    JDG_RETURN_IF_ERROR(ExpectBuffer(sfa, "a_scale", ffi::DataType::F32, {groups, max_m, k_blocks}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(sfb, "b_scale", ffi::DataType::F32, {groups, CeilDiv(n, 128), k_blocks}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(masked_m, "masked_m", ffi::DataType::S32, {groups}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(*d, "d", ffi::DataType::BF16, {groups, max_m, n}));
  if (k == 0 || k % 16 != 0)
    return ffi::Error::InvalidArgument("m_grouped_fp8_gemm_nt_masked: K must be a positive multiple of 16");
  if (max_m % 128 != 0)
    return ffi::Error::InvalidArgument("m_grouped_fp8_gemm_nt_masked: max_m must be a multiple of 128");
  if (groups * max_m > INT32_MAX || groups * n > INT32_MAX || k > INT32_MAX)
    return ffi::Error::InvalidArgument("m_grouped_fp8_gemm_nt_masked: G*max_m, G*N and K must fit in int32");
  if (groups == 0 || max_m == 0 || n == 0) return ffi::Error::Success();
  int sms = 0;
  JDG_RETURN_IF_ERROR(UsableSm90Sms(kOp, device, num_sms, sms));
  // decide: the tile shape for the expected rows per group (a hint: the kernel computes what
  // masked_m says), BLOCK_M <= 128, clusters only along N (one expert per pair); the persistent
  // grid covers every SM since the tile count is on the device.
  const int hint_m = int(std::clamp<int64_t>(expected_m > 0 ? expected_m : max_m, 1, max_m));
  Fp8GemmConfig cfg = PickFp8GemmConfig(hint_m, int(n), int(k), BScale::kBlock128, sms, block_m, block_n, 1, 0, 0,
                                        kMGroupedMaxBlockM, sfa_mn_major != 0, 1, int(groups));
  if (cfg.block_m == 0)
    return ffi::Error::InvalidArgument("m_grouped_fp8_gemm_nt_masked: requested block_m/block_n is not compiled");
  cfg.grid = PersistentGrid(INT32_MAX, sms, cfg.cluster_m * cfg.cluster_n);  // the tile count is device data
  Fp8GemmOperands op = MakeFp8GemmOperands(device, groups * max_m, n, k, a, sfa, b, sfb, *d);
  op.grouping.num_groups = int(groups);
  op.grouping.masked_m = static_cast<const int*>(masked_m.untyped_data());
  op.grouping.max_m = int(max_m);
  op.sfa_mn_stride = sfa_mn_major != 0 ? int(Fp8GemmSfaMnStride(groups * max_m)) : 0;
  return CudaStatus(DispatchFp8Gemm(BScale::kBlock128, op, cfg, stream), "m_grouped_fp8_gemm_nt_masked launch");
}
// _v1: K-major A scales only.
ffi::Error MGroupedFp8GemmNtMaskedV1(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa,
                                     ffi::AnyBuffer b, ffi::AnyBuffer sfb, ffi::AnyBuffer masked_m,
                                     ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, int32_t expected_m,
                                     int32_t block_m, int32_t block_n, int32_t num_sms) {
  return MGroupedFp8GemmNtMasked(stream, device, a, sfa, b, sfb, masked_m, aliased_d, d, expected_m, block_m, block_n,
                                 num_sms, 0);
}

// D[r] = A[r] . B[g(r)]^T with group g owning rows [ends[g-1], ends[g]) of A (any sizes), rows past
// the last end 0: the kernel reads A and writes D in place (no gathers), computing a 128-row tile
// that straddles groups once per group in it.
ffi::Error MGroupedFp8GemmNtRagged(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa,
                                   ffi::AnyBuffer b, ffi::AnyBuffer sfb, ffi::AnyBuffer group_ends,
                                   ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, int32_t block_m,
                                   int32_t block_n, int32_t num_sms, int32_t sfa_mn_major) {
  constexpr const char* kOp = "m_grouped_fp8_gemm_nt_ragged";
  JDG_RETURN_IF_ERROR(CheckAliasedOutput(kOp, aliased_d, *d, false));
  RowGroupedShape shape;
  JDG_RETURN_IF_ERROR(
      DecodeRowGrouped(kOp, a, sfa, b, sfb, group_ends, "group_ends", false, *d, shape, sfa_mn_major != 0));
  const auto [m, k, groups, n] = shape;
  if (m == 0 || n == 0) return ffi::Error::Success();
  int sms = 0;
  JDG_RETURN_IF_ERROR(UsableSm90Sms(kOp, device, num_sms, sms));
  // decide: tiles for the whole M (clusters only along N: tiles paired along M may differ in
  // expert), 256 rows when the groups average many rows (as the contiguous GEMM: a unit computes only the
  // waves holding its group's rows); the tile count depends on the device sizes, so the persistent grid
  // covers its bound, (M tiles + G) x N tile pairs.
  const bool tall = block_m == 2 * kContiguousBlockM || (block_m == 0 && m >= kTallTileMinRowsPerGroup * groups);
  Fp8GemmConfig cfg = PickFp8GemmConfig(int(m), int(n), int(k), BScale::kBlock128, sms,
                                        tall ? 2 * kContiguousBlockM : block_m, block_n, 1, 0, kMaxRaggedBlockN,
                                        tall ? 2 * kContiguousBlockM : kMGroupedMaxBlockM, sfa_mn_major != 0);
  if (cfg.block_m == 0)
    return ffi::Error::InvalidArgument(
        "m_grouped_fp8_gemm_nt_ragged: requested block_m/block_n is not compiled for ragged GEMMs");
  const int cluster = cfg.cluster_m * cfg.cluster_n;
  const int64_t max_units = (CeilDiv(m, cfg.block_m) + groups) * CeilDiv(n, int64_t(cfg.block_n) * cluster);
  cfg.grid = PersistentGrid(max_units, sms, cluster);
  Fp8GemmOperands op = MakeFp8GemmOperands(device, m, n, k, a, sfa, b, sfb, *d);
  op.sfa_mn_stride = sfa_mn_major != 0 ? int(Fp8GemmSfaMnStride(m)) : 0;
  op.grouping.group_ends = static_cast<const int*>(group_ends.untyped_data());
  op.grouping.num_groups = int(groups);
  return CudaStatus(DispatchFp8Gemm(BScale::kBlock128, op, cfg, stream), "m_grouped_fp8_gemm_nt_ragged launch");
}

// _v1 (exported programs from before MN-major A scales): a_scale [M, ceil(K/128)] only.
ffi::Error MGroupedFp8GemmNtRaggedV1(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer sfa,
                                     ffi::AnyBuffer b, ffi::AnyBuffer sfb, ffi::AnyBuffer group_ends,
                                     ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, int32_t block_m,
                                     int32_t block_n, int32_t num_sms) {
  return MGroupedFp8GemmNtRagged(stream, device, a, sfa, b, sfb, group_ends, aliased_d, d, block_m, block_n, num_sms,
                                 0);
}

}  // namespace
}  // namespace jdg

namespace {
// The contiguous targets: a (e4m3 [M, K]), a_scale (f32: see each target), b (e4m3 [G, N, K]), b_scale
// (f32 [G, ceil(N/128), ceil(K/128)]), grouped_layout (s32 [M]: expert per row, -1 padding) [, d itself,
// aliased] -> d (bf16 [M, N]); block_m (_v3: 0 heuristic, 128 or 256), block_n (0: heuristic), num_sms (0:
// all SMs of the device).
auto ContiguousFp8GemmOperands() {
  return jdg::ScaledGemmOperandsBinding()
      .Arg<xla::ffi::AnyBuffer>()   // grouped_layout
      .RemainingArgs()              // optional: d itself (aliased)
      .Ret<xla::ffi::AnyBuffer>();  // d
}
}  // namespace

// a_scale [M, ceil(K/128)] or, with sfa_mn_major = 1, [ceil(K/128), align(M, 4)].
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtContiguous, jdg::MGroupedFp8GemmNtContiguous,
                              ContiguousFp8GemmOperands()
                                  .Attr<int32_t>("block_m")
                                  .Attr<int32_t>("block_n")
                                  .Attr<int32_t>("num_sms")
                                  .Attr<int32_t>("sfa_mn_major"),
                              {xla::ffi::Traits::kCmdBufferCompatible});

// _v2 (exported programs from before block_m): the heuristic's tile height.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtContiguousV2, jdg::MGroupedFp8GemmNtContiguousV2,
                              ContiguousFp8GemmOperands()
                                  .Attr<int32_t>("block_n")
                                  .Attr<int32_t>("num_sms")
                                  .Attr<int32_t>("sfa_mn_major"),
                              {xla::ffi::Traits::kCmdBufferCompatible});

// _v1 (exported programs from before MN-major A scales): a_scale [M, ceil(K/128)] only.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtContiguousV1, jdg::MGroupedFp8GemmNtContiguousV1,
                              ContiguousFp8GemmOperands().Attr<int32_t>("block_n").Attr<int32_t>("num_sms"),
                              {xla::ffi::Traits::kCmdBufferCompatible});

namespace {
// a (e4m3 [G, max_m, K]), a_scale (f32 [G, max_m, ceil(K/128)]; _v2 with sfa_mn_major = 1: [ceil(K/128),
// align(G * max_m, 4)]), b (e4m3 [G, N, K]), b_scale (f32 [G, ceil(N/128), ceil(K/128)]), masked_m (s32 [G] valid
// rows per group) [, d itself, aliased] -> d (bf16 [G, max_m, N]); expected_m (rows per group the tile choice
// assumes, 0: max_m), block_m, block_n (0: heuristic), num_sms (0: all SMs of the device).
auto MaskedFp8GemmBinding() {
  return jdg::ScaledGemmOperandsBinding()
      .Arg<xla::ffi::AnyBuffer>()  // masked_m
      .RemainingArgs()
      .Ret<xla::ffi::AnyBuffer>()
      .Attr<int32_t>("expected_m")
      .Attr<int32_t>("block_m")
      .Attr<int32_t>("block_n")
      .Attr<int32_t>("num_sms");
}
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtMasked, jdg::MGroupedFp8GemmNtMasked,
                              MaskedFp8GemmBinding().Attr<int32_t>("sfa_mn_major"),
                              {xla::ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtMaskedV1, jdg::MGroupedFp8GemmNtMaskedV1,
                              MaskedFp8GemmBinding(), {xla::ffi::Traits::kCmdBufferCompatible});

namespace {
// a (e4m3 [M, K]), a_scale (f32 [M, ceil(K/128)]; _v2 with sfa_mn_major = 1: [ceil(K/128), align(M, 4)]), b (e4m3
// [G, N, K]), b_scale (f32 [G, ceil(N/128), ceil(K/128)]), group_ends (s32 [G] cumulative row ends) [, d itself,
// aliased] -> d (bf16 [M, N]); block_m, block_n (0: heuristic), num_sms (0: all SMs of the device).
auto RaggedFp8GemmBinding() {
  return jdg::ScaledGemmOperandsBinding()
      .Arg<xla::ffi::AnyBuffer>()  // group_ends
      .RemainingArgs()             // optional: d itself (aliased)
      .Ret<xla::ffi::AnyBuffer>()  // d
      .Attr<int32_t>("block_m")
      .Attr<int32_t>("block_n")
      .Attr<int32_t>("num_sms");
}
}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtRagged, jdg::MGroupedFp8GemmNtRagged,
                              RaggedFp8GemmBinding().Attr<int32_t>("sfa_mn_major"),
                              {xla::ffi::Traits::kCmdBufferCompatible});
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmMGroupedFp8GemmNtRaggedV1, jdg::MGroupedFp8GemmNtRaggedV1,
                              RaggedFp8GemmBinding(), {xla::ffi::Traits::kCmdBufferCompatible});
