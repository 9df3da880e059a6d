"""What a JAX user can do today instead of ``jax_deepgemm.fp8_gemm_nt`` (benchmark baselines).

All take the NT layout of the op, ``a [M, K]``, ``b [N, K]`` (float8_e4m3fn), and return
``D = A @ B^T`` as bfloat16 ``[M, N]``. They are small named functions so that the benchmark and
its JSON say exactly what was timed; :func:`jax_deepgemm.testing.timing.compiled_hlo_stats`
shows what XLA made of each (``__cublas$lt$matmul$f8`` = cuBLASLt FP8 GEMM).

* XLA per-tensor FP8 (one f32 scale per operand; what cuBLASLt FP8 supports on Hopper). XLA's
  GEMM rewriter turns two spellings into a cuBLASLt FP8 call (``__cublas$lt$matmul$f8``), and
  we time both; the benchmark reports the faster per shape:

  - :func:`xla_fp8_dot` -- FP8 operands straight into ``dot_general(...,
    preferred_element_type=bf16)``, the product multiplied by ``sa * sb``;
  - :func:`xla_fp8_dq_pattern` -- the documented "dequantize then dot" pattern
    (NVIDIA JAX-Toolbox "native XLA FP8" guide; XLA test ``ScaledABUnscaledDF8``):
    ``(a.astype(f32) * sa) @ (b.astype(f32) * sb).T`` with bf16 output, which the rewriter
    matches back to FP8 operands.

  Seen on H100 with jax 0.11.2 (profiler, 2026-11-25): at M=4096 ``xla_fp8_dot`` is one FP8
  GEMM with bf16 D plus a ~1.3 us scalar kernel, while ``xla_fp8_dq_pattern`` writes f32 D and
  converts it in a separate kernel (+10 % to +110 % kernel time); at M=64/128 both write f32 D and finish in a
  ~2-4 us second kernel. Spellings that do NOT become FP8 there: the pattern with bf16
  dequantized operands (``a.astype(bf16) * sa``: a bf16 GEMM after two dequantize fusions), and
  FP8 ``dot_general`` with f32 output cast to bf16 afterwards (f32 D + convert kernel). Per-tensor
  scaling is NOT our recipe (it loses accuracy on outlier-heavy data); it is the FP8 speed a JAX
  user can reach today.
* :func:`dequant_bf16_gemm` -- the same block-scaled inputs as ours (1x128 A, 128x128 B),
  dequantized to bf16 inside the jitted function, then a bf16 ``jnp.dot``. This is what
  ``jax.nn.scaled_matmul`` becomes on Hopper, and what a user writes by hand; the timed region
  includes the dequantization.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jax_deepgemm.quantize import per_block_dequantize, per_token_dequantize

__all__ = [
    "NT_DIMS",
    "per_tensor_cast_to_fp8",
    "xla_fp8_dot",
    "xla_fp8_dq_pattern",
    "dequant_bf16_gemm",
    "XLA_FP8_VARIANTS",
    "CUBLASLT_FP8_TARGET",
]

NT_DIMS = (((1,), (1,)), ((), ()))
"""dot_general dimension numbers of ``A [M, K] @ B[N, K]^T`` (contract K of both)."""

CUBLASLT_FP8_TARGET = "__cublas$lt$matmul$f8"
"""Custom-call target of XLA's cuBLASLt FP8 GEMM (present in the compiled HLO when it fires)."""

_FP8_MAX = 448.0


def per_tensor_cast_to_fp8(x) -> tuple[jax.Array, jax.Array]:
    """One power-of-two f32 scale for the whole tensor: ``x ~= x_fp8 * scale``.

    The scale is ``2 ** ceil(log2(amax / 448))``, exact in bf16 too (:func:`xla_fp8_dot`
    multiplies its bf16 output by ``sa * sb`` in bf16). Returns ``(x_fp8, scale)``, ``scale`` a 0-d f32.
    """
    x = jnp.asarray(x, jnp.float32)
    amax = jnp.maximum(jnp.max(jnp.abs(x)), 1e-4)
    scale = jnp.exp2(jnp.ceil(jnp.log2(amax / _FP8_MAX))).astype(jnp.float32)
    return (x / scale).astype(jnp.float8_e4m3fn), scale


def xla_fp8_dot(a, sa, b, sb) -> jax.Array:
    """FP8 x FP8 ``dot_general`` with bf16 output, times ``sa * sb`` (folded into the cuBLASLt FP8
    call by XLA)."""
    d = jax.lax.dot_general(a, b, NT_DIMS, preferred_element_type=jnp.bfloat16)
    return d * (sa * sb).astype(jnp.bfloat16)


def xla_fp8_dq_pattern(a, sa, b, sb) -> jax.Array:
    """``(a.astype(f32) * sa) @ (b.astype(f32) * sb).T`` with bf16 output: the documented XLA
    FP8 pattern, rewritten by XLA into a cuBLASLt FP8 call. (Written with bf16 dequantized
    operands instead, XLA 0.11.2 keeps a bf16 GEMM; see the module docstring.)"""
    a_dq = a.astype(jnp.float32) * sa
    b_dq = b.astype(jnp.float32) * sb
    return jax.lax.dot_general(a_dq, b_dq, NT_DIMS, preferred_element_type=jnp.bfloat16)


XLA_FP8_VARIANTS = {"xla_fp8_dot": xla_fp8_dot, "xla_fp8_dq_pattern": xla_fp8_dq_pattern}
"""Both spellings of the XLA per-tensor FP8 GEMM; the benchmark reports the faster as baseline."""


def dequant_bf16_gemm(a, a_scale, b, b_scale) -> jax.Array:
    """Block-scaled inputs (1x128 ``a_scale [M, K/128]``, 128x128 ``b_scale [N/128, K/128]``)
    dequantized to bf16, then a bf16 dot with bf16 output; dequantization is part of it."""
    a_bf16 = per_token_dequantize(a, a_scale, dtype=jnp.bfloat16)
    b_bf16 = per_block_dequantize(b, b_scale, dtype=jnp.bfloat16)
    return jnp.dot(a_bf16, b_bf16.T, preferred_element_type=jnp.bfloat16)
