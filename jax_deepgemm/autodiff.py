"""Differentiable linear layers on the library's GEMMs: FP8 (DeepSeek-V3's FP8 training recipe, dense
and MoE) and BF16 (MoE).

``fp8_linear(x, w) = x @ w.T`` for BF16/FP32 ``x [..., M, K]`` and ``w [N, K]``, computed in FP8:

* forward: ``x`` quantized 1x128 per token, ``w`` 128x128 per block, ``fp8_gemm_nt`` (BF16 out);
* dgrad ``dX = dY @ W``: ``dY`` quantized 1x128 per token, times the forward's quantized ``w``
  read as ``[K_contract = N, K]`` (``fp8_gemm_nn``: an exact transpose of the 128x128 blocks);
* wgrad ``dW = dY^T @ X``: ``dY`` and ``X`` quantized per 128 tokens (scales along the reduced M
  axis, ``per_channel_cast_to_fp8``), ``fp8_gemm_tn`` with FP32 accumulation.

``fp8_grouped_linear(x, w, group_sizes)`` is the MoE form (``jax.lax.ragged_dot`` layout, expert
weights ``w [G, N, K]``): forward and dgrad on the ragged M-grouped GEMM, wgrad on the K-grouped GEMM
over each expert's tokens (gathered into 128-token-aligned segments; the zero rows in between add
nothing). All sizes stay on the device: no host synchronisation.

``bf16_grouped_linear(x, w, group_sizes)`` is the same MoE layer in BF16 (no quantization): forward
and dgrad on the BF16 ragged GEMMs (dgrad reads ``w [G, N, K]`` in place as ``[G, K', N']``), wgrad
on the BF16 K-grouped GEMM over the same 128-token-aligned segments.

Every GEMM is a jax_deepgemm op, so on CPU the same code runs the references. Gradients come out in
the dtypes of ``x`` and ``w``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jax_deepgemm import _checks
from jax_deepgemm import grouped_layout as _gl
from jax_deepgemm.bf16_gemm import m_grouped_bf16_gemm_nn_ragged, m_grouped_bf16_gemm_nt_ragged
from jax_deepgemm.fp8_gemm import fp8_gemm_nn, fp8_gemm_nt, fp8_gemm_tn
from jax_deepgemm.k_grouped_gemm import (
    K_GROUP_ALIGNMENT,
    k_grouped_bf16_gemm_tn_contiguous,
    k_grouped_fp8_gemm_tn_contiguous,
)
from jax_deepgemm.m_grouped_gemm import m_grouped_fp8_gemm_nt_ragged
from jax_deepgemm.quantize import per_block_cast_to_fp8, per_channel_cast_to_fp8, per_token_cast_to_fp8

_ROW_PITCH = 16  # the wgrad GEMM contracts over tokens: its K (= M here) must be a multiple of 16


def _check(x, w, op="fp8_linear", w_rank=2):
    for name, v in (("x", x), ("w", w)):
        if not jnp.issubdtype(v.dtype, jnp.floating) or v.dtype.itemsize < 2:
            raise TypeError(f"{op}: {name} must be bfloat16, float16 or float32, got {_checks.dtype_name(v.dtype)}")
    _checks.check_rank(x, op, "x", at_least=2)
    _checks.check_rank(w, op, "w", exact=w_rank)
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"{op}: x and w must share K (last dim), got x {x.shape} and w {w.shape}")
    if w.shape[-1] % 16 != 0:
        raise ValueError(f"{op}: K = {w.shape[-1]} must be a multiple of 16 (the kernels' TMA row pitch)")


@jax.custom_vjp
def fp8_linear(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w.T`` in FP8 (DeepSeek-V3 recipe), differentiable in ``x`` and ``w``; output in ``x.dtype``.

    Args:
      x: ``[..., M, K]`` activations (bfloat16/float16/float32).
      w: ``[N, K]`` weights (bfloat16/float16/float32), quantized 128x128 on every call.
    """
    return _forward(x, w)[0]


