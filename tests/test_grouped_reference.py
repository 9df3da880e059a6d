"""CPU tests of the grouped (MoE) GEMM references in jax_deepgemm.reference.

Operands are FP8 codes and float32 scales drawn directly with ml_dtypes (not produced by our
quantizer); the oracle dequantizes them in NumPy float64 and builds every group's product with
explicit loops over groups / rows, written here from the definitions (DeepGEMM §3 and
``jax.lax.ragged_dot``), never from the code under test.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jax_deepgemm.quantize import per_channel_cast_to_fp8
from jax_deepgemm.reference import (
    k_grouped_fp8_gemm_tn_reference,
    m_grouped_fp8_gemm_nt_contiguous_reference,
    m_grouped_fp8_gemm_nt_masked_reference,
    m_grouped_fp8_gemm_nt_ragged_reference,
)
from jax_deepgemm.testing.numeric import calc_diff

pytestmark = pytest.mark.usefixtures("on_cpu")  # conftest.py: keep these on the host

E4M3 = ml_dtypes.float8_e4m3fn
F32_REL_TOL = 1e-5  # float32 accumulation over <= 640 products, relative to sum |a_k * b_k|
BF16_REL_ERR = 2.0**-8  # bf16 output rounding, relative


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def align(x: int, a: int) -> int:
    return ceil_div(x, a) * a


# ---------------------------------------------------------------------------------------------
# Operands and float64 oracles
# ---------------------------------------------------------------------------------------------


def random_codes(rng, shape) -> np.ndarray:
    return (rng.standard_normal(shape) * 40.0).clip(-448, 448).astype(E4M3)


def random_scales(rng, shape) -> np.ndarray:
    return (2.0 ** rng.uniform(-10.0, -2.0, shape)).astype(np.float32)


def deq_1x128(codes, scale):
    """codes[..., r, k] * scale[..., r, k // 128], float64."""
    k = codes.shape[-1]
    return codes.astype(np.float64) * np.repeat(scale.astype(np.float64), 128, axis=-1)[..., :k]


def deq_128x128(codes, scale):
    """codes[..., n, k] * scale[..., n // 128, k // 128], float64."""
    n, k = codes.shape[-2:]
    s = np.repeat(np.repeat(scale.astype(np.float64), 128, axis=-2), 128, axis=-1)
    return codes.astype(np.float64) * s[..., :n, :k]


def deq_128x1(codes, scale):
    """codes[k, c] * scale[k // 128, c], float64 (the K-grouped per-channel layout)."""
    k = codes.shape[0]
    return codes.astype(np.float64) * np.repeat(scale.astype(np.float64), 128, axis=0)[:k]


def m_grouped_operands(m, n, k, g, seed):
    rng = np.random.default_rng(seed)
    a = random_codes(rng, (m, k))
    a_scale = random_scales(rng, (m, ceil_div(k, 128)))
    b = random_codes(rng, (g, n, k))
    b_scale = random_scales(rng, (g, ceil_div(n, 128), ceil_div(k, 128)))
    return a, a_scale, b, b_scale


def oracle_rows(a, a_scale, b, b_scale, row_ids):
    """D[r] = deq(A)[r] @ deq(B)[row_ids[r]]^T for row_ids[r] >= 0 else 0; and sum |.| for bounds."""
    a64, b64 = deq_1x128(a, a_scale), deq_128x128(b, b_scale)
    d = np.zeros((a.shape[0], b.shape[1]))
    mag = np.zeros_like(d)
    for r, g in enumerate(row_ids):
        if g >= 0:
            d[r] = b64[g] @ a64[r]
            mag[r] = np.abs(b64[g]) @ np.abs(a64[r])
    return d, mag


def assert_bf16_close(got, want, magnitude):
    assert got.dtype == jnp.bfloat16
    got = np.asarray(got).astype(np.float64)
    assert got.shape == want.shape
    err = np.abs(got - want)
    bound = BF16_REL_ERR * np.abs(want) + F32_REL_TOL * magnitude + 1e-30
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), f"at {worst}: error {err[worst]} > bound {bound[worst]}"


