"""jnp references of the lightning-indexer ops (the CPU lowering and the test oracle).

All math in float32 on exactly dequantized inputs (e4m3 and E2M1 values and power-of-two scales are
exact in float32), following DeepGEMM's definition::

    logits[i, j] = sum_h relu(q[i, h] . kv[j]) * weights[i, h] * kv_scale[j]     for j in [ks[i], ke[i])

FP4: ``q[i, h] . kv[j] = sum_g sfq[i, h, g] * sfk[j, g] * sum_{d in group g} q_d * k_d``.
Positions outside a row's valid range are ``-inf`` here (the CPU path always cleans; the GPU kernels
leave them unspecified unless ``clean_logits=True``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jax_deepgemm import fp4 as _fp4

SPLIT_KV = 256
"""Tokens per work unit of the paged kernel's schedule (DeepGEMM's SPLIT_KV)."""


def _index_logits(scores: jax.Array, weights: jax.Array) -> jax.Array:
    """``scores [..., H, N]`` (q.k), ``weights [..., H]`` -> ``sum_h relu(s) * w`` ``[..., N]`` float32."""
    return jnp.einsum("...hn,...h->...n", jnp.maximum(scores, 0.0), weights.astype(jnp.float32),
                      precision=jax.lax.Precision.HIGHEST)


def _fp8_scores(q: jax.Array, kv: jax.Array) -> jax.Array:
    """``q [..., H, D]`` e4m3, ``kv [N, D]`` -> ``[..., H, N]`` float32 (no kv scale)."""
    return jnp.einsum("...hd,nd->...hn", q.astype(jnp.float32), kv.astype(jnp.float32),
                      precision=jax.lax.Precision.HIGHEST)


def _fp4_scores(q_packed, q_sf, kv_packed, kv_sf) -> jax.Array:
    """Group-wise: exact per-32 partial sums times both scales, in float32."""
    qv = _fp4.e2m1_decode(_fp4.unpack_e2m1(q_packed))  # [..., H, D]
    kv = _fp4.e2m1_decode(_fp4.unpack_e2m1(kv_packed))  # [N, D]
    d = qv.shape[-1]
    g = d // _fp4.FP4_GROUP
    qg = qv.reshape(*qv.shape[:-1], g, _fp4.FP4_GROUP)
    kg = kv.reshape(kv.shape[0], g, _fp4.FP4_GROUP)
    part = jnp.einsum("...hgd,ngd->...hng", qg, kg, precision=jax.lax.Precision.HIGHEST)
    sq = _fp4.unpack_ue8m0(q_sf, g)  # [..., H, g]
    sk = _fp4.unpack_ue8m0(kv_sf, g)  # [N, g]
    return jnp.sum(part * sq[..., :, None, :] * sk, axis=-1)


def _mask_rows(logits, ks, ke, max_seqlen_k: int, logits_dtype):
    """Masks ``[S, S_kv]`` logits to ``[ks, ke)`` (-inf elsewhere) or compresses them."""
    s, s_kv = logits.shape
    j = jnp.arange(s_kv, dtype=jnp.int32)[None, :]
    ks = ks.astype(jnp.int32)[:, None]
    ke = ke.astype(jnp.int32)[:, None]
    if max_seqlen_k <= 0:
        return jnp.where((j >= ks) & (j < ke), logits, -jnp.inf).astype(logits_dtype)
    c = jnp.arange(max_seqlen_k, dtype=jnp.int32)[None, :]
    src = ks + c
    valid = (src < ke) & (src < s_kv)
    vals = jnp.take_along_axis(logits, jnp.clip(src, 0, max(s_kv - 1, 0)), axis=1) if s_kv else jnp.zeros(
        (s, max_seqlen_k), logits.dtype)
    return jnp.where(valid, vals, -jnp.inf).astype(logits_dtype)


def fp8_mqa_logits_reference(q, kv, kv_scale, weights, ks, ke, *, max_seqlen_k: int = 0,
                             logits_dtype=jnp.float32) -> jax.Array:
    """Non-paged FP8 indexer logits: ``[S, S_kv]`` (or ``[S, max_seqlen_k]`` compressed), -inf outside ``[ks, ke)``."""
    scores = _fp8_scores(q, kv)  # [S, H, S_kv]
    logits = _index_logits(scores, weights) * kv_scale.astype(jnp.float32)[None, :]
    return _mask_rows(logits, ks, ke, max_seqlen_k, logits_dtype)


def fp4_mqa_logits_reference(q, q_sf, kv, kv_sf, weights, ks, ke, *, max_seqlen_k: int = 0,
                             logits_dtype=jnp.float32) -> jax.Array:
    """Non-paged FP4 indexer logits (packed E2M1 + packed UE8M0 per-32 scales on q and kv)."""
    scores = _fp4_scores(q, q_sf, kv, kv_sf)  # [S, H, S_kv]
    logits = _index_logits(scores, weights)
    return _mask_rows(logits, ks, ke, max_seqlen_k, logits_dtype)


def _gather_pages(values, block_table, max_context_len: int):
    """``values [NB, BKV, ...]`` gathered along each row's block table -> ``[B, max_context_len, ...]``."""
    nb, bkv = values.shape[:2]
    b, max_blocks = block_table.shape
    t = jnp.arange(max_context_len, dtype=jnp.int32)
    blk = jnp.clip(t // bkv, 0, max(max_blocks - 1, 0))
    phys = jnp.clip(block_table.astype(jnp.int32)[:, blk], 0, nb - 1)  # [B, L]
    return values[phys, (t % bkv)[None, :]]


def _paged_mask(logits, context_lens, max_context_len, logits_dtype):
    b, n = context_lens.shape
    t = jnp.arange(max_context_len, dtype=jnp.int32)
    valid = t[None, None, :] < context_lens.astype(jnp.int32)[:, :, None]
    return jnp.where(valid, logits, -jnp.inf).reshape(b * n, max_context_len).astype(logits_dtype)


def fp8_paged_mqa_logits_reference(q, kv_cache, weights, context_lens, block_table, *, max_context_len: int,
                                   logits_dtype=jnp.float32) -> jax.Array:
    """Paged FP8 indexer logits ``[B*next_n, max_context_len]``; ``-inf`` at ``t >= context_lens[b, j]``."""
    b, n, h, d = q.shape
    vals, sf = _fp4.split_fp8_paged_kv_cache(kv_cache)
    kv = _gather_pages(vals, block_table, max_context_len).astype(jnp.float32)  # [B, L, D]
    scale = _gather_pages(sf, block_table, max_context_len)  # [B, L]
    scores = jnp.einsum("bnhd,bld->bnhl", q.astype(jnp.float32), kv, precision=jax.lax.Precision.HIGHEST)
    logits = _index_logits(scores, weights.reshape(b, n, h)) * scale[:, None, :]
    return _paged_mask(logits, context_lens, max_context_len, logits_dtype)


def fp4_paged_mqa_logits_reference(q, q_sf, kv_cache, weights, context_lens, block_table, *, max_context_len: int,
                                   logits_dtype=jnp.float32) -> jax.Array:
    """Paged FP4 indexer logits ``[B*next_n, max_context_len]``; ``-inf`` at ``t >= context_lens[b, j]``."""
    b, n, h, half = q.shape
    g = 2 * half // _fp4.FP4_GROUP
    vals, sf = _fp4.split_fp4_paged_kv_cache(kv_cache)
    kv = _fp4.e2m1_decode(_fp4.unpack_e2m1(_gather_pages(vals, block_table, max_context_len)))  # [B, L, D]
    sk = _fp4.unpack_ue8m0(_gather_pages(sf, block_table, max_context_len), g)  # [B, L, g]
    qv = _fp4.e2m1_decode(_fp4.unpack_e2m1(q))  # [B, n, H, D]
    sq = _fp4.unpack_ue8m0(q_sf, g)  # [B, n, H, g]
    qg = qv.reshape(b, n, h, g, _fp4.FP4_GROUP)
    kg = kv.reshape(b, max_context_len, g, _fp4.FP4_GROUP)
    part = jnp.einsum("bnhgd,blgd->bnhlg", qg, kg, precision=jax.lax.Precision.HIGHEST)
    scores = jnp.sum(part * sq[:, :, :, None, :] * sk[:, None, None, :, :], axis=-1)
    logits = _index_logits(scores, weights.reshape(b, n, h))
    return _paged_mask(logits, context_lens, max_context_len, logits_dtype)


def paged_mqa_logits_metadata_reference(context_lens, *, num_sms: int, split_kv: int = SPLIT_KV) -> jax.Array:
    """DeepGEMM's SM90 schedule: int32 ``[num_sms + 1, 2]`` rows ``(q_atom, kv_split)``, the first work
    unit of each SM (units ordered batch-major, then atom, then 256-token split); row ``num_sms`` is
    the sentinel ``(B * atoms, 0)``. Atoms: 2 next_n tokens when next_n >= 2, else 1."""
    context_lens = jnp.asarray(context_lens).astype(jnp.int32)
    if context_lens.ndim == 1:
        context_lens = context_lens[:, None]
    b, next_n = context_lens.shape
    atoms = -(-next_n // (2 if next_n >= 2 else 1))
    splits = (jnp.maximum(context_lens[:, -1], 0) + split_kv - 1) // split_kv  # [B]
    prefix = jnp.cumsum(splits)  # inclusive
    total = prefix[-1] * atoms if b else jnp.int32(0)
    quot, rem = total // num_sms, total % num_sms
    sm = jnp.arange(num_sms, dtype=jnp.int32)
    pivot = num_sms - rem
    start = sm * quot + jnp.maximum(sm - pivot, 0)
    # first batch whose (inclusive prefix * atoms) > start
    q_idx = jnp.sum(prefix[None, :] * atoms <= start[:, None], axis=1).astype(jnp.int32)
    prev = jnp.where(q_idx > 0, prefix[jnp.clip(q_idx - 1, 0, max(b - 1, 0))], 0)
    offset = start - prev * atoms
    segs = jnp.where(q_idx < b, splits[jnp.clip(q_idx, 0, max(b - 1, 0))], 0)
    atom = jnp.where(segs > 0, offset // jnp.maximum(segs, 1), 0)
    split = jnp.where(segs > 0, offset % jnp.maximum(segs, 1), 0)
    rows = jnp.stack([q_idx * atoms + atom, split], axis=1).astype(jnp.int32)
    sentinel = jnp.array([[b * atoms, 0]], jnp.int32)
    return jnp.concatenate([rows, sentinel], axis=0)


def numpy_mqa_logits_float64(q, kv, kv_scale, weights, ks, ke) -> np.ndarray:
    """float64 NumPy oracle (dequantized inputs), -inf outside ``[ks, ke)``: ``[S, S_kv]``."""
    q64 = np.asarray(q, np.float64)
    kv64 = np.asarray(kv, np.float64)
    s = np.einsum("ihd,jd->ihj", q64, kv64)
    out = np.einsum("ihj,ih->ij", np.maximum(s, 0), np.asarray(weights, np.float64)) * np.asarray(
        kv_scale, np.float64)[None, :]
    j = np.arange(kv64.shape[0])[None, :]
    ks, ke = np.asarray(ks)[:, None], np.asarray(ke)[:, None]
    return np.where((j >= ks) & (j < ke), out, -np.inf)
