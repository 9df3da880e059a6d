"""Loads the compiled extension ``_C`` once and registers its XLA FFI targets for CUDA.

A CPU-only install (no CUDA compiler at build time) still imports: ``has_cuda_kernels()`` is then
False, every op lowers to its jnp reference on CPU, and a GPU lowering raises a clear error.
"""

from __future__ import annotations

import importlib

import jax

try:
    # import_module (not `from jax_deepgemm import _C`) so a missing extension reports
    # "No module named 'jax_deepgemm._C'" rather than a misleading circular-import message.
    _C = importlib.import_module("jax_deepgemm._C")

    _IMPORT_ERROR: ImportError | None = None
except ImportError as e:  # pragma: no cover - exercised only on broken installs
    _C = None
    _IMPORT_ERROR = e


def has_cuda_kernels() -> bool:
    """True when this install carries the sm_90a kernels (they still need a Hopper GPU to run)."""
    return _C is not None and bool(_C.has_cuda_kernels())


def registered_targets() -> tuple[str, ...]:
    """The FFI target names this install registered for the CUDA platform."""
    return tuple(_REGISTERED)


def export_disabled_checks() -> list:
    """``disabled_checks`` for ``jax.export.export(..., platforms=["cuda"])`` of a program using these ops.

    jax.export refuses custom calls outside its own allowlist unless told otherwise; our targets
    are versioned (``..._v1``) and keep their ABI for that version, so a fresh process that imports
    jax_deepgemm (which registers them) can run the exported program.
    """
    return [jax.export.DisabledSafetyCheck.custom_call(t) for t in _REGISTERED]


def missing_kernels_message(op_name: str) -> str:
    why = f"the extension failed to import ({_IMPORT_ERROR})" if _C is None else "it was built without CUDA"
    return (
        f"{op_name} cannot run on the GPU: {why}. Reinstall on a machine with nvcc >= 12.8 "
        "(pip install --force-reinstall --no-deps jax_deepgemm), or run on CPU."
    )


def _register() -> list[str]:
    if _C is None:
        return []
    names = []
    for name, capsule in _C.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform="CUDA")
        names.append(name)
    return names


_REGISTERED = _register()


def fp8_gemm_tiles() -> dict[str, list[tuple[int, int]]]:
    """Compiled ``(block_m, block_n, cluster_m, cluster_n)`` shapes of the FP8 GEMM kernels: {"1d2d": [...], "1d1d": [...]}."""
    if _C is None:
        return {"1d2d": [], "1d1d": []}
    return {kind: [tuple(t) for t in tiles] for kind, tiles in _C.fp8_gemm_tiles().items()}


def fp8_gemm_prefers_mn_major_sfa(m: int, n: int, k: int, num_sms: int, block_m: int = 0, block_n: int = 0,
                                  cluster_m: int = 0, cluster_n: int = 0) -> bool:
    """Whether the dense 1D2D FP8 GEMM heuristic (or the forced tile) runs a 128- or 256-row tile for this problem given
    MN-major A scales: the tiles that stream those by TMA. False without the CUDA kernels."""
    if _C is None or not _C.has_cuda_kernels():
        return False
    return bool(_C.fp8_gemm_prefers_mn_major_sfa(m, n, k, num_sms, block_m, block_n, cluster_m, cluster_n))


def fp8_gemm_split_k(m: int, n: int, k: int, num_sms: int, block_m: int = 0, block_n: int = 0, cluster_m: int = 0,
                     cluster_n: int = 0, split_k: int = 0, sfa_mn_major: bool = False) -> int:
    """How many CTAs the dense 1D2D FP8 GEMM kernel's heuristic splits each output tile's K-blocks over for this
    problem and (forced or heuristic) config; 1 when it does not split K or without the CUDA kernels."""
    if _C is None or not _C.has_cuda_kernels():
        return 1
    return int(_C.fp8_gemm_split_k(m, n, k, num_sms, block_m, block_n, cluster_m, cluster_n, split_k,
                                   bool(sfa_mn_major)))