def assert_f32_close(got, want, magnitude):
    assert got.dtype == jnp.float32
    got = np.asarray(got).astype(np.float64)
    assert got.shape == want.shape
    err = np.abs(got - want)
    bound = F32_REL_TOL * magnitude + 1e-30
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), f"at {worst}: error {err[worst]} > bound {bound[worst]}"


def ragged_ids(sizes, m):
    ids = [g for g, s in enumerate(sizes) for _ in range(s)][:m]
    return ids + [-1] * (m - len(ids))


def contiguous_ids(sizes, alignment):
    """DeepGEMM per-row layout: each group padded with -1 up to a multiple of `alignment`."""
    ids = []
    for g, s in enumerate(sizes):
        ids += [g] * s + [-1] * (align(s, alignment) - s)
    return ids


def contiguous_psum(sizes, alignment):
    psum, start = [], 0
    for s in sizes:
        psum.append(start + s)
        start += align(s, alignment)
    return psum


# ---------------------------------------------------------------------------------------------
# M-grouped contiguous
# ---------------------------------------------------------------------------------------------

CONTIGUOUS_CASES = [
    # (group sizes, N, K, alignment)
    ([5, 0, 130, 1, 64], 256, 384, 128),  # G = 5, an empty group, unaligned sizes
    ([3, 0, 0, 9], 200, 200, 16),  # N, K not multiples of 128
    ([128, 128], 128, 128, 128),  # already aligned, no padding rows
    ([0, 1, 0], 128, 256, 128),  # M = 1 token among empty experts
]


@pytest.mark.parametrize("sizes, n, k, alignment", CONTIGUOUS_CASES)
def test_contiguous_per_row_ids_and_psum(sizes, n, k, alignment):
    ids = contiguous_ids(sizes, alignment)
    m, g = len(ids), len(sizes)
    a, a_scale, b, b_scale = m_grouped_operands(m, n, k, g, seed=m + n + k)
    want, mag = oracle_rows(a, a_scale, b, b_scale, ids)

    f = jax.jit(functools.partial(m_grouped_fp8_gemm_nt_contiguous_reference, alignment=alignment))
    got = f(a, a_scale, b, b_scale, jnp.array(ids, jnp.int32))
    assert_bf16_close(got, want, mag)
    got_np = np.asarray(got)
    assert (got_np[np.array(ids) < 0] == 0).all()  # padding rows are exactly 0

    psum = contiguous_psum(sizes, alignment)
    fp = jax.jit(functools.partial(m_grouped_fp8_gemm_nt_contiguous_reference, use_psum_layout=True, alignment=alignment))
    got_psum = fp(a, a_scale, b, b_scale, jnp.array(psum, jnp.int32))
    np.testing.assert_array_equal(np.asarray(got_psum), got_np)

    # Host-data layouts are validated and give the same result eagerly.
    eager = m_grouped_fp8_gemm_nt_contiguous_reference(a, a_scale, b, b_scale, np.array(ids, np.int32), alignment=alignment)
    np.testing.assert_array_equal(np.asarray(eager), got_np)


def test_contiguous_padding_rows_are_zero_even_with_nan():
    sizes, alignment = [2, 3], 4
    ids = contiguous_ids(sizes, alignment)  # [0, 0, -1, -1, 1, 1, 1, -1]
    a, a_scale, b, b_scale = m_grouped_operands(len(ids), 128, 128, 2, seed=3)
    a_scale[2] = np.nan
    a_scale[7] = np.inf
    got = np.asarray(
        m_grouped_fp8_gemm_nt_contiguous_reference(a, a_scale, b, b_scale, np.array(ids, np.int32), alignment=alignment)
    ).astype(np.float64)
    assert np.isfinite(got).all()
    assert (got[[2, 3, 7]] == 0).all()
    want, mag = oracle_rows(a, a_scale, b, b_scale, ids)
    assert_bf16_close(jnp.asarray(got, jnp.bfloat16), want, mag)


