"""CPU tests of jax_deepgemm.quantize against independent NumPy computations.

Expected values are computed here with NumPy / ml_dtypes (amax, amax / 448, reciprocal
multiply, e4m3 rounding) or written out by hand, never by the code under test.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jax_deepgemm.quantize import (
    ceil_to_ue8m0,
    per_block_cast_to_fp8,
    per_block_dequantize,
    per_channel_cast_to_fp8,
    per_channel_dequantize,
    per_token_cast_to_fp8,
    per_token_dequantize,
)

E4M3 = ml_dtypes.float8_e4m3fn
# e4m3 keeps 3 mantissa bits: round-to-nearest error is at most 2^-4 relative for normal codes
# (|code| >= 2^-6) and at most half the smallest subnormal step, 2^-10, in absolute code units.
E4M3_REL_ERR = 2.0**-4
E4M3_ABS_ERR_CODE_UNITS = 2.0**-10
# Slack for the two float32 roundings (x * (1/scale), then code * scale).
F32_SLACK = 1.0 + 2.0**-20


# ---------------------------------------------------------------------------------------------
# Independent NumPy model of the quantizers
# ---------------------------------------------------------------------------------------------


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def np_block_amax(x: np.ndarray, block_rows: int, block_cols: int) -> np.ndarray:
    """amax of |x| over (block_rows x block_cols) tiles of the last two axes; zero padded."""
    *lead, rows, cols = x.shape
    r, c = ceil_div(rows, block_rows), ceil_div(cols, block_cols)
    padded = np.zeros((*lead, r * block_rows, c * block_cols), np.float32)
    padded[..., :rows, :cols] = np.abs(x.astype(np.float32))
    tiles = padded.reshape(*lead, r, block_rows, c, block_cols)
    return tiles.max(axis=(-3, -1))


def np_scale(amax: np.ndarray) -> np.ndarray:
    return np.maximum(amax, np.float32(1e-4)) / np.float32(448.0)


def expand(scale: np.ndarray, block_rows: int, block_cols: int, rows: int, cols: int) -> np.ndarray:
    """Per-tile scale -> per-element scale over a (rows, cols) matrix."""
    out = np.repeat(np.repeat(scale, block_rows, axis=-2), block_cols, axis=-1)
    return out[..., :rows, :cols]


def np_codes(x: np.ndarray, elem_scale: np.ndarray) -> np.ndarray:
    """DeepGEMM's encode: float32 multiply by the reciprocal, then round to e4m3."""
    return (x.astype(np.float32) * (np.float32(1.0) / elem_scale)).astype(E4M3)


def bits(a) -> np.ndarray:
    return np.asarray(a).view(np.uint8)


def assert_roundtrip_bound(x: np.ndarray, x_fp8, elem_scale: np.ndarray) -> None:
    """|dequant - x| <= 2^-4 |x| + 2^-10 * scale (per element), the e4m3 rounding bound."""
    deq = np.asarray(x_fp8).astype(np.float64) * elem_scale.astype(np.float64)
    x64 = x.astype(np.float64)
    err = np.abs(deq - x64)
    bound = (E4M3_REL_ERR * np.abs(x64) + E4M3_ABS_ERR_CODE_UNITS * elem_scale) * F32_SLACK
    assert np.isfinite(deq).all()
    worst = np.argmax(err - bound)
    assert (err <= bound).all(), (
        f"round-trip error {err.flat[worst]} exceeds bound {bound.flat[worst]} at x={x64.flat[worst]}"
    )


def random_matrix(shape, seed: int = 0, spread: float = 3.0) -> np.ndarray:
    """Normal samples with per-row magnitudes spread over 10^-spread .. 10^spread."""
    rng = np.random.default_rng(seed)
    row_mag = 10.0 ** rng.uniform(-spread, spread, size=(*shape[:-1], 1))
    return (rng.standard_normal(shape) * row_mag).astype(np.float32)


# Layout descriptors: (function, dequantize, kwarg name of the block size, tile shape given block)
LAYOUTS = {
    "per_token": (per_token_cast_to_fp8, per_token_dequantize, "gran_k", lambda b: (1, b)),
    "per_block": (per_block_cast_to_fp8, per_block_dequantize, "block", lambda b: (b, b)),
    "per_channel": (per_channel_cast_to_fp8, per_channel_dequantize, "gran", lambda b: (b, 1)),
}


def expected_scale(layout: str, x: np.ndarray, block: int = 128) -> np.ndarray:
    rows, cols = LAYOUTS[layout][3](block)
    return np_scale(np_block_amax(x, rows, cols))


def elem_scale_of(layout: str, scale: np.ndarray, x_shape, block: int = 128) -> np.ndarray:
    rows, cols = LAYOUTS[layout][3](block)
    return expand(np.asarray(scale), rows, cols, x_shape[-2], x_shape[-1])