def _forward(x, w):
    _check(x, w)
    xq = per_token_cast_to_fp8(x)
    wq = per_block_cast_to_fp8(w)
    y = fp8_gemm_nt(xq, wq).astype(x.dtype)
    return y, (x, wq, jnp.zeros((0,), w.dtype))  # the empty array carries w's dtype to the backward


def _backward(res, dy):
    x, wq, w_dtype_token = res
    *batch, m, k = x.shape
    n = wq[0].shape[0]
    dy2 = dy.reshape(-1, n)
    x2 = x.reshape(-1, k)
    # dgrad: dX[M, K] = dY[M, N] . W[N, K], dY quantized 1x128 along N (the contracted axis)
    dx = fp8_gemm_nn(per_token_cast_to_fp8(dy2), wq).astype(x.dtype).reshape(x.shape)
    # wgrad: dW[N, K] = dY^T . X, both quantized per 128 tokens (the contracted axis); zero rows
    # pad the token count to the GEMM's 16-element pitch without changing the sum.
    pad = -dy2.shape[0] % _ROW_PITCH
    dy_c = per_channel_cast_to_fp8(jnp.pad(dy2, ((0, pad), (0, 0))))
    x_c = per_channel_cast_to_fp8(jnp.pad(x2, ((0, pad), (0, 0))))
    dw = fp8_gemm_tn(dy_c, x_c, out_dtype=jnp.float32).astype(w_dtype_token.dtype)
    return dx, dw


fp8_linear.defvjp(_forward, _backward)


# ---------------------------------------------------------------------------------------------
# MoE: ragged grouped linear
# ---------------------------------------------------------------------------------------------


@jax.custom_vjp
def fp8_grouped_linear(x: jax.Array, w: jax.Array, group_sizes: jax.Array) -> jax.Array:
    """``jax.lax.ragged_dot(x, w.swapaxes(1, 2), group_sizes)`` in FP8, differentiable in ``x`` and ``w``.

    Rows ``[sum(group_sizes[:g]), sum(group_sizes[:g+1]))`` of ``x`` are multiplied by expert g's
    ``w[g].T``; rows past ``sum(group_sizes)`` give 0 (and get a zero gradient).

    Args:
      x: ``[M, K]`` tokens sorted by expert (bfloat16/float16/float32).
      w: ``[G, N, K]`` expert weights (bfloat16/float16/float32), quantized 128x128 on every call.
      group_sizes: ``[G]`` integer rows per expert, host or device data (see
        :func:`m_grouped_fp8_gemm_nt_ragged`); not differentiated.

    Backward: ``dX = ragged(dY, W)`` with dY quantized 1x128 along N and the forward's quantized
    blocks transposed (exact); ``dW[g] = dY_g^T X_g`` by the K-grouped GEMM, dY and X quantized per
    128 tokens within each expert's 128-aligned segment. N must be a multiple of 16 (dX contracts it).
    """
    return _grouped_forward(x, w, group_sizes)[0]


def _check_grouped(x, w, group_sizes, op="fp8_grouped_linear"):
    _check(x, w, op, w_rank=3)
    _checks.check_rank(x, op, "x", exact=2)
    if w.shape[1] % 16 != 0:
        raise ValueError(f"{op}: N = w.shape[1] = {w.shape[1]} must be a multiple of 16 (dX contracts over N)")
    return _gl.check_group_sizes(group_sizes, fn=op, num_rows=x.shape[0], num_groups=w.shape[0], rows_name="M")


def _grouped_forward(x, w, group_sizes):
    sizes = _check_grouped(x, w, group_sizes)
    wq = per_block_cast_to_fp8(w)
    y = m_grouped_fp8_gemm_nt_ragged(per_token_cast_to_fp8(x), wq, sizes).astype(x.dtype)
    return y, (x, wq, sizes, jnp.zeros((0,), w.dtype))