def test_contiguous_device_ids_out_of_range_are_padding():
    a, a_scale, b, b_scale = m_grouped_operands(6, 128, 128, 2, seed=4)
    ids = jnp.array([0, 5, -4, 1, 2, -1], jnp.int32)  # 5, -4, 2 are not experts of G = 2
    got = jax.jit(m_grouped_fp8_gemm_nt_contiguous_reference)(a, a_scale, b, b_scale, ids)
    want, mag = oracle_rows(a, a_scale, b, b_scale, [0, -1, -1, 1, -1, -1])
    assert_bf16_close(got, want, mag)


def test_contiguous_traced_layout_single_compilation():
    traces = []

    @jax.jit
    def f(a, a_scale, b, b_scale, psum):
        traces.append(1)
        return m_grouped_fp8_gemm_nt_contiguous_reference(a, a_scale, b, b_scale, psum, use_psum_layout=True, alignment=8)

    a, a_scale, b, b_scale = m_grouped_operands(24, 128, 256, 3, seed=5)
    for sizes in ([8, 8, 8], [0, 20, 0], [1, 2, 3], [0, 0, 0]):
        got = f(a, a_scale, b, b_scale, jnp.array(contiguous_psum(sizes, 8), jnp.int32))
        want, mag = oracle_rows(a, a_scale, b, b_scale, contiguous_ids(sizes, 8) + [-1] * (24 - len(contiguous_ids(sizes, 8))))
        assert_bf16_close(got, want, mag)
    assert len(traces) == 1


# ---------------------------------------------------------------------------------------------
# Ragged (lax.ragged_dot semantics)
# ---------------------------------------------------------------------------------------------

RAGGED_CASES = {
    "skewed": ([0, 37, 0, 0, 3], 50, 256, 384),  # hot expert, empty experts, total 40 < M = 50
    "uniform": ([10, 10, 10], 30, 200, 128),
    "m1": ([0, 1, 0, 0], 1, 128, 256),
    "m1_unrouted": ([0, 0], 1, 128, 128),
    "g1": ([7], 9, 256, 384),
}


@pytest.mark.parametrize("case", RAGGED_CASES)
def test_ragged_matches_oracle(case):
    sizes, m, n, k = RAGGED_CASES[case]
    a, a_scale, b, b_scale = m_grouped_operands(m, n, k, len(sizes), seed=m * 7 + n + k)
    want, mag = oracle_rows(a, a_scale, b, b_scale, ragged_ids(sizes, m))
    got = jax.jit(m_grouped_fp8_gemm_nt_ragged_reference)(a, a_scale, b, b_scale, jnp.array(sizes, jnp.int32))
    assert_bf16_close(got, want, mag)
    assert (np.asarray(got)[sum(sizes) :] == 0).all()  # rows past the total are zeros
    eager = m_grouped_fp8_gemm_nt_ragged_reference(a, a_scale, b, b_scale, np.array(sizes, np.int32))
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(got))


def test_ragged_agrees_with_lax_ragged_dot():
    """Same semantics as jax.lax.ragged_dot on the dequantized operands (rows past the total = 0)."""
    sizes, m, n, k = [4, 0, 9, 2], 20, 128, 256
    a, a_scale, b, b_scale = m_grouped_operands(m, n, k, len(sizes), seed=11)
    group_sizes = jnp.array(sizes, jnp.int32)
    got = m_grouped_fp8_gemm_nt_ragged_reference(a, a_scale, b, b_scale, group_sizes)
    a64, b64 = deq_1x128(a, a_scale), deq_128x128(b, b_scale)
    ragged = jax.lax.ragged_dot(
        jnp.asarray(a64, jnp.float32),
        jnp.asarray(b64.transpose(0, 2, 1), jnp.float32),
        group_sizes,
        precision=jax.lax.Precision.HIGHEST,
    )
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ragged.astype(jnp.bfloat16)))


