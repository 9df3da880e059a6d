"""DeepSeek-V3.2 lightning indexer: FP8 / FP4 MQA logits, ranged and paged, as jittable JAX ops.

``logits[i, j] = sum_h relu(q[i, h] . kv[j]) * weights[i, h] * kv_scale[j]`` for key positions
``j`` in a per-query range (``[ks[i], ke[i])``, or the context length of a paged decode row).

On CUDA (sm_90a) the ops run ``ffi/mqa_logits.cu``; elsewhere the jnp references of
``mqa_reference.py`` (which always write ``-inf`` outside the valid ranges, a valid refinement of
"unspecified").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jax_deepgemm import _checks
from jax_deepgemm import mqa_reference as _ref
from jax_deepgemm._primitive import OpSpec, batch_by_map, int32_attr, make_primitive
from jax_deepgemm.grouped_layout import is_host_value

SUPPORTED_HEADS = (32, 64, 128)
SUPPORTED_HEAD_DIMS = (32, 64, 128)
SUPPORTED_BLOCK_KV = (16, 32, 64, 128)
SUPPORTED_NEXT_N = (1, 2, 3, 4)
SPLIT_KV = _ref.SPLIT_KV

_LOGITS_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_FP8 = (jnp.float8_e4m3fn,)
_F32 = (jnp.float32,)
_PACKED = (jnp.uint8, jnp.int8)
_INT = (jnp.int32,)


def _dtype_key(op: str, logits_dtype) -> str:
    try:
        name = np.dtype(logits_dtype).name
    except TypeError as e:
        raise TypeError(f"{op}: logits_dtype must be float32 or bfloat16, got {logits_dtype!r}") from e
    if name not in _LOGITS_DTYPES:
        raise TypeError(f"{op}: logits_dtype must be float32 or bfloat16, got {name}")
    return name


def _check_static_int(op: str, name: str, v, *, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
        raise ValueError(f"{op}: {name} must be a Python int >= {minimum}, got {v!r}")
    return int(v)


def _check_static_bool(op: str, name: str, v) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be a Python bool, got {v!r}")
    return bool(v)


def _check_heads_dim(op: str, h: int, d: int) -> None:
    if h not in SUPPORTED_HEADS:
        raise ValueError(f"{op}: the number of heads H = {h} is not supported (H must be one of {SUPPORTED_HEADS})")
    if d not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"{op}: the head dim D = {d} is not supported (D must be one of {SUPPORTED_HEAD_DIMS})")


def _as_int32(op: str, name: str, x, shape: tuple[int, ...]):
    """Integer array of exactly ``shape`` as int32 (jax), plus its host copy (int64 NumPy) when host data."""
    host = None
    if is_host_value(x):
        host = np.asarray(x)
        if host.size == 0:
            host = host.astype(np.int64)
    elif not (hasattr(x, "dtype") and hasattr(x, "shape")):
        raise TypeError(f"{op}: {name} must be an integer array, got {type(x).__name__}")
    dtype = np.dtype(host.dtype if host is not None else x.dtype)
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        raise TypeError(f"{op}: {name} must have an integer dtype (int32), got {dtype.name}")
    got = tuple(host.shape if host is not None else x.shape)
    if got != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {got}")
    if host is not None:
        host = host.astype(np.int64)
        if host.size and (host.max() > np.iinfo(np.int32).max or host.min() < np.iinfo(np.int32).min):
            raise ValueError(f"{op}: {name} values must fit in int32")
        return jnp.asarray(host, jnp.int32), host
    return jnp.asarray(x).astype(jnp.int32), None


# ------------------------------------------------------------------------------------------------
# Non-paged (ranged) logits
# ------------------------------------------------------------------------------------------------


def _ranged_out_shape(s, s_kv, max_seqlen_k, logits_dtype):
    return [((s, max_seqlen_k if max_seqlen_k > 0 else s_kv), _LOGITS_DTYPES[logits_dtype])]


def _ranged_attrs(clean_logits, max_seqlen_k, logits_dtype):
    return {"clean_logits": int32_attr(int(clean_logits)), "max_seqlen_k": int32_attr(max_seqlen_k),
            "bf16_logits": int32_attr(int(logits_dtype == "bfloat16"))}


_fp8_mqa_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_fp8_mqa_logits",
        target="jax_deepgemm_fp8_mqa_logits_v1",
        out_shapes=lambda q, kv, sf, w, ks, ke, *out, clean_logits, max_seqlen_k, logits_dtype: _ranged_out_shape(
            q.shape[0], kv.shape[0], max_seqlen_k, logits_dtype),
        reference=lambda q, kv, sf, w, ks, ke, *out, clean_logits, max_seqlen_k, logits_dtype: (
            _ref.fp8_mqa_logits_reference(q, kv, sf, w, ks, ke, max_seqlen_k=max_seqlen_k,
                                          logits_dtype=_LOGITS_DTYPES[logits_dtype]),),
        attrs=_ranged_attrs,
        batch=batch_by_map,
        aliased_output_operand=6,
    )
)

_fp4_mqa_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_fp4_mqa_logits",
        target="jax_deepgemm_fp4_mqa_logits_v1",
        out_shapes=lambda q, qs, kv, ks_, w, ks, ke, *out, clean_logits, max_seqlen_k, logits_dtype:
            _ranged_out_shape(q.shape[0], kv.shape[0], max_seqlen_k, logits_dtype),
        reference=lambda q, qs, kv, kvs, w, ks, ke, *out, clean_logits, max_seqlen_k, logits_dtype: (
            _ref.fp4_mqa_logits_reference(q, qs, kv, kvs, w, ks, ke, max_seqlen_k=max_seqlen_k,
                                          logits_dtype=_LOGITS_DTYPES[logits_dtype]),),
        attrs=_ranged_attrs,
        batch=batch_by_map,
        aliased_output_operand=7,
    )
)


def _check_ranges(op: str, ks, ke, s: int, s_kv: int):
    ks, ks_host = _as_int32(op, "ks", ks, (s,))
    ke, ke_host = _as_int32(op, "ke", ke, (s,))
    if ks_host is not None and ks_host.size and ks_host.min() < 0:
        i = int(np.argmin(ks_host))
        raise ValueError(f"{op}: ks must be >= 0, got ks[{i}] = {ks_host[i]}")
    if ke_host is not None and ke_host.size and ke_host.max() > s_kv:
        i = int(np.argmax(ke_host))
        raise ValueError(f"{op}: ke must be <= S_kv = {s_kv}, got ke[{i}] = {ke_host[i]}")
    if ks_host is not None and ke_host is not None and (ks_host > ke_host).any():
        i = int(np.flatnonzero(ks_host > ke_host)[0])
        raise ValueError(f"{op}: ks must be <= ke, got ks[{i}] = {ks_host[i]} > ke[{i}] = {ke_host[i]}")
    return ks, ke


def _check_common_ranged(op, s, h, weights, ks, ke, s_kv, clean_logits, max_seqlen_k, logits_dtype):
    _checks.check_dtype(weights, op, "weights", _F32)
    _checks.check_shape(weights, op, "weights", (s, h), "one weight per query and head")
    ks, ke = _check_ranges(op, ks, ke, s, s_kv)
    clean_logits = _check_static_bool(op, "clean_logits", clean_logits)
    max_seqlen_k = _check_static_int(op, "max_seqlen_k", max_seqlen_k)
    return ks, ke, clean_logits, max_seqlen_k, _dtype_key(op, logits_dtype)


def fp8_mqa_logits(
    q: jax.Array,
    kv: tuple[jax.Array, jax.Array],
    weights: jax.Array,
    ks: jax.Array,
    ke: jax.Array,
    *,
    clean_logits: bool = True,
    max_seqlen_k: int = 0,
    logits_dtype=jnp.float32,
) -> jax.Array:
    """Lightning-indexer logits of ``S`` queries against ``S_kv`` keys, FP8 inputs.

    Args:
      q: ``[S, H, D]`` float8_e4m3fn (no scale), H in {32, 64, 128}, D in {32, 64, 128}.
      kv: ``(kv [S_kv, D] float8_e4m3fn, kv_scale [S_kv] float32)`` per-token scaled keys.
      weights: ``[S, H]`` float32 head weights.
      ks, ke: ``[S]`` int32, query i attends keys ``[ks[i], ke[i])``. Host data must satisfy
        ``0 <= ks <= ke <= S_kv`` (``ValueError``); device data is clamped to it by the kernel.
      clean_logits: static. True: positions outside ``[ks, ke)`` are ``-inf``. False: they are
        unspecified (the GPU kernel writes real dot products over the union range of each block
        of queries and leaves the rest untouched, like DeepGEMM).
      max_seqlen_k: static; > 0 selects compressed mode: ``[S, max_seqlen_k]`` with
        ``logits[i, c] = logit(i, ks[i] + c)`` for ``c < ke[i] - ks[i]``; other positions are
        ``-inf`` with ``clean_logits=True``, unspecified with False (DeepGEMM accepts only False
        here and leaves them uninitialized).
      logits_dtype: float32 or bfloat16.

    Returns:
      ``[S, S_kv]`` (or ``[S, max_seqlen_k]``) logits of ``logits_dtype``.
    """
    op = "fp8_mqa_logits"
    _checks.check_dtype(q, op, "q", _FP8)
    _checks.check_rank(q, op, "q", exact=3)
    kv_fp8, kv_scale = _checks.check_pair(kv, op, "kv")
    _checks.check_dtype(kv_fp8, op, "kv", _FP8)
    _checks.check_dtype(kv_scale, op, "kv_scale", _F32)
    s, h, d = q.shape
    _check_heads_dim(op, h, d)
    _checks.check_rank(kv_fp8, op, "kv", exact=2)
    s_kv = kv_fp8.shape[0]
    if kv_fp8.shape[1] != d:
        raise ValueError(f"{op}: kv must have shape (S_kv, D = {d}) matching q's head dim, got {tuple(kv_fp8.shape)}")
    _checks.check_shape(kv_scale, op, "kv_scale", (s_kv,), "one scale per key")
    ks, ke, clean_logits, max_seqlen_k, key = _check_common_ranged(
        op, s, h, weights, ks, ke, s_kv, clean_logits, max_seqlen_k, logits_dtype)
    width = max_seqlen_k if max_seqlen_k > 0 else s_kv
    if s == 0 or width == 0:
        return jnp.zeros((s, width), _LOGITS_DTYPES[key])
    (out,) = _fp8_mqa_p.bind(q, kv_fp8, kv_scale, weights, ks, ke, clean_logits=clean_logits,
                             max_seqlen_k=max_seqlen_k, logits_dtype=key)
    return out


def _check_fp4_pair(op: str, name: str, pair, lead: tuple[int, ...]):
    packed, sf = _checks.check_pair(pair, op, name)
    _checks.check_dtype(packed, op, name, _PACKED)
    _checks.check_dtype(sf, op, f"{name}_sf", _INT)
    _checks.check_rank(packed, op, name, exact=len(lead) + 1)
    _checks.check_shape(sf, op, f"{name}_sf", tuple(packed.shape[:-1]), "one packed UE8M0 word per row")
    if packed.dtype != jnp.uint8:  # DeepGEMM's int8: same bytes
        packed = jax.lax.bitcast_convert_type(jnp.asarray(packed), jnp.uint8)
    return packed, sf


def fp4_mqa_logits(
    q: tuple[jax.Array, jax.Array],
    kv: tuple[jax.Array, jax.Array],
    weights: jax.Array,
    ks: jax.Array,
    ke: jax.Array,
    *,
    clean_logits: bool = True,
    max_seqlen_k: int = 0,
    logits_dtype=jnp.float32,
) -> jax.Array:
    """FP4 lightning-indexer logits (DeepGEMM's SM100 format, run on Hopper by decoding to FP8).

    Args:
      q: ``(q [S, H, D/2] uint8/int8 packed E2M1, q_sf [S, H] int32 packed UE8M0 per 32 elements)``.
      kv: ``(kv [S_kv, D/2] uint8/int8, kv_sf [S_kv] int32)``.
      weights, ks, ke, clean_logits, max_seqlen_k, logits_dtype: as :func:`fp8_mqa_logits`.

    Math: ``q.k = sum_g 2**(eq[g] + ek[g]) * sum_{d in group g} q_d k_d``. Hopper has no FP4 MMA: the
    GPU kernel decodes each row to e4m3 relative to the row's largest group exponent, which is exact
    while a row's group exponents span at most 14 binades (per-token quantized data sits well inside
    that); a group further below rounds toward zero. Products accumulate in FP32 on the tensor cores.
    """
    op = "fp4_mqa_logits"
    q_p, q_sf = _check_fp4_pair(op, "q", q, (0, 0))
    kv_p, kv_sf = _check_fp4_pair(op, "kv", kv, (0,))
    s, h, half = q_p.shape
    d = 2 * half
    _check_heads_dim(op, h, d)
    s_kv = kv_p.shape[0]
    if kv_p.shape[1] != half:
        raise ValueError(f"{op}: kv must have shape (S_kv, D/2 = {half}) matching q, got {tuple(kv_p.shape)}")
    ks, ke, clean_logits, max_seqlen_k, key = _check_common_ranged(
        op, s, h, weights, ks, ke, s_kv, clean_logits, max_seqlen_k, logits_dtype)
    width = max_seqlen_k if max_seqlen_k > 0 else s_kv
    if s == 0 or width == 0:
        return jnp.zeros((s, width), _LOGITS_DTYPES[key])
    (out,) = _fp4_mqa_p.bind(q_p, q_sf, kv_p, kv_sf, weights, ks, ke, clean_logits=clean_logits,
                             max_seqlen_k=max_seqlen_k, logits_dtype=key)
    return out


# ------------------------------------------------------------------------------------------------
# Paged decode logits
# ------------------------------------------------------------------------------------------------

_metadata_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_paged_mqa_logits_metadata",
        target="jax_deepgemm_paged_mqa_logits_metadata_v1",
        out_shapes=lambda lens, *, num_sms: [((num_sms + 1, 2), jnp.int32)],
        reference=lambda lens, *, num_sms: (_ref.paged_mqa_logits_metadata_reference(lens, num_sms=num_sms),),
        attrs=lambda *, num_sms: {},
        batch=batch_by_map,
    )
)


def get_paged_mqa_logits_metadata(context_lens: jax.Array, block_kv: int, num_sms: int) -> jax.Array:
    """The paged kernel's work schedule, computed on the device (CUDA-graph safe).

    Args:
      context_lens: ``[B, next_n]`` int32 (or ``[B]``, meaning next_n = 1); the last column must be
        each row's largest length (DeepGEMM's contract).
      block_kv: the cache's tokens per block (checked, the schedule is in 256-token splits).
      num_sms: SMs the paged kernel runs on (one persistent CTA each).

    Returns:
      ``[num_sms + 1, 2]`` int32, DeepGEMM's layout: row s = (first q atom, first 256-token split)
      of SM s, row num_sms = ``(B * atoms, 0)``. Recompute whenever ``context_lens`` changes.
    """
    op = "get_paged_mqa_logits_metadata"
    num_sms = _check_static_int(op, "num_sms", num_sms, minimum=1)
    block_kv = _check_static_int(op, "block_kv", block_kv, minimum=1)
    if block_kv not in SUPPORTED_BLOCK_KV:
        raise ValueError(f"{op}: block_kv = {block_kv} is not supported (one of {SUPPORTED_BLOCK_KV})")
    shape = tuple(getattr(context_lens, "shape", np.shape(context_lens)))
    if len(shape) not in (1, 2):
        raise ValueError(f"{op}: context_lens must be [B] or [B, next_n], got shape {shape}")
    if len(shape) == 1:
        shape = (shape[0], 1)
        context_lens = jnp.asarray(context_lens)[:, None] if not is_host_value(context_lens) else np.asarray(
            context_lens)[:, None]
    if shape[1] not in SUPPORTED_NEXT_N:
        raise ValueError(f"{op}: next_n = {shape[1]} is not supported (one of {SUPPORTED_NEXT_N})")
    lens, host = _as_int32(op, "context_lens", context_lens, shape)
    if host is not None and host.size and host.min() < 0:
        raise ValueError(f"{op}: context_lens must be >= 0")
    (meta,) = _metadata_p.bind(lens, num_sms=num_sms)
    return meta


def _paged_out_shape(q, max_context_len, logits_dtype):
    return [((q.shape[0] * q.shape[1], max_context_len), _LOGITS_DTYPES[logits_dtype])]


def _paged_attrs(clean_logits, max_context_len, logits_dtype):
    return {"clean_logits": int32_attr(int(clean_logits)), "max_context_len": int32_attr(max_context_len),
            "bf16_logits": int32_attr(int(logits_dtype == "bfloat16"))}


_fp8_paged_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_fp8_paged_mqa_logits",
        target="jax_deepgemm_fp8_paged_mqa_logits_v1",
        out_shapes=lambda q, c, w, lens, bt, meta, *out, clean_logits, max_context_len, logits_dtype:
            _paged_out_shape(q, max_context_len, logits_dtype),
        reference=lambda q, c, w, lens, bt, meta, *out, clean_logits, max_context_len, logits_dtype: (
            _ref.fp8_paged_mqa_logits_reference(q, c, w, lens, bt, max_context_len=max_context_len,
                                                logits_dtype=_LOGITS_DTYPES[logits_dtype]),),
        attrs=_paged_attrs,
        batch=batch_by_map,
        aliased_output_operand=6,
    )
)

_fp4_paged_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_fp4_paged_mqa_logits",
        target="jax_deepgemm_fp4_paged_mqa_logits_v1",
        out_shapes=lambda q, qs, c, w, lens, bt, meta, *out, clean_logits, max_context_len, logits_dtype:
            _paged_out_shape(q, max_context_len, logits_dtype),
        reference=lambda q, qs, c, w, lens, bt, meta, *out, clean_logits, max_context_len, logits_dtype: (
            _ref.fp4_paged_mqa_logits_reference(q, qs, c, w, lens, bt, max_context_len=max_context_len,
                                                logits_dtype=_LOGITS_DTYPES[logits_dtype]),),
        attrs=_paged_attrs,
        batch=batch_by_map,
        aliased_output_operand=7,
    )
)


def _check_paged_common(op, b, next_n, h, d, row_bytes, kv_cache, weights, context_lens, block_table,
                        schedule_meta, max_context_len, clean_logits, logits_dtype):
    _check_heads_dim(op, h, d)
    if next_n not in SUPPORTED_NEXT_N:
        raise ValueError(f"{op}: next_n = q.shape[1] = {next_n} is not supported (one of {SUPPORTED_NEXT_N})")
    _checks.check_dtype(kv_cache, op, "kv_cache", (jnp.uint8,))
    _checks.check_rank(kv_cache, op, "kv_cache", exact=4)
    num_blocks, block_kv, one, row = kv_cache.shape
    if one != 1 or row != row_bytes:
        raise ValueError(f"{op}: kv_cache must have shape (num_blocks, block_kv, 1, {row_bytes}) for D = {d}, "
                         f"got {tuple(kv_cache.shape)}")
    if block_kv not in SUPPORTED_BLOCK_KV:
        raise ValueError(f"{op}: block_kv = kv_cache.shape[1] = {block_kv} is not supported "
                         f"(one of {SUPPORTED_BLOCK_KV})")
    if num_blocks == 0:
        raise ValueError(f"{op}: kv_cache must hold at least one block")
    _checks.check_dtype(weights, op, "weights", _F32)
    _checks.check_shape(weights, op, "weights", (b * next_n, h), "[B * next_n, H]")
    max_context_len = _check_static_int(op, "max_context_len", max_context_len)
    lens_shape = tuple(getattr(context_lens, "shape", np.shape(context_lens)))
    if lens_shape == (b,):
        context_lens = (jnp.asarray(context_lens) if not is_host_value(context_lens) else np.asarray(context_lens))
        context_lens = jnp.broadcast_to(jnp.asarray(context_lens)[:, None], (b, next_n)) if not is_host_value(
            context_lens) else np.broadcast_to(context_lens[:, None], (b, next_n))
    lens, lens_host = _as_int32(op, "context_lens", context_lens, (b, next_n))
    bt_shape = tuple(getattr(block_table, "shape", np.shape(block_table)))
    if len(bt_shape) != 2 or bt_shape[0] != b:
        raise ValueError(f"{op}: block_table must have shape (B = {b}, max_blocks), got {bt_shape}")
    bt, bt_host = _as_int32(op, "block_table", block_table, bt_shape)
    max_blocks = bt_shape[1]
    # The kernels key (row, split) units by int32 ordinals, each row's splits padded to a multiple of 32.
    if b * ((-(-max_blocks * block_kv // SPLIT_KV) + 31) // 32 * 32) >= 2**31:
        raise ValueError(f"{op}: block_table too large: B = {b} rows of max_blocks * block_kv = "
                         f"{max_blocks * block_kv} tokens exceed 2^31 {SPLIT_KV}-token splits in all "
                         f"(each row's splits counted to a multiple of 32)")
    if lens_host is not None and lens_host.size:
        if lens_host.min() < 0:
            raise ValueError(f"{op}: context_lens must be >= 0")
        if lens_host.max() > max_context_len:
            raise ValueError(f"{op}: context_lens must be <= max_context_len = {max_context_len}, "
                             f"got {lens_host.max()}")
        if lens_host.max() > max_blocks * block_kv:
            raise ValueError(f"{op}: context_lens must be <= max_blocks * block_kv = {max_blocks * block_kv} "
                             f"(the block table's capacity), got {lens_host.max()}")
        if (lens_host[:, :-1] > lens_host[:, -1:]).any():
            raise ValueError(f"{op}: context_lens[:, -1] must be each row's largest length (the schedule "
                             "covers context_lens[b, next_n - 1] tokens)")
    if bt_host is not None and bt_host.size:
        needed = bt_host
        if lens_host is not None:  # only entries of blocks a row uses must be valid
            used = np.arange(max_blocks)[None, :] * block_kv < lens_host[:, -1:]
            needed = np.where(used, bt_host, 0)
        if needed.min() < 0 or needed.max() >= num_blocks:
            raise ValueError(f"{op}: block_table entries must index the cache's blocks [0, {num_blocks}), "
                             f"got {int(needed.min())}..{int(needed.max())}")
    _checks.check_dtype(schedule_meta, op, "schedule_meta", _INT)
    _checks.check_rank(schedule_meta, op, "schedule_meta", exact=2)
    if schedule_meta.shape[0] < 2 or schedule_meta.shape[1] != 2:
        raise ValueError(f"{op}: schedule_meta must have shape (num_sms + 1, 2) from "
                         f"get_paged_mqa_logits_metadata, got {tuple(schedule_meta.shape)}")
    clean_logits = _check_static_bool(op, "clean_logits", clean_logits)
    return lens, bt, max_context_len, clean_logits, _dtype_key(op, logits_dtype)


def fp8_paged_mqa_logits(
    q: jax.Array,
    kv_cache: jax.Array,
    weights: jax.Array,
    context_lens: jax.Array,
    block_table: jax.Array,
    schedule_meta: jax.Array,
    max_context_len: int,
    *,
    clean_logits: bool = True,
    logits_dtype=jnp.float32,
) -> jax.Array:
    """Decode-time indexer logits over a paged FP8 KV cache.

    Args:
      q: ``[B, next_n, H, D]`` float8_e4m3fn, next_n in {1, 2, 3, 4}.
      kv_cache: fused cache ``[num_blocks, block_kv, 1, D + 4]`` uint8 (see ``fp4.build_fp8_paged_kv_cache``).
      weights: ``[B * next_n, H]`` float32.
      context_lens: ``[B, next_n]`` int32 valid keys per query token (``[B]``: the same for all
        next_n tokens); the last column is each row's largest.
      block_table: ``[B, max_blocks]`` int32; logical token t of row b is at
        ``(block_table[b, t // block_kv], t % block_kv)``. Host data is checked against the cache;
        on the device out-of-range entries are clamped (never an out-of-bounds read).
      schedule_meta: ``get_paged_mqa_logits_metadata(context_lens, block_kv, num_sms)``.
      max_context_len: static, the output width; context lengths are clamped to it.
      clean_logits: static. True (default): positions ``t >= context_lens[b, j]`` are ``-inf``.
        False: they are unspecified (DeepGEMM's behaviour).
      logits_dtype: float32 or bfloat16.

    Returns:
      ``[B * next_n, max_context_len]``; row ``b * next_n + j`` holds query token (b, j).
    """
    op = "fp8_paged_mqa_logits"
    _checks.check_dtype(q, op, "q", _FP8)
    _checks.check_rank(q, op, "q", exact=4)
    b, next_n, h, d = q.shape
    lens, bt, max_context_len, clean_logits, key = _check_paged_common(
        op, b, next_n, h, d, d + 4, kv_cache, weights, context_lens, block_table, schedule_meta,
        max_context_len, clean_logits, logits_dtype)
    if b == 0 or max_context_len == 0:
        return jnp.zeros((b * next_n, max_context_len), _LOGITS_DTYPES[key])
    (out,) = _fp8_paged_p.bind(q, kv_cache, weights, lens, bt, schedule_meta, clean_logits=clean_logits,
                               max_context_len=max_context_len, logits_dtype=key)
    return out


def fp4_paged_mqa_logits(
    q: tuple[jax.Array, jax.Array],
    kv_cache: jax.Array,
    weights: jax.Array,
    context_lens: jax.Array,
    block_table: jax.Array,
    schedule_meta: jax.Array,
    max_context_len: int,
    *,
    clean_logits: bool = True,
    logits_dtype=jnp.float32,
) -> jax.Array:
    """:func:`fp8_paged_mqa_logits` with FP4 operands: ``q = (q [B, next_n, H, D/2] packed E2M1,
    q_sf [B, next_n, H] int32 packed UE8M0)`` and the FP4 fused cache ``[num_blocks, block_kv, 1,
    D/2 + 4]`` uint8 (``fp4.build_fp4_paged_kv_cache``). Decoded on the GPU as :func:`fp4_mqa_logits`
    describes."""
    op = "fp4_paged_mqa_logits"
    q_p, q_sf = _check_fp4_pair(op, "q", q, (0, 0, 0))
    b, next_n, h, half = q_p.shape
    d = 2 * half
    lens, bt, max_context_len, clean_logits, key = _check_paged_common(
        op, b, next_n, h, d, half + 4, kv_cache, weights, context_lens, block_table, schedule_meta,
        max_context_len, clean_logits, logits_dtype)
    if b == 0 or max_context_len == 0:
        return jnp.zeros((b * next_n, max_context_len), _LOGITS_DTYPES[key])
    (out,) = _fp4_paged_p.bind(q_p, q_sf, kv_cache, weights, lens, bt, schedule_meta, clean_logits=clean_logits,
                               max_context_len=max_context_len, logits_dtype=key)
    return out


# ------------------------------------------------------------------------------------------------
# Test hooks: the kernels writing into a pre-filled (poisoned) output buffer
# ------------------------------------------------------------------------------------------------


def _fp8_mqa_logits_into(q, kv, kv_scale, weights, ks, ke, out, *, clean_logits, max_seqlen_k, logits_dtype):
    return _fp8_mqa_p.bind(q, kv, kv_scale, weights, jnp.asarray(ks, jnp.int32), jnp.asarray(ke, jnp.int32), out,
                           clean_logits=clean_logits, max_seqlen_k=max_seqlen_k,
                           logits_dtype=np.dtype(logits_dtype).name)[0]


def _fp8_paged_mqa_logits_into(q, kv_cache, weights, lens, bt, meta, out, *, clean_logits, max_context_len,
                               logits_dtype):
    return _fp8_paged_p.bind(q, kv_cache, weights, jnp.asarray(lens, jnp.int32), jnp.asarray(bt, jnp.int32), meta,
                             out, clean_logits=clean_logits, max_context_len=max_context_len,
                             logits_dtype=np.dtype(logits_dtype).name)[0]


def _fp4_mqa_logits_into(q, kv, weights, ks, ke, out, *, clean_logits, max_seqlen_k, logits_dtype):
    (q_p, q_sf), (kv_p, kv_sf) = q, kv
    return _fp4_mqa_p.bind(q_p, q_sf, kv_p, kv_sf, weights, jnp.asarray(ks, jnp.int32), jnp.asarray(ke, jnp.int32),
                           out, clean_logits=clean_logits, max_seqlen_k=max_seqlen_k,
                           logits_dtype=np.dtype(logits_dtype).name)[0]


def _fp4_paged_mqa_logits_into(q, kv_cache, weights, lens, bt, meta, out, *, clean_logits, max_context_len,
                               logits_dtype):
    q_p, q_sf = q
    return _fp4_paged_p.bind(q_p, q_sf, kv_cache, weights, jnp.asarray(lens, jnp.int32), jnp.asarray(bt, jnp.int32),
                             meta, out, clean_logits=clean_logits, max_context_len=max_context_len,
                             logits_dtype=np.dtype(logits_dtype).name)[0]
