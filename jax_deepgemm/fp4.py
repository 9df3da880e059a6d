"""FP4 (E2M1) and fused paged-KV-cache formats of the DeepSeek-V3.2 lightning indexer, in jnp (jittable).

Formats (DeepGEMM's, ``deep_gemm.utils.per_token_cast_to_fp4(x, use_ue8m0=True, gran_k=32,
use_packed_ue8m0=True)`` and the fused paged cache of ``fp8_fp4_paged_mqa_logits``):

* **E2M1**: 4-bit float, bit 3 = sign, bits 2..1 = exponent (bias 1), bit 0 = mantissa; magnitudes
  ``{0, 0.5, 1, 1.5, 2, 3, 4, 6}``. Two per byte, **low nibble = even element** ``[..., D] ->
  [..., D/2]`` uint8.
* **UE8M0 per 32 elements**: one byte per 32-element group, the power of two ``2**(byte - 127)``.
  Four groups (D = 128) are packed little-endian into one int32 per row (group g in byte g); for
  D = 64 / 32 the unused bytes hold 127 (= 1.0).
* **Fused FP8 paged cache** ``[num_blocks, block_kv, 1, D + 4]`` uint8; per block (physically) the
  ``block_kv * D`` e4m3 values token-major, then ``block_kv`` float32 scales (little-endian).
* **Fused FP4 paged cache** ``[num_blocks, block_kv, 1, D/2 + 4]`` uint8; per block the
  ``block_kv * D/2`` packed E2M1 bytes token-major, then ``block_kv`` packed UE8M0 int32 words.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

FP4_GROUP = 32
"""Elements per UE8M0 scale of the FP4 formats."""

E2M1_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                       np.float32)
"""Value of each 4-bit E2M1 code (index = code)."""

E2M1_MAX = 6.0

# Round-to-nearest-even thresholds on |x|: code = number of thresholds passed; ties (0.25, 0.75,
# ...) go to the even code, hence alternating strict / non-strict comparisons.
_E2M1_THRESHOLDS = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True), (5.0, False))


def e2m1_encode(x: jax.Array) -> jax.Array:
    """Rounds float values (already scaled into [-6, 6]; larger magnitudes saturate) to E2M1 codes
    (uint8 in [0, 16)), round-to-nearest-even. NaN encodes as 0."""
    x = jnp.asarray(x, jnp.float32)
    mag = jnp.abs(x)
    code = jnp.zeros(x.shape, jnp.uint8)
    for t, inclusive in _E2M1_THRESHOLDS:
        code = code + (mag >= t if inclusive else mag > t).astype(jnp.uint8)
    sign = (jnp.signbit(x) & (code > 0)).astype(jnp.uint8) << 3
    return code | sign


def e2m1_decode(codes: jax.Array) -> jax.Array:
    """E2M1 codes (any integer dtype, low 4 bits used) to float32 values."""
    return jnp.asarray(E2M1_VALUES)[jnp.asarray(codes).astype(jnp.int32) & 0xF]


def pack_e2m1(codes: jax.Array) -> jax.Array:
    """``[..., D]`` codes -> ``[..., D/2]`` uint8, low nibble = even element."""
    codes = jnp.asarray(codes).astype(jnp.uint8) & 0xF
    if codes.shape[-1] % 2:
        raise ValueError(f"pack_e2m1: the last dimension must be even, got {codes.shape}")
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_e2m1(packed: jax.Array) -> jax.Array:
    """``[..., D/2]`` packed bytes -> ``[..., D]`` codes (uint8)."""
    p = jnp.asarray(packed).astype(jnp.uint8)
    lo, hi = p & 0xF, p >> 4
    return jnp.stack([lo, hi], axis=-1).reshape(*p.shape[:-1], p.shape[-1] * 2)


def pack_ue8m0(exponent_bytes: jax.Array) -> jax.Array:
    """``[..., G]`` UE8M0 bytes (G <= 4 groups of 32) -> ``[...]`` int32, group g in byte g, unused bytes 127."""
    b = jnp.asarray(exponent_bytes).astype(jnp.uint32)
    groups = b.shape[-1]
    if not 1 <= groups <= 4:
        raise ValueError(f"pack_ue8m0: 1 to 4 groups of 32 per row (D <= 128), got {groups}")
    word = jnp.zeros(b.shape[:-1], jnp.uint32)
    for g in range(4):
        byte = b[..., g] if g < groups else jnp.full(b.shape[:-1], 127, jnp.uint32)
        word = word | (byte << (8 * g))
    return jax.lax.bitcast_convert_type(word, jnp.int32)


def unpack_ue8m0(packed: jax.Array, groups: int) -> jax.Array:
    """``[...]`` int32 packed UE8M0 -> ``[..., groups]`` float32 scales ``2**(byte - 127)``."""
    w = jax.lax.bitcast_convert_type(jnp.asarray(packed, jnp.int32), jnp.uint32)
    bytes_ = jnp.stack([(w >> (8 * g)) & 0xFF for g in range(groups)], axis=-1).astype(jnp.int32)
    return jnp.ldexp(jnp.ones(bytes_.shape, jnp.float32), bytes_ - 127)


def per_token_cast_to_fp4(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Quantizes ``[..., D]`` (D in {32, 64, 128}) to packed E2M1 with one UE8M0 scale per 32 elements.

    Per group: ``scale = 2**ceil(log2(amax / 6))`` (1.0 for an all-zero group), codes =
    RNE(x / scale). Returns ``(packed [..., D/2] uint8, scales [...] int32)`` (packed UE8M0).
    """
    x = jnp.asarray(x, jnp.float32)
    d = x.shape[-1]
    if d % FP4_GROUP or not 32 <= d <= 128:
        raise ValueError(f"per_token_cast_to_fp4: D must be 32, 64 or 128, got {d}")
    groups = d // FP4_GROUP
    xg = x.reshape(*x.shape[:-1], groups, FP4_GROUP)
    amax = jnp.max(jnp.abs(xg), axis=-1)
    # exponent = ceil(log2(amax / 6)) computed exactly via frexp (no log2 rounding at powers of two)
    ratio = jnp.where(amax > 0, amax / E2M1_MAX, 1.0)
    mant, ex = jnp.frexp(ratio)  # ratio = mant * 2**ex, mant in [0.5, 1)
    e = jnp.where(mant == 0.5, ex - 1, ex)
    e = jnp.clip(e, -127, 127)
    scale = jnp.ldexp(jnp.ones_like(ratio), e)
    codes = e2m1_encode(xg / scale[..., None]).reshape(x.shape)
    return pack_e2m1(codes), pack_ue8m0((e + 127).astype(jnp.uint8))


