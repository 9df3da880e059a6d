"""FP8 GEMM kernels on the GPU vs the reference (skipped without an sm_90 GPU; see conftest.py).

Every check poisons the output with NaN first (the kernel writes into an XLA-aliased NaN buffer), so
an element the kernel never writes fails the comparison. Metric: DeepGEMM's calc_diff (< 1e-3 for
FP8 vs the unquantized bf16 product), plus an elementwise bound vs the dequantized reference that a
wrong scale on a few columns or rows would break.
"""

import functools
import itertools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_deepgemm as dg
from jax_deepgemm import _ffi
from jax_deepgemm.fp8_gemm import _fp8_gemm_nt_into
from jax_deepgemm.testing.generators import fp8_gemm_operands
from jax_deepgemm.testing.numeric import FP8_TOLERANCE, assert_bitwise_equal, calc_diff
from jax_deepgemm.testing.shapes import NORMAL_NK, TEST_M

pytestmark = pytest.mark.gpu


def _poisoned(m, n, dtype):
    return jnp.full((m, n), jnp.nan, dtype)


def _reference(a, b, *, b_kind="block", c=None, out_dtype=jnp.float32):
    return _reference_jit(a, b, c, b_kind, out_dtype)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _reference_jit(a, b, c, b_kind, out_dtype):
    return dg.fp8_gemm_nt_reference(*a, *b, c=c, out_dtype=out_dtype, b_scale_kind=b_kind)


@jax.jit
def _f32_product_device(x, w):
    return jnp.dot(x.astype(jnp.float32), w.astype(jnp.float32).T, precision=jax.lax.Precision.HIGHEST)


def _f32_product(x, w):
    return np.asarray(_f32_product_device(x, w), np.float64)


def _assert_close(out, ref, x, w, *, c=None):
    out64 = np.asarray(out, np.float64)
    ref64 = np.asarray(ref, np.float64)
    assert np.isfinite(out64).all(), f"{np.sum(~np.isfinite(out64))} elements unwritten or non-finite"
    # The unquantized product, on the device in f32 at HIGHEST precision (relative error ~1e-6, far
    # below the 1e-3 FP8 bar; a float64 host matmul would take minutes at the DeepSeek shapes).
    exact = _f32_product(x, w)
    if c is not None:
        exact = exact + np.asarray(c, np.float64)
    # Against the unquantized product where the output is large enough for the metric to average FP8's rounding:
    # over a few dozen elements it exceeds 1e-3 by chance. At 4 x 7 x 7184 (28 outputs; session 57's H100 call
    # failed there) the dequantized reference itself is 1.45e-3 from the unquantized product (CPU, float64). There the
    # dequantized reference (the same FP8 values, exact products) is held to BF16 rounding instead.
    if out64.size >= 512:
        diff = calc_diff(out64, exact)
        assert diff < FP8_TOLERANCE, f"calc_diff vs unquantized product = {diff:.3g}"
    else:
        diff = calc_diff(out64, ref64)
        assert diff < 2e-5, f"calc_diff vs the dequantized reference = {diff:.3g}"
    # Elementwise vs the dequantized reference: bf16 rounding (2^-8) plus accumulation-order noise.
    rms = np.sqrt(np.mean(ref64**2)) + 1e-30
    err = np.abs(out64 - ref64)
    bound = 1e-2 * np.abs(ref64) + 1e-2 * rms
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), f"elementwise error at {worst}: got {out64[worst]}, want {ref64[worst]}"


@pytest.mark.parametrize("m", TEST_M)
@pytest.mark.parametrize("n,k", NORMAL_NK)
def test_1d2d_matches_reference(m, n, k):
    a, b, x, w = fp8_gemm_operands(seed=m * 7 + n + k, m=m, n=n, k=k)
    out = jax.jit(_fp8_gemm_nt_into)(a, b, _poisoned(m, n, jnp.bfloat16))
    assert out.dtype == jnp.bfloat16 and out.shape == (m, n)
    _assert_close(out, _reference(a, b), x, w)


