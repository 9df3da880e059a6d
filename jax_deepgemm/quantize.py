"""FP8 (e4m3) quantizers and their inverses, matching DeepGEMM's reference quantizers.

Every function here is pure ``jax.numpy``: it traces under ``jax.jit`` on CPU and GPU, and
accepts any number of leading batch dimensions (the quantization acts on the last two axes).

Quantization rule shared by all three layouts (DeepGEMM ``deep_gemm/utils/math.py``):

* ``amax``  = max |x| over the block, computed in float32; partial edge blocks (a dimension
  that is not a multiple of the block size) are padded with zeros, which never raise amax;
* ``amax``  is clamped to ``>= 1e-4`` so an all-zero block still gets a finite, non-zero scale;
* ``scale`` = ``amax / 448`` (448 = largest finite e4m3 value), optionally rounded up to a
  power of two with :func:`ceil_to_ue8m0` (the UE8M0 scale format of SM100);
* ``x_fp8`` = ``(x * (1 / scale)).astype(float8_e4m3fn)`` in float32. DeepGEMM multiplies by
  the reciprocal rather than dividing; we do the same so codes agree bit for bit.

Dequantization is ``x_fp8.astype(f32) * scale`` with the scale broadcast over its block.

Non-finite inputs are not special-cased (same as DeepGEMM):

* a NaN anywhere in a block makes that block's amax NaN, so its scale is NaN and every value
  of the block dequantizes to NaN;
* an Inf makes amax and scale Inf; ``1 / scale`` is then 0, so the Inf element becomes NaN
  (``Inf * 0``) and the other elements of the block become 0;
* with ``use_ue8m0=True`` a NaN or Inf scale is clamped by :func:`ceil_to_ue8m0` to the
  largest normal power of two, 2**127, so the scale stays finite; the NaN/Inf elements still
  quantize to NaN and the finite ones to (nearly) 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FP8_E4M3_MAX",
    "AMAX_FLOOR",
    "ceil_to_ue8m0",
    "per_token_cast_to_fp8",
    "per_block_cast_to_fp8",
    "per_channel_cast_to_fp8",
    "per_token_dequantize",
    "per_block_dequantize",
    "per_channel_dequantize",
]

FP8_E4M3_MAX = 448.0
"""Largest finite float8_e4m3fn value; scales map a block's amax onto it."""

AMAX_FLOOR = 1e-4
"""Lower clamp on amax so all-zero blocks get a finite non-zero scale (DeepGEMM's value)."""

_F32_EXPONENT_SHIFT = 23
_F32_EXPONENT_MASK = 0xFF
_F32_MANTISSA_MASK = 0x7FFFFF
_F32_ABS_MASK = 0x7FFFFFFF
# Biased exponents of the smallest and largest *normal* float32 powers of two (2^-126, 2^127).
_MIN_NORMAL_BIASED_EXPONENT = 1
_MAX_NORMAL_BIASED_EXPONENT = 254


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _check_positive_int(fn: str, name: str, value) -> int:
    # bool is an int subclass; reject it so that e.g. gran_k=True is not silently 1.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")
    return int(value)


def _check_bool(fn: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        # A tracer here means it was passed as a traced argument to jit.
        raise TypeError(
            f"{fn}: {name} must be a Python bool (static under jit), got {type(value).__name__}"
        )
    return bool(value)


def _check_float_array(fn: str, name: str, x, min_rank: int):
    """Converts ``x`` to a jax array and checks that it is floating point with rank >= min_rank."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must have a floating-point dtype, got {x.dtype}")
    if x.ndim < min_rank:
        raise ValueError(f"{fn}: {name} must have rank >= {min_rank}, got shape {tuple(x.shape)}")
    return x


def _check_fp8_scale_pair(fn: str, x, scale, expected_scale_shape_of):
    """Validates a (quantized values, scale) pair given the scale shape implied by x's shape."""
    x = _check_float_array(fn, "x_fp8", x, 2)
    scale = _check_float_array(fn, "scale", scale, 2)
    expected = tuple(expected_scale_shape_of(x.shape))
    if tuple(scale.shape) != expected:
        raise ValueError(
            f"{fn}: scale must have shape {expected} for x_fp8 of shape {tuple(x.shape)}, "
            f"got {tuple(scale.shape)}"
        )
    return x, scale


def _pad_axis_to_multiple(x: jax.Array, axis: int, multiple: int) -> jax.Array:
    """Zero-pads ``axis`` of ``x`` at the end up to a multiple of ``multiple``.

    Zeros are neutral for amax (|0| never exceeds a real amax) which is exactly how DeepGEMM
    treats partial edge blocks.
    """
    size = x.shape[axis]
    extra = _ceil_div(size, multiple) * multiple - size
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis % x.ndim] = (0, extra)
    return jnp.pad(x, widths)