def fp4_dequantize(packed: jax.Array, scales: jax.Array) -> jax.Array:
    """Inverse of :func:`per_token_cast_to_fp4`: ``[..., D/2]`` uint8 + ``[...]`` int32 -> ``[..., D]`` float32."""
    vals = e2m1_decode(unpack_e2m1(packed))
    d = vals.shape[-1]
    groups = d // FP4_GROUP
    sf = unpack_ue8m0(scales, groups)
    return (vals.reshape(*vals.shape[:-1], groups, FP4_GROUP) * sf[..., None]).reshape(vals.shape)


def per_token_cast_to_fp8_e4m3(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``[..., D]`` -> e4m3 values and one float32 scale per token (``amax / 448``), the indexer's KV format."""
    x = jnp.asarray(x, jnp.float32)
    amax = jnp.maximum(jnp.max(jnp.abs(x), axis=-1), 1e-4)
    scale = amax / 448.0
    return (x / scale[..., None]).astype(jnp.float8_e4m3fn), scale


# ------------------------------------------------------------------------------------------------
# Fused paged KV caches
# ------------------------------------------------------------------------------------------------


def _bytes_of(x: jax.Array) -> jax.Array:
    """Little-endian bytes of a 4-byte-element array: ``[...] -> [..., 4]`` uint8."""
    return jax.lax.bitcast_convert_type(x, jnp.uint8)


def build_fp8_paged_kv_cache(kv: jax.Array, kv_scale: jax.Array, block_kv: int) -> jax.Array:
    """Packs token-major FP8 KV ``[T, D]`` e4m3 + ``[T]`` float32 scales into the fused cache.

    Token ``t`` goes to physical block ``t // block_kv``, slot ``t % block_kv`` (``T`` must be a
    multiple of ``block_kv``). Returns ``[T / block_kv, block_kv, 1, D + 4]`` uint8 whose blocks hold
    all values first, then all scales (DeepGEMM's layout).
    """
    kv = jnp.asarray(kv)
    t, d = kv.shape
    if t % block_kv:
        raise ValueError(f"build_fp8_paged_kv_cache: T = {t} must be a multiple of block_kv = {block_kv}")
    nb = t // block_kv
    vals = jax.lax.bitcast_convert_type(kv.astype(jnp.float8_e4m3fn), jnp.uint8).reshape(nb, block_kv * d)
    sf = _bytes_of(jnp.asarray(kv_scale, jnp.float32)).reshape(nb, block_kv * 4)
    return jnp.concatenate([vals, sf], axis=1).reshape(nb, block_kv, 1, d + 4)


def build_fp4_paged_kv_cache(kv_packed: jax.Array, kv_scale: jax.Array, block_kv: int) -> jax.Array:
    """Packs token-major FP4 KV ``[T, D/2]`` uint8 + ``[T]`` int32 packed UE8M0 into the fused cache
    ``[T / block_kv, block_kv, 1, D/2 + 4]`` uint8 (values of a block first, then its scale words)."""
    kv_packed = jnp.asarray(kv_packed).astype(jnp.uint8)
    t, half = kv_packed.shape
    if t % block_kv:
        raise ValueError(f"build_fp4_paged_kv_cache: T = {t} must be a multiple of block_kv = {block_kv}")
    nb = t // block_kv
    sf = _bytes_of(jnp.asarray(kv_scale).astype(jnp.int32)).reshape(nb, block_kv * 4)
    return jnp.concatenate([kv_packed.reshape(nb, block_kv * half), sf], axis=1).reshape(nb, block_kv, 1, half + 4)


def split_fp8_paged_kv_cache(cache: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Fused FP8 cache ``[NB, BKV, 1, D+4]`` -> values ``[NB, BKV, D]`` e4m3 and scales ``[NB, BKV]`` float32."""
    nb, bkv, _, row = cache.shape
    d = row - 4
    flat = jnp.asarray(cache).reshape(nb, bkv * row)
    vals = jax.lax.bitcast_convert_type(flat[:, : bkv * d].reshape(nb, bkv, d), jnp.float8_e4m3fn)
    sf = jax.lax.bitcast_convert_type(flat[:, bkv * d:].reshape(nb, bkv, 4), jnp.float32)
    return vals, sf


def split_fp4_paged_kv_cache(cache: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Fused FP4 cache ``[NB, BKV, 1, D/2+4]`` -> packed ``[NB, BKV, D/2]`` uint8 and ``[NB, BKV]`` int32 scales."""
    nb, bkv, _, row = cache.shape
    half = row - 4
    flat = jnp.asarray(cache).reshape(nb, bkv * row)
    vals = flat[:, : bkv * half].reshape(nb, bkv, half)
    sf = jax.lax.bitcast_convert_type(flat[:, bkv * half:].reshape(nb, bkv, 4), jnp.int32)
    return vals, sf