@pytest.mark.parametrize("m,n,k", [(m, n, k) for m in (1, 2, 3, 4) for n, k in [(7, 7184), (579, 7232), (1021, 8192)]]
                         + [(1, 2112, 7168), (1, 4095, 7168)])
def test_1d2d_gemv_decode_rows(m, n, k):
    """M <= 4 with K-major A scales, K >= 7168, M x N <= 4096 and nothing forced runs the CUDA-core GEMV (four
    columns of D per CTA, one 128-row B scale block each): N past a scale block's end and not a multiple of 4, K
    ending inside a 128 block (7232) or in one vector (7184), on poisoned outputs, bitwise repeatable; the tile
    kernel (forced 64 x 32) agrees."""
    assert _ffi.fp8_gemm_block_tile(m, n, k, _ffi.device_sm_count()) == (4, 4, 1, 1, 1)
    a, b, x, w = fp8_gemm_operands(seed=m * 11 + n + k, m=m, n=n, k=k)
    out = jax.jit(_fp8_gemm_nt_into)(a, b, _poisoned(m, n, jnp.bfloat16))
    _assert_close(out, _reference(a, b), x, w)
    for _ in range(3):
        assert_bitwise_equal(jax.jit(_fp8_gemm_nt_into)(a, b, _poisoned(m, n, jnp.bfloat16)), out)
    tiled = jax.jit(functools.partial(_fp8_gemm_nt_into, tile=(64, 32, 1, 1)))(a, b, _poisoned(m, n, jnp.bfloat16))
    _assert_close(tiled, _reference(a, b), x, w)


@pytest.mark.parametrize("m,n,k", [(64, 1536, 7168), (33, 1536, 7168), (100, 576, 7168), (64, 1024, 7168),
                                   (5, 576, 4096), (64, 1536, 16384)])
def test_1d2d_small_m_64x32_split_picks(m, n, k):
    """The heuristic's 64 x 32 split-K picks for few N-blocks beside the bench's shapes (split 3 two CTAs per SM at
    N = 1536, split 4 at N = 576 (100 rows: two M-blocks, two CTAs per SM), N = 1024 and from 96 K-blocks), on
    poisoned outputs."""
    assert _ffi.fp8_gemm_block_tile(m, n, k, _ffi.device_sm_count())[:2] == (64, 32)
    a, b, x, w = fp8_gemm_operands(seed=m * 5 + n + k, m=m, n=n, k=k)
    out = jax.jit(_fp8_gemm_nt_into)(a, b, _poisoned(m, n, jnp.bfloat16))
    _assert_close(out, _reference(a, b), x, w)


@pytest.mark.parametrize("m,n,k", [(1, 2112, 7168), (200, 576, 7168), (4096, 7168, 2048), (129, 4096, 512)])
def test_1d1d_per_row_scales(m, n, k):
    a, b, x, w = fp8_gemm_operands(seed=m + n + k, m=m, n=n, k=k, b_recipe="channel")
    out = jax.jit(_fp8_gemm_nt_into)(a, b, _poisoned(m, n, jnp.float32))
    _assert_close(out, _reference(a, b, b_kind="channel"), x, w)


@pytest.mark.parametrize("m,n,k", [(1, 576, 7168), (200, 2112, 1536), (4096, 4096, 2048)])
@pytest.mark.parametrize("b_recipe", ["block", "channel"])
def test_accumulate_into_c(m, n, k, b_recipe):
    a, b, x, w = fp8_gemm_operands(seed=3 * m + n, m=m, n=n, k=k, b_recipe=b_recipe)
    c = jax.random.normal(jax.random.key(m + 1), (m, n), jnp.float32) * 10
    out = jax.jit(lambda a, b, c: dg.fp8_gemm_nt(a, b, c=c))(a, b, c)
    assert out.dtype == jnp.float32
    _assert_close(out, _reference(a, b, b_kind=b_recipe, c=c), x, w, c=c)


