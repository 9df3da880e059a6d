"""CPU tests of jax_deepgemm.reference (the GEMM oracle) and jax_deepgemm.testing helpers.

The oracle is checked against a float64 NumPy matmul of operands dequantized here, in NumPy,
from FP8 codes and scales drawn directly with ml_dtypes (not produced by our quantizer).
"""

from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jax_deepgemm.reference import fp8_gemm_nt_reference, resolve_b_scale_kind
from jax_deepgemm.testing.numeric import (
    FP4_ONE_OPERAND_TOLERANCE,
    FP8_TOLERANCE,
    assert_bitwise_equal,
    calc_diff,
    count_bytes,
)
from jax_deepgemm.testing.shapes import ANCHORS_H100, BENCH_M, BENCH_NK, CI_CASES, NORMAL_NK, TEST_M

E4M3 = ml_dtypes.float8_e4m3fn
F32_REL_TOL = 1e-5  # float32 accumulation over K <= 384, relative to sum |a_k * b_k|
BF16_REL_ERR = 2.0**-8  # bf16 keeps 8 significant bits: rounding error <= 2^-8 relative


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------------------------------------
# Independent operand generation and NumPy oracle
# ---------------------------------------------------------------------------------------------


def random_codes(rng, shape) -> np.ndarray:
    """Random e4m3 codes spanning normal and subnormal magnitudes (never NaN)."""
    return (rng.standard_normal(shape) * 40.0).clip(-448, 448).astype(E4M3)


def random_scales(rng, shape) -> np.ndarray:
    """Positive float32 scales that are not powers of two, over a few decades."""
    return (2.0 ** rng.uniform(-12.0, -2.0, shape)).astype(np.float32)


def make_operands(m, n, k, kind, lead=(), seed=0):
    rng = np.random.default_rng(seed)
    a = random_codes(rng, (*lead, m, k))
    a_scale = random_scales(rng, (*lead, m, ceil_div(k, 128)))
    b = random_codes(rng, (n, k))
    b_rows = ceil_div(n, 128) if kind == "block" else n
    b_scale = random_scales(rng, (b_rows, ceil_div(k, 128)))
    return a, a_scale, b, b_scale


def np_dequant(codes: np.ndarray, scale: np.ndarray, row_block: int) -> np.ndarray:
    """codes[..., r, k] * scale[..., r // row_block, k // 128] in float64."""
    rows, k = codes.shape[-2:]
    elem = np.repeat(np.repeat(scale.astype(np.float64), row_block, axis=-2), 128, axis=-1)
    return codes.astype(np.float64) * elem[..., :rows, :k]


def np_oracle(a, a_scale, b, b_scale, kind, c=None):
    """float64 D = deq(A) @ deq(B)^T (+ C), plus sum |a_k b_k| for error bounds."""
    a64 = np_dequant(a, a_scale, 1)
    b64 = np_dequant(b, b_scale, 128 if kind == "block" else 1)
    d = a64 @ b64.T
    magnitude = np.abs(a64) @ np.abs(b64).T
    if c is not None:
        d = d + c.astype(np.float64)
        magnitude = magnitude + np.abs(c.astype(np.float64))
    return d, magnitude


def jitted_reference(**static):
    return jax.jit(functools.partial(fp8_gemm_nt_reference, **static))


def assert_f32_close(got, want, magnitude):
    got = np.asarray(got).astype(np.float64)
    err = np.abs(got - want)
    bound = F32_REL_TOL * magnitude + 1e-30
    worst = np.argmax(err - bound)
    assert (err <= bound).all(), f"error {err.flat[worst]} > bound {bound.flat[worst]}"


def assert_bf16_close(got, want, magnitude):
    got = np.asarray(got).astype(np.float64)
    err = np.abs(got - want)
    bound = BF16_REL_ERR * np.abs(want) + F32_REL_TOL * magnitude + 1e-30
    worst = np.argmax(err - bound)
    assert (err <= bound).all(), f"error {err.flat[worst]} > bound {bound.flat[worst]}"


