"""BF16 GEMM kernels on the GPU (skipped without an sm_90 GPU; see conftest.py).

Every kernel check poisons the output with NaN first (the kernel writes into an XLA-aliased NaN
buffer), so an element the kernel never writes fails. The reference is XLA's dot of the *same*
bf16 inputs with FP32 accumulation (``preferred_element_type=float32``, cuBLAS): both sides then
differ only by FP32 summation order (relative ~1e-7 sqrt(K/64), calc_diff ~1e-11) and, for BF16
outputs, by the final rounding to bf16 (relative <= 2^-9, calc_diff ~ mean(delta^2)/2 ~ 1e-6).
Hence DeepGEMM's BF16 bar, calc_diff < 1e-5, for BF16 outputs (a 10x margin over rounding alone,
while one wrong K slice, one stale tile or one wrong expert gives >= 1e-3), and 1e-8 for FP32 outputs.
An elementwise bound (2^-8 relative + 1e-3 of the RMS) catches a few wrong rows or columns, which
calc_diff over millions of elements could average away.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_deepgemm as dg
from jax_deepgemm import bf16_gemm as bg
from jax_deepgemm.testing.generators import contiguous_layout
from jax_deepgemm.testing.numeric import assert_bitwise_equal, calc_diff
from jax_deepgemm.testing.shapes import NORMAL_NK

pytestmark = pytest.mark.gpu

BF16_TOL = 1e-5
FP32_TOL = 1e-8


@functools.partial(jax.jit, static_argnums=(1,))
def _normal_bf16(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape).astype(jnp.bfloat16)


def _bf16(seed, *shape):
    return _normal_bf16(jnp.uint32(seed), tuple(shape))


@jax.jit
def _ref_nt(a, b):
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def _poisoned(shape, dtype):
    return jnp.full(shape, jnp.nan, dtype)


@jax.jit
def _close_stats(out, ref):
    """On the device, in f32: (non-finite count, calc_diff, worst elementwise excess, its flat index).
    calc_diff = 1 - 2 sum(xy) / sum(x^2 + y^2) is computed as sum((x-y)^2) / sum(x^2 + y^2), the same
    quantity without the cancellation that would need float64 (the DeepSeek-size outputs have
    ~10^8 elements: host float64 checks would take most of this file's time)."""
    x, y = out.astype(jnp.float32), ref.astype(jnp.float32)
    bad = jnp.sum(~jnp.isfinite(x))
    den = jnp.sum(x * x + y * y)
    diff = jnp.where(den > 0, jnp.sum((x - y) ** 2) / jnp.where(den > 0, den, 1.0), 0.0)
    rms = jnp.sqrt(jnp.mean(y * y)) + 1e-30
    excess = jnp.abs(x - y) - (2.0**-8 * jnp.abs(y) + 1e-3 * rms)
    return bad, diff, jnp.max(excess), jnp.argmax(excess)


def _assert_close(out, ref, tol):
    """NaN-poison check, calc_diff < tol, and an elementwise bound (2^-8 relative + 1e-3 of the RMS)."""
    out, ref = jnp.asarray(out), jnp.asarray(ref)
    assert out.shape == ref.shape, (out.shape, ref.shape)
    if out.size == 0:
        return
    bad, diff, excess, where = (np.asarray(v) for v in _close_stats(out, ref))
    assert bad == 0, f"{int(bad)} elements unwritten or non-finite"
    assert diff < tol, f"calc_diff = {float(diff):.3g} (tolerance {tol:g})"
    if excess > 0:
        idx = np.unravel_index(int(where), out.shape)
        raise AssertionError(f"elementwise error at {idx}: got {float(out[idx])}, want {float(ref[idx])}")


# --------------------------------------------------------------------------- dense

# DeepGEMM's (N, K) list at every small M; M = 4096 on three of them keeps the file under ~2 minutes.
_DENSE_CASES = [(m, n, k) for m in (1, 64, 128, 200) for n, k in NORMAL_NK] + [
    (4096, n, k) for n, k in [(2112, 7168), (24576, 1536), (7168, 2048)]
]


@pytest.mark.parametrize("m,n,k", _DENSE_CASES)
def test_nt_bf16_out(m, n, k):
    a, b = _bf16(m * 7 + n + k, m, k), _bf16(n + k, n, k)
    out = jax.jit(bg._bf16_gemm_nt_into)(a, b, _poisoned((m, n), jnp.bfloat16))
    assert out.dtype == jnp.bfloat16 and out.shape == (m, n)
    _assert_close(out, _ref_nt(a, b), BF16_TOL)


@pytest.mark.parametrize("m,n,k", [(1, 2112, 7168), (200, 576, 7168), (4096, 7168, 2048), (129, 4096, 512)])
def test_nt_fp32_out(m, n, k):
    a, b = _bf16(m + 1, m, k), _bf16(n + 2, n, k)
    out = jax.jit(bg._bf16_gemm_nt_into)(a, b, _poisoned((m, n), jnp.float32))
    assert out.dtype == jnp.float32
    _assert_close(out, _ref_nt(a, b), FP32_TOL)


@pytest.mark.parametrize("m,n,k", [(1, 576, 7168), (200, 2112, 1536), (4096, 4096, 2048)])
def test_accumulate_into_c(m, n, k):
    a, b = _bf16(3 * m, m, k), _bf16(n, n, k)
    c = jax.random.normal(jax.random.key(m + 1), (m, n), jnp.float32) * 10
    out = jax.jit(lambda a, b, c: dg.bf16_gemm_nt(a, b, c=c))(a, b, c)
    assert out.dtype == jnp.float32
    _assert_close(out, _ref_nt(a, b) + c, FP32_TOL)


def _stored(a, b, major):
    """[M, K] / [N, K] operands in the layout a kernel of operand-major mask `major` reads."""
    return (a.T if major & bg.MAJOR_A_MN else a), (b.T if major & bg.MAJOR_B_MN else b)


# BF16: TMA-store epilogue (N % 8 == 0), even-N register stores, odd N; FP32: register stores
@pytest.mark.parametrize("n,dtype", [(2112, jnp.bfloat16), (2110, jnp.bfloat16), (2111, jnp.bfloat16),
                                     (2112, jnp.float32)])
def test_every_compiled_tile_shape(n, dtype):
    """Each compiled instance (every operand-major variant), forced, on an awkward shape (M, N not
    tile multiples, K not a multiple of 64)."""
    tiles = bg.bf16_gemm_tiles()
    assert tiles and {t[3] for t in tiles} == {0, 1, 2, 3}, f"compiled BF16 tiles: {tiles}"
    m, k = 200, 1544
    a, b = _bf16(11, m, k), _bf16(12, n, k)
    ref = _ref_nt(a, b)
    into = jax.jit(bg._bf16_gemm_nt_into, static_argnames=("tile", "major"))
    for bm, bn, cluster, major in tiles:
        if major & bg.MAJOR_B_MN and n % 8:
            continue  # an MN-major B needs a 16-byte row pitch
        sa, sb = _stored(a, b, major)
        out = into(sa, sb, _poisoned((m, n), dtype), tile=(bm, bn, cluster), major=major)
        _assert_close(out, ref, BF16_TOL if dtype == jnp.bfloat16 else FP32_TOL)


@pytest.mark.parametrize("m", [1, 37])
def test_every_compiled_tile_shape_below_one_a_box(m):
    """Each compiled instance, forced, with fewer rows than one A tile (decode sizes): a K-major A box may then hold
    fewer rows than the tile, whose other stage rows keep stale data (never stored; poisoned output). The last
    M-block's box past the first (M = 200) is test_every_compiled_tile_shape's."""
    n, k = 2112, 1544
    a, b = _bf16(m + 13, m, k), _bf16(14, n, k)
    ref = _ref_nt(a, b)
    into = jax.jit(bg._bf16_gemm_nt_into, static_argnames=("tile", "major"))
    for bm, bn, cluster, major in bg.bf16_gemm_tiles():
        sa, sb = _stored(a, b, major)
        if major & bg.MAJOR_A_MN and m % 8:
            continue  # an MN-major A needs a 16-byte row pitch
        out = into(sa, sb, _poisoned((m, n), jnp.bfloat16), tile=(bm, bn, cluster), major=major)
        _assert_close(out, ref, BF16_TOL)


def _split_tiles():
    """The compiled tiles with split-K (NT, unpaired, up to 128 wide: Bf16GemmMaySplitK)."""
    return sorted({(t[0], t[1]) for t in bg.bf16_gemm_tiles() if t[2] == 1 and t[3] == 0 and t[1] <= 128})


@pytest.mark.parametrize("m,n,dtype", [(1, 2112, jnp.bfloat16), (100, 2111, jnp.bfloat16), (200, 2112, jnp.float32),
                                       (37, 576, jnp.float32)])
def test_split_k_forced(m, n, dtype):
    """Every split-K tile, forced, split in 2, 3 and 8 over 25 K-blocks of 64 (none divides them; 8 leaves three per
    CTA): the TMA-store (N % 8 == 0) and register (odd N, FP32) epilogues after the hand-over, M below one tile, M past
    the last tile's rows. Poisoned outputs: a tile no CTA stores fails."""
    k = 1544
    a, b = _bf16(m + 21, m, k), _bf16(n + 22, n, k)
    ref = _ref_nt(a, b)
    into = jax.jit(bg._bf16_gemm_nt_into, static_argnames=("tile", "major"))
    tiles = _split_tiles()
    assert tiles, "no BF16 tile compiled with split-K"
    for bm, bn in tiles:
        for split in (2, 3, 8):
            out = into(a, b, _poisoned((m, n), dtype), tile=(bm, bn, 1, split))
            _assert_close(out, ref, BF16_TOL if dtype == jnp.bfloat16 else FP32_TOL)


@pytest.mark.parametrize("m,n,k", [(1, 576, 7168), (64, 1536, 7168), (128, 2112, 7168), (1, 2112, 7168),
                                   (1, 4096, 7168), (33, 7168, 2048)])
def test_split_k_heuristic_picks(m, n, k):
    """The decode shapes the heuristic splits (H200, session 54: 1 x 576 x 7168 18.0 us unsplit on 36 tiles), with
    C accumulated in FP32 too (the last CTA adds it once)."""
    from jax_deepgemm import _ffi

    tile = _ffi.bf16_gemm_tile(m, n, k, _ffi.device_sm_count())
    a, b = _bf16(m + n, m, k), _bf16(n + k, n, k)
    ref = _ref_nt(a, b)
    _assert_close(bg._bf16_gemm_nt_into(a, b, _poisoned((m, n), jnp.bfloat16)), ref, BF16_TOL)
    c = jax.random.normal(jax.random.key(m), (m, n), jnp.float32)
    _assert_close(jax.jit(lambda a, b, c: dg.bf16_gemm_nt(a, b, c=c))(a, b, c), ref + c, FP32_TOL)
    # (128 unsplit tiles of 64 x 32 already stream 1 x 4096 x 7168's B from all SMs; 7168 x 2048 is short.) M <= 4
    # runs the CUDA-core GEMV (test_gemv_decode_rows).
    if m <= 4:
        assert tile == (4, 4, 1, 1), f"heuristic tile {tile} at {m} x {n} x {k}: not the GEMV"
    elif n < 4096:
        assert tile[3] > 1, f"heuristic tile {tile}: no split-K at {m} x {n} x {k}"


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("n,k", [(576, 7168), (2111, 7176), (7, 7176), (4097, 7200)])
def test_gemv_decode_rows(m, n, k):
    """M <= 4 in the NT form with K >= 7168 and nothing forced runs the CUDA-core GEMV (four columns of D per CTA): N
    not a multiple of 4 (the last CTA's missing rows of B are never stored), K ending in one vector (7176), BF16 and
    FP32 out into poisoned buffers, C accumulated, and bitwise repeatable."""
    from jax_deepgemm import _ffi

    assert _ffi.bf16_gemm_tile(m, n, k, _ffi.device_sm_count()) == (4, 4, 1, 1)
    a, b = _bf16(7 * m + k, m, k), _bf16(n + 3 * k, n, k)
    ref = _ref_nt(a, b)
    for dtype, tol in ((jnp.bfloat16, BF16_TOL), (jnp.float32, FP32_TOL)):
        _assert_close(bg._bf16_gemm_nt_into(a, b, _poisoned((m, n), dtype)), ref, tol)
    c = jax.random.normal(jax.random.key(n + m), (m, n), jnp.float32)
    _assert_close(jax.jit(lambda a, b, c: dg.bf16_gemm_nt(a, b, c=c))(a, b, c), ref + c, FP32_TOL)
    first = bg._bf16_gemm_nt_into(a, b, _poisoned((m, n), jnp.bfloat16))
    for _ in range(3):
        assert_bitwise_equal(bg._bf16_gemm_nt_into(a, b, _poisoned((m, n), jnp.bfloat16)), first)


@pytest.mark.parametrize("m,n,k", [(64, 2112, 7168), (4096, 7168, 2048), (4096, 24576, 1536), (8, 576, 7168)])
@pytest.mark.parametrize("op", ["nn", "tn", "tt"])
def test_mn_major_layouts(op, m, n, k):
    """nn/tn/tt hand MN-major operands to the kernel as stored (no transpose pass)."""
    a, b = _bf16(m + 3, m, k), _bf16(n + 4, n, k)
    ref = _ref_nt(a, b)
    fn = {"nn": dg.bf16_gemm_nn, "tn": dg.bf16_gemm_tn, "tt": dg.bf16_gemm_tt}[op]
    sa = a.T if op in ("tn", "tt") else a
    sb = b.T if op in ("nn", "tn") else b
    hlo = jax.jit(fn).lower(sa, sb).as_text()
    assert "transpose" not in hlo, f"{op} transposed an operand in XLA"
    _assert_close(jax.jit(fn)(sa, sb), ref, BF16_TOL)
    _assert_close(jax.jit(lambda x, y: fn(x, y, out_dtype=jnp.float32))(sa, sb), ref, FP32_TOL)


@pytest.mark.parametrize("m,n,k", [(1, 64, 8), (3, 24, 40), (200, 576, 72), (65, 130, 200)])
def test_tiny_and_unaligned_k(m, n, k):
    a, b = _bf16(m + k, m, k), _bf16(n * k, n, k)
    for dtype, tol in ((jnp.bfloat16, BF16_TOL), (jnp.float32, FP32_TOL)):
        out = bg._bf16_gemm_nt_into(a, b, _poisoned((m, n), dtype))
        _assert_close(out, _ref_nt(a, b), tol)


def test_transposed_variants_match_nt(monkeypatch):
    m, n, k = 256, 576, 1536
    a, b = _bf16(5, m, k), _bf16(6, n, k)
    want = dg.bf16_gemm_nt(a, b)
    ref = _ref_nt(a, b)
    for got in (dg.bf16_gemm_nn(a, b.T), dg.bf16_gemm_tn(a.T, b.T), dg.bf16_gemm_tt(a.T, b)):
        _assert_close(got, ref, BF16_TOL)  # MN-major kernels
    monkeypatch.setattr(bg, "_MN_MAJOR_KERNELS", False)  # the XLA-transpose fallback runs the NT kernel
    assert_bitwise_equal(jax.jit(lambda x, y: dg.bf16_gemm_tn(x, y))(a.T, b.T), want)


@pytest.mark.parametrize("m,n,k", [(4096, 7168, 2048), (64, 2112, 7168), (1, 576, 7168)])
def test_twenty_repeats_bitwise_equal(m, n, k):
    """(The decode shapes split K: the last CTA sums the partials in split order, whichever arrives last.)"""
    a, b = _bf16(9, m, k), _bf16(10, n, k)
    f = jax.jit(dg.bf16_gemm_nt)
    first = f(a, b)
    for _ in range(19):
        assert_bitwise_equal(f(a, b), first)


def test_batched_vmap_and_jit_on_gpu():
    a, b = _bf16(4, 3, 96, 512), _bf16(5, 576, 512)
    batched = jax.jit(jax.vmap(dg.bf16_gemm_nt, in_axes=(0, None)))(a, b)
    for i in range(3):
        assert_bitwise_equal(batched[i], dg.bf16_gemm_nt(a[i], b))
    # decode rows folded into M: the scratch is sized anew for the folded M's split (here 3 x 1 rows)
    a, b = _bf16(6, 3, 1, 7168), _bf16(7, 576, 7168)
    batched = jax.jit(jax.vmap(dg.bf16_gemm_nt, in_axes=(0, None)))(a, b)
    _assert_close(batched.reshape(3, 576), _ref_nt(a.reshape(3, 7168), b), BF16_TOL)


def test_nan_propagates():
    a, b = _bf16(8, 64, 256), _bf16(9, 256, 256)
    out = np.asarray(dg.bf16_gemm_nt(a.at[3, 100].set(jnp.nan), b), np.float32)
    assert np.isnan(out[3]).all()
    assert np.isfinite(np.delete(out, 3, axis=0)).all()


# --------------------------------------------------------------------------- M-grouped contiguous / ragged


def _sizes(seed, num_groups, expected_m):
    """DeepGEMM's test recipe: expected_m * U(0.7, 1.3) rows per group."""
    rng = np.random.default_rng(seed)
    return [int(expected_m * rng.uniform(0.7, 1.3)) for _ in range(num_groups)]


def _grouped_reference(a, b, row_ids):
    """Per-segment XLA bf16 dots with FP32 accumulation (host-known layout), 0 on padding rows."""
    ref = jnp.zeros((a.shape[0], b.shape[1]), jnp.float32)
    for g in range(b.shape[0]):
        rows = np.nonzero(row_ids == g)[0]
        if rows.size:
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            ref = ref.at[lo:hi].set(_ref_nt(a[lo:hi], b[g]))
    return ref


def _check_grouped(out, a, b, row_ids):
    pad = jnp.asarray(row_ids < 0)
    nonzero_pad = int(jnp.sum(jnp.where(pad[:, None], out != 0, False)))  # NaN != 0: unwritten counts too
    assert nonzero_pad == 0, f"{nonzero_pad} padding-row elements not 0 (or unwritten)"
    # padding rows are 0 in both: comparing whole arrays keeps the check on the device
    _assert_close(jnp.where(pad[:, None], 0, out), _grouped_reference(a, b, row_ids), BF16_TOL)


@pytest.mark.parametrize("num_groups,expected_m", [(4, 8192), (8, 4096)])
@pytest.mark.parametrize("n,k", [(4096, 7168), (7168, 2048)])
def test_contiguous_deepgemm_shapes(num_groups, expected_m, n, k):
    row_ids, _ = contiguous_layout(_sizes(n + k, num_groups, expected_m))
    a, b = _bf16(num_groups + n, len(row_ids), k), _bf16(k, num_groups, n, k)
    out = jax.jit(bg._m_grouped_contiguous_into)(a, b, jnp.asarray(row_ids), _poisoned((len(row_ids), n), jnp.bfloat16))
    _check_grouped(out, a, b, row_ids)


@pytest.mark.parametrize(
    "sizes,n,k",
    [([1, 0, 0, 5], 576, 7168), ([200, 0, 129, 1], 2112, 1536), ([0, 0, 0], 256, 512), ([300], 576, 520)],
)
def test_contiguous_awkward_layouts(sizes, n, k):
    row_ids, psum = contiguous_layout(sizes, extra_rows=70)
    a, b = _bf16(sum(sizes) + n, len(row_ids), k), _bf16(n, len(sizes), n, k)
    out = bg._m_grouped_contiguous_into(a, b, jnp.asarray(row_ids), _poisoned((len(row_ids), n), jnp.bfloat16))
    _check_grouped(out, a, b, row_ids)
    via_psum = dg.m_grouped_bf16_gemm_nt_contiguous(a, b, jnp.asarray(psum), use_psum_layout=True)
    assert_bitwise_equal(via_psum, out)
    for block_n in sorted({t[1] for t in bg.bf16_gemm_tiles() if t[0] == 128 and t[2] == 1 and t[3] == 0}):
        forced = bg._m_grouped_contiguous_into(a, b, jnp.asarray(row_ids), _poisoned((len(row_ids), n), jnp.bfloat16),
                                               block_n=block_n)
        _check_grouped(forced, a, b, row_ids)


def test_contiguous_misaligned_layout_gives_nan_rows():
    row_ids, _ = contiguous_layout([128, 128])
    a, b = _bf16(1, 256, 512), _bf16(2, 2, 576, 512)
    bad = row_ids.copy()
    bad[100:128] = 1
    out = np.asarray(dg.m_grouped_bf16_gemm_nt_contiguous(a, b, jnp.asarray(bad)), np.float32)
    assert np.isnan(out[100:128]).all() and np.isfinite(out[:100]).all() and np.isfinite(out[128:]).all()


def test_contiguous_twenty_repeats_bitwise_equal():
    row_ids, _ = contiguous_layout(_sizes(1, 8, 512))
    a, b = _bf16(3, len(row_ids), 7168), _bf16(4, 8, 4096, 7168)
    f = jax.jit(dg.m_grouped_bf16_gemm_nt_contiguous)
    first = f(a, b, jnp.asarray(row_ids))
    for _ in range(19):
        assert_bitwise_equal(f(a, b, jnp.asarray(row_ids)), first)


@jax.jit
def _ragged_dot_ref(a, b, gs):
    return jax.lax.ragged_dot(a, jnp.swapaxes(b, 1, 2), gs, preferred_element_type=jnp.float32)


@pytest.mark.parametrize("sizes,n,k", [([3, 0, 250, 1], 576, 512), (_sizes(7, 8, 4096), 7168, 2048),
                                       (_sizes(8, 4, 8192), 4096, 7168), ([1, 127, 129, 0, 64], 2112, 1544)])
def test_ragged_matches_ragged_dot(sizes, n, k):
    m = sum(sizes) + 5  # rows past sum(group_sizes) come back 0
    a, b = _bf16(m, m, k), _bf16(n, len(sizes), n, k)
    gs = jnp.asarray(sizes, jnp.int32)
    out = jax.jit(bg._m_grouped_ragged_into)(a, b, gs, _poisoned((m, n), jnp.bfloat16))
    want = _ragged_dot_ref(a, b, gs)
    done = sum(sizes)
    assert int(jnp.sum(out[done:] != 0)) == 0, "rows past sum(group_sizes) must be 0 (and written)"
    _assert_close(out[:done], want[:done], BF16_TOL)
    assert_bitwise_equal(jax.jit(dg.m_grouped_bf16_gemm_nt_ragged)(a, b, gs), out)


def test_ragged_every_tile_and_device_sizes():
    sizes, n, k = [1, 127, 129, 0, 64, 300], 576, 520
    m = sum(sizes) + 70
    a, b = _bf16(5, m, k), _bf16(6, len(sizes), n, k)
    gs = jnp.asarray(sizes, jnp.int32)
    want = _ragged_dot_ref(a, b, gs)
    for tile in sorted({(t[0], t[1]) for t in bg.bf16_gemm_tiles() if t[2] == 1 and t[3] == 0}):
        out = bg._m_grouped_ragged_into(a, b, gs, _poisoned((m, n), jnp.bfloat16), tile=tile)
        assert int(jnp.sum(out[sum(sizes):] != 0)) == 0, tile
        _assert_close(out[:sum(sizes)], want[:sum(sizes)], BF16_TOL)
    # device sizes that overflow M: later rows dropped, negative sizes count as 0
    bad = jnp.asarray([-5, 200, 900, 1, 0, 0], jnp.int32)
    out = jax.jit(dg.m_grouped_bf16_gemm_nt_ragged)(a, b, bad)
    clipped = jnp.asarray([0, 200, m - 200, 0, 0, 0], jnp.int32)
    _assert_close(out, _ragged_dot_ref(a, b, clipped), BF16_TOL)


def test_ragged_nn_reads_b_in_place_every_tile():
    """B [G, K, N] (lax.ragged_dot's rhs, the dgrad of the NT form) read in place by the MN-major
    kernels: every compiled tile, poisoned output, rows past the groups 0."""
    sizes, n, k = [1, 127, 129, 0, 64, 300], 576, 512
    m = sum(sizes) + 70
    a, b = _bf16(7, m, k), _bf16(8, len(sizes), k, n)
    gs = jnp.asarray(sizes, jnp.int32)
    want = jax.jit(lambda a, b, gs: jax.lax.ragged_dot(a, b, gs, preferred_element_type=jnp.float32))(a, b, gs)
    for tile in [None] + sorted({(t[0], t[1]) for t in bg.bf16_gemm_tiles() if t[2] == 1 and t[3] == 2}):
        out = jax.jit(bg._m_grouped_ragged_nn_into, static_argnames="tile")(a, b, gs, _poisoned((m, n), jnp.bfloat16),
                                                                             tile=tile)
        assert int(jnp.sum(out[sum(sizes):] != 0)) == 0, tile
        _assert_close(out[:sum(sizes)], want[:sum(sizes)], BF16_TOL)
    assert_bitwise_equal(jax.jit(dg.m_grouped_bf16_gemm_nn_ragged)(a, b, gs),
                         jax.jit(dg.m_grouped_bf16_gemm_nn_ragged)(a, b, gs))


# --------------------------------------------------------------------------- M-grouped masked


@pytest.mark.parametrize("num_groups,expected_m,n,k", [(6, 1024, 4096, 7168), (32, 20, 7168, 2048), (32, 192, 576, 7168)])
def test_masked_deepgemm_shapes(num_groups, expected_m, n, k):
    max_m = 4096 if num_groups * n * k <= 6 * 4096 * 7168 else 1024
    counts = np.minimum(np.asarray(_sizes(num_groups + n, num_groups, expected_m), np.int32), max_m)
    counts[0] = 0  # an empty group
    a, b = _bf16(n, num_groups, max_m, k), _bf16(k, num_groups, n, k)
    out = jax.jit(bg._m_grouped_masked_into, static_argnames="expected_m")(
        a, b, jnp.asarray(counts), _poisoned((num_groups, max_m, n), jnp.bfloat16), expected_m=expected_m)
    for g, mm in enumerate(counts):
        if mm:
            _assert_close(out[g, :mm], _ref_nt(a[g, :mm], b[g]), BF16_TOL)


def test_masked_every_tile_and_repeats():
    num_groups, max_m, n, k = 4, 256, 576, 520
    counts = jnp.asarray([0, 1, 200, 256], jnp.int32)
    a, b = _bf16(21, num_groups, max_m, k), _bf16(22, num_groups, n, k)
    for tile in sorted({(t[0], t[1]) for t in bg.bf16_gemm_tiles() if t[2] == 1 and t[3] == 0}):
        out = bg._m_grouped_masked_into(a, b, counts, _poisoned((num_groups, max_m, n), jnp.bfloat16), tile=tile)
        for g, mm in enumerate(np.asarray(counts)):
            if mm:
                _assert_close(out[g, :mm], _ref_nt(a[g, :mm], b[g]), BF16_TOL)
    # Only D[g, :masked_m[g]] is defined (rows of skipped tiles keep whatever the buffer held).
    f = jax.jit(dg.m_grouped_bf16_gemm_nt_masked)
    defined = lambda d: [d[g, :mm] for g, mm in enumerate(np.asarray(counts))]  # noqa: E731
    first = defined(f(a, b, counts))
    for _ in range(19):
        for got, want in zip(defined(f(a, b, counts)), first):
            assert_bitwise_equal(got, want)


def test_sanitizer_small_bf16():
    """Small cases for compute-sanitizer runs (memcheck/racecheck): dense both outputs, grouped."""
    for (m, n, k), dtype in [((1, 200, 256), jnp.bfloat16), ((130, 576, 384), jnp.float32), ((130, 577, 72), jnp.bfloat16)]:
        a, b = _bf16(m, m, k), _bf16(n, n, k)
        _assert_close(bg._bf16_gemm_nt_into(a, b, _poisoned((m, n), dtype)), _ref_nt(a, b),
                      BF16_TOL if dtype == jnp.bfloat16 else FP32_TOL)
    a, b = _bf16(3, 3, 1544), _bf16(4, 200, 1544)  # split-K: partials through global memory, the last CTA's sum
    _assert_close(bg._bf16_gemm_nt_into(a, b, _poisoned((3, 200), jnp.bfloat16), tile=(64, 32, 1, 3)), _ref_nt(a, b),
                  BF16_TOL)
    row_ids, _ = contiguous_layout([70, 0, 130], extra_rows=5)
    a, b = _bf16(1, len(row_ids), 384), _bf16(2, 3, 576, 384)
    _check_grouped(bg._m_grouped_contiguous_into(a, b, jnp.asarray(row_ids), _poisoned((len(row_ids), 576), jnp.bfloat16)),
                   a, b, row_ids)
    gs = jnp.asarray([70, 0, 130], jnp.int32)
    out = bg._m_grouped_ragged_into(a[:205], b, gs, _poisoned((205, 576), jnp.bfloat16))
    _assert_close(out[:200], _ragged_dot_ref(a[:205], b, gs)[:200], BF16_TOL)


def test_export_names_versioned_targets():
    a, b = _bf16(30, 128, 512), _bf16(31, 576, 512)
    exported = jax.export.export(jax.jit(dg.bf16_gemm_nn), platforms=["cuda"],
                                 disabled_checks=dg.export_disabled_checks())(a, b.T)
    assert "jax_deepgemm_bf16_gemm_v2" in exported.mlir_module()
    got = jax.export.deserialize(exported.serialize()).call(a, b.T)
    assert_bitwise_equal(got, dg.bf16_gemm_nn(a, b.T))