# ---------------------------------------------------------------------------------------------
# Scales and codes vs the NumPy model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("shape", [(1, 128), (7, 384), (130, 200), (257, 129)])
def test_scale_and_codes_match_numpy(layout, shape):
    x = random_matrix(shape, seed=sum(shape))
    x_fp8, scale = LAYOUTS[layout][0](x)

    want_scale = expected_scale(layout, x)
    assert scale.dtype == jnp.float32 and x_fp8.dtype == jnp.float8_e4m3fn
    assert scale.shape == want_scale.shape
    np.testing.assert_array_equal(np.asarray(scale), want_scale)  # exact: amax / 448

    want_codes = np_codes(x, elem_scale_of(layout, want_scale, shape))
    np.testing.assert_array_equal(bits(x_fp8), want_codes.view(np.uint8))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_scale_shapes_for_partial_blocks(layout):
    x = np.ones((3, 300, 130), np.float32)  # 300 = 2*128 + 44, 130 = 128 + 2
    _, scale = LAYOUTS[layout][0](x)
    want = {"per_token": (3, 300, 2), "per_block": (3, 3, 2), "per_channel": (3, 3, 130)}[layout]
    assert scale.shape == want


def test_partial_block_padding_does_not_change_amax():
    # The last K block holds only 2 real columns; zero padding must not lower or raise amax.
    x = np.full((1, 130), -0.5, np.float32)
    x[0, 129] = -8.0
    _, scale = per_token_cast_to_fp8(x)
    want = np.array([[0.5, 8.0]], np.float32) / np.float32(448)
    np.testing.assert_array_equal(np.asarray(scale), want)


def test_other_granularity():
    x = random_matrix((5, 100), seed=3)
    x_fp8, scale = per_token_cast_to_fp8(x, gran_k=32)
    assert scale.shape == (5, 4)
    want_scale = np_scale(np_block_amax(x, 1, 32))
    np.testing.assert_array_equal(np.asarray(scale), want_scale)
    assert_roundtrip_bound(x, x_fp8, expand(want_scale, 1, 32, 5, 100))


def test_bfloat16_input_is_quantized_in_float32():
    x = random_matrix((9, 256), seed=4).astype(ml_dtypes.bfloat16)
    x_fp8, scale = per_token_cast_to_fp8(jnp.asarray(x))
    x32 = x.astype(np.float32)
    want_scale = expected_scale("per_token", x32)
    np.testing.assert_array_equal(np.asarray(scale), want_scale)
    want_codes = np_codes(x32, elem_scale_of("per_token", want_scale, x.shape))
    np.testing.assert_array_equal(bits(x_fp8), want_codes.view(np.uint8))


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_ue8m0", [False, True])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_roundtrip_error_within_e4m3_bound(layout, use_ue8m0):
    quantize, dequantize, _, _ = LAYOUTS[layout]
    x = random_matrix((2, 150, 333), seed=5)
    x_fp8, scale = quantize(x, use_ue8m0=use_ue8m0)
    elem_scale = elem_scale_of(layout, scale, x.shape)
    assert_roundtrip_bound(x, x_fp8, elem_scale)

    # The library's inverse equals the NumPy dequantization exactly (one f32 multiply).
    want = (np.asarray(x_fp8).astype(np.float32) * elem_scale).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(dequantize(x_fp8, scale)), want)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_dequantize_output_dtype(layout):
    quantize, dequantize, _, _ = LAYOUTS[layout]
    x = random_matrix((4, 130), seed=6, spread=1.0)
    x_fp8, scale = quantize(x)
    out = dequantize(x_fp8, scale, dtype=jnp.bfloat16)
    assert out.dtype == jnp.bfloat16
    want = (np.asarray(x_fp8).astype(np.float32) * elem_scale_of(layout, scale, x.shape)).astype(
        ml_dtypes.bfloat16
    )
    np.testing.assert_array_equal(np.asarray(out).view(np.uint16), want.view(np.uint16))