# ---------------------------------------------------------------------------------------------
# fp8_gemm_nt_reference vs the float64 oracle
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [128, 384, 200])
@pytest.mark.parametrize("n", [128, 200, 576])
@pytest.mark.parametrize("m", [1, 7, 130])
def test_1d2d_block_scales(m, n, k):
    a, a_scale, b, b_scale = make_operands(m, n, k, "block", seed=m * 1000 + n + k)
    want, magnitude = np_oracle(a, a_scale, b, b_scale, "block")

    d32 = jitted_reference(out_dtype=jnp.float32)(a, a_scale, b, b_scale)
    assert d32.shape == (m, n) and d32.dtype == jnp.float32
    assert_f32_close(d32, want, magnitude)

    d16 = jitted_reference()(a, a_scale, b, b_scale)  # default out dtype is bfloat16
    assert d16.shape == (m, n) and d16.dtype == jnp.bfloat16
    assert_bf16_close(d16, want, magnitude)


@pytest.mark.parametrize("k", [128, 384, 200])
@pytest.mark.parametrize("n", [128, 200, 576])
@pytest.mark.parametrize("m", [1, 7, 130])
def test_1d1d_channel_scales_with_c(m, n, k):
    a, a_scale, b, b_scale = make_operands(m, n, k, "channel", seed=m * 1000 + n + k + 1)
    c = np.random.default_rng(m + n + k).standard_normal((m, n)).astype(np.float32)
    want, magnitude = np_oracle(a, a_scale, b, b_scale, "channel", c)

    d = jitted_reference(out_dtype=jnp.float32)(a, a_scale, b, b_scale, c)
    assert d.shape == (m, n) and d.dtype == jnp.float32
    assert_f32_close(d, want, magnitude)


@pytest.mark.parametrize("m, n, k", CI_CASES)
@pytest.mark.parametrize("kind", ["block", "channel"])
def test_ci_cases_pass_deepgemm_metric(m, n, k, kind):
    a, a_scale, b, b_scale = make_operands(m, n, k, kind, seed=m + n + k)
    want, _ = np_oracle(a, a_scale, b, b_scale, kind)
    got = jitted_reference()(a, a_scale, b, b_scale)
    # bf16 output rounding alone costs ~1e-5 of calc_diff; far below DeepGEMM's FP8 bar.
    assert calc_diff(got, want) < 1e-4


def test_leading_batch_dims_equal_per_slice():
    m, n, k = 9, 256, 384
    a, a_scale, b, b_scale = make_operands(m, n, k, "block", lead=(2, 3), seed=5)
    c = np.random.default_rng(6).standard_normal((2, 3, m, n)).astype(np.float32)
    f = jitted_reference(out_dtype=jnp.float32)
    d = f(a, a_scale, b, b_scale, c)
    assert d.shape == (2, 3, m, n)
    for i in range(2):
        for j in range(3):
            want, magnitude = np_oracle(a[i, j], a_scale[i, j], b, b_scale, "block", c[i, j])
            assert_f32_close(d[i, j], want, magnitude)


def test_c_broadcasts_over_batch():
    m, n, k = 4, 128, 128
    a, a_scale, b, b_scale = make_operands(m, n, k, "channel", lead=(2,), seed=7)
    c = np.random.default_rng(8).standard_normal((m, n)).astype(np.float32)
    d = jitted_reference(out_dtype=jnp.float32)(a, a_scale, b, b_scale, c)
    for i in range(2):
        want, magnitude = np_oracle(a[i], a_scale[i], b, b_scale, "channel", c)
        assert_f32_close(d[i], want, magnitude)


def test_zero_scales_and_codes_give_exact_zero_and_c():
    m, n, k = 3, 128, 256
    a = np.zeros((m, k), E4M3)
    a_scale = np.ones((m, 2), np.float32)
    b = np.ones((n, k), np.float32).astype(E4M3)
    b_scale = np.ones((1, 2), np.float32)
    c = np.full((m, n), 2.5, np.float32)
    d = fp8_gemm_nt_reference(a, a_scale, b, b_scale, c, out_dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(d), c)


def test_small_exact_example():
    # Hand-computed: A = [[1, 2], [3, 4]] (scale 0.5 for row 0, 2 for row 1),
    # B = [[1, 1], [1, -1], [2, 0]] (one 128x128 block, scale 0.25).
    # deq A = [[0.5, 1], [6, 8]], deq B = [[.25, .25], [.25, -.25], [.5, 0]]
    # D = [[0.375, -0.125, 0.25], [3.5, -0.5, 3.0]]
    a = np.array([[1, 2], [3, 4]], np.float32).astype(E4M3)
    a_scale = np.array([[0.5], [2.0]], np.float32)
    b = np.array([[1, 1], [1, -1], [2, 0]], np.float32).astype(E4M3)
    b_scale = np.array([[0.25]], np.float32)
    d = fp8_gemm_nt_reference(a, a_scale, b, b_scale, out_dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(d), [[0.375, -0.125, 0.25], [3.5, -0.5, 3.0]])


