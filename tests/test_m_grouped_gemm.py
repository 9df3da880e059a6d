"""M-grouped contiguous FP8 GEMM on the GPU vs the unquantized product (skipped without an sm_90 GPU).

Outputs are NaN-poisoned first (the kernel writes into an XLA-aliased NaN buffer): padding rows must
come back exactly 0 and every valid row finite, with DeepGEMM's calc_diff < 1e-3 over the valid rows.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_deepgemm as dg
from jax_deepgemm.m_grouped_gemm import _m_grouped_contiguous_into, _m_grouped_masked_into, _m_grouped_ragged_into
from jax_deepgemm.reference import _rows_by_group_matmul
from jax_deepgemm.testing.generators import m_grouped_operands
from jax_deepgemm.testing.numeric import FP8_TOLERANCE, assert_bitwise_equal, calc_diff

pytestmark = pytest.mark.gpu


def _sizes(seed, num_groups, expected_m):
    """DeepGEMM's test recipe: expected_m * U(0.7, 1.3) rows per group."""
    rng = np.random.default_rng(seed)
    return [int(expected_m * rng.uniform(0.7, 1.3)) for _ in range(num_groups)]


@jax.jit
def _exact_device(x, w, row_ids):
    return _rows_by_group_matmul(x.astype(jnp.float32), w.astype(jnp.float32), row_ids)


def _check(a, b, x, w, row_ids, out):
    got = np.asarray(out, np.float64)
    pad = row_ids < 0
    assert (got[pad] == 0).all(), f"{np.sum(got[pad] != 0)} padding-row elements not 0 (or unwritten)"
    assert np.isfinite(got[~pad]).all(), "valid rows unwritten or non-finite"
    exact = np.asarray(_exact_device(x, w, jnp.asarray(row_ids)), np.float64)
    diff = calc_diff(got[~pad], exact[~pad])
    assert diff < FP8_TOLERANCE, f"calc_diff = {diff:.3g}"


@pytest.mark.parametrize("num_groups,expected_m", [(4, 8192), (8, 4096)])
@pytest.mark.parametrize("n,k", [(4096, 7168), (7168, 2048)])
def test_deepgemm_shapes(num_groups, expected_m, n, k):
    a, b, x, w, row_ids, _ = m_grouped_operands(num_groups + n, _sizes(n + k, num_groups, expected_m), n, k)
    out = jax.jit(_m_grouped_contiguous_into)(a, b, jnp.asarray(row_ids), jnp.full((len(row_ids), n), jnp.nan, jnp.bfloat16))
    _check(a, b, x, w, row_ids, out)


@pytest.mark.parametrize(
    "sizes,n,k",
    [([1, 0, 0, 5], 576, 7168), ([200, 0, 129, 1], 2112, 1536), ([0, 0, 0], 256, 512), ([300], 576, 512)],
)
def test_awkward_layouts(sizes, n, k):
    a, b, x, w, row_ids, psum = m_grouped_operands(sum(sizes) + n, sizes, n, k, extra_rows=70)
    for block_m in (256, 128):  # (the 128-row tiles with K-major scales are checked last, against psum)
        for mn_major in (True, False):  # A scales staged by TMA / loaded into registers or by the scale warp
            out = _m_grouped_contiguous_into(a, b, jnp.asarray(row_ids),
                                             jnp.full((len(row_ids), n), jnp.nan, jnp.bfloat16), sfa_mn_major=mn_major,
                                             block_m=block_m)
            _check(a, b, x, w, row_ids, out)
    via_psum = dg.m_grouped_fp8_gemm_nt_contiguous(a, b, jnp.asarray(psum), use_psum_layout=True, block_m=128)
    assert_bitwise_equal(via_psum, out)