def test_codes_use_reciprocal_multiply_like_deepgemm():
    # x * (1/scale) and x / scale differ in the last float32 bit, which changes the e4m3 code
    # only next to a rounding midpoint. Build such values in NumPy and check that the codes
    # follow DeepGEMM's reciprocal multiply.
    amax = np.float32(3.0)
    scale = amax / np.float32(448)
    inverse = np.float32(1.0) / scale
    positive_codes = np.arange(1, 0x7F, dtype=np.uint8).view(E4M3).astype(np.float64)  # 2^-9 .. 448
    midpoints = (positive_codes[:-1] + positive_codes[1:]) / 2
    near = (midpoints * np.float64(scale)).astype(np.float32)
    candidates = np.concatenate([np.nextafter(near, np.float32(s * np.inf)) for s in (-1, 1)] + [near])
    candidates = candidates[candidates < amax]
    by_multiply = (candidates * inverse).astype(E4M3)
    by_divide = (candidates / scale).astype(E4M3)
    sensitive = candidates[by_multiply.view(np.uint8) != by_divide.view(np.uint8)][:127]
    assert sensitive.size >= 4, "test setup: expected values whose code depends on the rounding path"

    row = np.concatenate([[amax], sensitive]).astype(np.float32)[None, :]
    x_fp8, got_scale = per_token_cast_to_fp8(row)
    np.testing.assert_array_equal(np.asarray(got_scale), [[scale]])
    want = (row * inverse).astype(E4M3)
    np.testing.assert_array_equal(bits(x_fp8), want.view(np.uint8))


def test_codes_use_full_e4m3_range():
    # The element equal to amax maps to exactly 448 (the largest finite code), so the
    # quantizer wastes no range; the dequantized value is then amax * (448 * (1/448)) ~ amax.
    x = np.array([[3.0, -7.0, 1.0]], np.float32)
    x_fp8, _ = per_token_cast_to_fp8(x)
    assert np.asarray(x_fp8).astype(np.float32)[0, 1] == -448.0


# ---------------------------------------------------------------------------------------------
# Special inputs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_zeros(layout):
    x = np.zeros((3, 200), np.float32)
    x_fp8, scale = LAYOUTS[layout][0](x)
    # amax 0 is clamped to 1e-4 so the scale stays finite and non-zero.
    np.testing.assert_array_equal(np.asarray(scale), np.full(scale.shape, np.float32(1e-4) / np.float32(448)))
    np.testing.assert_array_equal(np.asarray(x_fp8).astype(np.float32), x)

    _, ue8m0_scale = LAYOUTS[layout][0](x, use_ue8m0=True)
    # 1e-4 / 448 = 2.23e-7 lies in (2^-23, 2^-22] = (1.19e-7, 2.38e-7].
    np.testing.assert_array_equal(np.asarray(ue8m0_scale), np.full(scale.shape, 2.0**-22, np.float32))


@pytest.mark.parametrize("use_ue8m0", [False, True])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_huge_values_roundtrip_finite(layout, use_ue8m0):
    rng = np.random.default_rng(7)
    x = (rng.uniform(-1.0, 1.0, (3, 140)) * 1e30).astype(np.float32)
    x[0, 0] = 1e30
    x_fp8, scale = LAYOUTS[layout][0](x, use_ue8m0=use_ue8m0)
    assert np.isfinite(np.asarray(scale)).all()
    assert_roundtrip_bound(x, x_fp8, elem_scale_of(layout, scale, x.shape))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_subnormal_values_roundtrip_finite(layout):
    x = np.full((2, 130), 1e-40, np.float32)  # float32 subnormal, far below the 1e-4 amax floor
    x[1, ::2] = -1e-40
    x_fp8, scale = LAYOUTS[layout][0](x)
    elem_scale = elem_scale_of(layout, scale, x.shape)
    deq = np.asarray(x_fp8).astype(np.float64) * elem_scale
    assert np.isfinite(deq).all()
    # Any error is far below one e4m3 step of the clamped scale.
    assert (np.abs(deq - x.astype(np.float64)) <= E4M3_ABS_ERR_CODE_UNITS * elem_scale).all()


def test_nan_poisons_only_its_block():
    x = np.ones((2, 256), np.float32)
    x[0, 5] = np.nan
    x_fp8, scale = per_token_cast_to_fp8(x)
    s = np.asarray(scale)
    assert np.isnan(s[0, 0])
    assert np.isnan(np.asarray(x_fp8).astype(np.float32)[0, :128]).all()
    # Other blocks are untouched: amax 1 -> scale 1/448 -> every code is 448.
    np.testing.assert_array_equal(s[0, 1], np.float32(1.0) / np.float32(448))
    np.testing.assert_array_equal(s[1], np.full(2, np.float32(1.0) / np.float32(448)))
    np.testing.assert_array_equal(np.asarray(x_fp8).astype(np.float32)[1], np.full(256, 448.0))


# ---------------------------------------------------------------------------------------------
# UE8M0
# ---------------------------------------------------------------------------------------------


