// XLA FFI handlers of the BF16 GEMM family: dense (NT/NN/TN/TT, BF16 or FP32 out, optional in-place
// + C), the M-grouped contiguous / masked / ragged MoE GEMMs (B viewed as [G*N, K], a per-tile
// expert) and the K-grouped weight-gradient GEMM, all on one kernel (kernels/sm90_bf16_gemm.cuh).
// Each reads: decode -> check -> decide -> launch.
// Execute only launches: no allocation, no host synchronisation (CUDA-graph safe).
#include "bf16_gemm.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <utility>

#include "bf16_gemm_launch.h"
#include "common/device_info.h"
#include "common/ffi_utils.h"
#include "heuristics/sm90_bf16_gemm.h"
#include "instances/bf16_gemm_instances.h"
#include "kernels/sm90_bf16_gemv.cuh"

namespace jdg {

namespace {

// The dense handler's decode rows: NT, M <= kBf16GemvMaxM, K >= kBf16GemvMinK, no tile, cluster or split forced
// (block_m/block_n/cluster_m 0, split_k 0 = the heuristic's or 1 = none) run the CUDA-core GEMV instead of a tile
// kernel.
bool Bf16DenseTakesGemv(int m, int k, int major, int block_m, int block_n, int cluster_m, int split_k) {
  return major == 0 && m <= kBf16GemvMaxM && k >= kBf16GemvMinK && block_m <= 0 && block_n <= 0 && cluster_m <= 0 &&
         split_k <= 1;
}

}  // namespace

cudaError_t DispatchBf16Gemm(const Bf16GemmOperands& op, const Bf16GemmConfig& cfg, cudaStream_t stream) {
#define JDG_CASE(BM, BN, CLUSTER, MAJOR)                                                                  \
  if (cfg.block_m == BM && cfg.block_n == BN && cfg.cluster_m == CLUSTER && cfg.major == MAJOR) \
    return LaunchSm90Bf16Gemm<BM, BN, CLUSTER, MAJOR>(op, cfg, stream);
  JDG_BF16_ALL(JDG_CASE)
#undef JDG_CASE
  return cudaErrorInvalidConfiguration;
}

int64_t Bf16GemmSplitWorkspaceBytes(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m,
                                    int split_k, bool out_fp32, int major) {
  if (Bf16DenseTakesGemv(m, k, major, block_m, block_n, cluster_m, split_k)) return 0;
  const Bf16GemmConfig cfg =
      PickBf16GemmConfig(m, n, k, 1, out_fp32, num_sms, block_m, block_n, cluster_m, major, split_k);
  return cfg.block_m == 0 ? -1 : Bf16GemmSplitPartialBytes(cfg, m, n);
}

std::array<int, 4> Bf16GemmTile(int m, int n, int k, int num_sms, bool out_fp32, int major) {
  if (Bf16DenseTakesGemv(m, k, major, 0, 0, 0, 0)) return {kBf16GemvMaxM, kBf16GemvRows, 1, 1};
  const Bf16GemmConfig cfg = PickBf16GemmConfig(m, n, k, 1, out_fp32, num_sms, 0, 0, 0, major, /*force_split_k=*/0);
  return {cfg.block_m, cfg.block_n, cfg.cluster_m, cfg.split_k};
}

namespace {

// The group alignment of the contiguous layout: one 128-row tile, one expert (as for FP8).
constexpr int kContiguousBlockM = 128;

// The operands every BF16 handler hands to the kernel: the (possibly grouped) shape, A, B and D (FP32
// D when its buffer is FP32); handlers add their layout and grouping.
Bf16GemmOperands MakeBf16GemmOperands(int device, int64_t m, int64_t n, int64_t k, const ffi::AnyBuffer& a,
                                      const ffi::AnyBuffer& b, ffi::AnyBuffer& d) {
  Bf16GemmOperands op;
  op.device = device;
  op.m = int(m);
  op.n = int(n);
  op.k = int(k);
  op.a = a.untyped_data();
  op.b = b.untyped_data();
  op.d = d.untyped_data();
  op.out_fp32 = d.element_type() == ffi::DataType::F32;
  return op;
}

ffi::Error CheckK(const char* op, int64_t k) {
  if (k == 0 || k % 8 != 0)
    return ffi::Error::InvalidArgument(std::string(op) + ": K must be a positive multiple of 8 (16-byte TMA row pitch)");
  return ffi::Error::Success();
}

// D[M,N] = op(A) . op(B)^T: `major` bit 0 = A stored [K, M] (else [M, K]), bit 1 = B stored [K, N]
// (else [N, K]). The kernel reads MN-major operands in place (no transpose). split_k: 0 = heuristic, 1 = none, > 1
// forced; its FP32 partials go to `workspace` (Bf16GemmSplitWorkspaceBytes, sized in Python; nullptr: no split).
ffi::Error Bf16GemmImpl(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer b,
                        ffi::RemainingArgs aliased_d, ffi::AnyBuffer* d, int32_t block_m, int32_t block_n,
                        int32_t cluster_m, int32_t num_sms, int32_t accumulate, int32_t major, int32_t split_k,
                        ffi::AnyBuffer* workspace) {
  constexpr const char* kOp = "bf16_gemm";
  JDG_RETURN_IF_ERROR(CheckAliasedOutput(kOp, aliased_d, *d, accumulate != 0));
  // decode
  if (a.dimensions().size() != 2 || b.dimensions().size() != 2)
    return ffi::Error::InvalidArgument("bf16_gemm: a and b must be rank 2 (batch dims are folded in Python)");
  if (major < 0 || major > 3) return ffi::Error::InvalidArgument("bf16_gemm: major must be in [0, 3]");
  const bool a_mn = (major & 1) != 0, b_mn = (major & 2) != 0;
  const int64_t m = a.dimensions()[a_mn ? 1 : 0], k = a.dimensions()[a_mn ? 0 : 1];
  const int64_t n = b.dimensions()[b_mn ? 1 : 0];
  const bool out_fp32 = d->element_type() == ffi::DataType::F32;
  // check
  JDG_RETURN_IF_ERROR(ExpectBuffer(a, "a", ffi::DataType::BF16, {a_mn ? k : m, a_mn ? m : k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(b, "b", ffi::DataType::BF16, {b_mn ? k : n, b_mn ? n : k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(*d, "d", out_fp32 ? ffi::DataType::F32 : ffi::DataType::BF16, {m, n}));
  if (accumulate != 0 && !out_fp32)
    return ffi::Error::InvalidArgument("bf16_gemm: accumulate=1 needs an FP32 output");
  JDG_RETURN_IF_ERROR(CheckK(kOp, k));
  if ((a_mn && m % 8 != 0) || (b_mn && n % 8 != 0))
    return ffi::Error::InvalidArgument("bf16_gemm: an MN-major operand needs M (A) or N (B) a multiple of 8");
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
    return ffi::Error::InvalidArgument("bf16_gemm: dimensions must fit in int32");
  if (m == 0 || n == 0) return ffi::Error::Success();
  int sms = 0;
  JDG_RETURN_IF_ERROR(UsableSm90Sms(kOp, device, num_sms, sms));
  // decide
  auto pick = [&](int split) {
    return PickBf16GemmConfig(int(m), int(n), int(k), 1, out_fp32, sms, block_m, block_n, cluster_m, major, split);
  };
  const int split_asked = workspace != nullptr ? split_k : 1;
  if (Bf16DenseTakesGemv(int(m), int(k), major, block_m, block_n, cluster_m, split_asked))
    return CudaStatus(LaunchBf16Gemv(a.untyped_data(), b.untyped_data(),
                                     accumulate != 0 ? static_cast<const float*>(d->untyped_data()) : nullptr,
                                     d->untyped_data(), int(m), int(n), int(k), out_fp32, stream),
                      "bf16_gemm GEMV launch");
  Bf16GemmConfig cfg = pick(split_asked);
  if (cfg.block_m == 0)
    return ffi::Error::InvalidArgument(
        "bf16_gemm: requested block_m/block_n/cluster_m/split_k is not a compiled kernel");
  if (cfg.split_k > 1 && (workspace == nullptr || int64_t(workspace->size_bytes()) <
                                                      Bf16GemmSplitPartialBytes(cfg, m, n))) {
    // The workspace was sized for another device (SM count): a forced split is an error, the heuristic's runs unsplit.
    if (split_k > 1)
      return ffi::Error::InvalidArgument("bf16_gemm: the workspace is smaller than the forced split-K needs");
    cfg = pick(1);
  }
  // launch
  Bf16GemmOperands op = MakeBf16GemmOperands(device, m, n, k, a, b, *d);
  op.major = major;
  op.c = accumulate != 0 ? static_cast<const float*>(d->untyped_data()) : nullptr;
  if (cfg.split_k > 1) {
    op.split_partials = workspace->untyped_data();
    op.split_partials_bytes = workspace->size_bytes();
  }
  return CudaStatus(DispatchBf16Gemm(op, cfg, stream), "bf16_gemm kernel launch");
}

ffi::Error Bf16Gemm(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer b,
                    ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, ffi::Result<ffi::AnyBuffer> workspace,
                    int32_t block_m, int32_t block_n, int32_t cluster_m, int32_t num_sms, int32_t accumulate,
                    int32_t major, int32_t split_k) {
  return Bf16GemmImpl(stream, device, a, b, aliased_d, &(*d), block_m, block_n, cluster_m, num_sms, accumulate, major,
                      split_k, &(*workspace));
}

// _v1 (exported programs from before split-K): no workspace output, no split_k attribute, no split.
ffi::Error Bf16GemmV1(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer b,
                      ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, int32_t block_m, int32_t block_n,
                      int32_t cluster_m, int32_t num_sms, int32_t accumulate, int32_t major) {
  return Bf16GemmImpl(stream, device, a, b, aliased_d, &(*d), block_m, block_n, cluster_m, num_sms, accumulate, major,
                      1, nullptr);
}

ffi::Error MGroupedBf16GemmNtContiguous(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer b,
                                        ffi::AnyBuffer row_group, ffi::RemainingArgs aliased_d,
                                        ffi::Result<ffi::AnyBuffer> d, int32_t block_n, int32_t num_sms) {
  constexpr const char* kOp = "m_grouped_bf16_gemm_nt_contiguous";
  JDG_RETURN_IF_ERROR(CheckAliasedOutput(kOp, aliased_d, *d, false));
  // decode
  if (a.dimensions().size() != 2 || b.dimensions().size() != 3)
    return ffi::Error::InvalidArgument("m_grouped_bf16_gemm_nt_contiguous: a must be rank 2 and b rank 3");
  const int64_t m = a.dimensions()[0], k = a.dimensions()[1];
  const int64_t groups = b.dimensions()[0], n = b.dimensions()[1];
  // check
  JDG_RETURN_IF_ERROR(ExpectBuffer(a, "a", ffi::DataType::BF16, {m, k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(b, "b", ffi::DataType::BF16, {groups, n, k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(row_group, "grouped_layout", ffi::DataType::S32, {m}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(*d, "d", ffi::DataType::BF16, {m, n}));
  JDG_RETURN_IF_ERROR(CheckK(kOp, k));
  if (groups == 0 || m > INT32_MAX || groups * n > INT32_MAX || k > INT32_MAX)
    return ffi::Error::InvalidArgument("m_grouped_bf16_gemm_nt_contiguous: G >= 1 and G*N, M, K must fit in int32");
  if (m == 0 || n == 0) return ffi::Error::Success();
  int sms = 0;
  JDG_RETURN_IF_ERROR(UsableSm90Sms(kOp, device, num_sms, sms));
  // decide: 128-row tiles (the layout's alignment), no 2-CTA clusters (paired tiles may differ in expert)
  const Bf16GemmConfig cfg =
      PickBf16GemmConfig(int(m), int(n), int(k), int(groups), false, sms, kContiguousBlockM, block_n, 1);
  if (cfg.block_m == 0)
    return ffi::Error::InvalidArgument("m_grouped_bf16_gemm_nt_contiguous: requested block_n is not a compiled kernel");
  // launch
  Bf16GemmOperands op = MakeBf16GemmOperands(device, m, n, k, a, b, *d);
  op.grouping.row_group = static_cast<const int*>(row_group.untyped_data());
  op.grouping.num_groups = int(groups);
  return CudaStatus(DispatchBf16Gemm(op, cfg, stream), "m_grouped_bf16_gemm_nt_contiguous launch");
}

// D[g, :masked_m[g]] = A[g, :masked_m[g]] . B[g]^T; A, D viewed as [G * max_m, ...] rows.
ffi::Error MGroupedBf16GemmNtMasked(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer b,
                                    ffi::AnyBuffer masked_m, ffi::RemainingArgs aliased_d,
                                    ffi::Result<ffi::AnyBuffer> d, int32_t expected_m, int32_t block_m,
                                    int32_t block_n, int32_t num_sms) {
  constexpr const char* kOp = "m_grouped_bf16_gemm_nt_masked";
  JDG_RETURN_IF_ERROR(CheckAliasedOutput(kOp, aliased_d, *d, false));
  if (a.dimensions().size() != 3 || b.dimensions().size() != 3)
    return ffi::Error::InvalidArgument("m_grouped_bf16_gemm_nt_masked: a and b must be rank 3");
  const int64_t groups = a.dimensions()[0], max_m = a.dimensions()[1], k = a.dimensions()[2];
  const int64_t n = b.dimensions()[1];
  JDG_RETURN_IF_ERROR(ExpectBuffer(a, "a", ffi::DataType::BF16, {groups, max_m, k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(b, "b", ffi::DataType::BF16, {groups, n, k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(masked_m, "masked_m", ffi::DataType::S32, {groups}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(*d, "d", ffi::DataType::BF16, {groups, max_m, n}));
  JDG_RETURN_IF_ERROR(CheckK(kOp, k));
  if (max_m % 128 != 0)
    return ffi::Error::InvalidArgument("m_grouped_bf16_gemm_nt_masked: max_m must be a multiple of 128");
  if (groups * max_m > INT32_MAX || groups * n > INT32_MAX || k > INT32_MAX)
    return ffi::Error::InvalidArgument("m_grouped_bf16_gemm_nt_masked: G*max_m, G*N and K must fit in int32");
  if (groups == 0 || max_m == 0 || n == 0) return ffi::Error::Success();
  int sms = 0;
  JDG_RETURN_IF_ERROR(UsableSm90Sms(kOp, device, num_sms, sms));
  // decide: the tile shape for the expected rows per group (a hint: the kernel computes what
  // masked_m says), no clusters; the persistent grid covers every SM since the tile count is on
  // the device.
  const int hint_m = int(std::clamp<int64_t>(expected_m > 0 ? expected_m : max_m, 1, max_m) * groups);
  Bf16GemmConfig cfg = PickBf16GemmConfig(hint_m, int(n), int(k), int(groups), false, sms, block_m, block_n, 1);
  if (cfg.block_m == 0)
    return ffi::Error::InvalidArgument("m_grouped_bf16_gemm_nt_masked: requested block_m/block_n is not compiled");
  cfg.grid = PersistentGrid(INT32_MAX, sms, 1);  // the tile count is device data
  Bf16GemmOperands op = MakeBf16GemmOperands(device, groups * max_m, n, k, a, b, *d);
  op.grouping.num_groups = int(groups);
  op.grouping.masked_m = static_cast<const int*>(masked_m.untyped_data());
  op.grouping.max_m = int(max_m);
  return CudaStatus(DispatchBf16Gemm(op, cfg, stream), "m_grouped_bf16_gemm_nt_masked launch");
}

// lax.ragged_dot's layout: group g owns rows [ends[g-1], ends[g]) of A [M, K] (any sizes), rows past
// the last end are zeros. One kernel over A and D in place: a row tile straddling groups is computed
// once per group it holds, each unit storing only its group's rows. B is [G, N, K] (NT) or, with
// `b_mn_major`, [G, K, N] (NN: lax.ragged_dot's own rhs layout, read in place; K a multiple of 64).
ffi::Error MGroupedBf16GemmRagged(const char* op_name, bool b_mn_major, cudaStream_t stream, int32_t device,
                                  ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::AnyBuffer group_ends,
                                  ffi::RemainingArgs aliased_d, ffi::Result<ffi::AnyBuffer> d, int32_t block_m,
                                  int32_t block_n, int32_t num_sms) {
  const std::string kOp = op_name;
  JDG_RETURN_IF_ERROR(CheckAliasedOutput(kOp, aliased_d, *d, false));
  if (a.dimensions().size() != 2 || b.dimensions().size() != 3)
    return ffi::Error::InvalidArgument(kOp + ": a must be rank 2 and b rank 3");
  const int64_t m = a.dimensions()[0], k = a.dimensions()[1];
  const int64_t groups = b.dimensions()[0], n = b.dimensions()[b_mn_major ? 2 : 1];
  JDG_RETURN_IF_ERROR(ExpectBuffer(a, "a", ffi::DataType::BF16, {m, k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(b, "b", ffi::DataType::BF16, {groups, b_mn_major ? k : n, b_mn_major ? n : k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(group_ends, "group_ends", ffi::DataType::S32, {groups}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(*d, "d", ffi::DataType::BF16, {m, n}));
  JDG_RETURN_IF_ERROR(CheckK(op_name, k));
  if (b_mn_major && (k % kBf16BlockK != 0 || n % 8 != 0))
    return ffi::Error::InvalidArgument(kOp + ": B [G, K, N] needs K a multiple of 64 and N a multiple of 8");
  if (groups == 0 || m > INT32_MAX || groups * n > INT32_MAX || groups * k > INT32_MAX)
    return ffi::Error::InvalidArgument(kOp + ": G >= 1 and G*N, G*K, M must fit in int32");
  if (m == 0 || n == 0) return ffi::Error::Success();
  int sms = 0;
  JDG_RETURN_IF_ERROR(UsableSm90Sms(kOp, device, num_sms, sms));
  // decide: tiles for the whole M (no clusters: a pair of tiles may differ in expert); the tile count
  // depends on the device sizes, so the persistent grid covers its bound, (M tiles + G) x N tiles.
  const int major = b_mn_major ? 2 : 0;
  Bf16GemmConfig cfg =
      PickBf16GemmConfig(int(m), int(n), int(k), int(groups), false, sms, block_m, block_n, 1, major);
  if (cfg.block_m == 0) return ffi::Error::InvalidArgument(kOp + ": requested block_m/block_n is not compiled");
  cfg.grid = PersistentGrid((CeilDiv(m, cfg.block_m) + groups) * CeilDiv(n, cfg.block_n), sms, 1);
  Bf16GemmOperands op = MakeBf16GemmOperands(device, m, n, k, a, b, *d);
  op.major = major;
  op.grouping.num_groups = int(groups);
  op.grouping.group_ends = static_cast<const int*>(group_ends.untyped_data());
  return CudaStatus(DispatchBf16Gemm(op, cfg, stream), kOp + " launch");
}

ffi::Error MGroupedBf16GemmNtRagged(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer b,
                                    ffi::AnyBuffer group_ends, ffi::RemainingArgs aliased_d,
                                    ffi::Result<ffi::AnyBuffer> d, int32_t block_m, int32_t block_n,
                                    int32_t num_sms) {
  return MGroupedBf16GemmRagged("m_grouped_bf16_gemm_nt_ragged", false, stream, device, a, b, group_ends, aliased_d,
                                d, block_m, block_n, num_sms);
}

ffi::Error MGroupedBf16GemmNnRagged(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer b,
                                    ffi::AnyBuffer group_ends, ffi::RemainingArgs aliased_d,
                                    ffi::Result<ffi::AnyBuffer> d, int32_t block_m, int32_t block_n,
                                    int32_t num_sms) {
  return MGroupedBf16GemmRagged("m_grouped_bf16_gemm_nn_ragged", true, stream, device, a, b, group_ends, aliased_d,
                                d, block_m, block_n, num_sms);
}

// D[g] (= C[g] +) A[K range g]^T . B[K range g] over consecutive K ranges whose sizes are device data
// (multiples of 128; see NextKGroupedTile): `major` 3 = TN (A [K, M], B [K, N], read in place: the
// token-major wgrad layout), 0 = NT (A [M, K], B [N, K]). D, C: FP32 [G, M, N].
ffi::Error KGroupedBf16GemmContiguous(cudaStream_t stream, int32_t device, ffi::AnyBuffer a, ffi::AnyBuffer b,
                                      ffi::AnyBuffer group_k, ffi::RemainingArgs aliased_d,
                                      ffi::Result<ffi::AnyBuffer> d, int32_t block_m, int32_t block_n,
                                      int32_t num_sms, int32_t accumulate, int32_t major) {
  constexpr const char* kOp = "k_grouped_bf16_gemm";
  JDG_RETURN_IF_ERROR(CheckAliasedOutput(kOp, aliased_d, *d, accumulate != 0));
  // decode
  if (a.dimensions().size() != 2 || b.dimensions().size() != 2 || group_k.dimensions().size() != 1)
    return ffi::Error::InvalidArgument("k_grouped_bf16_gemm: a, b must be rank 2, k_group_sizes rank 1");
  if (major != 0 && major != 3) return ffi::Error::InvalidArgument("k_grouped_bf16_gemm: major must be 0 (NT) or 3 (TN)");
  const bool mn_major = major == 3;
  const int64_t m = a.dimensions()[mn_major ? 1 : 0], k = a.dimensions()[mn_major ? 0 : 1];
  const int64_t n = b.dimensions()[mn_major ? 1 : 0];
  const int64_t groups = group_k.dimensions()[0];
  // check
  JDG_RETURN_IF_ERROR(ExpectBuffer(a, "a", ffi::DataType::BF16, {mn_major ? k : m, mn_major ? m : k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(b, "b", ffi::DataType::BF16, {mn_major ? k : n, mn_major ? n : k}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(group_k, "k_group_sizes", ffi::DataType::S32, {groups}));
  JDG_RETURN_IF_ERROR(ExpectBuffer(*d, "d", ffi::DataType::F32, {groups, m, n}));
  if (mn_major ? (m % 8 != 0 || n % 8 != 0) : k % 8 != 0)
    return ffi::Error::InvalidArgument(
        "k_grouped_bf16_gemm: TN needs M and N multiples of 8, NT needs K a multiple of 8 (16-byte TMA row pitch)");
  if (groups * m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
    return ffi::Error::InvalidArgument("k_grouped_bf16_gemm: G*M, N and K must fit in int32");
  if (groups == 0 || m == 0 || n == 0 || k == 0) return ffi::Error::Success();  // Python handles these
  int sms = 0;
  JDG_RETURN_IF_ERROR(UsableSm90Sms(kOp, device, num_sms, sms));
  // decide: the tile for one group's GEMM at the mean K, no clusters; the grid covers every group's tiles.
  const int mean_k = int(std::max<int64_t>(128, k / groups));
  Bf16GemmConfig cfg = PickBf16GemmConfig(int(m), int(n), mean_k, 1, true, sms, block_m, block_n, 1, major);
  if (cfg.block_m == 0)
    return ffi::Error::InvalidArgument("k_grouped_bf16_gemm: requested block_m/block_n is not a compiled kernel");
  cfg.grid = PersistentGrid(CeilDiv(m, cfg.block_m) * CeilDiv(n, cfg.block_n) * groups, sms, 1);
  // launch
  Bf16GemmOperands op = MakeBf16GemmOperands(device, m, n, k, a, b, *d);
  op.major = major;
  op.c = accumulate != 0 ? static_cast<const float*>(d->untyped_data()) : nullptr;
  op.grouping.num_groups = int(groups);
  op.grouping.group_k = static_cast<const int*>(group_k.untyped_data());
  return CudaStatus(DispatchBf16Gemm(op, cfg, stream), "k_grouped_bf16_gemm launch");
}

}  // namespace
}  // namespace jdg

namespace {
// What every dense BF16 GEMM target binds up to its output d.
auto DenseBf16GemmBinding() {
  return xla::ffi::Ffi::Bind()
      .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
      .Ctx<xla::ffi::DeviceOrdinal>()
      .Arg<xla::ffi::AnyBuffer>()   // a  bf16 [M, K] ([K, M] if major & 1)
      .Arg<xla::ffi::AnyBuffer>()   // b  bf16 [N, K] ([K, N] if major & 2)
      .RemainingArgs()              // optional: d itself (aliased; C when accumulate=1)
      .Ret<xla::ffi::AnyBuffer>();  // d  bf16 or f32 [M, N]
}
// ... and its attributes.
template <class Binding>
auto DenseBf16GemmAttrs(Binding binding) {
  return std::move(binding).template Attr<int32_t>("block_m")  // 0: heuristic
      .template Attr<int32_t>("block_n")            // 0: heuristic
      .template Attr<int32_t>("cluster_m")          // 0: heuristic; 1 or 2 CTAs sharing B
      .template Attr<int32_t>("num_sms")            // 0: all SMs of the device
      .template Attr<int32_t>("accumulate")         // 1: d += a.b^T (f32 d aliased)
      .template Attr<int32_t>("major");             // bit 0: A MN-major, bit 1: B MN-major
}
}  // namespace

// workspace: u8, the FP32 partials of a split-K (Bf16GemmSplitWorkspaceBytes, sized in Python; one byte when the
// config has none); split_k: 0 = heuristic, 1 = none, > 1 forced.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmBf16Gemm, jdg::Bf16Gemm,
                              DenseBf16GemmAttrs(DenseBf16GemmBinding().Ret<xla::ffi::AnyBuffer>())
                                  .Attr<int32_t>("split_k"),
                              {xla::ffi::Traits::kCmdBufferCompatible});

// _v1 (before split-K): no workspace, no split_k.
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmBf16GemmV1, jdg::Bf16GemmV1, DenseBf16GemmAttrs(DenseBf16GemmBinding()),
                              {xla::ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmMGroupedBf16GemmNtContiguous, jdg::MGroupedBf16GemmNtContiguous,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<xla::ffi::DeviceOrdinal>()
                                  .Arg<xla::ffi::AnyBuffer>()  // a              bf16 [M, K]
                                  .Arg<xla::ffi::AnyBuffer>()  // b              bf16 [G, N, K]
                                  .Arg<xla::ffi::AnyBuffer>()  // grouped_layout s32  [M] expert per row, -1 padding
                                  .RemainingArgs()             // optional: d itself (aliased)
                                  .Ret<xla::ffi::AnyBuffer>()  // d              bf16 [M, N]
                                  .Attr<int32_t>("block_n")    // 0: heuristic
                                  .Attr<int32_t>("num_sms"),   // 0: all SMs of the device
                              {xla::ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmMGroupedBf16GemmNtMasked, jdg::MGroupedBf16GemmNtMasked,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<xla::ffi::DeviceOrdinal>()
                                  .Arg<xla::ffi::AnyBuffer>()   // a        bf16 [G, max_m, K]
                                  .Arg<xla::ffi::AnyBuffer>()   // b        bf16 [G, N, K]
                                  .Arg<xla::ffi::AnyBuffer>()   // masked_m s32  [G] valid rows per group
                                  .RemainingArgs()              // optional: d itself (aliased)
                                  .Ret<xla::ffi::AnyBuffer>()   // d        bf16 [G, max_m, N]
                                  .Attr<int32_t>("expected_m")  // rows per group the tile choice assumes (0: max_m)
                                  .Attr<int32_t>("block_m")     // 0: heuristic
                                  .Attr<int32_t>("block_n")     // 0: heuristic
                                  .Attr<int32_t>("num_sms"),    // 0: all SMs of the device
                              {xla::ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmMGroupedBf16GemmNtRagged, jdg::MGroupedBf16GemmNtRagged,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<xla::ffi::DeviceOrdinal>()
                                  .Arg<xla::ffi::AnyBuffer>()  // a          bf16 [M, K]
                                  .Arg<xla::ffi::AnyBuffer>()  // b          bf16 [G, N, K]
                                  .Arg<xla::ffi::AnyBuffer>()  // group_ends s32  [G] cumulative row ends
                                  .RemainingArgs()             // optional: d itself (aliased)
                                  .Ret<xla::ffi::AnyBuffer>()  // d          bf16 [M, N]
                                  .Attr<int32_t>("block_m")    // 0: heuristic
                                  .Attr<int32_t>("block_n")    // 0: heuristic
                                  .Attr<int32_t>("num_sms"),   // 0: all SMs of the device
                              {xla::ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmMGroupedBf16GemmNnRagged, jdg::MGroupedBf16GemmNnRagged,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<xla::ffi::DeviceOrdinal>()
                                  .Arg<xla::ffi::AnyBuffer>()  // a          bf16 [M, K]
                                  .Arg<xla::ffi::AnyBuffer>()  // b          bf16 [G, K, N] (K a multiple of 64)
                                  .Arg<xla::ffi::AnyBuffer>()  // group_ends s32  [G] cumulative row ends
                                  .RemainingArgs()             // optional: d itself (aliased)
                                  .Ret<xla::ffi::AnyBuffer>()  // d          bf16 [M, N]
                                  .Attr<int32_t>("block_m")    // 0: heuristic
                                  .Attr<int32_t>("block_n")    // 0: heuristic
                                  .Attr<int32_t>("num_sms"),   // 0: all SMs of the device
                              {xla::ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxDeepgemmKGroupedBf16GemmContiguous, jdg::KGroupedBf16GemmContiguous,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<xla::ffi::DeviceOrdinal>()
                                  .Arg<xla::ffi::AnyBuffer>()   // a             bf16 [K, M] (TN) or [M, K] (NT)
                                  .Arg<xla::ffi::AnyBuffer>()   // b             bf16 [K, N] (TN) or [N, K] (NT)
                                  .Arg<xla::ffi::AnyBuffer>()   // k_group_sizes s32  [G] (multiples of 128)
                                  .RemainingArgs()              // optional: d itself (aliased; C if accumulate)
                                  .Ret<xla::ffi::AnyBuffer>()   // d             f32  [G, M, N]
                                  .Attr<int32_t>("block_m")     // 0: heuristic
                                  .Attr<int32_t>("block_n")     // 0: heuristic
                                  .Attr<int32_t>("num_sms")     // 0: all SMs of the device
                                  .Attr<int32_t>("accumulate")  // 1: d = c + ..., c aliased to d
                                  .Attr<int32_t>("major"),      // 3: TN (both MN-major), 0: NT (both K-major)
                              {xla::ffi::Traits::kCmdBufferCompatible});