def test_ragged_traced_sizes_runtime_safe():
    """Device sizes: one compilation; negative sizes count as 0; totals past M are truncated."""
    traces = []

    @jax.jit
    def f(a, a_scale, b, b_scale, sizes):
        traces.append(1)
        return m_grouped_fp8_gemm_nt_ragged_reference(a, a_scale, b, b_scale, sizes)

    m = 12
    a, a_scale, b, b_scale = m_grouped_operands(m, 128, 128, 3, seed=12)
    for sizes, effective in (([4, 4, 4], [4, 4, 4]), ([-3, 5, 1], [0, 5, 1]), ([10, 10, 10], [10, 2, 0])):
        got = f(a, a_scale, b, b_scale, jnp.array(sizes, jnp.int32))
        want, mag = oracle_rows(a, a_scale, b, b_scale, ragged_ids(effective, m))
        assert_bf16_close(got, want, mag)
    assert len(traces) == 1


# ---------------------------------------------------------------------------------------------
# Masked
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "masked_m, max_m, n, k",
    [([3, 0, 16, 1, 9], 16, 256, 384), ([1], 1, 200, 200), ([0, 0], 4, 128, 128)],
)
def test_masked_matches_oracle(masked_m, max_m, n, k):
    g = len(masked_m)
    rng = np.random.default_rng(max_m + n + k)
    a = random_codes(rng, (g, max_m, k))
    a_scale = random_scales(rng, (g, max_m, ceil_div(k, 128)))
    b = random_codes(rng, (g, n, k))
    b_scale = random_scales(rng, (g, ceil_div(n, 128), ceil_div(k, 128)))
    got = jax.jit(m_grouped_fp8_gemm_nt_masked_reference)(a, a_scale, b, b_scale, jnp.array(masked_m, jnp.int32))
    assert got.shape == (g, max_m, n)
    want = np.zeros((g, max_m, n))
    mag = np.zeros_like(want)
    a64, b64 = deq_1x128(a, a_scale), deq_128x128(b, b_scale)
    for i in range(g):
        for r in range(masked_m[i]):
            want[i, r] = b64[i] @ a64[i, r]
            mag[i, r] = np.abs(b64[i]) @ np.abs(a64[i, r])
    assert_bf16_close(got, want, mag)  # valid rows match; rows >= masked_m are 0 here
    eager = m_grouped_fp8_gemm_nt_masked_reference(a, a_scale, b, b_scale, masked_m)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(got))


def test_masked_device_counts_are_clamped():
    rng = np.random.default_rng(21)
    g, max_m, n, k = 2, 4, 128, 128
    a = random_codes(rng, (g, max_m, k))
    a_scale = random_scales(rng, (g, max_m, 1))
    b = random_codes(rng, (g, n, k))
    b_scale = random_scales(rng, (g, 1, 1))
    got = np.asarray(jax.jit(m_grouped_fp8_gemm_nt_masked_reference)(a, a_scale, b, b_scale, jnp.array([-2, 99], jnp.int32)))
    assert (got[0] == 0).all()  # -2 -> 0 valid rows
    want = deq_1x128(a[1], a_scale[1]) @ deq_128x128(b[1], b_scale[1]).T  # 99 -> all 4 rows
    assert calc_diff(got[1], want) < 1e-4


# ---------------------------------------------------------------------------------------------
# K-grouped (weight gradient)
# ---------------------------------------------------------------------------------------------


def k_grouped_oracle(a, a_scale, b, b_scale, k_sizes, c):
    """D[g] = C[g] + sum over g's K rows of deq(A)[k]^T deq(B)[k], per-group scale blocks."""
    m, n = a.shape[1], b.shape[1]
    d = np.zeros((len(k_sizes), m, n)) if c is None else c.astype(np.float64).copy()
    mag = np.zeros_like(d) if c is None else np.abs(c.astype(np.float64))
    start = 0
    for g, kg in enumerate(k_sizes):
        for kk in range(start, start + kg):
            # scale block of row kk counted inside its own group (K_g % 128 == 0 makes it equal
            # to the global block kk // 128; the reference is documented with the global form).
            blk = start // 128 + (kk - start) // 128
            av = a[kk].astype(np.float64) * a_scale[blk].astype(np.float64)
            bv = b[kk].astype(np.float64) * b_scale[blk].astype(np.float64)
            d[g] += np.outer(av, bv)
            mag[g] += np.abs(np.outer(av, bv))
        start += kg
    return d, mag