def test_ceil_to_ue8m0_hand_values():
    x = np.array(
        [1.0, 1.5, 3.0, 4.0, 0.75, 1.0000001, 2.0**-126, 2.0**127, 0.0, 1e-45, np.inf, np.nan, -3.0],
        np.float32,
    )
    want = np.array(
        [1.0, 2.0, 4.0, 4.0, 1.0, 2.0, 2.0**-126, 2.0**127, 2.0**-126, 2.0**-126, 2.0**127, 2.0**127, 4.0],
        np.float32,
    )
    got = np.asarray(ceil_to_ue8m0(x))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_ceil_to_ue8m0_matches_log2_ceil():
    rng = np.random.default_rng(8)
    x = (10.0 ** rng.uniform(-30, 30, 4096)).astype(np.float32)
    x[:64] = 2.0 ** rng.integers(-100, 100, 64)  # exact powers of two stay unchanged
    want = (2.0 ** np.ceil(np.log2(x.astype(np.float64)))).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(jax.jit(ceil_to_ue8m0)(x)), want)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_ue8m0_scales_are_tight_powers_of_two(layout):
    x = random_matrix((3, 150, 260), seed=9)
    _, scale = LAYOUTS[layout][0](x, use_ue8m0=True)
    s = np.asarray(scale)
    mantissa, _ = np.frexp(s)
    assert (mantissa == 0.5).all(), "UE8M0 scales must be exact powers of two"
    plain = expected_scale(layout, x)
    assert (s >= plain).all() and (s < 2 * plain).all()


# ---------------------------------------------------------------------------------------------
# Batching and jit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_leading_batch_dims_equal_per_slice(layout):
    quantize = LAYOUTS[layout][0]
    x = random_matrix((2, 3, 70, 200), seed=10)
    x_fp8, scale = quantize(x)
    for i in range(2):
        for j in range(3):
            q_ij, s_ij = quantize(x[i, j])
            np.testing.assert_array_equal(bits(x_fp8[i, j]), bits(q_ij))
            np.testing.assert_array_equal(np.asarray(scale[i, j]), np.asarray(s_ij))
    vq, vs = jax.vmap(jax.vmap(quantize))(x)
    np.testing.assert_array_equal(bits(vq), bits(x_fp8))
    np.testing.assert_array_equal(np.asarray(vs), np.asarray(scale))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_jit_matches_eager(layout):
    quantize, dequantize, block_kw, _ = LAYOUTS[layout]
    x = random_matrix((33, 160), seed=11)
    for use_ue8m0 in (False, True):
        eager = quantize(x, use_ue8m0=use_ue8m0)
        jitted = jax.jit(functools.partial(quantize, use_ue8m0=use_ue8m0))(x)
        np.testing.assert_array_equal(bits(jitted[0]), bits(eager[0]))
        np.testing.assert_array_equal(np.asarray(jitted[1]), np.asarray(eager[1]))
    jit_static = jax.jit(quantize, static_argnames=("use_ue8m0", block_kw))
    q, s = jit_static(x, use_ue8m0=False, **{block_kw: 64})
    np.testing.assert_array_equal(
        np.asarray(jax.jit(functools.partial(dequantize, **{block_kw: 64}))(q, s)),
        np.asarray(dequantize(q, s, **{block_kw: 64})),
    )


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_bad_inputs_name_the_argument(layout):
    quantize, dequantize, block_kw, _ = LAYOUTS[layout]
    fn = quantize.__name__
    arg = "w" if layout == "per_block" else "x"
    with pytest.raises(ValueError, match=re.escape(f"{fn}: {arg} must have rank >= 2, got shape (5,)")):
        quantize(np.ones(5, np.float32))
    with pytest.raises(TypeError, match=rf"{fn}: {arg} must have a floating-point dtype, got int32"):
        quantize(np.ones((4, 4), np.int32))
    with pytest.raises(ValueError, match=rf"{fn}: {block_kw} must be a positive int, got 0"):
        quantize(np.ones((4, 4), np.float32), **{block_kw: 0})
    with pytest.raises(TypeError, match=rf"{fn}: use_ue8m0 must be a Python bool"):
        quantize(np.ones((4, 4), np.float32), use_ue8m0="yes")

    q, s = quantize(np.ones((4, 300), np.float32))
    dq_name = dequantize.__name__
    with pytest.raises(ValueError, match=rf"{dq_name}: scale must have shape .* got \(1, 1\)"):
        dequantize(q, jnp.ones((1, 1), jnp.float32))
    with pytest.raises(ValueError, match=rf"{dq_name}: x_fp8 must have rank >= 2"):
        dequantize(q[0], s)
    with pytest.raises(TypeError, match=rf"{dq_name}: dtype must be a floating-point dtype"):
        dequantize(q, s, dtype=jnp.int32)


def test_ceil_to_ue8m0_rejects_integers():
    with pytest.raises(TypeError, match="ceil_to_ue8m0: x must have a floating-point dtype"):
        ceil_to_ue8m0(np.array([1, 2], np.int32))