def _divide_exactly(numerator: jax.Array, denominator: float) -> jax.Array:
    """``numerator / denominator`` as a correctly rounded IEEE division, under jit and vmap.

    XLA's algebraic simplifier rewrites ``x / broadcast(c)`` into ``x * broadcast(1 / c)``; that
    differs from a true division in the last bit for about half of all inputs. To keep the
    division, the denominator must be an array of the numerator's full shape that XLA cannot
    see through: a select on the numerator makes it full-shape (also under vmap, whose
    batching rule broadcasts both branches to the batched shape), and the optimization barrier
    hides its (constant) value. The arrays involved are scale-sized, so this costs nothing.
    """
    value = jnp.asarray(denominator, numerator.dtype)
    full_denominator = jax.lax.optimization_barrier(jnp.where(numerator >= 0, value, value))
    return numerator / full_denominator


def _scale_from_amax(amax: jax.Array, use_ue8m0: bool) -> jax.Array:
    """amax (float32) -> float32 scale: clamp at AMAX_FLOOR, divide by 448, optional UE8M0 round-up."""
    # True division (not a reciprocal multiply) so the scale is exactly `amax / 448`, as in
    # DeepGEMM (PyTorch divides); see _divide_exactly.
    clamped = jnp.maximum(amax, jnp.float32(AMAX_FLOOR))
    # jnp.maximum propagates NaN, so a NaN amax yields a NaN scale (documented in the module).
    scale = _divide_exactly(clamped, FP8_E4M3_MAX)
    return ceil_to_ue8m0(scale) if use_ue8m0 else scale


def _encode_e4m3(x_f32: jax.Array, scale_broadcast: jax.Array) -> jax.Array:
    # Multiply by the reciprocal (not divide): matches DeepGEMM's codes bit for bit.
    return (x_f32 * (jnp.float32(1.0) / scale_broadcast)).astype(jnp.float8_e4m3fn)


def _repeat_to(scale: jax.Array, axis: int, block: int, size: int) -> jax.Array:
    """Expands a per-block scale along ``axis`` to one entry per element (``size`` elements).

    The last block may be partial, so the repeated axis is cut back to ``size``.
    """
    repeated = jnp.repeat(scale, block, axis=axis)
    return jax.lax.slice_in_dim(repeated, 0, size, axis=axis % scale.ndim)


def _check_out_dtype(fn: str, dtype):
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: dtype must be a floating-point dtype, got {dtype}")
    return dtype


# --------------------------------------------------------------------------------------------
# UE8M0 rounding
# --------------------------------------------------------------------------------------------


