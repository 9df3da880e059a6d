"""Random operands for tests and the benchmark: fresh data every call, never zeros."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jax_deepgemm.quantize import per_block_cast_to_fp8, per_token_cast_to_fp8


def fp8_gemm_operands(seed: int, m: int, n: int, k: int, *, b_recipe: str = "block", batch: tuple[int, ...] = ()):
    """Quantized ``(a, a_scale), (b, b_scale)`` for ``fp8_gemm_nt`` plus the bf16 sources.

    Rows get different magnitudes (x * exp(N(0, 1))) so the per-token scales genuinely differ.
    ``b_recipe``: "block" (128x128 scales) or "channel" (1x128 per-row scales).
    """
    if b_recipe not in ("block", "channel"):
        raise ValueError(f"b_recipe must be 'block' or 'channel', got {b_recipe!r}")
    return _fp8_gemm_operands(jnp.uint32(seed), m, n, k, b_recipe, tuple(batch))


# One compiled program per shape (eager op-by-op generation compiled every primitive per shape,
# which dominated the GPU test time at the DeepSeek shapes). The seed is traced: no recompiles.
@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _fp8_gemm_operands(seed, m, n, k, b_recipe, batch):
    ka, kb, ks = jax.random.split(jax.random.key(seed), 3)
    row_gain = jnp.exp(jax.random.normal(ks, (*batch, m, 1)))
    x = (jax.random.normal(ka, (*batch, m, k)) * row_gain).astype(jnp.bfloat16)
    w = jax.random.normal(kb, (n, k)).astype(jnp.bfloat16)
    a = per_token_cast_to_fp8(x)
    if b_recipe == "block":
        b = per_block_cast_to_fp8(w)
    else:  # "channel"
        b = per_token_cast_to_fp8(w)
    return a, b, x, w
