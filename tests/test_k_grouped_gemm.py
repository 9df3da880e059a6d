"""K-grouped FP8 GEMM (weight gradients) on the GPU vs the unquantized float64 product (skipped
without an sm_90 GPU).

The output is NaN-poisoned first (the kernel writes into an XLA-aliased NaN buffer): every element
must come back finite, an empty group exactly 0, and DeepGEMM's calc_diff < 1e-3 against the bf16
sources. At DeepGEMM's shapes the float64 product is taken on 256 sampled rows x 256 sampled
columns of every group (the full one would cost minutes of host time); smaller cases compare all.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_deepgemm as dg
from jax_deepgemm.k_grouped_gemm import _k_grouped_into
from jax_deepgemm.testing.generators import k_grouped_operands
from jax_deepgemm.testing.numeric import FP8_TOLERANCE, assert_bitwise_equal, calc_diff

pytestmark = pytest.mark.gpu


def _sizes(seed, num_groups, expected_k, empty=None):
    """DeepGEMM's recipe: expected_k * U(0.7, 1.3) tokens per group, aligned to 128; one group empty."""
    rng = np.random.default_rng(seed)
    sizes = [int(expected_k * rng.uniform(0.7, 1.3)) // 128 * 128 for _ in range(num_groups)]
    if empty is not None:
        sizes[empty] = 0
    return sizes


def _nt(x):
    return (x[0].T, x[1].T)


def _run_poisoned(a, b, k_sizes, tile=None, sfa_mn_major=None):
    m, n = a[0].shape[1], b[0].shape[1]
    out = jnp.full((len(k_sizes), m, n), jnp.nan, jnp.float32)
    f = jax.jit(_k_grouped_into, static_argnames=("tile", "sfa_mn_major"))
    return np.asarray(f(_nt(a), _nt(b), jnp.asarray(k_sizes, jnp.int32), out, tile=tile, sfa_mn_major=sfa_mn_major))


def _check(got, x, y, k_sizes, rows=None, cols=None, tolerance=FP8_TOLERANCE):
    """Every element written and finite, empty groups exactly 0, each group within ``tolerance``
    (calc_diff) of the float64 product of the bf16 sources (on sampled rows/cols if given)."""
    assert np.isfinite(got).all(), f"{np.sum(~np.isfinite(got))} elements unwritten or non-finite"
    x = np.asarray(x if rows is None else x[:, rows], np.float64)
    y = np.asarray(y if cols is None else y[:, cols], np.float64)
    start = 0
    for g, size in enumerate(k_sizes):
        d = got[g] if rows is None else got[g][np.ix_(rows, cols)]
        if size == 0:
            assert (got[g] == 0).all(), f"group {g} is empty: D[g] must be 0"
        else:
            exact = x[start:start + size].T @ y[start:start + size]
            diff = calc_diff(d.astype(np.float64), exact)
            assert diff < tolerance, f"group {g} (K={size}): calc_diff = {diff:.3g}"
        start += size


@pytest.mark.parametrize("num_groups,m,n,expected_k", [(4, 4096, 7168, 8192), (4, 7168, 2048, 8192),
                                                       (8, 4096, 7168, 4096), (16, 7168, 2048, 2048)])
def test_deepgemm_shapes(num_groups, m, n, expected_k):
    k_sizes = _sizes(m + n, num_groups, expected_k, empty=1)
    a, b, x, y = k_grouped_operands(num_groups + m, k_sizes, m, n)
    got = _run_poisoned(a, b, k_sizes)
    rng = np.random.default_rng(n)
    rows, cols = np.sort(rng.choice(m, 256, replace=False)), np.sort(rng.choice(n, 256, replace=False))
    _check(got, x, y, k_sizes, rows, cols)


@pytest.mark.parametrize("tile", [None, (64, 64, 1), (128, 128, 1), (128, 128, 2), (256, 128, 1), (256, 128, 2)])
@pytest.mark.parametrize("k_sizes,m,n", [([128, 0, 384], 200, 2112), ([256, 128], 1, 576), ([0, 0, 128], 96, 72),
                                         ([256, 128], 130, 70)])  # rows of 280 bytes: not 16-byte multiples
def test_awkward_shapes_every_tile(k_sizes, m, n, tile):
    a, b, x, y = k_grouped_operands(m + n, k_sizes + [128], m, n)  # a trailing token block in no group
    for sfa_mn_major in (False, True):  # A scales loaded into registers (256: copied by a warp) / staged by TMA
        _check(_run_poisoned(a, b, k_sizes, tile, sfa_mn_major), x, y, k_sizes)


# n = 576 ends in a half N-block (C read element by element there), n = 512 does not (C read in one batch of
# loads per tile); m = 384 is one and a half 256-row tiles.
@pytest.mark.parametrize("tile", [None, (128, 128, 1), (256, 128, 1), (256, 128, 2)])
@pytest.mark.parametrize("n", [576, 512])
def test_accumulate_into_c_and_tn_entry(n, tile):
    k_sizes = [512, 0, 1024, 128]
    m = 384
    a, b, x, y = k_grouped_operands(3, k_sizes, m, n)
    c = jax.random.normal(jax.random.key(4), (len(k_sizes), m, n), jnp.float32) * 100
    f = jax.jit(lambda a, b, s, c: dg.k_grouped_fp8_gemm_tn_contiguous(a, b, s, c=c, tile=tile))
    got = np.asarray(f(a, b, jnp.asarray(k_sizes), c), np.float64)
    assert (got[1] == np.asarray(c[1])).all(), "an empty group must give C exactly"
    _check(got - np.asarray(c, np.float64), x, y, k_sizes)


# The kernel walks up to 256 groups in descending order of K (ties by index) from a per-CTA table, more in index
# order: many groups of repeated sizes, empty ones among them, on both sides of that limit.
@pytest.mark.parametrize("num_groups", [40, 300])
def test_many_groups_walk_orders(num_groups):
    rng = np.random.default_rng(num_groups)
    k_sizes = [int(s) for s in rng.choice([0, 128, 256, 512], num_groups)]
    a, b, x, y = k_grouped_operands(num_groups, k_sizes, 256, 384)
    _check(_run_poisoned(a, b, k_sizes), x, y, k_sizes)


def test_device_sizes_out_of_contract_are_nan_not_garbage():
    a, b, _, _ = k_grouped_operands(5, [512], 128, 256)
    got = np.asarray(jax.jit(dg.k_grouped_fp8_gemm_tn_contiguous)(a, b, jnp.asarray([128, 64, 256], jnp.int32)))
    assert np.isfinite(got[0]).all() and np.isnan(got[1:]).all()


def test_twenty_repeats_bitwise_equal():
    k_sizes = _sizes(6, 4, 2048, empty=2)
    a, b, _, _ = k_grouped_operands(6, k_sizes, 2048, 1536)
    f = jax.jit(dg.k_grouped_fp8_gemm_tn_contiguous)
    first = f(a, b, jnp.asarray(k_sizes))
    for _ in range(19):
        assert_bitwise_equal(f(a, b, jnp.asarray(k_sizes)), first)


def test_sanitizer_small_k_grouped():
    """Small case for compute-sanitizer runs."""
    k_sizes = [128, 0, 256]
    a, b, x, y = k_grouped_operands(7, k_sizes, 130, 200)
    _check(_run_poisoned(a, b, k_sizes), x, y, k_sizes)


# ---------------------------------------------------------------------------------------------
# BF16 (k_grouped_bf16_gemm_{tn,nt}_contiguous): the BF16 kernel with the K-grouped walk
# ---------------------------------------------------------------------------------------------

from jax_deepgemm.k_grouped_gemm import _k_grouped_bf16_into  # noqa: E402

BF16_TOLERANCE = 1e-5  # DeepGEMM's BF16 GEMM threshold: bf16 products are exact, sums in FP32


def _run_bf16_poisoned(x, y, k_sizes, *, major, tile=None):
    """The kernel writing into a NaN-filled output: TN (major 3) takes the token-major sources, NT
    (major 0) their transposes."""
    m, n = x.shape[1], y.shape[1]
    out = jnp.full((len(k_sizes), m, n), jnp.nan, jnp.float32)
    a, b = (x, y) if major == 3 else (x.T, y.T)
    f = jax.jit(_k_grouped_bf16_into, static_argnames=("major", "tile"))
    return np.asarray(f(a, b, jnp.asarray(k_sizes, jnp.int32), out, major=major, tile=tile))


def _check_bf16(got, x, y, k_sizes, rows=None, cols=None):
    _check(got, x, y, k_sizes, rows, cols, tolerance=BF16_TOLERANCE)


@pytest.mark.parametrize("num_groups,m,n,expected_k", [(4, 4096, 7168, 8192), (16, 7168, 2048, 2048)])
def test_bf16_deepgemm_shapes(num_groups, m, n, expected_k):
    k_sizes = _sizes(m + n + 1, num_groups, expected_k, empty=1)
    _, _, x, y = k_grouped_operands(num_groups + m + 1, k_sizes, m, n)
    got = _run_bf16_poisoned(x, y, k_sizes, major=3)
    rng = np.random.default_rng(n + 1)
    rows, cols = np.sort(rng.choice(m, 256, replace=False)), np.sort(rng.choice(n, 256, replace=False))
    _check_bf16(got, x, y, k_sizes, rows, cols)


@pytest.mark.parametrize("major,tile", [(3, None), (3, (64, 128)), (3, (128, 256)), (0, None), (0, (64, 16)),
                                        (0, (128, 64))])
@pytest.mark.parametrize("k_sizes,m,n", [([128, 0, 384], 200, 2112), ([256, 128], 8, 576), ([0, 0, 128], 96, 72)])
def test_bf16_awkward_shapes(k_sizes, m, n, major, tile):
    _, _, x, y = k_grouped_operands(m + n + major, k_sizes + [128], m, n)  # a trailing token block in no group
    _check_bf16(_run_bf16_poisoned(x, y, k_sizes, major=major, tile=tile), x, y, k_sizes)


def test_bf16_accumulate_odd_m_and_bad_device_sizes():
    k_sizes = [512, 0, 1024, 128]
    m, n = 388, 576  # M % 8 != 0: the TN entry falls back to the K-major (NT) kernel
    _, _, x, y = k_grouped_operands(21, k_sizes, m, n)
    c = jax.random.normal(jax.random.key(4), (len(k_sizes), m, n), jnp.float32) * 100
    got = np.asarray(jax.jit(dg.k_grouped_bf16_gemm_tn_contiguous)(x, y, jnp.asarray(k_sizes), c=c), np.float64)
    assert (got[1] == np.asarray(c[1])).all(), "an empty group must give C exactly"
    _check_bf16(got - np.asarray(c, np.float64), x, y, k_sizes)
    bad = np.asarray(jax.jit(dg.k_grouped_bf16_gemm_tn_contiguous)(x[:, :384], y, jnp.asarray([128, 64, 256],
                                                                                              jnp.int32)))
    assert np.isfinite(bad[0]).all() and np.isnan(bad[1:]).all()


def test_bf16_twenty_repeats_bitwise_equal():
    k_sizes = _sizes(7, 4, 2048, empty=2)
    _, _, x, y = k_grouped_operands(8, k_sizes, 2048, 1536)
    f = jax.jit(dg.k_grouped_bf16_gemm_tn_contiguous)
    first = f(x, y, jnp.asarray(k_sizes))
    for _ in range(19):
        assert_bitwise_equal(f(x, y, jnp.asarray(k_sizes)), first)


def test_sanitizer_small_k_grouped_bf16():
    """Small case for compute-sanitizer runs (both operand majors)."""
    k_sizes = [128, 0, 256]
    _, _, x, y = k_grouped_operands(9, k_sizes, 136, 200)
    for major in (3, 0):
        _check_bf16(_run_bf16_poisoned(x, y, k_sizes, major=major), x, y, k_sizes)
