"""Random operands for tests and the benchmark: fresh data every call, never zeros."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jax_deepgemm.quantize import per_block_cast_to_fp8, per_channel_cast_to_fp8, per_token_cast_to_fp8


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


def contiguous_layout(group_sizes, alignment: int = 128, extra_rows: int = 0):
    """Host-side aligned contiguous layout of ``group_sizes``: (per-row ids with -1 padding, psum).

    Each group's segment starts at a multiple of ``alignment``; ``extra_rows`` padding rows are
    appended at the end (rows past the last segment)."""
    ids, psum, start = [], [], 0
    for g, size in enumerate(group_sizes):
        ids += [g] * size
        psum.append(start + size)
        pad = -size % alignment
        ids += [-1] * pad
        start += size + pad
    ids += [-1] * extra_rows
    return np.asarray(ids, np.int32), np.asarray(psum, np.int32)


def m_grouped_operands(seed: int, group_sizes, n: int, k: int, *, extra_rows: int = 0):
    """Quantized ``(a, a_scale), (b, b_scale)`` for the contiguous M-grouped GEMM, their bf16 sources,
    and the layout (per-row ids, psum). Padding rows of A hold random data too (they must not leak)."""
    row_ids, psum = contiguous_layout(group_sizes, extra_rows=extra_rows)
    a, b, x, w = _m_grouped_sources(jnp.uint32(seed), len(row_ids), len(group_sizes), n, k)
    return a, b, x, w, row_ids, psum


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _m_grouped_sources(seed, m, num_groups, n, k):
    a, _, x, _ = _fp8_gemm_operands(seed, m, 128, k, "block", ())
    w = jax.random.normal(jax.random.fold_in(jax.random.key(seed), 1), (num_groups, n, k)).astype(jnp.bfloat16)
    return a, per_block_cast_to_fp8(w), x, w


def k_grouped_operands(seed: int, k_sizes, m: int, n: int):
    """Token-major quantized ``(a, a_scale), (b, b_scale)`` for the K-grouped (weight-gradient) GEMM
    over ``sum(k_sizes)`` tokens (``per_channel_cast_to_fp8``: 1x128 scales along the tokens) and
    their bf16 sources ``[K, M]``, ``[K, N]``. Columns get different magnitudes."""
    return _k_grouped_sources(jnp.uint32(seed), int(sum(k_sizes)), m, n)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _k_grouped_sources(seed, total_k, m, n):
    ka, kb, kg = jax.random.split(jax.random.key(seed), 3)
    gain = jnp.exp(jax.random.normal(kg, (1, m)))
    x = (jax.random.normal(ka, (total_k, m)) * gain).astype(jnp.bfloat16)
    y = jax.random.normal(kb, (total_k, n)).astype(jnp.bfloat16)
    return per_channel_cast_to_fp8(x), per_channel_cast_to_fp8(y), x, y