@pytest.mark.parametrize(
    "k_sizes, total_k, m, n, with_c",
    [
        ([128, 0, 256, 128, 0], 512, 64, 96, True),  # G = 5, empty groups first-last-middle
        ([0, 384], 384, 200, 256, False),  # M, N not multiples of 128
        ([256], 384, 8, 8, True),  # total < sum_K: trailing rows belong to no group
        ([0, 0, 0], 256, 16, 32, True),  # every group empty: D = C
    ],
)
def test_k_grouped_matches_oracle(k_sizes, total_k, m, n, with_c):
    rng = np.random.default_rng(total_k + m + n)
    a = random_codes(rng, (total_k, m))
    b = random_codes(rng, (total_k, n))
    a_scale = random_scales(rng, (ceil_div(total_k, 128), m))
    b_scale = random_scales(rng, (ceil_div(total_k, 128), n))
    c = rng.standard_normal((len(k_sizes), m, n)).astype(np.float32) if with_c else None
    want, mag = k_grouped_oracle(a, a_scale, b, b_scale, k_sizes, c)
    got = jax.jit(k_grouped_fp8_gemm_tn_reference)(a, a_scale, b, b_scale, jnp.array(k_sizes, jnp.int32), c)
    assert got.shape == (len(k_sizes), m, n)
    assert_f32_close(got, want, mag)
    for g, kg in enumerate(k_sizes):
        if kg == 0:
            np.testing.assert_array_equal(np.asarray(got[g]), 0 if c is None else c[g])
    eager = k_grouped_fp8_gemm_tn_reference(a, a_scale, b, b_scale, np.array(k_sizes, np.int32), c)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(got))


def test_k_grouped_scale_layout_is_per_group_per_channel_cast():
    """Scales built by per_channel_cast_to_fp8 on each group's [K_g, M] slice, concatenated along K,
    are the documented layout: the result matches float64 math on the unquantized data to FP8
    accuracy, and the concatenation equals the cast of the whole [sum_K, M] operand."""
    rng = np.random.default_rng(31)
    k_sizes, m, n = [256, 0, 128], 48, 80
    x = rng.standard_normal((sum(k_sizes), m)).astype(np.float32)
    y = rng.standard_normal((sum(k_sizes), n)).astype(np.float32)
    parts = {"a": ([], []), "b": ([], [])}
    start = 0
    for kg in k_sizes:
        for key, src in (("a", x), ("b", y)):
            codes, scale = jax.jit(per_channel_cast_to_fp8)(src[start : start + kg])
            parts[key][0].append(np.asarray(codes))
            parts[key][1].append(np.asarray(scale))
        start += kg
    a, a_scale = (np.concatenate(p) for p in parts["a"])
    b, b_scale = (np.concatenate(p) for p in parts["b"])
    assert a_scale.shape == (3, m) and b_scale.shape == (3, n)
    whole_a = per_channel_cast_to_fp8(x)
    np.testing.assert_array_equal(np.asarray(whole_a[1]), a_scale)

    got = k_grouped_fp8_gemm_tn_reference(a, a_scale, b, b_scale, jnp.array(k_sizes, jnp.int32))
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    want = np.stack([x64[:256].T @ y64[:256], np.zeros((m, n)), x64[256:].T @ y64[256:]])
    assert calc_diff(got, want) < 1e-3  # DeepGEMM's FP8 bar
    exact, mag = k_grouped_oracle(a, a_scale, b, b_scale, k_sizes, None)
    assert_f32_close(got, exact, mag)