def test_every_compiled_tile_shape():
    """Each compiled kernel instance, forced, on an awkward shape (M, N not tile multiples)."""
    tiles = _ffi.fp8_gemm_tiles()
    assert tiles["1d2d"] and tiles["1d1d"]
    m, n, k = 200, 2112, 1536
    for kind, dtype, recipe in (("1d2d", jnp.bfloat16, "block"), ("1d1d", jnp.float32, "channel")):
        a, b, x, w = fp8_gemm_operands(seed=11, m=m, n=n, k=k, b_recipe=recipe)
        ref = _reference(a, b, b_kind=recipe)
        for tile in tiles[kind]:
            for mn_major in (False, True) if kind == "1d2d" else (None,):  # both A-scale layouts
                out = jax.jit(_fp8_gemm_nt_into, static_argnames=("tile", "sfa_mn_major"))(
                    a, b, _poisoned(m, n, dtype), tile=tile, sfa_mn_major=mn_major)
                _assert_close(out, ref, x, w)


@pytest.mark.parametrize("m", [1, 37])
def test_every_compiled_tile_shape_below_one_a_box(m):
    """Each compiled instance, forced, with fewer rows than its A box: the box then loads round_up(M, 8) rows, so the
    stage's other rows hold stale data (a product of its own, never stored; poisoned output, finite values required).
    The last M-block's box past the first (M = 200) is test_every_compiled_tile_shape's."""
    tiles = _ffi.fp8_gemm_tiles()
    n, k = 1002, 1664
    for kind, dtype, recipe in (("1d2d", jnp.bfloat16, "block"), ("1d1d", jnp.float32, "channel")):
        a, b, x, w = fp8_gemm_operands(seed=m, m=m, n=n, k=k, b_recipe=recipe)
        ref = _reference(a, b, b_kind=recipe)
        for tile in tiles[kind]:
            out = jax.jit(_fp8_gemm_nt_into, static_argnames=("tile",))(a, b, _poisoned(m, n, dtype), tile=tile)
            _assert_close(out, ref, x, w)


@pytest.mark.parametrize("m,n,k", [(520, 1002, 512), (1000, 2112, 7168), (1000, 2112, 640), (300, 1024, 128),
                                   (520, 1024, 256), (4100, 4096, 384)])
def test_multicast_and_two_wave_tiles(m, n, k):
    """BLOCK_M = 256 (two waves, scales staged in shared memory) and 2-CTA clusters along M and N,
    forced, over several tiles per CTA: M not a tile multiple, an odd number of N-blocks (a pair's
    second CTA past N), N % 8 != 0 (register epilogue instead of TMA stores), an odd number of
    K-blocks (5), one and two K-blocks per tile (the fewest a tile's D may be staged in: the stages of its last two
    K-blocks, variant hold-stages-d), and ~4 tiles per CTA of 3 K-blocks each (the ring's stages move against the
    tiles, so every stage takes its turn as a staging one)."""
    tiles = [t for t in _ffi.fp8_gemm_tiles()["1d2d"] if t[0] == 256 or t[2] * t[3] == 2]
    assert any(t[0] == 256 for t in tiles) and any(t[3] == 2 for t in tiles)
    a, b, x, w = fp8_gemm_operands(seed=m + n, m=m, n=n, k=k)
    ref = _reference(a, b, b_kind="block")
    for tile in tiles:
        for mn_major in (False, True):  # 256-row tiles: A scales by cp.async (K-major) or TMA (MN-major)
            out = jax.jit(_fp8_gemm_nt_into, static_argnames=("tile", "sfa_mn_major"))(
                a, b, _poisoned(m, n, jnp.bfloat16), tile=tile, sfa_mn_major=mn_major)
            _assert_close(out, ref, x, w)


