"""Differentiable FP8 linear layer in DeepSeek-V3's FP8 training recipe.

``fp8_linear(x, w) = x @ w.T`` for BF16/FP32 ``x [..., M, K]`` and ``w [N, K]``, computed in FP8:

* forward: ``x`` quantized 1x128 per token, ``w`` 128x128 per block, ``fp8_gemm_nt`` (BF16 out);
* dgrad ``dX = dY @ W``: ``dY`` quantized 1x128 per token, times the forward's quantized ``w``
  read as ``[K_contract = N, K]`` (``fp8_gemm_nn``: an exact transpose of the 128x128 blocks);
* wgrad ``dW = dY^T @ X``: ``dY`` and ``X`` quantized per 128 tokens (scales along the reduced M
  axis, ``per_channel_cast_to_fp8``), ``fp8_gemm_tn`` with FP32 accumulation.

Every GEMM is a jax_deepgemm op, so on CPU the same code runs the references. Gradients come out in
the dtypes of ``x`` and ``w``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jax_deepgemm import _checks
from jax_deepgemm.fp8_gemm import fp8_gemm_nn, fp8_gemm_nt, fp8_gemm_tn
from jax_deepgemm.quantize import per_block_cast_to_fp8, per_channel_cast_to_fp8, per_token_cast_to_fp8

_ROW_PITCH = 16  # the wgrad GEMM contracts over tokens: its K (= M here) must be a multiple of 16


def _check(x, w):
    op = "fp8_linear"
    for name, v in (("x", x), ("w", w)):
        if not jnp.issubdtype(v.dtype, jnp.floating) or v.dtype.itemsize < 2:
            raise TypeError(f"{op}: {name} must be bfloat16, float16 or float32, got {_checks.dtype_name(v.dtype)}")
    _checks.check_rank(x, op, "x", at_least=2)
    _checks.check_rank(w, op, "w", exact=2)
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"{op}: x and w must share K (last dim), got x {x.shape} and w {w.shape}")
    if w.shape[1] % 16 != 0:
        raise ValueError(f"{op}: K = {w.shape[1]} must be a multiple of 16 (the kernels' TMA row pitch)")


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