def _grouped_backward(res, dy):
    x, wq, sizes, w_dtype_token = res
    m = x.shape[0]
    num_groups = wq[0].shape[0]
    # dgrad: dX = dY . W per expert: dY quantized along N, W's 128x128 blocks transposed ([G, K, N]).
    wq_t = (jnp.swapaxes(wq[0], 1, 2), jnp.swapaxes(wq[1], 1, 2))
    dx = m_grouped_fp8_gemm_nt_ragged(per_token_cast_to_fp8(dy.astype(x.dtype)), wq_t, sizes).astype(x.dtype)
    # wgrad: dW[g] = dY_g^T X_g, dY and X quantized per 128 tokens of each expert's aligned segment.
    dy_seg, x_seg, k_sizes = _token_segments(dy, x, sizes, num_groups)
    dw = k_grouped_fp8_gemm_tn_contiguous(per_channel_cast_to_fp8(dy_seg), per_channel_cast_to_fp8(x_seg), k_sizes)
    return dx, dw.astype(w_dtype_token.dtype), None


def _token_segments(dy, x, sizes, num_groups):
    """The wgrad's K-grouped operands: each expert's tokens (rows of ``dy`` and ``x``) gathered into a
    segment that starts at a multiple of 128 (zero rows pad it), so a 128-token block (an FP8 scale
    block, the K-grouped GEMMs' size unit) never holds two experts; returns the gathered ``dy``,
    ``x`` and the segment lengths (multiples of 128, on the device) as the K-grouped group sizes."""
    m_pad = _gl.max_aligned_rows(x.shape[0], num_groups, K_GROUP_ALIGNMENT)
    sizes = sizes.astype(jnp.int32)
    _, _, gather = _gl._aligned_layout(sizes, m_pad, K_GROUP_ALIGNMENT)
    _, _, starts, ends = _gl._aligned_geometry(sizes, m_pad, K_GROUP_ALIGNMENT)  # as _aligned_layout's
    k_sizes = jnp.minimum(ends, m_pad) - jnp.minimum(starts, m_pad)
    return _gl._take_rows(dy, gather), _gl._take_rows(x, gather), k_sizes


fp8_grouped_linear.defvjp(_grouped_forward, _grouped_backward)


# ---------------------------------------------------------------------------------------------
# MoE in BF16: ragged grouped linear without quantization
# ---------------------------------------------------------------------------------------------


@jax.custom_vjp
def bf16_grouped_linear(x: jax.Array, w: jax.Array, group_sizes: jax.Array) -> jax.Array:
    """``jax.lax.ragged_dot(x, w.swapaxes(1, 2), group_sizes)`` on the BF16 kernels, differentiable in
    ``x`` and ``w``; output in ``x.dtype``.

    Same layout and group semantics as :func:`fp8_grouped_linear`; operands are cast to bfloat16
    (products exact, sums in FP32). Backward: ``dX = ragged(dY, W)`` on the NN ragged GEMM (W read
    in place as ``[G, K'=N, N'=K]``), ``dW[g] = dY_g^T X_g`` on the BF16 K-grouped GEMM over each
    expert's 128-aligned token segment (FP32 accumulation, then ``w.dtype``). K and N must be
    multiples of 16.

    Args:
      x: ``[M, K]`` tokens sorted by expert (bfloat16/float16/float32).
      w: ``[G, N, K]`` expert weights (bfloat16/float16/float32).
      group_sizes: ``[G]`` integer rows per expert, host or device data; not differentiated.
    """
    return _bf16_grouped_forward(x, w, group_sizes)[0]


def _bf16_grouped_forward(x, w, group_sizes):
    sizes = _check_grouped(x, w, group_sizes, op="bf16_grouped_linear")
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    y = m_grouped_bf16_gemm_nt_ragged(xb, wb, sizes).astype(x.dtype)
    return y, (xb, wb, sizes, jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))


def _bf16_grouped_backward(res, dy):
    xb, wb, sizes, x_dtype_token, w_dtype_token = res
    dyb = dy.astype(jnp.bfloat16)
    dx = m_grouped_bf16_gemm_nn_ragged(dyb, wb, sizes).astype(x_dtype_token.dtype)
    dy_seg, x_seg, k_sizes = _token_segments(dyb, xb, sizes, wb.shape[0])
    dw = k_grouped_bf16_gemm_tn_contiguous(dy_seg, x_seg, k_sizes).astype(w_dtype_token.dtype)
    return dx, dw, None


bf16_grouped_linear.defvjp(_bf16_grouped_forward, _bf16_grouped_backward)