# ---------------------------------------------------------------------------------------------
# b_scale layout resolution
# ---------------------------------------------------------------------------------------------


def test_scale_kind_resolution():
    assert resolve_b_scale_kind((576, 384), (5, 3)) == "block"
    assert resolve_b_scale_kind((576, 384), (576, 3)) == "channel"
    assert resolve_b_scale_kind((200, 200), (2, 2)) == "block"
    assert resolve_b_scale_kind((200, 200), (200, 2)) == "channel"
    assert resolve_b_scale_kind((1, 128), (1, 1)) == "block"  # both forms coincide at N == 1
    assert resolve_b_scale_kind((1, 128), (1, 1), "channel") == "channel"


def test_n_equal_1_is_the_same_under_both_kinds():
    a, a_scale, b, b_scale = make_operands(5, 1, 256, "channel", seed=9)
    as_block = fp8_gemm_nt_reference(a, a_scale, b, b_scale, out_dtype=jnp.float32, b_scale_kind="block")
    as_channel = fp8_gemm_nt_reference(a, a_scale, b, b_scale, out_dtype=jnp.float32, b_scale_kind="channel")
    want, magnitude = np_oracle(a, a_scale, b, b_scale, "channel")
    assert_f32_close(as_channel, want, magnitude)
    np.testing.assert_array_equal(np.asarray(as_block), np.asarray(as_channel))


def test_explicit_kind_must_match_shape():
    a, a_scale, b, b_scale = make_operands(4, 256, 128, "block", seed=10)
    with pytest.raises(ValueError, match=re.escape("b_scale_kind='channel' must have shape (256, 1)")):
        fp8_gemm_nt_reference(a, a_scale, b, b_scale, b_scale_kind="channel")
    with pytest.raises(ValueError, match="b_scale_kind must be 'auto', 'block' or 'channel'"):
        fp8_gemm_nt_reference(a, a_scale, b, b_scale, b_scale_kind="rows")


def test_bad_inputs_name_the_argument():
    a, a_scale, b, b_scale = make_operands(4, 256, 256, "block", seed=11)
    fn = "fp8_gemm_nt_reference"
    with pytest.raises(ValueError, match=rf"{fn}: a and b must have the same K"):
        fp8_gemm_nt_reference(a[:, :128], a_scale[:, :1], b, b_scale)
    with pytest.raises(ValueError, match=rf"{fn}: a_scale must have shape \(4, 2\)"):
        fp8_gemm_nt_reference(a, a_scale[:, :1], b, b_scale)
    with pytest.raises(ValueError, match=rf"{fn}: b_scale must have shape \(2, 2\) .* or \(256, 2\)"):
        fp8_gemm_nt_reference(a, a_scale, b, b_scale[:1])
    with pytest.raises(ValueError, match=rf"{fn}: b must have rank 2"):
        fp8_gemm_nt_reference(a, a_scale, b[None], b_scale)
    with pytest.raises(ValueError, match=rf"{fn}: a must have rank >= 2"):
        fp8_gemm_nt_reference(a[0], a_scale, b, b_scale)
    with pytest.raises(ValueError, match=rf"{fn}: c must have shape \(4, 256\)"):
        fp8_gemm_nt_reference(a, a_scale, b, b_scale, np.zeros((4, 255), np.float32))
    with pytest.raises(TypeError, match=rf"{fn}: a must have a floating-point dtype"):
        fp8_gemm_nt_reference(a.view(np.uint8), a_scale, b, b_scale)
    with pytest.raises(TypeError, match=rf"{fn}: out_dtype must be a floating-point dtype"):
        fp8_gemm_nt_reference(a, a_scale, b, b_scale, out_dtype=jnp.int32)


# ---------------------------------------------------------------------------------------------
# testing.numeric
# ---------------------------------------------------------------------------------------------