@pytest.mark.parametrize("mn_major", [True, False])
def test_tall_tiles_two_experts_and_padding_blocks(mn_major):
    """256-row tiles over a layout whose 128-row blocks change expert inside them: tiles of two experts (one K
    pass per wave, each with its expert's B), a leading all-padding block before an expert's block, an empty
    expert and padding tail rows. Each row's sum runs in the same order as in a 128-row tile of the same width
    (same WGMMAs, same promotion), so the two must agree bit for bit."""
    n, k = 576, 1536
    sizes = [130, 128, 1, 300, 0, 200, 128]
    a, b, x, w, row_ids, _ = m_grouped_operands(13, sizes, n, k, extra_rows=70)
    row_ids = np.concatenate([np.full(128, -1, np.int32), row_ids[:-128]])  # shift every segment by one block
    ids = jnp.asarray(row_ids)
    poisoned = jnp.full((len(row_ids), n), jnp.nan, jnp.bfloat16)
    tall = _m_grouped_contiguous_into(a, b, ids, poisoned, sfa_mn_major=mn_major, block_m=256, block_n=128)
    _check(a, b, x, w, row_ids, tall)
    short = _m_grouped_contiguous_into(a, b, ids, poisoned, sfa_mn_major=mn_major, block_m=128, block_n=128)
    assert_bitwise_equal(tall, short)


@pytest.mark.parametrize("block_m", [128, 256])
def test_matches_cpu_reference_semantics_on_misaligned_layout(block_m):
    a, b, _, _, row_ids, _ = m_grouped_operands(9, [128, 128, 128], 576, 512)
    bad = row_ids.copy()
    bad[100:128] = 1  # expert 1 inside expert 0's block
    bad[300:310] = 0  # expert 0 inside expert 2's block (the second block of a 256-row tile)
    out = np.asarray(dg.m_grouped_fp8_gemm_nt_contiguous(a, b, jnp.asarray(bad), block_m=block_m), np.float32)
    nan = np.zeros(len(bad), bool)
    nan[100:128] = nan[300:310] = True
    assert np.isnan(out[nan]).all() and np.isfinite(out[~nan]).all()


def test_twenty_repeats_bitwise_equal():
    a, b, _, _, row_ids, _ = m_grouped_operands(10, _sizes(1, 8, 512), 4096, 7168)
    f = jax.jit(dg.m_grouped_fp8_gemm_nt_contiguous)
    first = f(a, b, jnp.asarray(row_ids))
    for _ in range(19):
        assert_bitwise_equal(f(a, b, jnp.asarray(row_ids)), first)


def test_sanitizer_small_grouped():
    """Small case for compute-sanitizer runs."""
    a, b, x, w, row_ids, _ = m_grouped_operands(11, [70, 0, 130], 576, 384, extra_rows=5)
    for mn_major in (False, True):
        out = _m_grouped_contiguous_into(a, b, jnp.asarray(row_ids), jnp.full((len(row_ids), 576), jnp.nan, jnp.bfloat16),
                                         sfa_mn_major=mn_major)
        _check(a, b, x, w, row_ids, out)


# --------------------------------------------------------------------------- masked