@pytest.mark.parametrize("m,n,k", [(64, 2112, 7168), (200, 576, 7168), (1, 1002, 1664)])
def test_split_k_forced(m, n, k):
    """Split-K forced on one-wave unpaired tiles (clusters of 2-8 CTAs, each CTA reading the others' partials from their
    shared memory): 64 and 128 rows, 16-128 wide, both A-scale layouts of the 128-row tiles, N % 8 != 0 (register
    epilogue), M past the last tile's rows, split counts that do not divide the K-blocks, and more splits than
    K-blocks or than a cluster holds (clamped to 8). Grids of more clusters than fit on the GPU at once included."""
    a, b, x, w = fp8_gemm_operands(seed=m + n + 3, m=m, n=n, k=k)
    ref = _reference(a, b, b_kind="block")
    cases = [((64, 32, 1, 1), 2), ((64, 64, 1, 1), 7), ((128, 64, 1, 1), 3), ((128, 128, 1, 1), 2),
             ((128, 128, 1, 1), 5), ((64, 16, 1, 1), 64), ((128, 16, 1, 1), 8)]
    for tile, split in cases:
        for mn_major in (False, True) if tile[0] == 128 else (False,):
            out = jax.jit(_fp8_gemm_nt_into, static_argnames=("tile", "sfa_mn_major"))(
                a, b, _poisoned(m, n, jnp.bfloat16), tile=(*tile, split), sfa_mn_major=mn_major)
            _assert_close(out, ref, x, w)


@pytest.mark.parametrize("m,n,k", [(64, 2112, 7168), (128, 2112, 7168), (200, 576, 7168), (1, 1002, 1664),
                                   (33, 4096, 7168)])
def test_split_k_global_forced(m, n, k):
    """Split-K through global memory forced (a negative split: no clusters; every CTA writes its FP32 partial to the
    scratch output and the tile's last arrival sums them): the compiled tiles up to 128 x 64, the dual-chain 64 x 64,
    N % 8 != 0 (register epilogue), M past the last tile's rows, splits that do not divide the K-blocks, more splits
    than K-blocks or than 4 (clamped), and grids of more CTAs than SMs (33 x 4 clusters of 4 would not fit on 132 SMs at once).
    Each tile's arrival counters must be back at zero after every call: the later cases reuse them."""
    a, b, x, w = fp8_gemm_operands(seed=m + n + 5, m=m, n=n, k=k)
    ref = _reference(a, b, b_kind="block")
    cases = [((64, 64, 1, 1), 4), ((128, 64, 1, 1), 4), ((64, 32, 1, 1), 3), ((64, 16, 1, 1), 4), ((128, 32, 1, 1), 2),
             ((64, 64, 1, 1), 64)]
    for tile, split in cases:
        for mn_major in (False, True) if tile[0] == 128 else (False,):
            assert _ffi.fp8_gemm_split_workspace_bytes(m, n, k, _ffi.device_sm_count(), *tile, -split, mn_major) > 0
            out = jax.jit(_fp8_gemm_nt_into, static_argnames=("tile", "sfa_mn_major"))(
                a, b, _poisoned(m, n, jnp.bfloat16), tile=(*tile, -split), sfa_mn_major=mn_major)
            _assert_close(out, ref, x, w)


def test_split_k_global_is_deterministic():
    """64 x 64 tiles split 4 through global memory at 64 x 2112 x 7168 (132 CTAs): whichever split arrives last, it
    sums the partials in split order, so 20 calls are bitwise equal; under vmap the folded M sizes the scratch anew."""
    m, n, k = 64, 2112, 7168
    a, b, x, w = fp8_gemm_operands(seed=23, m=m, n=n, k=k)
    f = jax.jit(functools.partial(dg.fp8_gemm_nt, tile=(64, 64, 1, 1, -4)))
    first = f(a, b)
    _assert_close(first, _reference(a, b), x, w)
    for _ in range(19):
        assert_bitwise_equal(f(a, b), first)
    a2 = (jnp.stack([a[0], a[0][::-1]]), jnp.stack([a[1], a[1][::-1]]))
    batched = jax.jit(jax.vmap(lambda a0, a1: dg.fp8_gemm_nt((a0, a1), b, tile=(64, 64, 1, 1, -4))))(*a2)
    assert_bitwise_equal(batched[0], first)
    _assert_close(batched[1], _reference((a2[0][1], a2[1][1]), b), x[::-1], w)


