"""The public dense FP8 GEMMs on CPU against an independent float64 NumPy computation.

Operands are drawn here with NumPy/ml_dtypes (e4m3 codes and positive non-power-of-two scales), or
quantized here in NumPy from bf16 data; the expected result is ``dequant(A) @ dequant(B)^T (+ C)`` in
float64, with the dequantization done in NumPy (``codes.astype(f64) * repeat(scale)``). Error bounds:

* float32 math: the op dequantizes and accumulates in float32, so each output element is within
  ``(K + 4) * 2^-24 * (sum_k |a_k b_k| + |c|)`` of the exact value (the standard bound for a
  K-term float32 dot product plus one add, whatever the summation order);
* bf16 output adds one rounding to 8 significant bits: ``2^-8 * |exact|`` more;
* in aggregate, ``calc_diff`` against the exact value must be < 1e-10 (float32) / 1e-5 (bf16).

``fp8_gemm_nn/tn/tt`` are defined by transposing the ``nt`` operands (and their scales) and must
give ``nt``'s result bit for bit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jax_deepgemm import fp8_gemm_nn, fp8_gemm_nt, fp8_gemm_tn, fp8_gemm_tt
from jax_deepgemm.testing.numeric import FP8_TOLERANCE, assert_bitwise_equal, calc_diff

from jax_deepgemm.testing.shapes import CI_CASES

E4M3 = ml_dtypes.float8_e4m3fn
U = 2.0**-24  # float32 unit roundoff
BF16_REL = 2.0**-8

# name -> (b scale recipe, with c, out_dtype argument, expected out dtype)
NT_VARIANTS = {
    "1d2d": ("block", False, None, jnp.bfloat16),
    "1d2d_f32": ("block", False, jnp.float32, jnp.float32),
    "1d2d_c": ("block", True, None, jnp.float32),
    "1d1d": ("channel", False, None, jnp.float32),
    "1d1d_bf16": ("channel", False, jnp.bfloat16, jnp.bfloat16),
    "1d1d_c": ("channel", True, None, jnp.float32),
}


pytestmark = pytest.mark.usefixtures("on_cpu")  # conftest.py: keep these on the host


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def case_id(case) -> str:
    return "m{}_n{}_k{}".format(*case)


# ---------------------------------------------------------------------------------------------
# NumPy operands and oracle
# ---------------------------------------------------------------------------------------------


@functools.cache
def np_operands(m, n, k, recipe, lead=(), seed=0):
    rng = np.random.default_rng([m, n, k, len(lead), seed])
    kb = ceil_div(k, 128)
    a = (rng.standard_normal((*lead, m, k)) * 40).clip(-448, 448).astype(E4M3)
    sa = (2.0 ** rng.uniform(-12, -2, (*lead, m, kb))).astype(np.float32)
    b = (rng.standard_normal((n, k)) * 40).clip(-448, 448).astype(E4M3)
    sb = (2.0 ** rng.uniform(-12, -2, (ceil_div(n, 128) if recipe == "block" else n, kb))).astype(np.float32)
    c = rng.standard_normal((*lead, m, n)).astype(np.float32)
    return a, sa, b, sb, c


def np_dequant_rows(codes, scale):
    k = codes.shape[-1]
    return codes.astype(np.float64) * np.repeat(scale.astype(np.float64), 128, axis=-1)[..., :k]


def np_dequant_b(codes, scale):
    n, k = codes.shape
    rows = scale if scale.shape[0] == n else np.repeat(scale, 128, axis=0)[:n]
    return np_dequant_rows(codes, rows)


def np_expected(a, sa, b, sb, c=None):
    """(exact D in float64, float32 error bound per element)."""
    a64, b64 = np_dequant_rows(a, sa), np_dequant_b(b, sb)
    k = a.shape[-1]
    d = np.einsum("...mk,nk->...mn", a64, b64)
    mag = np.einsum("...mk,nk->...mn", np.abs(a64), np.abs(b64))
    if c is not None:
        d = d + c.astype(np.float64)
        mag = mag + np.abs(c)
    return d, (k + 4) * U * mag


def assert_close(out, exact, f32_bound, out_dtype):
    got = np.asarray(out).astype(np.float64)
    assert got.shape == exact.shape
    assert np.isfinite(got).all()
    bound = f32_bound if out_dtype == jnp.float32 else BF16_REL * np.abs(exact) + 2 * f32_bound
    err = np.abs(got - exact)
    bad = err > bound
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise AssertionError(
            f"{int(bad.sum())} of {bad.size} elements out of bound; first at {i}: got {got[i]!r}, "
            f"exact {exact[i]!r}, bound {bound[i]!r}"
        )
    # The per-element bound is a worst case; typical errors are far smaller. This catches a
    # systematically lower precision (e.g. a bf16 intermediate) that could hide under it.
    assert calc_diff(got, exact) < (1e-10 if out_dtype == jnp.float32 else 1e-5)


def call_nt(variant, a, sa, b, sb, c):
    recipe, with_c, out_dtype, _ = NT_VARIANTS[variant]
    kwargs = {}
    if with_c:
        kwargs["c"] = jnp.asarray(c)
    if out_dtype is not None:
        kwargs["out_dtype"] = out_dtype
    return fp8_gemm_nt((jnp.asarray(a), jnp.asarray(sa)), (jnp.asarray(b), jnp.asarray(sb)), **kwargs)


# ---------------------------------------------------------------------------------------------
# fp8_gemm_nt vs NumPy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(NT_VARIANTS))
@pytest.mark.parametrize("case", CI_CASES, ids=case_id)
def test_nt_matches_numpy(case, variant):
    m, n, k = case
    recipe, with_c, _, want_dtype = NT_VARIANTS[variant]
    a, sa, b, sb, c = np_operands(m, n, k, recipe)
    out = call_nt(variant, a, sa, b, sb, c)
    assert out.shape == (m, n)
    assert out.dtype == want_dtype
    exact, bound = np_expected(a, sa, b, sb, c if with_c else None)
    assert_close(out, exact, bound, want_dtype)


@pytest.mark.parametrize("recipe", ["block", "channel"])
@pytest.mark.parametrize("case", CI_CASES, ids=case_id)
def test_nt_matches_unquantized_product(case, recipe):
    """DeepGEMM's accuracy check: calc_diff against the bf16 product before quantization < 1e-3.

    The data is quantized here in NumPy (amax / 448 per 1x128 row block or 128x128 tile).
    """
    m, n, k = case
    rng = np.random.default_rng([m, n, k, 7])
    x = (rng.standard_normal((m, k)) * np.exp(rng.standard_normal((m, 1)))).astype(ml_dtypes.bfloat16)
    w = rng.standard_normal((n, k)).astype(ml_dtypes.bfloat16)
    a, sa = np_quantize(x, 1)
    b, sb = np_quantize(w, 128 if recipe == "block" else 1)
    out = fp8_gemm_nt((jnp.asarray(a), jnp.asarray(sa)), (jnp.asarray(b), jnp.asarray(sb)), out_dtype=jnp.float32)
    assert calc_diff(np.asarray(out), x.astype(np.float64) @ w.astype(np.float64).T) < FP8_TOLERANCE
    exact, bound = np_expected(a, sa, b, sb)
    assert_close(out, exact, bound, jnp.float32)


def np_quantize(x, row_block):
    """(row_block x 128)-tile quantization in NumPy: 1 -> per-row 1x128 scales, 128 -> 128x128 blocks."""
    r, k = x.shape
    rb, kb = ceil_div(r, row_block), ceil_div(k, 128)
    pad = np.zeros((rb * row_block, kb * 128), np.float32)
    pad[:r, :k] = x.astype(np.float32)
    tiles = pad.reshape(rb, row_block, kb, 128)
    scale = (np.maximum(np.abs(tiles).max(axis=(1, 3)), np.float32(1e-4)) / np.float32(448)).astype(np.float32)
    codes = (tiles * (np.float32(1) / scale)[:, None, :, None]).astype(E4M3)
    return codes.reshape(rb * row_block, kb * 128)[:r, :k], scale


@pytest.mark.parametrize("variant", ["1d2d", "1d1d_c"])
def test_nt_4d_leading_batch(variant):
    m, n, k = 5, 256, 384
    recipe, with_c, _, want_dtype = NT_VARIANTS[variant]
    a, sa, b, sb, c = np_operands(m, n, k, recipe, lead=(2, 3))
    out = call_nt(variant, a, sa, b, sb, c)
    assert out.shape == (2, 3, m, n)
    assert out.dtype == want_dtype
    exact, bound = np_expected(a, sa, b, sb, c if with_c else None)
    assert_close(out, exact, bound, want_dtype)
    # each (i, j) slice is the 2-D GEMM of that slice, bit for bit
    one = call_nt(variant, a[1, 2], sa[1, 2], b, sb, c[1, 2])
    assert_bitwise_equal(np.asarray(out[1, 2]), np.asarray(one))


def test_nt_jit_and_tuning_params_do_not_change_cpu_results():
    """``tile`` and ``num_sms`` pick GPU kernel configs; on CPU (the reference) they change nothing."""
    a, sa, b, sb, _ = np_operands(65, 384, 256, "block")
    args = [jnp.asarray(x) for x in (a, sa, b, sb)]
    base = fp8_gemm_nt((args[0], args[1]), (args[2], args[3]))
    tuned = jax.jit(lambda a, sa, b, sb: fp8_gemm_nt((a, sa), (b, sb), tile=(64, 128), num_sms=66))(*args)
    assert_bitwise_equal(np.asarray(tuned), np.asarray(base))


@pytest.mark.parametrize("tile", [(256, 128, 1, 2), (128, 128, 1, 2), (64, 64, 1, 1)])
def test_mn_major_a_scales_for_256_row_tiles_and_under_vmap(tile):
    """From M = 1024, when the kernel runs a 256-row tile (forced here), the 1D2D primitive takes its A scales
    MN-major ([ceil(K/128), align(M, 4)]; M = 1030 is not a multiple of 4), else K-major; both give the exact
    product, and vmap (which folds the batch into M, MN-major scales going back to K-major) equals the
    per-slice calls bit for bit."""
    from jax_deepgemm import _ffi
    from jax_deepgemm import fp8_gemm as fp8_gemm_module

    m, n, k = 1030, 256, 384
    assert m >= fp8_gemm_module._SFA_MN_MAJOR_MIN_M
    a, sa, b, sb, _ = np_operands(m, n, k, "block", lead=(2,))
    args = [jnp.asarray(x) for x in (a, sa, b, sb)]
    f = lambda a, sa: fp8_gemm_nt((a, sa), (args[2], args[3]), tile=tile)  # noqa: E731
    eqns = jax.make_jaxpr(f)(args[0][0], args[1][0]).eqns
    (gemm,) = [e for e in eqns if e.primitive.name == "jax_deepgemm_fp8_gemm_nt_1d2d"]
    want_mn_major = tile[0] >= 128 and _ffi.has_cuda_kernels()  # (a CPU-only install has no heuristic to ask)
    assert gemm.params["sfa_mn_major"] == int(want_mn_major)
    assert gemm.invars[1].aval.shape == ((3, 1032) if want_mn_major else (m, 3))
    batched = jax.jit(jax.vmap(f))(args[0], args[1])
    for i in range(2):
        one = f(args[0][i], args[1][i])
        exact, bound = np_expected(a[i], sa[i], b, sb, None)
        assert_close(one, exact, bound, jnp.bfloat16)
        assert_bitwise_equal(np.asarray(batched[i]), np.asarray(one))


def test_split_k_tile_is_a_primitive_param():
    """tile's fifth entry forces split-K on the 1D2D kernel; it reaches the primitive as split_k. The second output
    (kept for exported programs) is one byte whether or not K is split, and the product is the same either way."""
    m, n, k = 64, 576, 2048
    a, sa, b, sb, _ = np_operands(m, n, k, "block")
    args = [jnp.asarray(x) for x in (a, sa, b, sb)]
    exact, bound = np_expected(a, sa, b, sb, None)
    for tile in ((64, 64, 1, 1, 4), (64, 32, 1, 2, 1), (64, 64, 1, 1, 0)):
        f = lambda a, sa, b, sb, tile=tile: fp8_gemm_nt((a, sa), (b, sb), tile=tile)  # noqa: E731
        (gemm,) = [e for e in jax.make_jaxpr(f)(*args).eqns if e.primitive.name == "jax_deepgemm_fp8_gemm_nt_1d2d"]
        assert gemm.params["split_k"] == tile[4]
        assert gemm.outvars[1].aval.shape == (1,) and gemm.outvars[1].aval.dtype == jnp.uint8
        assert_close(jax.jit(f)(*args), exact, bound, jnp.bfloat16)


def test_split_k_heuristic_only_when_tiles_leave_sms_idle():
    """The heuristic splits K when the tiles fill at most half of the SMs and K is long (64 x 576 x 7168: 18 tiles of
    64 x 32 on 132 SMs, split 4; not 64 x 7168 x 16384: 112 tiles, unsplit on two chains each), never over more than 8
    CTAs (one cluster), not where narrower tiles fill the SMs unsplit (64 / 128 x 2112 x 7168), for a full grid
    (4096 x 7168 x 7168) or short K (64 x 576 x 1024, 8 K-blocks); a forced split is clamped to the K-blocks and to
    8."""
    from jax_deepgemm import _ffi

    if not _ffi.has_cuda_kernels():
        pytest.skip("the heuristic lives in the CUDA extension (CPU-only install)")
    assert _ffi.fp8_gemm_split_k(64, 576, 7168, 132) == 4
    # 112 tiles of 64 x 64 (more than half the SMs): unsplit, each CTA two K chains (H100, session 46: 44.7 us
    # against 47.4 for split 2 at two one-chain CTAs per SM).
    assert _ffi.fp8_gemm_split_k(64, 7168, 16384, 132) == 1
    # 64 x 32 tiles fill 132 SMs one each at 128 x 2112: unsplit (DeepGEMM's pick, session 41). The 64 x 16 ones at
    # 64 x 2112 x 7168 split in 2, two CTAs per SM (session 48: 11.9 -> 11.6 us), but not at K = 4096 (8.1 -> 9.2).
    assert _ffi.fp8_gemm_split_k(64, 2112, 7168, 132) == 2
    assert _ffi.fp8_gemm_split_k(64, 2112, 4096, 132) == 1
    assert _ffi.fp8_gemm_split_k(128, 2112, 7168, 132) == 1
    # 128 x 7168 x 16384: 112 tiles of 128 x 64 are too many to split; 56 of 128 x 128 split in 2 (session 16).
    assert _ffi.fp8_gemm_split_k(128, 7168, 16384, 132) == 2
    # 128 x 4096 x 7168: 128 unsplit 64 x 64 tiles fill the SMs one each (faster than 128 x 64 split 2).
    assert _ffi.fp8_gemm_split_k(128, 4096, 7168, 132) == 1
    assert _ffi.fp8_gemm_split_k(64, 64, 16384, 132) == 8
    assert _ffi.fp8_gemm_split_k(4096, 7168, 7168, 132) == 1
    assert _ffi.fp8_gemm_split_k(64, 576, 1024, 132) == 1
    assert _ffi.fp8_gemm_split_k(64, 576, 7168, 132, 64, 16, 1, 1, 64) == 8
    assert _ffi.fp8_gemm_split_k(64, 576, 384, 132, 64, 16, 1, 1, 64) == 3


def test_small_m_heuristic_takes_narrow_unsplit_tiles_that_fill_the_sms():
    """At small M with long K (and at M <= 64 with 8-31 K-blocks) the heuristic runs 64 x 16 or 64 x 32 tiles unsplit
    where they fill more than three quarters of the SMs and no more than all of them (H100, session 41: 4-6 % faster
    than the split-K picks there), the 64 x 16 ones at M <= 64 with >= 56 K-blocks split in 2 (session 48) through
    global memory (a negative split; session 50), else its split-K or 64 x 64 picks; on fewer SMs the same shape may
    split instead."""
    from jax_deepgemm import _ffi

    if not _ffi.has_cuda_kernels():
        pytest.skip("the heuristic lives in the CUDA extension (CPU-only install)")
    assert _ffi.fp8_gemm_block_tile(64, 2112, 7168, 132) == (64, 16, 1, 1, -2)  # 132 tiles, split 2 (>= 56 K-blocks)
    assert _ffi.fp8_gemm_block_tile(64, 1792, 7168, 132) == (64, 16, 1, 1, -2)  # 112 tiles
    assert _ffi.fp8_gemm_block_tile(5, 2112, 7168, 132) == (64, 16, 1, 1, -2)
    assert _ffi.fp8_gemm_block_tile(64, 2112, 4096, 132) == (64, 16, 1, 1, 1)
    assert _ffi.fp8_gemm_block_tile(128, 2112, 7168, 132) == (64, 32, 1, 1, 1)  # 2 x 66 tiles
    assert _ffi.fp8_gemm_block_tile(64, 4096, 7168, 132) == (64, 32, 1, 1, 1)  # 128 tiles
    assert _ffi.fp8_gemm_block_tile(128, 4096, 7168, 132) == (64, 64, 1, 1, 1)  # 64 x 32 would be 256 tiles
    # M <= 64 with 8-31 K-blocks too (H100, session 42: 64 x 2112 x 1024 / 2048 4.47 / 5.74 us against the 64 x 32
    # pairs' 5.01 / 6.30); shorter K keeps the cost model's pick, and so does M = 128 there.
    assert _ffi.fp8_gemm_block_tile(64, 2112, 1024, 132) == (64, 16, 1, 1, 1)
    assert _ffi.fp8_gemm_block_tile(64, 2112, 2048, 132) == (64, 16, 1, 1, 1)
    assert _ffi.fp8_gemm_block_tile(64, 2112, 512, 132) != (64, 16, 1, 1, 1)
    assert _ffi.fp8_gemm_block_tile(128, 2112, 2048, 132) == (64, 32, 1, 2, 1)  # the cost model's pairs
    # On 100 SMs neither fills them (132 tiles of 64 x 16, 66 of 64 x 32): 64 x 64 split-K, one two-chain CTA per
    # SM (33 tiles x 3).
    assert _ffi.fp8_gemm_block_tile(64, 2112, 7168, 100) == (64, 64, 1, 1, 3)


def test_split_k_workspace_only_for_splits_through_global_memory():
    """fp8_gemm_nt sizes its scratch output from the kernel's pick: 64 x 16 x 4 bytes per (tile, split) for the 64 x 16
    split through global memory at 64 x 2112 x 7168 (132 tiles x 2), nothing for cluster splits or unsplit picks, a
    forced negative split sized likewise, clamped to 4 splits, and refused (no such kernel) on tiles wider than
    128 x 64, which the global hand-over is not compiled into."""
    from jax_deepgemm import _ffi

    if not _ffi.has_cuda_kernels():
        pytest.skip("the heuristic lives in the CUDA extension (CPU-only install)")
    assert _ffi.fp8_gemm_split_workspace_bytes(64, 2112, 7168, 132) == 132 * 2 * 64 * 16 * 4
    assert _ffi.fp8_gemm_split_workspace_bytes(64, 576, 7168, 132) == 0  # 64 x 32 split 4 through clusters
    assert _ffi.fp8_gemm_split_workspace_bytes(128, 2112, 7168, 132) == 0  # unsplit
    assert _ffi.fp8_gemm_split_workspace_bytes(64, 2112, 7168, 132, 64, 64, 1, 1, -3) == 33 * 3 * 64 * 64 * 4
    assert _ffi.fp8_gemm_split_workspace_bytes(64, 2112, 7168, 132, 64, 64, 1, 1, -8) == 33 * 4 * 64 * 64 * 4
    assert _ffi.fp8_gemm_split_workspace_bytes(64, 2112, 7168, 132, 64, 64, 1, 1, 3) == 0
    assert _ffi.fp8_gemm_split_workspace_bytes(200, 2112, 7168, 132, 128, 64, 1, 1, -2) == 2 * 33 * 2 * 128 * 64 * 4
    a = (jnp.zeros((64, 1024), jnp.float8_e4m3fn), jnp.ones((64, 8), jnp.float32))
    b = (jnp.zeros((256, 1024), jnp.float8_e4m3fn), jnp.ones((2, 8), jnp.float32))
    for tile in [(128, 128, 1, 1, -2), (0, 0, 0, 0, -2)]:
        with pytest.raises(ValueError, match="split through global memory"):
            jax.jit(functools.partial(fp8_gemm_nt, tile=tile)).trace(a, b)


def test_small_m_heuristic_splits_few_64x32_tiles_up_to_4():
    """At small M with >= 32 K-blocks, fewer 64 x 32 tiles than half the SMs (the unfused DeepSeek projections) split
    K to reach the SMs, in 4 from 96 K-blocks, two CTAs per SM past them (H100, session 49: 64 / 128 x 576 x 7168
    8.89 / 9.65 -> 7.53 / 8.24 us, 64 x 1536 x 7168 10.68 -> 10.06, 64 x 1536 x 16384 15.76 -> 14.98); not at
    128 x 1536 x 7168 (96 tiles, 128 x 64 split 4 faster), shorter K, or N so small that 4 splits reach fewer than
    half the SMs (64 x 64 x 16384 keeps 64 x 64 split 8)."""
    from jax_deepgemm import _ffi

    if not _ffi.has_cuda_kernels():
        pytest.skip("the heuristic lives in the CUDA extension (CPU-only install)")
    assert _ffi.fp8_gemm_block_tile(64, 576, 7168, 132) == (64, 32, 1, 1, 4)  # 18 tiles x 4
    assert _ffi.fp8_gemm_block_tile(5, 576, 7168, 132) == (64, 32, 1, 1, 4)
    assert _ffi.fp8_gemm_block_tile(128, 576, 7168, 132) == (64, 32, 1, 1, 4)  # 36 tiles x 4, two CTAs per SM
    assert _ffi.fp8_gemm_block_tile(64, 1536, 7168, 132) == (64, 32, 1, 1, 3)  # 48 tiles x 3, two CTAs per SM
    assert _ffi.fp8_gemm_block_tile(64, 1536, 4096, 132) == (64, 32, 1, 1, 3)
    assert _ffi.fp8_gemm_block_tile(64, 1536, 16384, 132) == (64, 32, 1, 1, 4)  # >= 96 K-blocks
    assert _ffi.fp8_gemm_block_tile(64, 576, 4096, 132) == (64, 32, 1, 1, 4)
    assert _ffi.fp8_gemm_block_tile(128, 1536, 7168, 132)[:2] == (128, 64)
    assert _ffi.fp8_gemm_block_tile(64, 576, 2048, 132)[:2] != (64, 32)
    assert _ffi.fp8_gemm_block_tile(64, 64, 16384, 132) == (64, 64, 1, 1, 8)


def test_small_m_heuristic_on_the_dram_floor_takes_fewer_waves():
    """Dense M <= 128 where the model's DRAM floor binds for several tiles (the wide, short-K DeepSeek rows): the tile
    with less SM time wins, not the rank that prefers 128-wide tiles (H100, session 53, kernel us: 128 x 24576 x 1536
    one wave of 128 x 192 19.71 against 22.26 on the 128 x 128 pairs, 128 x 24576 x 512 10.51 against 12.08), and at
    M <= 64 with >= 8 K-blocks the dual-chain 64 x 64 tile is credited its overlapped chains (64 x 24576 x 1536 17.93
    against 19.16 on 64 x 128). 128-row pairs along N are not taken over one M-block with short K (128 x 32768 x 512
    13.27 unpaired against 13.78 paired). Shapes that measured the other way keep their picks: 64 x 32768 x 512
    (4 K-blocks, one batch) stays on 64 x 128; M = 4096 and the grouped forms are not affected."""
    from jax_deepgemm import _ffi

    if not _ffi.has_cuda_kernels():
        pytest.skip("the heuristic lives in the CUDA extension (CPU-only install)")
    for m in (96, 100, 128):
        assert _ffi.fp8_gemm_block_tile(m, 24576, 1536, 132) == (128, 192, 1, 1, 1)
    assert _ffi.fp8_gemm_block_tile(128, 24576, 512, 132) == (128, 192, 1, 1, 1)
    for m in (5, 32, 64):  # (M <= 4: the GEMV)
        assert _ffi.fp8_gemm_block_tile(m, 24576, 1536, 132) == (64, 64, 1, 1, 1)
    assert _ffi.fp8_gemm_block_tile(64, 32768, 512, 132) == (64, 128, 1, 1, 1)
    assert _ffi.fp8_gemm_block_tile(128, 32768, 512, 132) == (128, 128, 1, 1, 1)
    assert _ffi.fp8_gemm_block_tile(128, 7168, 16384, 132) == (128, 128, 1, 1, 2)  # long K: the split-K branch
    assert _ffi.fp8_gemm_block_tile(4096, 24576, 1536, 132) == (256, 128, 1, 2, 1)
    assert _ffi.fp8_gemm_block_tile(256, 24576, 1536, 132) == (128, 128, 1, 2, 1)  # M > 128: the rank as before


def test_split_k_errors():
    a, sa, b, sb, _ = np_operands(64, 256, 512, "channel")
    with pytest.raises(ValueError, match="split_k applies to the BF16-output"):
        fp8_gemm_nt((jnp.asarray(a), jnp.asarray(sa)), (jnp.asarray(b), jnp.asarray(sb)), tile=(64, 64, 1, 1, 2))
    a, sa, b, sb, _ = np_operands(64, 256, 512, "block")
    for tile in ((128, 176, 1, 1, 2), (256, 128, 1, 2, 2)):
        with pytest.raises(ValueError, match="split_k is compiled into tiles up to 128 x 128"):
            fp8_gemm_nt((jnp.asarray(a), jnp.asarray(sa)), (jnp.asarray(b), jnp.asarray(sb)), tile=tile)
    for tile in ((64, 32, 1, 2, 2), (128, 128, 2, 1, 3)):
        with pytest.raises(ValueError, match="split_k needs an unpaired tile"):
            fp8_gemm_nt((jnp.asarray(a), jnp.asarray(sa)), (jnp.asarray(b), jnp.asarray(sb)), tile=tile)
    with pytest.raises(ValueError, match="split_k must be >= 0"):
        fp8_gemm_nt((jnp.asarray(a), jnp.asarray(sa)), (jnp.asarray(b), jnp.asarray(sb)), tile=(64, 64, 1, 1, -1))


# ---------------------------------------------------------------------------------------------
# nn / tn / tt: transposed storage, same result as nt bit for bit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["block", "channel"])
@pytest.mark.parametrize("case", CI_CASES, ids=case_id)
def test_nn_tn_tt_equal_nt(case, recipe):
    m, n, k = case
    a, sa, b, sb, _ = np_operands(m, n, k, recipe)
    j = jnp.asarray
    a_pair, b_pair = (j(a), j(sa)), (j(b), j(sb))
    a_t = (j(np.ascontiguousarray(a.T)), j(np.ascontiguousarray(sa.T)))  # A stored [K, M], scales [KB, M]
    b_t = (j(np.ascontiguousarray(b.T)), j(np.ascontiguousarray(sb.T)))  # B stored [K, N]
    nt = np.asarray(fp8_gemm_nt(a_pair, b_pair))
    exact, bound = np_expected(a, sa, b, sb)
    assert_close(nt, exact, bound, nt.dtype)
    for name, out in [
        ("nn", fp8_gemm_nn(a_pair, b_t)),
        ("tn", fp8_gemm_tn(a_t, b_t)),
        ("tt", fp8_gemm_tt(a_t, b_pair)),
    ]:
        assert out.shape == (m, n), name
        assert_bitwise_equal(np.asarray(out), nt)


def test_nn_tn_tt_forward_kwargs_and_batch():
    """c / out_dtype pass through; nn and tn take leading batch dims on A (tn: A stored [..., K, M])."""
    m, n, k = 7, 256, 384
    a, sa, b, sb, c = np_operands(m, n, k, "channel", lead=(2,))
    j = jnp.asarray
    b_t = (j(np.swapaxes(b, -1, -2)), j(np.swapaxes(sb, -1, -2)))
    a_t = (j(np.swapaxes(a, -1, -2)), j(np.swapaxes(sa, -1, -2)))
    nt = fp8_gemm_nt((j(a), j(sa)), (j(b), j(sb)), c=j(c))
    exact, bound = np_expected(a, sa, b, sb, c)
    assert_close(nt, exact, bound, jnp.float32)
    assert_bitwise_equal(np.asarray(fp8_gemm_nn((j(a), j(sa)), b_t, c=j(c))), np.asarray(nt))
    assert_bitwise_equal(np.asarray(fp8_gemm_tn(a_t, b_t, c=j(c))), np.asarray(nt))
    assert_bitwise_equal(np.asarray(fp8_gemm_tt(a_t, (j(b), j(sb)), c=j(c))), np.asarray(nt))
    bf16 = fp8_gemm_tn(a_t, b_t, out_dtype=jnp.bfloat16)
    assert bf16.dtype == jnp.bfloat16 and bf16.shape == (2, m, n)
    assert_close(bf16, *np_expected(a, sa, b, sb), jnp.bfloat16)


def test_per_channel_heuristic_takes_128_row_pairs_only_where_they_measured_faster():
    """1D1D tiles (per-channel B scales, FP32 out), H100 session 28: the dense 7168 x 2048 x 2048 runs 128 x 128 pairs
    along M (two accumulator sets: 88.7 us) faster than 256 x 128 A-multicast pairs (95.6 us); the K-grouped 16 x 7168
    x 2048 x 2048, whose tiles from all groups share one grid, stays on 256 x 128 (1274 us against 1341 for 128 x
    128), as does 4 x 4096 x 7168 x 8192 (256 x 128 A-multicast pairs, session 13)."""
    from jax_deepgemm import _ffi

    if not _ffi.has_cuda_kernels():
        pytest.skip("the heuristic lives in the CUDA extension (CPU-only install)")
    assert _ffi.fp8_gemm_per_channel_tile(7168, 2048, 2048, 132) == (128, 128, 2, 1)
    assert _ffi.fp8_gemm_per_channel_tile(7168, 2048, 2048, 132, k_groups=16, sfa_mn_major=True) == (256, 128, 1, 2)
    assert _ffi.fp8_gemm_per_channel_tile(4096, 7168, 8192, 132, k_groups=4, sfa_mn_major=True) == (256, 128, 1, 2)


def test_decode_rows_take_the_gemv_unless_a_tile_is_forced():
    """M <= 4 with K-major A scales, K >= 7168 and M x N <= 4096 runs the CUDA-core GEMV (reported as the tile
    (4, 4, 1, 1, 1): no split, no scratch): where session 56 measured it faster than the tile kernels. Shorter K,
    more columns, M = 5, MN-major A scales and a forced tile or split keep the tile kernels."""
    from jax_deepgemm import _ffi

    if not _ffi.has_cuda_kernels():
        pytest.skip("the heuristic lives in the CUDA extension (CPU-only install)")
    gemv = (4, 4, 1, 1, 1)
    for m in (1, 2, 3, 4):
        for n, k in [(576, 7168), (1021, 8192), (7, 7184), (4096 // m, 16384)]:
            assert _ffi.fp8_gemm_block_tile(m, n, k, 132) == gemv, (m, n, k)
            assert _ffi.fp8_gemm_split_k(m, n, k, 132) == 1
            assert _ffi.fp8_gemm_split_workspace_bytes(m, n, k, 132) == 0
        for n, k in [(576, 7040), (7, 16), (24576, 1536), (32768, 512), (4096 // m + 1, 7168)]:
            assert _ffi.fp8_gemm_block_tile(m, n, k, 132) != gemv, (m, n, k)
    assert _ffi.fp8_gemm_block_tile(1, 2112, 7168, 132) == gemv
    assert _ffi.fp8_gemm_block_tile(4, 2112, 7168, 132) == (64, 16, 1, 1, -2)  # (the GEMV measured 7 % slower)
    assert _ffi.fp8_gemm_block_tile(5, 576, 7168, 132) != gemv
    assert _ffi.fp8_gemm_block_tile(1, 576, 7168, 132, sfa_mn_major=True) != gemv
    assert _ffi.fp8_gemm_split_k(1, 576, 7168, 132, 64, 16, 1, 1, 4) == 4
    assert _ffi.fp8_gemm_split_workspace_bytes(1, 2112, 7168, 132, 64, 16, 1, 1, -2) > 0