def test_k_grouped_traced_sizes_runtime_safe():
    traces = []

    @jax.jit
    def f(a, a_scale, b, b_scale, sizes):
        traces.append(1)
        return k_grouped_fp8_gemm_tn_reference(a, a_scale, b, b_scale, sizes)

    rng = np.random.default_rng(41)
    total_k, m, n = 384, 16, 24
    a, b = random_codes(rng, (total_k, m)), random_codes(rng, (total_k, n))
    a_scale, b_scale = random_scales(rng, (3, m)), random_scales(rng, (3, n))
    for sizes, effective in (([128, 256], [128, 256]), ([-128, 384], [0, 384]), ([256, 256], [256, 128])):
        got = f(a, a_scale, b, b_scale, jnp.array(sizes, jnp.int32))
        want, mag = k_grouped_oracle(a, a_scale, b, b_scale, effective, None)
        assert_f32_close(got, want, mag)
    assert len(traces) == 1


# ---------------------------------------------------------------------------------------------
# Bad static inputs raise, naming the argument
# ---------------------------------------------------------------------------------------------


def _mk(m=8, n=128, k=128, g=2):
    rng = np.random.default_rng(0)
    return m_grouped_operands(m, n, k, g, seed=int(rng.integers(100)))


A, SA, B, SB = _mk()
KA, KSA = np.zeros((256, 8), E4M3), np.ones((2, 8), np.float32)
KB, KSB = np.zeros((256, 16), E4M3), np.ones((2, 16), np.float32)
MA, MSA = np.zeros((2, 4, 128), E4M3), np.ones((2, 4, 1), np.float32)

contig = m_grouped_fp8_gemm_nt_contiguous_reference
ragged = m_grouped_fp8_gemm_nt_ragged_reference
masked = m_grouped_fp8_gemm_nt_masked_reference
kgrp = k_grouped_fp8_gemm_tn_reference