def test_split_k_global_falls_back_to_clusters_without_scratch():
    """A program whose scratch output is one byte (exported before the split through global memory) still runs the
    heuristic's 64 x 16 split at 64 x 2112 x 7168, through clusters, and matches the reference."""
    from jax_deepgemm.fp8_gemm import _fp8_gemm_nt_1d2d_p

    m, n, k = 64, 2112, 7168
    assert _ffi.fp8_gemm_block_tile(m, n, k, _ffi.device_sm_count()) == (64, 16, 1, 1, -2)
    a, b, x, w = fp8_gemm_operands(seed=29, m=m, n=n, k=k)
    params = dict(block_m=0, block_n=0, cluster_m=0, cluster_n=0, num_sms=0, split_k=0, sfa_mn_major=0,
                  workspace_bytes=0)
    out = jax.jit(lambda a, b, d: _fp8_gemm_nt_1d2d_p.bind(*a, *b, d, **params)[0])(a, b, _poisoned(m, n, jnp.bfloat16))
    _assert_close(out, _reference(a, b), x, w)


def test_split_k_default_is_deterministic():
    """The heuristic splits K at 64 x 576 x 7168 (18 tiles of 64 x 32, split 4, on 132 SMs); the result does not depend
    on which split arrives last (20 calls bitwise equal), and the unsplit kernel (forced) matches the reference too."""
    m, n, k = 64, 576, 7168
    assert _ffi.fp8_gemm_split_k(m, n, k, _ffi.device_sm_count()) > 1
    a, b, x, w = fp8_gemm_operands(seed=21, m=m, n=n, k=k)
    f = jax.jit(dg.fp8_gemm_nt)
    first = f(a, b)
    _assert_close(first, _reference(a, b), x, w)
    for _ in range(19):
        assert_bitwise_equal(f(a, b), first)
    unsplit = dg.fp8_gemm_nt(a, b, tile=(0, 0, 0, 0, 1))
    _assert_close(unsplit, _reference(a, b), x, w)


def test_transposed_variants_equal_nt_bitwise():
    m, n, k = 256, 576, 1536
    a, b, _, _ = fp8_gemm_operands(seed=5, m=m, n=n, k=k)
    want = dg.fp8_gemm_nt(a, b)
    at = (a[0].T, a[1].T)
    bt = (b[0].T, b[1].T)
    assert_bitwise_equal(dg.fp8_gemm_nn(a, bt), want)
    assert_bitwise_equal(dg.fp8_gemm_tn(at, bt), want)
    assert_bitwise_equal(dg.fp8_gemm_tt(at, b), want)


@pytest.mark.parametrize("m,n,k", [(4096, 7168, 2048), (64, 2112, 7168)])
def test_twenty_repeats_bitwise_equal(m, n, k):
    a, b, _, _ = fp8_gemm_operands(seed=9, m=m, n=n, k=k)
    f = jax.jit(dg.fp8_gemm_nt)
    first = f(a, b)
    for _ in range(19):
        assert_bitwise_equal(f(a, b), first)


def test_batched_vmap_and_jit_on_gpu():
    a, b, _, _ = fp8_gemm_operands(seed=4, m=96, n=576, k=512, batch=(3,))
    batched = jax.jit(jax.vmap(dg.fp8_gemm_nt, in_axes=(0, None)))(a, b)
    for i in range(3):
        assert_bitwise_equal(batched[i], dg.fp8_gemm_nt((a[0][i], a[1][i]), b))


def test_nan_propagates():
    a, b, _, _ = fp8_gemm_operands(seed=8, m=64, n=256, k=256)
    a_scale = a[1].at[3, 1].set(jnp.nan)
    out = np.asarray(dg.fp8_gemm_nt((a[0], a_scale), b), np.float32)
    assert np.isnan(out[3]).all()
    assert np.isfinite(np.delete(out, 3, axis=0)).all()