def test_calc_diff_known_values():
    x = np.random.default_rng(12).standard_normal((7, 9))
    assert calc_diff(x, x) == 0.0
    assert calc_diff(x, -x) == 2.0
    assert calc_diff(np.zeros(4), np.zeros(4)) == 0.0
    assert calc_diff([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert math.isclose(calc_diff([1.0, 1.0], [1.0, 0.0]), 1.0 / 3.0, rel_tol=1e-15)  # 1 - 2*1/3
    # Scaling both inputs by the same factor leaves the metric unchanged.
    assert math.isclose(calc_diff(3 * x, 3 * (x + 0.1)), calc_diff(x, x + 0.1), rel_tol=1e-12)


def test_calc_diff_accepts_jax_low_precision_arrays():
    x = jnp.asarray([1.0, 2.0, 3.0], jnp.bfloat16)
    assert calc_diff(x, x) == 0.0
    assert calc_diff(x, jnp.asarray([1.0, 2.0, 3.0], jnp.float32)) == 0.0


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_calc_diff_non_finite_is_inf(poison):
    x = np.ones((3, 3))
    y = x.copy()
    y[1, 2] = poison
    assert calc_diff(x, y) == float("inf")
    assert calc_diff(y, x) == float("inf")
    assert not calc_diff(x, y) < FP8_TOLERANCE


def test_calc_diff_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="calc_diff: x and y must have the same shape"):
        calc_diff(np.ones((2, 3)), np.ones(3))


def test_tolerances_are_deepgemm_values():
    assert FP8_TOLERANCE == 1e-3
    assert FP4_ONE_OPERAND_TOLERANCE == 1e-2


def test_assert_bitwise_equal_passes_on_identical_bits():
    x = np.array([1.0, np.nan, -0.0], np.float32)
    assert_bitwise_equal(x, x.copy())  # NaN with the same payload is equal bitwise
    bf = jnp.asarray([1.5, -2.0], jnp.bfloat16)
    assert_bitwise_equal(bf, jnp.asarray([1.5, -2.0], jnp.bfloat16))
    f8 = np.array([[0.5, 448.0]], np.float32).astype(E4M3)
    assert_bitwise_equal(f8, f8.copy())


def test_assert_bitwise_equal_reports_first_mismatch():
    x = np.zeros((2, 3), np.float32)
    y = x.copy()
    y[1, 0] = -0.0  # equal as values, different bits
    y[1, 2] = 1.0
    message = r"2 of 6 elements differ; first at index \(1, 0\): .*0x00000000.*0x80000000"
    with pytest.raises(AssertionError, match=message):
        assert_bitwise_equal(x, y)
    b1 = jnp.asarray([1.0, 2.0], jnp.bfloat16)
    b2 = jnp.asarray([1.0, 2.015625], jnp.bfloat16)  # next bf16 above 2.0 (ulp 2^-6)
    with pytest.raises(AssertionError, match=r"first at index \(1,\).*0x4000.*0x4001"):
        assert_bitwise_equal(b1, b2)


def test_assert_bitwise_equal_checks_shape_and_dtype():
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_bitwise_equal(np.zeros(3), np.zeros(4))
    with pytest.raises(AssertionError, match="dtypes differ"):
        assert_bitwise_equal(np.zeros(3, np.float32), np.zeros(3, np.int32))


def test_count_bytes():
    a = np.zeros((4, 128), E4M3)  # 512 B
    s = jnp.zeros((4, 1), jnp.float32)  # 16 B
    d = jax.ShapeDtypeStruct((4, 8), jnp.bfloat16)  # 64 B
    assert count_bytes(a, s, d) == 592
    assert count_bytes((a, s), None, [d]) == 592
    assert count_bytes() == 0


# ---------------------------------------------------------------------------------------------
# testing.shapes
# ---------------------------------------------------------------------------------------------


def test_shape_lists_are_consistent():
    assert set(BENCH_NK) <= set(NORMAL_NK)
    assert set(ANCHORS_H100) == {(m, n, k) for m in BENCH_M for n, k in BENCH_NK}
    assert len(ANCHORS_H100) == 18
    assert ANCHORS_H100[(4096, 7168, 16384)] == 652.8 and ANCHORS_H100[(64, 2112, 7168)] == 10.95
    assert any(m % 64 for m in TEST_M)
    assert all(k % 128 == 0 for _, _, k in CI_CASES)
