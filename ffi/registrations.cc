// The only nanobind translation unit: exposes every FFI handler as a PyCapsule, keyed by its
// stable, versioned XLA custom-call target name. A target name is never reused with new semantics:
// a change of operands or meaning gets a new _v<N> so exported programs keep working.
#include <nanobind/nanobind.h>

#include <array>
#include <tuple>
#include <type_traits>

#include "xla/ffi/api/c_api.h"

#if JAX_DEEPGEMM_WITH_CUDA
#include "bf16_gemm.h"
#include "fp8_gemm.h"
#include "instances/bf16_gemm_instances.h"
#include "instances/fp8_gemm_instances.h"
#include "k_grouped_fp8_gemm.h"
#include "m_grouped_fp8_gemm.h"
#include "mqa_logits.h"
#endif

namespace nb = nanobind;

namespace {

template <typename Fn>
nb::capsule EncapsulateFfi(Fn* fn) {
  static_assert(std::is_invocable_r_v<XLA_FFI_Error*, Fn, XLA_FFI_CallFrame*>,
                "an XLA FFI handler must have type XLA_FFI_Error*(XLA_FFI_CallFrame*)");
  return nb::capsule(reinterpret_cast<void*>(fn));
}

nb::dict Registrations() {
  nb::dict targets;
#if JAX_DEEPGEMM_WITH_CUDA
  targets["jax_deepgemm_fp8_gemm_nt_1d2d_v2"] = EncapsulateFfi(JaxDeepgemmFp8GemmNt1d2dV2);  // exported programs
  targets["jax_deepgemm_fp8_gemm_nt_1d2d_v3"] = EncapsulateFfi(JaxDeepgemmFp8GemmNt1d2dV3);  // exported programs
  targets["jax_deepgemm_fp8_gemm_nt_1d2d_v4"] = EncapsulateFfi(JaxDeepgemmFp8GemmNt1d2d);
  targets["jax_deepgemm_fp8_gemm_nt_1d1d_v2"] = EncapsulateFfi(JaxDeepgemmFp8GemmNt1d1d);
  targets["jax_deepgemm_m_grouped_fp8_gemm_nt_contiguous_v1"] = EncapsulateFfi(JaxDeepgemmMGroupedFp8GemmNtContiguousV1);
  targets["jax_deepgemm_m_grouped_fp8_gemm_nt_contiguous_v2"] = EncapsulateFfi(JaxDeepgemmMGroupedFp8GemmNtContiguousV2);
  targets["jax_deepgemm_m_grouped_fp8_gemm_nt_contiguous_v3"] = EncapsulateFfi(JaxDeepgemmMGroupedFp8GemmNtContiguous);
  targets["jax_deepgemm_m_grouped_fp8_gemm_nt_masked_v2"] = EncapsulateFfi(JaxDeepgemmMGroupedFp8GemmNtMasked);
  targets["jax_deepgemm_m_grouped_fp8_gemm_nt_masked_v1"] = EncapsulateFfi(JaxDeepgemmMGroupedFp8GemmNtMaskedV1);
  targets["jax_deepgemm_m_grouped_fp8_gemm_nt_ragged_v1"] = EncapsulateFfi(JaxDeepgemmMGroupedFp8GemmNtRaggedV1);
  targets["jax_deepgemm_m_grouped_fp8_gemm_nt_ragged_v2"] = EncapsulateFfi(JaxDeepgemmMGroupedFp8GemmNtRagged);
  targets["jax_deepgemm_fp8_mqa_logits_v1"] = EncapsulateFfi(JaxDeepgemmFp8MqaLogits);
  targets["jax_deepgemm_fp4_mqa_logits_v1"] = EncapsulateFfi(JaxDeepgemmFp4MqaLogits);
  targets["jax_deepgemm_paged_mqa_logits_metadata_v1"] = EncapsulateFfi(JaxDeepgemmPagedMqaLogitsMetadata);
  targets["jax_deepgemm_fp8_paged_mqa_logits_v1"] = EncapsulateFfi(JaxDeepgemmFp8PagedMqaLogits);
  targets["jax_deepgemm_fp4_paged_mqa_logits_v1"] = EncapsulateFfi(JaxDeepgemmFp4PagedMqaLogits);
  targets["jax_deepgemm_bf16_gemm_v1"] = EncapsulateFfi(JaxDeepgemmBf16GemmV1);  // exported programs
  targets["jax_deepgemm_bf16_gemm_v2"] = EncapsulateFfi(JaxDeepgemmBf16Gemm);
  targets["jax_deepgemm_m_grouped_bf16_gemm_nt_contiguous_v1"] = EncapsulateFfi(JaxDeepgemmMGroupedBf16GemmNtContiguous);
  targets["jax_deepgemm_m_grouped_bf16_gemm_nt_masked_v1"] = EncapsulateFfi(JaxDeepgemmMGroupedBf16GemmNtMasked);
  targets["jax_deepgemm_m_grouped_bf16_gemm_nt_ragged_v1"] = EncapsulateFfi(JaxDeepgemmMGroupedBf16GemmNtRagged);
  targets["jax_deepgemm_m_grouped_bf16_gemm_nn_ragged_v1"] = EncapsulateFfi(JaxDeepgemmMGroupedBf16GemmNnRagged);
  targets["jax_deepgemm_k_grouped_bf16_gemm_v1"] = EncapsulateFfi(JaxDeepgemmKGroupedBf16GemmContiguous);
  targets["jax_deepgemm_k_grouped_fp8_gemm_nt_contiguous_v1"] = EncapsulateFfi(JaxDeepgemmKGroupedFp8GemmNtContiguousV1);
  targets["jax_deepgemm_k_grouped_fp8_gemm_nt_contiguous_v2"] = EncapsulateFfi(JaxDeepgemmKGroupedFp8GemmNtContiguous);
#endif
  return targets;
}

// The compiled (block_m, block_n, cluster_m, cluster_n) kernel shapes per FP8 GEMM kernel, for tests and tuning sweeps.
nb::dict Fp8GemmTiles() {
  nb::dict tiles;
  nb::list block, channel;
#if JAX_DEEPGEMM_WITH_CUDA
#define JDG_APPEND_BLOCK(BM, BN, CLUSTER_M, CLUSTER_N) block.append(nb::make_tuple(BM, BN, CLUSTER_M, CLUSTER_N));
#define JDG_APPEND_CHANNEL(BM, BN, CLUSTER_M, CLUSTER_N) channel.append(nb::make_tuple(BM, BN, CLUSTER_M, CLUSTER_N));
  JDG_FP8_1D2D_ALL(JDG_APPEND_BLOCK)
  JDG_FP8_1D1D_ALL(JDG_APPEND_CHANNEL)
#undef JDG_APPEND_BLOCK
#undef JDG_APPEND_CHANNEL
#endif
  tiles["1d2d"] = block;
  tiles["1d1d"] = channel;
  return tiles;
}

// The compiled (block_m, block_n, cluster_m, major) shapes of the BF16 GEMM kernel, for tests and tuning
// sweeps (major: 0 NT, 1 TT, 2 NN, 3 TN).
nb::list Bf16GemmTiles() {
  nb::list tiles;
#if JAX_DEEPGEMM_WITH_CUDA
#define JDG_APPEND_BF16(BM, BN, CLUSTER, MAJOR) tiles.append(nb::make_tuple(BM, BN, CLUSTER, MAJOR));
  JDG_BF16_ALL(JDG_APPEND_BF16)
#undef JDG_APPEND_BF16
#endif
  return tiles;
}

// Whether the dense 1D2D kernel would run a 128- or 256-row tile given MN-major A scales (the tiles that
// read them faster than K-major ones): fp8_gemm_nt asks at trace time and transposes the scales if so.
bool Fp8GemmPrefersMnMajorSfa(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m,
                              int cluster_n) {
#if JAX_DEEPGEMM_WITH_CUDA
  return jdg::Fp8GemmPrefersMnMajorSfa(m, n, k, num_sms, block_m, block_n, cluster_m, cluster_n);
#else
  return false;
#endif
}

// How many CTAs the dense 1D2D kernel's heuristic splits each tile's K-blocks over (1: none, or no CUDA kernels).
int Fp8GemmSplitK(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m, int cluster_n, int split_k,
                  bool sfa_mn_major) {
#if JAX_DEEPGEMM_WITH_CUDA
  return jdg::Fp8GemmSplitK(m, n, k, num_sms, block_m, block_n, cluster_m, cluster_n, split_k, sfa_mn_major);
#else
  return 1;
#endif
}

// Bytes of split-K scratch the dense 1D2D kernel takes for this problem (0: it splits through clusters or not at
// all, or no CUDA kernels).
int64_t Fp8GemmSplitWorkspaceBytes(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m,
                                   int cluster_n, int split_k, bool sfa_mn_major) {
#if JAX_DEEPGEMM_WITH_CUDA
  return jdg::Fp8GemmSplitWorkspaceBytes(m, n, k, num_sms, block_m, block_n, cluster_m, cluster_n, split_k,
                                         sfa_mn_major);
#else
  return 0;
#endif
}

// A heuristic's tile as a Python tuple (the *_tile introspection functions below).
template <size_t N>
nb::object TileTuple(const std::array<int, N>& t) {
  return std::apply([](auto... v) { return nb::make_tuple(v...); }, t);
}

// The 1D2D heuristic's (block_m, block_n, cluster_m, cluster_n, split_k) for a dense problem (None without CUDA
// kernels; split_k < 0: through global memory).
nb::object Fp8GemmBlockTile(int m, int n, int k, int num_sms, bool sfa_mn_major) {
#if JAX_DEEPGEMM_WITH_CUDA
  return TileTuple(jdg::Fp8GemmBlockTile(m, n, k, num_sms, sfa_mn_major));
#else
  return nb::none();
#endif
}

// The 1D1D heuristic's (block_m, block_n, cluster_m, cluster_n) for a dense (k_groups = 1) or K-grouped problem
// (None without CUDA kernels).
nb::object Fp8GemmPerChannelTile(int m, int n, int k, int num_sms, int k_groups, bool sfa_mn_major) {
#if JAX_DEEPGEMM_WITH_CUDA
  return TileTuple(jdg::Fp8GemmPerChannelTile(m, n, k, num_sms, k_groups, sfa_mn_major));
#else
  return nb::none();
#endif
}

// Bytes of split-K scratch the dense BF16 kernel takes for this problem (0: no split, or no CUDA kernels; -1: the
// forced config is not compiled).
int64_t Bf16GemmSplitWorkspaceBytes(int m, int n, int k, int num_sms, int block_m, int block_n, int cluster_m,
                                    int split_k, bool out_fp32, int major) {
#if JAX_DEEPGEMM_WITH_CUDA
  return jdg::Bf16GemmSplitWorkspaceBytes(m, n, k, num_sms, block_m, block_n, cluster_m, split_k, out_fp32, major);
#else
  return 0;
#endif
}

// The dense BF16 heuristic's (block_m, block_n, cluster_m, split_k) (None without CUDA kernels).
nb::object Bf16GemmTile(int m, int n, int k, int num_sms, bool out_fp32, int major) {
#if JAX_DEEPGEMM_WITH_CUDA
  return TileTuple(jdg::Bf16GemmTile(m, n, k, num_sms, out_fp32, major));
#else
  return nb::none();
#endif
}

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "jax_deepgemm XLA FFI handlers (CUDA, sm_90a)";
  m.def("registrations", &Registrations, "FFI target name -> handler capsule (empty without CUDA kernels)");
  m.def("fp8_gemm_tiles", &Fp8GemmTiles, "compiled (block_m, block_n) shapes per FP8 GEMM kernel");
  m.def("bf16_gemm_tiles", &Bf16GemmTiles, "compiled (block_m, block_n, cluster_m, major) shapes of the BF16 GEMM kernel");
  m.def("fp8_gemm_prefers_mn_major_sfa", &Fp8GemmPrefersMnMajorSfa,
        "whether the 1D2D heuristic picks a 128- or 256-row tile (which stream MN-major A scales by TMA)");
  m.def("fp8_gemm_split_k", &Fp8GemmSplitK,
        "CTAs the 1D2D heuristic splits each tile's K-blocks over for this problem (1: none)");
  m.def("fp8_gemm_split_workspace_bytes", &Fp8GemmSplitWorkspaceBytes,
        "bytes of FP32 split-K partials the 1D2D kernel takes for this problem (0: none through global memory)");
  m.def("fp8_gemm_block_tile", &Fp8GemmBlockTile,
        "(block_m, block_n, cluster_m, cluster_n, split_k) of the 1D2D heuristic for a dense problem");
  m.def("fp8_gemm_per_channel_tile", &Fp8GemmPerChannelTile,
        "(block_m, block_n, cluster_m, cluster_n) of the 1D1D heuristic, dense (k_groups = 1) or K-grouped");
  m.def("bf16_gemm_split_workspace_bytes", &Bf16GemmSplitWorkspaceBytes,
        "bytes of FP32 split-K partials the dense BF16 kernel takes for this problem (0: no split)");
  m.def("bf16_gemm_tile", &Bf16GemmTile, "(block_m, block_n, cluster_m, split_k) of the dense BF16 heuristic");
  m.def("has_cuda_kernels", [] { return bool(JAX_DEEPGEMM_WITH_CUDA); });
}