def test_export_round_trip_in_fresh_process(tmp_path):
    a, b, _, _ = fp8_gemm_operands(seed=12, m=128, n=576, k=512)
    f = jax.jit(dg.fp8_gemm_nt)
    exported = jax.export.export(f, platforms=["cuda"], disabled_checks=dg.export_disabled_checks())(a, b)
    assert "jax_deepgemm_fp8_gemm_nt_1d2d_v4" in exported.mlir_module()
    (tmp_path / "fn.bin").write_bytes(exported.serialize())
    arrays = {"a": a[0], "sa": a[1], "b": b[0], "sb": b[1]}
    for name, arr in arrays.items():
        np.save(tmp_path / f"{name}.npy", np.asarray(arr).view(np.uint8) if arr.dtype.itemsize == 1 else arr)
    script = textwrap.dedent(
        f"""
        import jax, jax.numpy as jnp, numpy as np
        import jax_deepgemm  # registers the FFI targets
        exp = jax.export.deserialize(open(r"{tmp_path}/fn.bin", "rb").read())
        ld = lambda n: np.load(r"{tmp_path}/" + n + ".npy")
        a = (jnp.asarray(ld("a").view(jnp.float8_e4m3fn)), jnp.asarray(ld("sa")))
        b = (jnp.asarray(ld("b").view(jnp.float8_e4m3fn)), jnp.asarray(ld("sb")))
        np.save(r"{tmp_path}/out.npy", np.asarray(exp.call(a, b)).view(np.uint16))
        """
    )
    # cwd = tmp_path: the child must import the installed package (with its extension), not a
    # source checkout that happens to be the current directory.
    proc = subprocess.run(
        [sys.executable, "-c", script], env=dict(os.environ), capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stderr[-3000:]}"
    got = np.load(tmp_path / "out.npy")
    assert_bitwise_equal(got, np.asarray(f(a, b)).view(np.uint16))


def test_sanitizer_small():
    """Small cases for `compute-sanitizer` runs (memcheck/racecheck): both kernels, ragged edges."""
    for (m, n, k), recipe, dtype in itertools.product(
        [(1, 200, 256), (130, 576, 384)], ["block", "channel"], [jnp.bfloat16, jnp.float32]
    ):
        if recipe == "channel" and dtype == jnp.bfloat16:
            continue
        a, b, x, w = fp8_gemm_operands(seed=m + k, m=m, n=n, k=k, b_recipe=recipe)
        out = _fp8_gemm_nt_into(a, b, _poisoned(m, n, dtype))
        _assert_close(out, _reference(a, b, b_kind=recipe), x, w)
    # 256-row A-multicast pairs with TMA-loaded MN-major A scales, M past the last tile's rows
    m, n, k = 300, 576, 384
    a, b, x, w = fp8_gemm_operands(seed=5, m=m, n=n, k=k)
    for tile in ((256, 128, 1, 2), (256, 128, 1, 1)):
        out = _fp8_gemm_nt_into(a, b, _poisoned(m, n, jnp.bfloat16), tile=tile, sfa_mn_major=True)
        _assert_close(out, _reference(a, b, b_kind="block"), x, w)
    # 128 x 128 pairs (B- and A-multicast) keep two accumulator sets: one batch of 2 K-blocks, then 1 alone
    for tile in ((128, 128, 2, 1), (128, 128, 1, 2)):
        out = _fp8_gemm_nt_into(a, b, _poisoned(m, n, jnp.bfloat16), tile=tile)
        _assert_close(out, _reference(a, b, b_kind="block"), x, w)
    # split-K (3 K-blocks over clusters of 2-3 CTAs): the partials parked in shared memory, CTA 0's remote reads
    for tile in ((64, 64, 1, 1, 3), (128, 64, 1, 1, 2), (64, 32, 1, 1, 3)):
        out = _fp8_gemm_nt_into(a, b, _poisoned(m, n, jnp.bfloat16), tile=tile)
        _assert_close(out, _reference(a, b, b_kind="block"), x, w)
    # the 64-row batched tiles unsplit over 18 K-blocks: 4 batches of 4, then a remainder of 2 (on 64 x 64, the dual
    # chain: the batches alternate between two consumer warpgroups, each in its half of the stage ring, and the
    # second chain's partial is handed over; see Fp8GemmDualChain)
    m, n, k = 70, 576, 2304
    a, b, x, w = fp8_gemm_operands(seed=7, m=m, n=n, k=k)
    for tile in ((64, 16, 1, 1, 1), (64, 32, 1, 1, 1), (64, 64, 1, 1, 1)):
        out = _fp8_gemm_nt_into(a, b, _poisoned(m, n, jnp.bfloat16), tile=tile)
        _assert_close(out, _reference(a, b, b_kind="block"), x, w)
