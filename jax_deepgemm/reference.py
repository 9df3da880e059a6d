"""Pure-jnp reference implementations of the FP8 GEMM ops.

Used in two ways, so both constraints apply:

* as the CPU lowering of the GPU op: everything is traceable with static shapes (no Python
  control flow on array values; only shapes and dtypes steer the code);
* as the test oracle for the CUDA kernels: the math is exact dequantization followed by a
  float32 matmul at ``Precision.HIGHEST`` (no TF32 / bf16 passes on GPU), which is what the
  kernels approximate (they accumulate FP8 products and promote with the scales every 128 K).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from .quantize import per_block_dequantize, per_token_dequantize

__all__ = ["SCALE_BLOCK", "fp8_gemm_nt_reference", "resolve_b_scale_kind"]

SCALE_BLOCK = 128
"""K (and, for 128x128 weight scales, N) extent that shares one scale."""

BScaleKind = Literal["auto", "block", "channel"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def resolve_b_scale_kind(b_shape, b_scale_shape, b_scale_kind: str = "auto") -> str:
    """Decides how ``b_scale`` is laid out: ``"block"`` or ``"channel"``.

    * ``"block"``   (1D2D): ``b_scale [ceil(N/128), ceil(K/128)]``, one scale per 128x128 tile;
    * ``"channel"`` (1D1D): ``b_scale [N, ceil(K/128)]``, one scale per row per 128 K.

    ``"auto"`` picks ``"block"`` when the shape matches the block form, else ``"channel"``. The
    two forms coincide only when ``ceil(N/128) == N`` (N == 1, or N == 0); there every row lies
    in one tile so both readings give the same dequantized B, and the choice does not matter.

    Raises:
      ValueError: unknown ``b_scale_kind`` or a ``b_scale`` shape that fits neither form
        (or not the explicitly requested one).
    """
    fn = "fp8_gemm_nt_reference"
    if b_scale_kind not in ("auto", "block", "channel"):
        raise ValueError(
            f"{fn}: b_scale_kind must be 'auto', 'block' or 'channel', got {b_scale_kind!r}"
        )
    n, k = b_shape
    num_k_blocks = _ceil_div(k, SCALE_BLOCK)
    expected = {
        "block": (_ceil_div(n, SCALE_BLOCK), num_k_blocks),
        "channel": (n, num_k_blocks),
    }
    got = tuple(b_scale_shape)
    if b_scale_kind == "auto":
        for kind in ("block", "channel"):
            if got == expected[kind]:
                return kind
        raise ValueError(
            f"{fn}: b_scale must have shape {expected['block']} (128x128 blocks) or "
            f"{expected['channel']} (per row) for b of shape {tuple(b_shape)}, got {got}"
        )
    if got != expected[b_scale_kind]:
        raise ValueError(
            f"{fn}: b_scale with b_scale_kind={b_scale_kind!r} must have shape "
            f"{expected[b_scale_kind]} for b of shape {tuple(b_shape)}, got {got}"
        )
    return b_scale_kind


def _check_operand(fn: str, name: str, x, rank_text: str, rank_ok) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must have a floating-point dtype, got {x.dtype}")
    if not rank_ok(x.ndim):
        raise ValueError(f"{fn}: {name} must have rank {rank_text}, got shape {tuple(x.shape)}")
    return x


def _check_c(fn: str, c, out_shape: tuple[int, ...]) -> jax.Array:
    c = _check_operand(fn, "c", c, ">= 1", lambda r: r >= 1)
    try:
        broadcast = np.broadcast_shapes(tuple(c.shape), out_shape)
    except ValueError:
        broadcast = None
    if broadcast != out_shape:
        raise ValueError(
            f"{fn}: c must have shape {out_shape} (or broadcast to it), got {tuple(c.shape)}"
        )
    return c


def fp8_gemm_nt_reference(
    a,
    a_scale,
    b,
    b_scale,
    c=None,
    out_dtype=jnp.bfloat16,
    *,
    b_scale_kind: BScaleKind = "auto",
) -> jax.Array:
    """Reference ``D = dequant(A) @ dequant(B)^T (+ C)`` for block-scaled FP8 operands.

    Args:
      a: ``[..., M, K]`` quantized activations (float8_e4m3fn in the op contract; any float
        dtype is accepted, its values are used as they are).
      a_scale: ``[..., M, ceil(K/128)]`` float scales, one per row per 128 K (same leading dims
        as ``a``).
      b: ``[N, K]`` quantized weights (unbatched).
      b_scale: ``[ceil(N/128), ceil(K/128)]`` (128x128 blocks, "1D2D") or
        ``[N, ceil(K/128)]`` (per row, "1D1D"); see ``b_scale_kind``.
      c: optional addend, ``[..., M, N]`` or anything broadcasting to it; added in float32.
      out_dtype: dtype of D (the GPU op uses bfloat16 for 1D2D and float32 for 1D1D).
      b_scale_kind: ``"auto"`` (infer from the shape), ``"block"`` or ``"channel"``; see
        :func:`resolve_b_scale_kind`.

    Returns:
      ``[..., M, N]`` array of ``out_dtype``. ``K`` need not be a multiple of 128 (the last
      scale block is partial). Math: dequantize to float32, matmul at
      ``Precision.HIGHEST`` with float32 accumulation, add ``c`` in float32, then cast.
    """
    fn = "fp8_gemm_nt_reference"
    a = _check_operand(fn, "a", a, ">= 2", lambda r: r >= 2)
    b = _check_operand(fn, "b", b, "2", lambda r: r == 2)
    a_scale = _check_operand(fn, "a_scale", a_scale, ">= 2", lambda r: r >= 2)
    b_scale = _check_operand(fn, "b_scale", b_scale, "2", lambda r: r == 2)
    out_dtype = jnp.dtype(out_dtype)
    if not jnp.issubdtype(out_dtype, jnp.floating):
        raise TypeError(f"{fn}: out_dtype must be a floating-point dtype, got {out_dtype}")

    *lead, m, k = a.shape
    n, b_k = b.shape
    if b_k != k:
        raise ValueError(
            f"{fn}: a and b must have the same K (last dim), got a {tuple(a.shape)} and "
            f"b {tuple(b.shape)}"
        )
    expected_a_scale = (*lead, m, _ceil_div(k, SCALE_BLOCK))
    if tuple(a_scale.shape) != expected_a_scale:
        raise ValueError(
            f"{fn}: a_scale must have shape {expected_a_scale} for a of shape "
            f"{tuple(a.shape)}, got {tuple(a_scale.shape)}"
        )
    kind = resolve_b_scale_kind(b.shape, b_scale.shape, b_scale_kind)
    out_shape = (*lead, m, n)
    if c is not None:
        c = _check_c(fn, c, out_shape)

    a_f32 = per_token_dequantize(a, a_scale, gran_k=SCALE_BLOCK)
    if kind == "block":
        b_f32 = per_block_dequantize(b, b_scale, block=SCALE_BLOCK)
    else:
        # Per-row-per-128-K weight scales are the per-token layout applied to B's rows.
        b_f32 = per_token_dequantize(b, b_scale, gran_k=SCALE_BLOCK)

    d = jnp.einsum(
        "...mk,nk->...mn",
        a_f32,
        b_f32,
        precision=jax.lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32,
    )
    if c is not None:
        d = d + c.astype(jnp.float32)
    return d.astype(out_dtype)