def ceil_to_ue8m0(x) -> jax.Array:
    """Rounds float32 scales up to a power of two: ``2 ** ceil(log2(|x|))``.

    Done on the float32 bit pattern (no transcendental functions, so it is exact): the result's
    biased exponent is ``exponent(x) + (mantissa(x) != 0)``, clamped to the normal range
    [1, 254], i.e. results lie in [2**-126, 2**127]. The sign of ``x`` is ignored (scales are
    positive). Consequences of the clamp: 0 and subnormals map to 2**-126; Inf and NaN map to
    2**127. Such a value is what SM100 stores as one UE8M0 byte (``bits >> 23``).

    Args:
      x: array of scales (any float dtype; computed in float32).

    Returns:
      float32 array of the same shape.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"ceil_to_ue8m0: x must have a floating-point dtype, got {x.dtype}")
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32) & jnp.uint32(_F32_ABS_MASK)
    exponent = (bits >> _F32_EXPONENT_SHIFT) & jnp.uint32(_F32_EXPONENT_MASK)
    has_mantissa = (bits & jnp.uint32(_F32_MANTISSA_MASK)) != 0
    exponent = jnp.clip(
        exponent + has_mantissa.astype(jnp.uint32),
        jnp.uint32(_MIN_NORMAL_BIASED_EXPONENT),
        jnp.uint32(_MAX_NORMAL_BIASED_EXPONENT),
    )
    return jax.lax.bitcast_convert_type(exponent << _F32_EXPONENT_SHIFT, jnp.float32)


# --------------------------------------------------------------------------------------------
# Per-token (1 x gran_k): activations, and the "1D1D" per-row weight scales
# --------------------------------------------------------------------------------------------


def per_token_cast_to_fp8(x, *, use_ue8m0: bool = False, gran_k: int = 128):
    """Quantizes ``x [..., M, K]`` to e4m3 with one scale per row per ``gran_k`` columns.

    This is the activation ("A") format of DeepGEMM's FP8 GEMMs ("1x128" scaling), and also the
    per-channel weight format of the 1D1D kernels when applied to ``B [N, K]``.

    Args:
      x: ``[..., M, K]`` array of any floating dtype (quantization math is float32).
      use_ue8m0: round each scale up to a power of two (see :func:`ceil_to_ue8m0`).
      gran_k: number of K elements sharing one scale. ``K`` need not be a multiple; the last
        block is then partial (padded with zeros for its amax only).

    Returns:
      ``(x_fp8, scale)``: ``x_fp8 [..., M, K]`` float8_e4m3fn and ``scale [..., M, ceil(K/gran_k)]``
      float32, so that ``x ~= x_fp8 * scale[..., k // gran_k]``.

    NaN/Inf: not special-cased; see the module docstring (a NaN in a block gives a NaN scale).
    """
    fn = "per_token_cast_to_fp8"
    x = _check_float_array(fn, "x", x, 2)
    use_ue8m0 = _check_bool(fn, "use_ue8m0", use_ue8m0)
    gran_k = _check_positive_int(fn, "gran_k", gran_k)

    *lead, m, k = x.shape
    num_k_blocks = _ceil_div(k, gran_k)
    blocks = _pad_axis_to_multiple(x.astype(jnp.float32), -1, gran_k)
    blocks = blocks.reshape(*lead, m, num_k_blocks, gran_k)

    scale = _scale_from_amax(jnp.max(jnp.abs(blocks), axis=-1), use_ue8m0)
    codes = _encode_e4m3(blocks, scale[..., None])
    x_fp8 = codes.reshape(*lead, m, num_k_blocks * gran_k)[..., :k]
    return x_fp8, scale


def per_token_dequantize(x_fp8, scale, *, gran_k: int = 128, dtype=jnp.float32) -> jax.Array:
    """Inverse of :func:`per_token_cast_to_fp8`: ``x_fp8 [..., M, K] * scale [..., M, ceil(K/gran_k)]``.

    The product is formed in float32 and then cast to ``dtype``.
    """
    fn = "per_token_dequantize"
    gran_k = _check_positive_int(fn, "gran_k", gran_k)
    dtype = _check_out_dtype(fn, dtype)
    x_fp8, scale = _check_fp8_scale_pair(
        fn, x_fp8, scale, lambda s: (*s[:-1], _ceil_div(s[-1], gran_k))
    )
    k = x_fp8.shape[-1]
    per_element = _repeat_to(scale.astype(jnp.float32), -1, gran_k, k)
    return (x_fp8.astype(jnp.float32) * per_element).astype(dtype)


# --------------------------------------------------------------------------------------------
# Per-block (block x block): the "1D2D" weight format
# --------------------------------------------------------------------------------------------


def per_block_cast_to_fp8(w, *, use_ue8m0: bool = False, block: int = 128):
    """Quantizes ``w [..., N, K]`` to e4m3 with one scale per ``block x block`` tile.

    This is the weight ("B") format of DeepGEMM's 1D2D kernels ("128x128" scaling).

    Args:
      w: ``[..., N, K]`` array of any floating dtype (quantization math is float32).
      use_ue8m0: round each scale up to a power of two (see :func:`ceil_to_ue8m0`).
      block: tile edge length. ``N`` and ``K`` need not be multiples; edge tiles are then
        partial (padded with zeros for their amax only).

    Returns:
      ``(w_fp8, scale)``: ``w_fp8 [..., N, K]`` float8_e4m3fn and
      ``scale [..., ceil(N/block), ceil(K/block)]`` float32, so that
      ``w ~= w_fp8 * scale[..., n // block, k // block]``.

    NaN/Inf: not special-cased; see the module docstring (a NaN in a tile gives a NaN scale).
    """
    fn = "per_block_cast_to_fp8"
    w = _check_float_array(fn, "w", w, 2)
    use_ue8m0 = _check_bool(fn, "use_ue8m0", use_ue8m0)
    block = _check_positive_int(fn, "block", block)

    *lead, n, k = w.shape
    num_n_blocks, num_k_blocks = _ceil_div(n, block), _ceil_div(k, block)
    tiles = _pad_axis_to_multiple(_pad_axis_to_multiple(w.astype(jnp.float32), -1, block), -2, block)
    tiles = tiles.reshape(*lead, num_n_blocks, block, num_k_blocks, block)

    scale = _scale_from_amax(jnp.max(jnp.abs(tiles), axis=(-3, -1)), use_ue8m0)
    codes = _encode_e4m3(tiles, scale[..., :, None, :, None])
    w_fp8 = codes.reshape(*lead, num_n_blocks * block, num_k_blocks * block)[..., :n, :k]
    return w_fp8, scale


def per_block_dequantize(w_fp8, scale, *, block: int = 128, dtype=jnp.float32) -> jax.Array:
    """Inverse of :func:`per_block_cast_to_fp8`: ``w_fp8 [..., N, K] * scale[..., n//block, k//block]``.

    The product is formed in float32 and then cast to ``dtype``.
    """
    fn = "per_block_dequantize"
    block = _check_positive_int(fn, "block", block)
    dtype = _check_out_dtype(fn, dtype)
    w_fp8, scale = _check_fp8_scale_pair(
        fn, w_fp8, scale, lambda s: (*s[:-2], _ceil_div(s[-2], block), _ceil_div(s[-1], block))
    )
    n, k = w_fp8.shape[-2:]
    per_element = _repeat_to(_repeat_to(scale.astype(jnp.float32), -1, block, k), -2, block, n)
    return (w_fp8.astype(jnp.float32) * per_element).astype(dtype)


# --------------------------------------------------------------------------------------------
# Per-channel (gran x 1): one scale per column per `gran` rows
# --------------------------------------------------------------------------------------------


def per_channel_cast_to_fp8(x, *, use_ue8m0: bool = False, gran: int = 128):
    """Quantizes ``x [..., M, K]`` to e4m3 with one scale per column per ``gran`` rows.

    DeepGEMM's ``per_channel_cast_to_fp8``: the blocks run *down* the rows (axis -2), so each
    of the K columns gets its own scale for every group of ``gran`` consecutive rows. It is how
    the K-grouped weight-gradient GEMM (``k_grouped_fp8_gemm_nt_contiguous``) quantizes its
    ``[K_g, M]`` / ``[K_g, N]`` operands: the reduction axis there is the row axis, so scaling
    per 128 rows gives the "1x128 along K" scales the 1D1D kernel expects (after a transpose).

    Args:
      x: ``[..., M, K]`` array of any floating dtype (quantization math is float32).
      use_ue8m0: round each scale up to a power of two (see :func:`ceil_to_ue8m0`).
      gran: number of rows sharing one scale. ``M`` need not be a multiple (DeepGEMM requires
        it; we allow a partial last block, padded with zeros for its amax only).

    Returns:
      ``(x_fp8, scale)``: ``x_fp8 [..., M, K]`` float8_e4m3fn and ``scale [..., ceil(M/gran), K]``
      float32, so that ``x ~= x_fp8 * scale[..., m // gran, k]``.

    NaN/Inf: not special-cased; see the module docstring (a NaN in a block gives a NaN scale).
    """
    fn = "per_channel_cast_to_fp8"
    x = _check_float_array(fn, "x", x, 2)
    use_ue8m0 = _check_bool(fn, "use_ue8m0", use_ue8m0)
    gran = _check_positive_int(fn, "gran", gran)

    *lead, m, k = x.shape
    num_m_blocks = _ceil_div(m, gran)
    blocks = _pad_axis_to_multiple(x.astype(jnp.float32), -2, gran)
    blocks = blocks.reshape(*lead, num_m_blocks, gran, k)

    scale = _scale_from_amax(jnp.max(jnp.abs(blocks), axis=-2), use_ue8m0)
    codes = _encode_e4m3(blocks, scale[..., :, None, :])
    x_fp8 = codes.reshape(*lead, num_m_blocks * gran, k)[..., :m, :]
    return x_fp8, scale


def per_channel_dequantize(x_fp8, scale, *, gran: int = 128, dtype=jnp.float32) -> jax.Array:
    """Inverse of :func:`per_channel_cast_to_fp8`: ``x_fp8 [..., M, K] * scale[..., m // gran, k]``.

    The product is formed in float32 and then cast to ``dtype``.
    """
    fn = "per_channel_dequantize"
    gran = _check_positive_int(fn, "gran", gran)
    dtype = _check_out_dtype(fn, dtype)
    x_fp8, scale = _check_fp8_scale_pair(
        fn, x_fp8, scale, lambda s: (*s[:-2], _ceil_div(s[-2], gran), s[-1])
    )
    m = x_fp8.shape[-2]
    per_element = _repeat_to(scale.astype(jnp.float32), -2, gran, m)
    return (x_fp8.astype(jnp.float32) * per_element).astype(dtype)