BAD = {
    # contiguous
    "ids_ge_G": (lambda: contig(A, SA, B, SB, np.array([0, 0, 2, -1, 1, 1, 1, 1], np.int32), alignment=4), ValueError,
                 r"grouped_layout must be -1 \(padding\) or a group id in \[0, 2\), got grouped_layout\[2\] = 2"),
    "ids_misaligned": (lambda: contig(A, SA, B, SB, np.array([0, 0, 1, 1, 1, 1, 1, 1], np.int32), alignment=4), ValueError,
                       "grouped_layout is not aligned to 4 rows"),
    "ids_length": (lambda: contig(A, SA, B, SB, np.zeros(7, np.int32)), ValueError, r"grouped_layout must have shape \(8,\)"),
    "ids_float": (lambda: contig(A, SA, B, SB, np.zeros(8, np.float32)), TypeError, "grouped_layout must have an integer dtype"),
    "psum_decreasing": (lambda: contig(A, SA, B, SB, np.array([5, 3], np.int32), use_psum_layout=True, alignment=4), ValueError,
                        r"grouped_layout must satisfy grouped_layout\[g\] >= align"),
    "psum_past_m": (lambda: contig(A, SA, B, SB, np.array([4, 9], np.int32), use_psum_layout=True, alignment=4), ValueError,
                    "grouped_layout must end at most at the row count 8"),
    "psum_length": (lambda: contig(A, SA, B, SB, np.array([4], np.int32), use_psum_layout=True), ValueError,
                    r"grouped_layout must have shape \(2,\)"),
    "psum_flag": (lambda: contig(A, SA, B, SB, np.zeros(8, np.int32), use_psum_layout=1), TypeError, "use_psum_layout must be a Python bool"),
    "alignment": (lambda: contig(A, SA, B, SB, np.zeros(8, np.int32), alignment=0), ValueError, "alignment must be a positive"),
    "b_rank": (lambda: contig(A, SA, B[0], SB[0], np.zeros(8, np.int32)), ValueError, "b must have rank 3"),
    "b_scale_shape": (lambda: contig(A, SA, B, SB[:, :, :0], np.zeros(8, np.int32)), ValueError, r"b_scale must have shape \(2, 1, 1\)"),
    "a_scale_shape": (lambda: contig(A, SA[:4], B, SB, np.zeros(8, np.int32)), ValueError, r"a_scale must have shape \(8, 1\)"),
    "k_mismatch": (lambda: contig(A[:, :64], SA, B, SB, np.zeros(8, np.int32)), ValueError, "a and b must have the same K"),
    "a_int": (lambda: contig(A.view(np.int8), SA, B, SB, np.zeros(8, np.int32)), TypeError, "a must have a floating-point dtype"),
    # ragged
    "sizes_past_m": (lambda: ragged(A, SA, B, SB, np.array([5, 4], np.int32)), ValueError, "group_sizes must sum to at most M = 8, got sum 9"),
    "sizes_negative": (lambda: ragged(A, SA, B, SB, [5, -1]), ValueError, r"group_sizes must be non-negative, got group_sizes\[1\] = -1"),
    "sizes_length": (lambda: ragged(A, SA, B, SB, np.array([1, 1, 1], np.int32)), ValueError, r"group_sizes must have shape \(2,\)"),
    "sizes_float": (lambda: ragged(A, SA, B, SB, np.array([1.0, 1.0])), TypeError, "group_sizes must have an integer dtype"),
    # masked
    "masked_over_max_m": (lambda: masked(MA, MSA, B, SB, np.array([4, 5], np.int32)), ValueError,
                          r"masked_m must be in \[0, max_m = 4\], got masked_m\[1\] = 5"),
    "masked_negative": (lambda: masked(MA, MSA, B, SB, [-1, 0]), ValueError, r"masked_m\[0\] = -1"),
    "masked_groups": (lambda: masked(MA, MSA, B[:1], SB[:1], [1, 1]), ValueError, "a and b must have the same number of groups"),
    "masked_a_rank": (lambda: masked(MA[0], MSA[0], B, SB, [1, 1]), ValueError, "a must have rank 3"),
    # k-grouped
    "k_not_multiple": (lambda: kgrp(KA, KSA, KB, KSB, np.array([100, 128], np.int32)), ValueError,
                       r"k_group_sizes must be multiples of 128, got k_group_sizes\[0\] = 100"),
    "k_past_total": (lambda: kgrp(KA, KSA, KB, KSB, [128, 256]), ValueError, "k_group_sizes must sum to at most sum_K = 256, got sum 384"),
    "k_negative": (lambda: kgrp(KA, KSA, KB, KSB, [-128, 128]), ValueError, "k_group_sizes must be non-negative"),
    "k_mismatch": (lambda: kgrp(KA, KSA, KB[:128], KSB[:1], [128]), ValueError, "a and b must have the same K"),
    "k_a_scale": (lambda: kgrp(KA, KSA[:1], KB, KSB, [128]), ValueError, r"a_scale must have shape \(2, 8\)"),
    "k_b_scale": (lambda: kgrp(KA, KSA, KB, KSB.T, [128]), ValueError, r"b_scale must have shape \(2, 16\)"),
    "k_c_shape": (lambda: kgrp(KA, KSA, KB, KSB, [128], np.zeros((2, 8, 16), np.float32)), ValueError, r"c must have shape \(1, 8, 16\)"),
    "k_sizes_rank": (lambda: kgrp(KA, KSA, KB, KSB, np.zeros((1, 1), np.int32)), ValueError, "k_group_sizes must have rank 1"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_static_inputs_raise(case):
    call, exc, fragment = BAD[case]
    with pytest.raises(exc, match=fragment):
        call()


@pytest.mark.parametrize(
    "call, exc, fragment",
    [
        (lambda ids: contig(A, SA, B, SB, ids), ValueError, r"grouped_layout must have shape \(8,\)"),
        (lambda sizes: ragged(A, SA, B, SB, sizes), ValueError, r"group_sizes must have shape \(2,\)"),
        (lambda sizes: kgrp(KA, KSA, KB, KSB, sizes.astype(jnp.float32)), TypeError, "k_group_sizes must have an integer dtype"),
    ],
)
def test_shape_and_dtype_errors_at_trace_time(call, exc, fragment):
    """Shape/dtype errors of traced layouts raise while tracing (abstract values only)."""
    with pytest.raises(exc, match=fragment):
        jax.eval_shape(call, jax.ShapeDtypeStruct((3,), jnp.int32))