@jax.jit
def _rows_times_weights(x, w):
    return jnp.einsum("mk,nk->mn", x.astype(jnp.float32), w.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize("num_groups,expected_m", [(1, 1024), (4, 256), (6, 1024), (32, 20)])
@pytest.mark.parametrize("n,k", [(4096, 7168), (7168, 2048)])
def test_masked_deepgemm_shapes(num_groups, expected_m, n, k):
    max_m = 4096 if num_groups <= 6 else 256  # 32 x 4096 rows of K=7168 would be ~1 GB of A for 20 valid rows
    masked_m = np.minimum(np.asarray(_sizes(num_groups + n, num_groups, expected_m), np.int32), max_m)
    a, b, x, w, _, _ = m_grouped_operands(n + k, [max_m] * num_groups, n, k)
    a3 = (a[0].reshape(num_groups, max_m, k), a[1].reshape(num_groups, max_m, -1))
    out = jax.jit(_m_grouped_masked_into, static_argnames="expected_m")(
        a3, b, jnp.asarray(masked_m), jnp.full((num_groups, max_m, n), jnp.nan, jnp.bfloat16), expected_m=expected_m)
    got = np.asarray(out, np.float64)
    x3 = x.reshape(num_groups, max_m, k)
    for g, mm in enumerate(masked_m):
        if mm == 0:
            continue
        valid = got[g, :mm]
        assert np.isfinite(valid).all(), f"group {g}: valid rows unwritten"
        exact = np.asarray(_rows_times_weights(x3[g, :mm], w[g]), np.float64)
        diff = calc_diff(valid, exact)
        assert diff < FP8_TOLERANCE, f"group {g}: calc_diff = {diff:.3g}"


@pytest.mark.parametrize("sfa_mn_major", [False, True])
@pytest.mark.parametrize("tile", [None, (64, 16), (64, 32), (64, 64), (64, 128), (128, 176), (128, 144), (128, 192)])
def test_masked_scale_layouts_and_tiles(sfa_mn_major, tile):
    """Both A-scale layouts, 64-row and wide (B-scale straddling) tiles, empty / 1-row / partial / full groups.
    N = 2112 is 11 tiles of 192 columns: an odd count, so a pair of CTAs along N would have its last one past N."""
    num_groups, max_m, n, k = 4, 384, 2112, 1536
    masked_m = np.array([0, 1, 300, 384], np.int32)
    a, b, x, w, _, _ = m_grouped_operands(13, [max_m] * num_groups, n, k)
    a3 = (a[0].reshape(num_groups, max_m, k), a[1].reshape(num_groups, max_m, -1))
    out = jax.jit(_m_grouped_masked_into, static_argnames=("tile", "sfa_mn_major"))(
        a3, b, jnp.asarray(masked_m), jnp.full((num_groups, max_m, n), jnp.nan, jnp.bfloat16), tile=tile,
        sfa_mn_major=sfa_mn_major)
    got = np.asarray(out, np.float64)
    x3 = x.reshape(num_groups, max_m, k)
    for g, mm in enumerate(masked_m):
        if mm:
            assert np.isfinite(got[g, :mm]).all(), f"group {g}: valid rows unwritten"
            exact = np.asarray(_rows_times_weights(x3[g, :mm], w[g]), np.float64)
            assert calc_diff(got[g, :mm], exact) < FP8_TOLERANCE, f"group {g}"


def test_masked_default_path_with_mn_major_scales():
    """The public op where it hands the kernel MN-major A scales (transposed inside the jitted function)."""
    from jax_deepgemm.m_grouped_gemm import _masked_wants_mn_major_sfa
    num_groups, max_m, n, k, expected_m = 3, 384, 2112, 1536, 300
    assert _masked_wants_mn_major_sfa(max_m, expected_m, n)
    masked_m = np.array([300, 0, 257], np.int32)
    a, b, x, w, _, _ = m_grouped_operands(14, [max_m] * num_groups, n, k)
    a3 = (a[0].reshape(num_groups, max_m, k), a[1].reshape(num_groups, max_m, -1))
    out = jax.jit(dg.m_grouped_fp8_gemm_nt_masked, static_argnames="expected_m")(
        a3, b, jnp.asarray(masked_m), expected_m=expected_m)
    got = np.asarray(out, np.float64)
    x3 = x.reshape(num_groups, max_m, k)
    for g, mm in enumerate(masked_m):
        if mm:
            exact = np.asarray(_rows_times_weights(x3[g, :mm], w[g]), np.float64)
            assert calc_diff(got[g, :mm], exact) < FP8_TOLERANCE, f"group {g}"


def test_masked_empty_and_full_groups_and_repeats():
    num_groups, max_m, n, k = 5, 256, 576, 1536
    masked_m = np.array([0, 1, 256, 129, 0], np.int32)
    a, b, x, w, _, _ = m_grouped_operands(12, [max_m] * num_groups, n, k)
    a3 = (a[0].reshape(num_groups, max_m, k), a[1].reshape(num_groups, max_m, -1))
    f = jax.jit(dg.m_grouped_fp8_gemm_nt_masked)
    first = f(a3, b, jnp.asarray(masked_m))
    # Only D[g, :masked_m[g]] is defined (skipped tiles keep whatever the output buffer held).
    valid = lambda d: [np.asarray(d[g, :mm]) for g, mm in enumerate(masked_m)]  # noqa: E731
    for _ in range(19):
        for got_g, want_g in zip(valid(f(a3, b, jnp.asarray(masked_m))), valid(first)):
            assert_bitwise_equal(got_g, want_g)
    got = np.asarray(first, np.float64)
    x3 = x.reshape(num_groups, max_m, k)
    for g, mm in enumerate(masked_m):
        if mm:
            assert calc_diff(got[g, :mm], np.asarray(_rows_times_weights(x3[g, :mm], w[g]), np.float64)) < FP8_TOLERANCE


def test_contiguous_block_pair_layouts():
    """128-row blocks (2i, 2i + 1) as padding + padding, padding + expert, expert + padding, two experts, one expert
    twice, and a last block of 70 rows whose pair lies past M (session 32 ran these under CTA pairs along M too)."""
    n, k = 2112, 512
    a, b, x, w, _, _ = m_grouped_operands(17, [256] * 5, n, k, extra_rows=70)  # 1350 rows, 5 experts
    block_ids = [-1, -1, -1, 0, 0, -1, 1, 2, 3, 3, 4]
    row_ids = np.repeat(np.asarray(block_ids, np.int32), 128)[:1350]
    row_ids[3 * 128 + 100:4 * 128] = -1  # expert 0 starts with 100 rows, then padding
    row_ids[7 * 128 + 1:8 * 128] = -1  # expert 2 has one row
    out = _m_grouped_contiguous_into(a, b, jnp.asarray(row_ids), jnp.full((len(row_ids), n), jnp.nan, jnp.bfloat16),
                                     block_m=128)
    _check(a, b, x, w, row_ids, out)


@pytest.mark.parametrize("tile", [None, (128, 192)])
def test_masked_edge_counts(tile):
    """Experts of 0, 1, 128, 129, 256, 300 and 384 rows, a count past max_m and a negative one (both clamp), over
    N = 2112: 11 tiles of 192 columns, an odd count."""
    max_m, n, k = 384, 2112, 512
    masked_m = np.array([0, 1, 128, 129, 256, 300, 384, 500, -3], np.int32)
    num_groups = len(masked_m)
    a, b, x, w, _, _ = m_grouped_operands(18, [max_m] * num_groups, n, k)
    a3 = (a[0].reshape(num_groups, max_m, k), a[1].reshape(num_groups, max_m, -1))
    out = jax.jit(_m_grouped_masked_into, static_argnames="tile")(
        a3, b, jnp.asarray(masked_m), jnp.full((num_groups, max_m, n), jnp.nan, jnp.bfloat16), tile=tile)
    got = np.asarray(out, np.float64)
    x3 = x.reshape(num_groups, max_m, k)
    for g, mm in enumerate(np.clip(masked_m, 0, max_m)):
        if mm:
            assert np.isfinite(got[g, :mm]).all(), f"group {g}: valid rows unwritten"
            exact = np.asarray(_rows_times_weights(x3[g, :mm], w[g]), np.float64)
            assert calc_diff(got[g, :mm], exact) < FP8_TOLERANCE, f"group {g}"


# --------------------------------------------------------------------------- ragged


@pytest.mark.parametrize(
    "sizes,m,n,k",
    [
        ([3000, 0, 5, 0, 2100, 1, 0, 90], 5300, 4096, 7168),  # hot experts, empty ones, total not a multiple of 128
        ([1] + [0] * 7, 1, 2112, 7168),                       # M = 1
        ([100, 0, 29], 200, 576, 1536),                       # rows past the total
    ],
)
def test_ragged_skewed_routing(sizes, m, n, k):
    a, _, x, _, _, _ = m_grouped_operands(m + n, [m], n, k)
    a, x = (a[0][:m], a[1][:m]), x[:m]
    w = jax.random.normal(jax.random.key(n), (len(sizes), n, k)).astype(jnp.bfloat16)
    b = dg.per_block_cast_to_fp8(w)
    out = np.asarray(jax.jit(dg.m_grouped_fp8_gemm_nt_ragged)(a, b, jnp.asarray(sizes, jnp.int32)), np.float64)
    ids = np.full(m, -1, np.int32)
    ids[: min(sum(sizes), m)] = np.repeat(np.arange(len(sizes)), sizes)[:m]
    done = ids >= 0
    assert (out[~done] == 0).all()
    exact = np.asarray(_exact_device(x, w, jnp.asarray(ids)), np.float64)
    assert calc_diff(out[done], exact[done]) < FP8_TOLERANCE


def _straddling_ragged_case(seed):
    """700 rows in groups [130, 0, 1, 126, 64, 0, 300] (tiles straddling boundaries, empty groups, a zero tail)."""
    sizes, m, n, k = [130, 0, 1, 126, 64, 0, 300], 700, 576, 1536
    a, _, x, _, _, _ = m_grouped_operands(seed, [m], n, k)
    w = jax.random.normal(jax.random.key(seed + 1), (len(sizes), n, k)).astype(jnp.bfloat16)
    return (a[0][:m], a[1][:m]), dg.per_block_cast_to_fp8(w), x[:m], w, sizes


def _run_ragged(case, **kwargs):
    """The kernel writing into a NaN-poisoned output (kwargs: tile, sfa_mn_major)."""
    a, b, x, _, sizes = case
    run = jax.jit(_m_grouped_ragged_into, static_argnames=("tile", "sfa_mn_major"))
    return run(a, b, jnp.asarray(sizes, jnp.int32), jnp.full((x.shape[0], b[0].shape[1]), jnp.nan, jnp.bfloat16),
               **kwargs)


def _check_ragged(case, out):
    _, _, x, w, sizes = case
    got = np.asarray(out, np.float64)
    ids = np.full(x.shape[0], -1, np.int32)
    ids[: sum(sizes)] = np.repeat(np.arange(len(sizes)), sizes)
    done = ids >= 0
    assert (got[~done] == 0).all(), "rows past the groups must be 0 (and written)"
    assert np.isfinite(got[done]).all(), "a row of a straddling tile was not written"
    exact = np.asarray(_exact_device(x, w, jnp.asarray(ids)), np.float64)
    assert calc_diff(got[done], exact[done]) < FP8_TOLERANCE


@pytest.mark.parametrize("tile", [None, (64, 16), (64, 32), (64, 64), (128, 128), (128, 176), (128, 160)])
def test_ragged_poisoned_every_row_written_once(tile):
    """Tiles straddling group boundaries run once per group and store only that group's rows: with
    a NaN-poisoned output every row must come out finite (rows past the total exactly 0)."""
    case = _straddling_ragged_case(13)
    _check_ragged(case, _run_ragged(case, tile=tile))


@pytest.mark.parametrize("mn_major", [True, False])
def test_ragged_tall_tiles_match_128_row_tiles(mn_major):
    """256-row ragged units compute only the 128-row waves that hold their group's rows (one wave, the other or
    both; the zero tail too) and store only those rows: every row written, and bit for bit what 128-row tiles of
    the same width give (same WGMMAs and promotion order per row)."""
    case = _straddling_ragged_case(17)
    tall = _run_ragged(case, tile=(256, 128), sfa_mn_major=mn_major)
    _check_ragged(case, tall)
    assert_bitwise_equal(tall, _run_ragged(case, tile=(128, 128), sfa_mn_major=mn_major))


def test_sanitizer_small_ragged():
    """Small ragged case (straddling tiles, empty groups, zero tail) for compute-sanitizer runs."""
    sizes, m, n, k = [70, 0, 100, 3], 200, 256, 512
    a, _, _, _, _, _ = m_grouped_operands(15, [m], n, k)
    a = (a[0][:m], a[1][:m])
    b = dg.per_block_cast_to_fp8(jax.random.normal(jax.random.key(16), (len(sizes), n, k)).astype(jnp.bfloat16))
    out = np.asarray(_m_grouped_ragged_into(a, b, jnp.asarray(sizes, jnp.int32),
                                            jnp.full((m, n), jnp.nan, jnp.bfloat16)), np.float32)
    assert np.isfinite(out).all() and (out[sum(sizes):] == 0).all()
