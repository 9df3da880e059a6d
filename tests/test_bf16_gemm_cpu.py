"""BF16 GEMMs on CPU (the jnp reference lowering): dense nt/nn/tn/tt, accumulate, batch dims, jit/vmap,
M-grouped contiguous/masked/ragged layouts, and trace-time errors that name the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_deepgemm as dg
from jax_deepgemm import bf16_gemm as bg
from jax_deepgemm.testing.generators import contiguous_layout
from jax_deepgemm.testing.numeric import calc_diff

pytestmark = pytest.mark.usefixtures("on_cpu")


def _bf16(seed, *shape):
    return jax.random.normal(jax.random.key(seed), shape).astype(jnp.bfloat16)


def _f64(x):
    return np.asarray(x, np.float64)


# bf16 inputs are exact in float64 and the reference sums in FP32: only the final rounding (bf16
# out: ~2^-9 relative, calc_diff ~1e-6) and FP32 summation order remain.
BF16_OUT_TOL = 1e-5
FP32_OUT_TOL = 1e-9


# --------------------------------------------------------------------------- dense


@pytest.mark.parametrize("m,n,k", [(1, 64, 64), (7, 130, 72), (200, 256, 512), (64, 24, 8)])
def test_nt_matches_float64(m, n, k):
    a, b = _bf16(1, m, k), _bf16(2, n, k)
    out = jax.jit(dg.bf16_gemm_nt)(a, b)
    assert out.shape == (m, n) and out.dtype == jnp.bfloat16
    assert calc_diff(_f64(out), _f64(a) @ _f64(b).T) < BF16_OUT_TOL


def test_fp32_out_and_accumulate():
    a, b = _bf16(3, 96, 160), _bf16(4, 80, 160)
    c = jax.random.normal(jax.random.key(5), (96, 80), jnp.float32)
    want = _f64(a) @ _f64(b).T
    out32 = dg.bf16_gemm_nt(a, b, out_dtype=jnp.float32)
    assert out32.dtype == jnp.float32 and calc_diff(_f64(out32), want) < FP32_OUT_TOL
    acc = jax.jit(dg.bf16_gemm_nt)(a, b, c=c)
    assert acc.dtype == jnp.float32 and calc_diff(_f64(acc), want + _f64(c)) < FP32_OUT_TOL
    acc16 = dg.bf16_gemm_nt(a, b, c=c, out_dtype=jnp.bfloat16)
    assert acc16.dtype == jnp.bfloat16 and calc_diff(_f64(acc16), want + _f64(c)) < BF16_OUT_TOL


def test_layouts_nn_tn_tt():
    m, n, k = 33, 48, 96
    a, b = _bf16(6, m, k), _bf16(7, n, k)
    want = _f64(a) @ _f64(b).T
    at, bt = a.T, b.T  # [K, M], [K, N]
    assert calc_diff(_f64(dg.bf16_gemm_nn(a, bt)), want) < BF16_OUT_TOL
    assert calc_diff(_f64(dg.bf16_gemm_tn(at, bt)), want) < BF16_OUT_TOL
    assert calc_diff(_f64(dg.bf16_gemm_tt(at, b)), want) < BF16_OUT_TOL
    np.testing.assert_array_equal(_f64(dg.bf16_gemm_nn(a, bt)), _f64(dg.bf16_gemm_nt(a, b)))


def test_batch_dims_and_vmap():
    a, b = _bf16(8, 2, 3, 40, 64), _bf16(9, 24, 64)
    out = dg.bf16_gemm_nt(a, b)
    assert out.shape == (2, 3, 40, 24)
    np.testing.assert_array_equal(_f64(out[1, 2]), _f64(dg.bf16_gemm_nt(a[1, 2], b)))
    v = jax.vmap(dg.bf16_gemm_nt, in_axes=(0, None))(a[0], b)
    np.testing.assert_array_equal(_f64(v), _f64(out[0]))
    bb = jnp.stack([b, b * 2])
    vb = jax.vmap(dg.bf16_gemm_nt)(a[0, :2], bb)  # batched B: one call per element
    np.testing.assert_array_equal(_f64(vb[1]), _f64(dg.bf16_gemm_nt(a[0, 1], b * 2)))
    c = jnp.ones((2, 40, 24), jnp.float32)
    vc = jax.vmap(lambda x, cc: dg.bf16_gemm_nt(x, b, c=cc))(a[0, :2], c)
    np.testing.assert_allclose(_f64(vc[0]), _f64(dg.bf16_gemm_nt(a[0, 0], b, out_dtype=jnp.float32)) + 1, rtol=1e-6)


def test_empty_dims():
    assert dg.bf16_gemm_nt(_bf16(1, 0, 64), _bf16(2, 8, 64)).shape == (0, 8)
    assert dg.bf16_gemm_nt(_bf16(1, 4, 64), _bf16(2, 0, 64)).shape == (4, 0)
    z = dg.bf16_gemm_nt(jnp.zeros((4, 0), jnp.bfloat16), jnp.zeros((8, 0), jnp.bfloat16))
    assert z.shape == (4, 8) and (np.asarray(z, np.float32) == 0).all()
    c = jnp.full((4, 8), 3.0, jnp.float32)
    np.testing.assert_array_equal(np.asarray(dg.bf16_gemm_nt(jnp.zeros((4, 0), jnp.bfloat16),
                                                            jnp.zeros((8, 0), jnp.bfloat16), c=c)), np.asarray(c))


def test_reference_function():
    a, b = _bf16(10, 16, 32), _bf16(11, 8, 32)
    np.testing.assert_array_equal(_f64(dg.bf16_gemm_nt_reference(a, b)), _f64(dg.bf16_gemm_nt(a, b)))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda a, b: dg.bf16_gemm_nt(a.astype(jnp.float32), b), r"bf16_gemm_nt: a must have dtype bfloat16"),
        (lambda a, b: dg.bf16_gemm_nt(a, b.astype(jnp.float16)), r"bf16_gemm_nt: b must have dtype bfloat16"),
        (lambda a, b: dg.bf16_gemm_nt(a[0], b), r"a must have rank >= 2"),
        (lambda a, b: dg.bf16_gemm_nt(a, b[None]), r"b must have rank 2"),
        (lambda a, b: dg.bf16_gemm_nt(a, b[:, :32]), r"share K"),
        (lambda a, b: dg.bf16_gemm_nt(a[:, :36], b[:, :36]), r"K=36 must be a multiple of 8"),
        (lambda a, b: dg.bf16_gemm_nt(a, b, c=jnp.zeros((16, 8), jnp.bfloat16)), r"c must have dtype float32"),
        (lambda a, b: dg.bf16_gemm_nt(a, b, c=jnp.zeros((16, 9), jnp.float32)), r"c must have shape"),
        (lambda a, b: dg.bf16_gemm_nt(a, b, out_dtype=jnp.float16), r"out_dtype"),
        (lambda a, b: dg.bf16_gemm_nt(a, b, tile=(64,)), r"tile"),
        (lambda a, b: dg.bf16_gemm_nt(a, b, tile=(64, 32, 1, 9)), r"split_k must be in \[0, 8\]"),
        (lambda a, b: dg.bf16_gemm_nt(a, b, tile=(64, 0, 1, 2)), r"split_k > 1 needs .* block_n given"),
        (lambda a, b: dg.bf16_gemm_nt(a, b, tile=(128, 256, 1, 2)), r"split_k > 1 needs .* at most 128"),
        (lambda a, b: dg.bf16_gemm_nt(a, b, tile=(128, 256, 2, 2)), r"split_k > 1 needs .* unpaired"),
        (lambda a, b: dg.bf16_gemm_nn(a, b.T, tile=(64, 64, 1, 2)), r"split_k > 1 needs the NT form"),
        (lambda a, b: dg.bf16_gemm_nn(a, b), r"bf16_gemm_nn: a and b must share K"),
        (lambda a, b: dg.bf16_gemm_tn(a, b.T, out=1), r"unexpected keyword"),
        (lambda a, b: dg.bf16_gemm_tt(a.astype(jnp.float32), b), r"bf16_gemm_tt: a must have dtype bfloat16"),
    ],
)
def test_dense_bad_inputs_name_the_argument(call, match):
    a, b = _bf16(12, 16, 64), _bf16(13, 8, 64)
    with pytest.raises((ValueError, TypeError), match=match):
        call(a, b)


# --------------------------------------------------------------------------- M-grouped contiguous

N, K = 192, 256
SIZES = [130, 0, 60, 128]


def _grouped(seed, sizes, n=N, k=K, extra_rows=0):
    row_ids, psum = contiguous_layout(sizes, extra_rows=extra_rows)
    a = _bf16(seed, len(row_ids), k)
    b = _bf16(seed + 1000, len(sizes), n, k)
    return a, b, row_ids, psum


def _rows_exact(a, b, row_ids):
    a64, b64 = _f64(a), _f64(b)
    out = np.zeros((a64.shape[0], b64.shape[1]))
    for r, g in enumerate(row_ids):
        if 0 <= g < b64.shape[0]:
            out[r] = b64[g] @ a64[r]
    return out


@pytest.mark.parametrize("use_psum", [False, True])
def test_contiguous_matches_float64(use_psum):
    a, b, row_ids, psum = _grouped(20, SIZES, extra_rows=3)
    layout = jnp.asarray(psum if use_psum else row_ids)
    out = jax.jit(dg.m_grouped_bf16_gemm_nt_contiguous, static_argnames="use_psum_layout")(
        a, b, layout, use_psum_layout=use_psum)
    assert out.shape == (len(row_ids), N) and out.dtype == jnp.bfloat16
    got, want = _f64(out), _rows_exact(a, b, row_ids)
    pad = row_ids < 0
    assert (got[pad] == 0).all(), "padding rows must be exactly 0"
    assert calc_diff(got[~pad], want[~pad]) < BF16_OUT_TOL


def test_contiguous_host_layout_equals_device_layout():
    a, b, row_ids, _ = _grouped(21, SIZES)
    host = dg.m_grouped_bf16_gemm_nt_contiguous(a, b, row_ids)
    dev = dg.m_grouped_bf16_gemm_nt_contiguous(a, b, jnp.asarray(row_ids))
    np.testing.assert_array_equal(_f64(host), _f64(dev))


def test_contiguous_misaligned_device_layout_gives_nan_rows():
    a, b, row_ids, _ = _grouped(22, [128, 128])
    bad = row_ids.copy()
    bad[100:128] = 1  # expert 1 starts inside expert 0's tile
    out = _f64(dg.m_grouped_bf16_gemm_nt_contiguous(a, b, jnp.asarray(bad)))
    assert np.isnan(out[100:128]).all()
    assert np.isfinite(out[:100]).all() and np.isfinite(out[128:]).all()


def test_contiguous_out_of_range_device_ids_are_padding():
    a, b, row_ids, _ = _grouped(23, [128, 128])
    ids = row_ids.copy()
    ids[128:] = 7
    out = _f64(dg.m_grouped_bf16_gemm_nt_contiguous(a, b, jnp.asarray(ids)))
    assert (out[128:] == 0).all() and np.isfinite(out[:128]).all() and np.abs(out[:128]).sum() > 0


def test_contiguous_vmap_over_a():
    a, b, row_ids, _ = _grouped(24, [128, 64])
    a2 = jnp.stack([a, a * 2])
    out = jax.vmap(lambda x: dg.m_grouped_bf16_gemm_nt_contiguous(x, b, jnp.asarray(row_ids)))(a2)
    np.testing.assert_array_equal(_f64(out[1]), _f64(dg.m_grouped_bf16_gemm_nt_contiguous(a * 2, b, row_ids)))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a, b, ids: (a, b, ids[:-1]), "grouped_layout"),
        (lambda a, b, ids: (a, b, ids.astype(np.float32)), "grouped_layout"),
        (lambda a, b, ids: (a, b, np.where(np.arange(len(ids)) == 5, 9, ids)), "grouped_layout"),
        (lambda a, b, ids: (a, b, np.roll(ids, 3)), "not aligned"),
        (lambda a, b, ids: (a.astype(jnp.float32), b, ids), r": a must have dtype bfloat16"),
        (lambda a, b, ids: (a, b[0], ids), r": b must have rank 3"),
        (lambda a, b, ids: (a, b[:, :, :128], ids), r"share K"),
        (lambda a, b, ids: (a[:, :100], b[:, :, :100], ids), r"multiple of 8"),
        (lambda a, b, ids: (a, b[:0], ids), r"at least one group"),
    ],
)
def test_contiguous_bad_inputs_name_the_argument(mutate, match):
    a, b, row_ids, _ = _grouped(25, [128, 60])
    a, b, ids = mutate(a, b, row_ids)
    with pytest.raises((ValueError, TypeError), match=match):
        dg.m_grouped_bf16_gemm_nt_contiguous(a, b, ids)


def test_contiguous_bad_psum_is_rejected():
    a, b, _, psum = _grouped(26, [128, 60])
    with pytest.raises(ValueError, match="grouped_layout"):
        dg.m_grouped_bf16_gemm_nt_contiguous(a, b, psum[::-1].copy(), use_psum_layout=True)


# --------------------------------------------------------------------------- masked


def test_masked_matches_float64():
    g, max_m = 3, 128
    a, b = _bf16(30, g, max_m, K), _bf16(31, g, N, K)
    masked_m = np.array([5, 0, 128], np.int32)
    out = _f64(jax.jit(dg.m_grouped_bf16_gemm_nt_masked, static_argnames="expected_m")(
        a, b, jnp.asarray(masked_m), expected_m=64))
    assert out.shape == (g, max_m, N)
    for i, mm in enumerate(masked_m):
        assert (out[i, mm:] == 0).all()  # the CPU path writes 0 past masked_m
        if mm:
            assert calc_diff(out[i, :mm], _f64(a[i, :mm]) @ _f64(b[i]).T) < BF16_OUT_TOL


@pytest.mark.parametrize(
    "kwargs, masked_m, match",
    [
        ({}, np.array([1, 200, 0], np.int32), "masked_m"),
        ({}, np.array([1, 2], np.int32), "masked_m"),
        ({"expected_m": -1}, np.array([1, 2, 3], np.int32), "expected_m"),
    ],
)
def test_masked_bad_inputs(kwargs, masked_m, match):
    a, b = _bf16(32, 3, 128, K), _bf16(33, 3, N, K)
    with pytest.raises((ValueError, TypeError), match=match):
        dg.m_grouped_bf16_gemm_nt_masked(a, b, masked_m, **kwargs)


def test_masked_shape_rules():
    a, b = _bf16(34, 2, 128, K), _bf16(35, 2, N, K)
    with pytest.raises(ValueError, match="max_m"):
        dg.m_grouped_bf16_gemm_nt_masked(a[:, :100], b, np.array([1, 2], np.int32))
    with pytest.raises(ValueError, match="same number of groups"):
        dg.m_grouped_bf16_gemm_nt_masked(a, b[:1], np.array([1, 2], np.int32))
    with pytest.raises(ValueError, match="a must have rank 3"):
        dg.m_grouped_bf16_gemm_nt_masked(a[0], b, np.array([1, 2], np.int32))


# --------------------------------------------------------------------------- ragged (lax.ragged_dot semantics)


def _ragged_exact(a, b, sizes, m):
    a64, b64 = _f64(a), _f64(b)
    out, start = np.zeros((m, b64.shape[1])), 0
    for g, size in enumerate(sizes):
        size = max(0, min(size, m - start))
        out[start:start + size] = a64[start:start + size] @ b64[g].T
        start += size
    return out


@pytest.mark.parametrize("sizes,m", [([3, 0, 250, 1], 260), ([1], 1), ([0, 0, 0, 0], 5), ([200, 10, 0, 7], 217)])
def test_ragged_matches_float64_and_ragged_dot(sizes, m):
    a, b = _bf16(40, m, K), _bf16(41, len(sizes), N, K)
    gs = jnp.asarray(sizes, jnp.int32)
    out = _f64(jax.jit(dg.m_grouped_bf16_gemm_nt_ragged)(a, b, gs))
    done = min(sum(sizes), m)
    assert (out[done:] == 0).all()
    if done:
        assert calc_diff(out[:done], _ragged_exact(a, b, sizes, m)[:done]) < BF16_OUT_TOL
        rd = jax.lax.ragged_dot(a, jnp.swapaxes(b, 1, 2), gs, preferred_element_type=jnp.float32)
        assert calc_diff(out[:done], _f64(rd)[:done]) < BF16_OUT_TOL


def test_ragged_is_one_kernel_call():
    a, b = _bf16(46, 100, K), _bf16(47, 3, N, K)
    jaxpr = jax.make_jaxpr(lambda x, y: dg.m_grouped_bf16_gemm_nt_ragged(x, y, jnp.asarray([30, 0, 50], jnp.int32)))(a, b)
    prims = [e.primitive.name for e in jaxpr.eqns]
    assert "jax_deepgemm_m_grouped_bf16_gemm_nt_ragged" in prims and "gather" not in prims
    out = bg._m_grouped_ragged_into(a, b, [30, 0, 50], jnp.full((100, N), jnp.nan, jnp.bfloat16), tile=(64, 64))
    np.testing.assert_array_equal(_f64(out), _f64(dg.m_grouped_bf16_gemm_nt_ragged(a, b, jnp.asarray([30, 0, 50]))))


def test_ragged_device_sizes_past_m_are_truncated():
    m = 64
    a, b = _bf16(42, m, K), _bf16(43, 2, N, K)
    out = _f64(dg.m_grouped_bf16_gemm_nt_ragged(a, b, jnp.asarray([40, 100], jnp.int32)))
    assert calc_diff(out, _ragged_exact(a, b, [40, 100], m)) < BF16_OUT_TOL


@pytest.mark.parametrize("k", [K, 72])  # 72: not a multiple of 64, the NN op transposes B and runs NT
def test_ragged_nn_is_ragged_dot_layout(k):
    sizes, m = [3, 0, 250, 1], 260
    a, b = _bf16(48, m, k), _bf16(49, len(sizes), k, N)  # b [G, K, N]: lax.ragged_dot's rhs as it is
    gs = jnp.asarray(sizes, jnp.int32)
    out = _f64(jax.jit(dg.m_grouped_bf16_gemm_nn_ragged)(a, b, gs))
    assert out.shape == (m, N) and (out[sum(sizes):] == 0).all()
    rd = jax.lax.ragged_dot(a, b, gs, preferred_element_type=jnp.float32)
    assert calc_diff(out[:sum(sizes)], _f64(rd)[:sum(sizes)]) < BF16_OUT_TOL
    assert calc_diff(out, _ragged_exact(a, jnp.swapaxes(b, 1, 2), sizes, m)) < BF16_OUT_TOL
    with pytest.raises(ValueError, match="share K"):
        dg.m_grouped_bf16_gemm_nn_ragged(a, jnp.swapaxes(b, 1, 2), gs)
    with pytest.raises(ValueError, match="group_sizes"):
        dg.m_grouped_bf16_gemm_nn_ragged(a, b, np.asarray([300, 0, 0, 0], np.int32))


@pytest.mark.parametrize("sizes", [[-1, 3], [300, 0], [1, 2, 3]])
def test_ragged_bad_host_sizes(sizes):
    a, b = _bf16(44, 128, K), _bf16(45, 2, N, K)
    with pytest.raises(ValueError, match="group_sizes"):
        dg.m_grouped_bf16_gemm_nt_ragged(a, b, np.asarray(sizes, np.int32))


def test_lowering_uses_ffi_target_only_on_cuda():
    """On CPU the primitives lower to the reference (no custom call)."""
    a, b = _bf16(50, 16, 64), _bf16(51, 8, 64)
    hlo = jax.jit(dg.bf16_gemm_nt).lower(a, b).as_text()
    assert "custom_call" not in hlo and "jax_deepgemm_bf16_gemm_v2" not in hlo
    assert bg._bf16_gemm_p.name == "jax_deepgemm_bf16_gemm"


def _bound_major(fn, *args):
    """The `major` param of the dense primitive that `fn` binds (None when it binds none)."""
    jaxpr = jax.make_jaxpr(lambda *x: fn(*x))(*args)  # a fresh function: no trace cache hit
    for eqn in jaxpr.eqns:
        if eqn.primitive is bg._bf16_gemm_p:
            return eqn.params["major"]
    return None


@pytest.mark.parametrize(
    "fn, a_shape, b_shape, major",
    [
        (dg.bf16_gemm_nt, (32, 64), (48, 64), 0),
        (dg.bf16_gemm_nn, (32, 64), (64, 48), 2),       # B [K, N] read MN-major
        (dg.bf16_gemm_nn, (32, 64), (64, 44), 0),       # N % 8 != 0: B transposed in XLA
        (dg.bf16_gemm_tn, (64, 32), (64, 48), 3),       # both MN-major
        (dg.bf16_gemm_tn, (64, 36), (64, 48), 2),       # M % 8 != 0: A transposed
        (dg.bf16_gemm_tt, (64, 32), (48, 64), 1),       # A [K, M] read MN-major
        (dg.bf16_gemm_tt, (3, 64, 32), (48, 64), 0),    # batched A [..., K, M]: transposed
    ],
)
def test_mn_major_operands_reach_the_kernel(fn, a_shape, b_shape, major):
    a, b = _bf16(60, *a_shape), _bf16(61, *b_shape)
    assert _bound_major(fn, a, b) == major
    # whatever the path, the result is the float64 product
    a64, b64 = _f64(a), _f64(b)
    a_km = a64 if fn in (dg.bf16_gemm_nt, dg.bf16_gemm_nn) else np.swapaxes(a64, -1, -2)
    b_km = b64 if fn in (dg.bf16_gemm_nt, dg.bf16_gemm_tt) else b64.T
    assert calc_diff(_f64(fn(a, b)), a_km @ b_km.T) < BF16_OUT_TOL


def test_mn_major_fallback_flag(monkeypatch):
    a, b = _bf16(62, 64, 32), _bf16(63, 64, 48)
    monkeypatch.setattr(bg, "_MN_MAJOR_KERNELS", False)
    assert _bound_major(dg.bf16_gemm_tn, a, b) == 0
    np.testing.assert_array_equal(_f64(dg.bf16_gemm_tn(a, b)), _f64(dg.bf16_gemm_nt(a.T, b.T)))


def test_mn_major_vmap_and_accumulate():
    a, b = _bf16(64, 3, 64, 32), _bf16(65, 64, 48)  # A stored [K, M] per batch element
    out = jax.jit(jax.vmap(dg.bf16_gemm_tn, in_axes=(0, None)))(a, b)
    for i in range(3):
        np.testing.assert_array_equal(_f64(out[i]), _f64(dg.bf16_gemm_nt(a[i].T, b.T)))
    c = jax.random.normal(jax.random.key(66), (32, 48), jnp.float32)
    acc = dg.bf16_gemm_nn(a[0].T, b, c=c)
    assert acc.dtype == jnp.float32
    assert calc_diff(_f64(acc), _f64(a[0]).T @ _f64(b) + _f64(c)) < FP32_OUT_TOL


# --------------------------------------------------------------------------- shard_map / export


def _shard(f, args, specs, out_spec):
    from jax.sharding import Mesh, NamedSharding

    mesh = Mesh(np.array(jax.devices("cpu")[:8]), ("x",))
    placed = [jax.device_put(x, NamedSharding(mesh, s)) for x, s in zip(args, specs)]
    fn = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=tuple(specs), out_specs=out_spec))
    return fn(*placed), fn.lower(*placed).compile().as_text()


def test_shard_map_rows_dense_and_experts_masked():
    from jax.sharding import PartitionSpec as P

    a, b = _bf16(70, 8 * 24, 128), _bf16(71, 40, 128)
    out, hlo = _shard(dg.bf16_gemm_nt, (a, b), [P("x"), P()], P("x"))
    assert "all-gather" not in hlo and "all-reduce" not in hlo
    np.testing.assert_array_equal(_f64(out), _f64(dg.bf16_gemm_nt(a, b)))
    groups, max_m = 16, 128
    a3, b3 = _bf16(72, groups, max_m, 128), _bf16(73, groups, 40, 128)
    mm = jnp.asarray(np.arange(groups, dtype=np.int32) * 8)
    out, hlo = _shard(dg.m_grouped_bf16_gemm_nt_masked, (a3, b3, mm), [P("x")] * 3, P("x"))
    assert "all-gather" not in hlo and "all-to-all" not in hlo
    np.testing.assert_array_equal(_f64(out), _f64(dg.m_grouped_bf16_gemm_nt_masked(a3, b3, mm)))


def test_export_round_trip_cpu():
    a, b = _bf16(74, 24, 64), _bf16(75, 40, 64)
    exported = jax.export.export(jax.jit(dg.bf16_gemm_tn), platforms=["cpu"])(a.T, b.T)
    got = jax.export.deserialize(exported.serialize()).call(a.T, b.T)
    np.testing.assert_array_equal(_f64(got), _f64(dg.bf16_gemm_nt(a, b)))


@pytest.mark.skipif(not dg.has_cuda_kernels(), reason="needs the compiled library (its heuristics)")
def test_decode_heuristic_splits_k_and_sizes_the_scratch():
    """At decode (M <= 128) the dense heuristic shares each tile's K over several CTAs where few tiles would leave SMs
    idle, one wave of them, and the primitive's scratch output holds every CTA's FP32 partial; where unsplit tiles
    fill the SMs, and above M = 128, it does not split (one byte of scratch). (H200, session
    54: unsplit, 1 x 576 x 7168 ran 18.0 us on 36 tiles of 64 x 16, where XLA's dot took 4.8.)"""
    from jax_deepgemm import _ffi

    for m, n, k in [(16, 576, 7168), (64, 1536, 7168), (5, 2112, 7168), (128, 2112, 7168), (8, 576, 2048)]:
        bm, bn, cluster, split = _ffi.bf16_gemm_tile(m, n, k, 132)
        tiles = -(-m // bm) * -(-n // bn)
        assert cluster == 1 and bn <= 128 and split > 1 and tiles * split <= 132, (m, n, k, bm, bn, split)
        assert -(-k // 64) // split >= 4, (m, n, k, split)  # each CTA runs at least 4 slices of 64
        assert _ffi.bf16_gemm_split_workspace_bytes(m, n, k, 132) == tiles * split * bm * bn * 4
    for m, n, k in [(4096, 7168, 2048), (4096, 2112, 7168), (1, 7168, 2048), (1, 4096, 7168), (200, 576, 7168)]:
        assert _ffi.bf16_gemm_tile(m, n, k, 132)[3] == 1, (m, n, k)
        assert _ffi.bf16_gemm_split_workspace_bytes(m, n, k, 132) == 0
    # the primitive's scratch output is what the heuristic needs for the (folded) M it binds
    a, b = _bf16(60, 16, 7168), _bf16(61, 576, 7168)
    jaxpr = jax.make_jaxpr(dg.bf16_gemm_nt)(a, b)
    (eqn,) = [e for e in jaxpr.eqns if e.primitive is bg._bf16_gemm_p]
    assert eqn.params["workspace_bytes"] == _ffi.bf16_gemm_split_workspace_bytes(16, 576, 7168,
                                                                                  _ffi.device_sm_count()) > 0
    assert eqn.outvars[1].aval.shape == (eqn.params["workspace_bytes"],)


@pytest.mark.skipif(not dg.has_cuda_kernels(), reason="needs the compiled library (its heuristics)")
def test_decode_rows_take_the_gemv_unless_a_tile_is_forced():
    """M <= 4 in the NT form with K >= 7168 runs the CUDA-core GEMV (reported as the tile (4, 4, 1, 1), no scratch),
    at any N, folded batch rows included: where session 56 measured it faster than the tile kernels. Shorter K, a
    forced tile, M = 5 and the other layouts keep the tile kernels."""
    from jax_deepgemm import _ffi

    for m in (1, 2, 3, 4):
        for n, k in [(576, 7168), (7168, 16384), (7, 7176), (4097, 7200)]:
            assert _ffi.bf16_gemm_tile(m, n, k, 132) == (4, 4, 1, 1), (m, n, k)
            assert _ffi.bf16_gemm_split_workspace_bytes(m, n, k, 132) == 0
        for n, k in [(7, 8), (576, 2048), (7168, 7160)]:
            assert _ffi.bf16_gemm_tile(m, n, k, 132) != (4, 4, 1, 1), (m, n, k)
    assert _ffi.bf16_gemm_tile(5, 576, 7168, 132) != (4, 4, 1, 1)
    assert _ffi.bf16_gemm_tile(1, 576, 7168, 132, major=bg.MAJOR_B_MN) != (4, 4, 1, 1)
    # a forced split still gets its scratch (the tile kernel runs)
    assert _ffi.bf16_gemm_split_workspace_bytes(1, 576, 7168, 132, 64, 32, 1, 4) == 18 * 4 * 64 * 32 * 4  # 18 tiles of 64 x 32
    a, b = _bf16(62, 2, 3, 7168), _bf16(63, 576, 7168)  # vmapped / batched: 6 folded rows, not the GEMV
    (eqn,) = [e for e in jax.make_jaxpr(dg.bf16_gemm_nt)(a, b).eqns if e.primitive is bg._bf16_gemm_p]
    assert eqn.params["workspace_bytes"] == _ffi.bf16_gemm_split_workspace_bytes(6, 576, 7168, 132)


@pytest.mark.skipif(not dg.has_cuda_kernels(), reason="needs the compiled library (its heuristics)")
def test_forced_split_with_too_many_tiles_fails_at_trace_time():
    """A forced split whose output has more tiles than the split launch's arrival counters (1024) is a ValueError when
    traced, not a launch error when run: 2048 x 576 in 64 x 16 tiles is 1152 tiles."""
    a = jax.ShapeDtypeStruct((2048, 64), jnp.bfloat16)
    b = jax.ShapeDtypeStruct((576, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match=r"split_k=2 .* at most 1024 output tiles"):
        jax.make_jaxpr(lambda a, b: dg.bf16_gemm_nt(a, b, tile=(64, 16, 1, 2)))(a, b)
    jax.make_jaxpr(lambda a, b: dg.bf16_gemm_nt(a, b, tile=(64, 16, 1, 2)))(
        jax.ShapeDtypeStruct((1024, 64), jnp.bfloat16), b)  # 576 tiles: fine (and K = 64 leaves one split: none)
    with pytest.raises(ValueError, match=r"cluster_m=2, .*\(major=2\)"):  # pairs are compiled for the NT form only
        jax.make_jaxpr(lambda a, b: dg.bf16_gemm_nn(a, b, tile=(128, 256, 2)))(
            jax.ShapeDtypeStruct((256, 64), jnp.bfloat16), jax.ShapeDtypeStruct((64, 576), jnp.bfloat16))