def fp8_gemm_split_workspace_bytes(m: int, n: int, k: int, num_sms: int, block_m: int = 0, block_n: int = 0,
                                   cluster_m: int = 0, cluster_n: int = 0, split_k: int = 0,
                                   sfa_mn_major: bool = False) -> int:
    """Bytes of FP32 split-K partials the dense 1D2D FP8 GEMM kernel takes for this problem and (forced or heuristic)
    config: > 0 only when it splits K through global memory; 0 without the CUDA kernels."""
    if _C is None or not _C.has_cuda_kernels():
        return 0
    return int(_C.fp8_gemm_split_workspace_bytes(m, n, k, num_sms, block_m, block_n, cluster_m, cluster_n, split_k,
                                                 bool(sfa_mn_major)))


def fp8_gemm_block_tile(m: int, n: int, k: int, num_sms: int,
                        sfa_mn_major: bool = False) -> tuple[int, int, int, int, int] | None:
    """The ``(block_m, block_n, cluster_m, cluster_n, split_k)`` the dense 1D2D FP8 GEMM heuristic (128 x 128 B
    scales, BF16 out) picks (``split_k`` before the launch lowers it to fit the GPU's clusters; negative: the split's
    partials go through global memory). None without the CUDA kernels."""
    if _C is None or not _C.has_cuda_kernels():
        return None
    return tuple(_C.fp8_gemm_block_tile(m, n, k, num_sms, bool(sfa_mn_major)))


def fp8_gemm_per_channel_tile(m: int, n: int, k: int, num_sms: int, k_groups: int = 1,
                              sfa_mn_major: bool = False) -> tuple[int, int, int, int] | None:
    """The ``(block_m, block_n, cluster_m, cluster_n)`` the 1D1D FP8 GEMM heuristic (per-channel B scales, FP32 out)
    picks: the dense GEMM (``k_groups`` = 1) or the K-grouped one (``k_groups`` problems of mean K ``k``). None without
    the CUDA kernels."""
    if _C is None or not _C.has_cuda_kernels():
        return None
    return tuple(_C.fp8_gemm_per_channel_tile(m, n, k, num_sms, k_groups, bool(sfa_mn_major)))


def bf16_gemm_split_workspace_bytes(m: int, n: int, k: int, num_sms: int, block_m: int = 0, block_n: int = 0,
                                    cluster_m: int = 0, split_k: int = 0, out_fp32: bool = False,
                                    major: int = 0) -> int:
    """Bytes of FP32 split-K partials the dense BF16 GEMM kernel takes for this problem and (forced or heuristic)
    config: > 0 only when it splits K; -1 when no compiled kernel runs the forced config (e.g. a split over more tiles
    than a split launch holds); 0 without the CUDA kernels."""
    if _C is None or not _C.has_cuda_kernels():
        return 0
    return int(_C.bf16_gemm_split_workspace_bytes(m, n, k, num_sms, block_m, block_n, cluster_m, split_k,
                                                  bool(out_fp32), major))


def bf16_gemm_tile(m: int, n: int, k: int, num_sms: int, out_fp32: bool = False,
                   major: int = 0) -> tuple[int, int, int, int] | None:
    """The ``(block_m, block_n, cluster_m, split_k)`` the dense BF16 GEMM heuristic picks. None without the CUDA
    kernels."""
    if _C is None or not _C.has_cuda_kernels():
        return None
    return tuple(_C.bf16_gemm_tile(m, n, k, num_sms, bool(out_fp32), major))


def device_sm_count(default: int = 132) -> int:
    """SM count of the first GPU (what the kernels' heuristics size their grids for); ``default`` (H100/H200) when
    there is no GPU, e.g. when tracing on a CPU machine for export."""
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        return default
    return int(getattr(gpus[0], "core_count", 0) or default) if gpus else default
