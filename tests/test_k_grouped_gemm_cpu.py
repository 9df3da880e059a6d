"""K-grouped FP8 GEMM (weight gradients) on the CPU path: API, semantics, errors, transforms.

The oracle is float64 NumPy over the dequantized operands, computed per group from the host sizes
(independent of the jnp reference that the CPU lowering runs).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_deepgemm as dg
from jax_deepgemm.quantize import per_channel_dequantize
from jax_deepgemm.testing.generators import k_grouped_operands
from jax_deepgemm.testing.numeric import calc_diff

pytestmark = pytest.mark.usefixtures("on_cpu")


def _oracle(a, b, k_sizes, c=None):
    """float64 ``D[g] = C[g] + A_g^T B_g`` from token-major quantized operands."""
    return _oracle_bf16(per_channel_dequantize(*a), per_channel_dequantize(*b), k_sizes, c)


def _oracle_bf16(x, y, k_sizes, c=None):
    """float64 ``D[g] = C[g] + X_g^T Y_g`` from token-major operands (bf16 sources, or dequantized
    FP8), per group from the host sizes."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    out, start = [], 0
    for size in k_sizes:
        out.append(x[start:start + size].T @ y[start:start + size])
        start += size
    d = np.stack(out) if out else np.zeros((0, x.shape[1], y.shape[1]))
    return d if c is None else d + np.asarray(c, np.float64)


def _nt(x):
    return (x[0].T, x[1].T)


@pytest.mark.parametrize("k_sizes", [[256, 0, 128, 384], [0, 0], [128], [512, 256]])
def test_tn_and_nt_match_float64(k_sizes):
    m, n = 96, 72
    a, b, _, _ = k_grouped_operands(1, k_sizes + [128], m, n)  # one trailing token block in no group
    want = _oracle(a, b, k_sizes)
    for got in (dg.k_grouped_fp8_gemm_tn_contiguous(a, b, np.array(k_sizes, np.int32)),
                dg.k_grouped_fp8_gemm_nt_contiguous(_nt(a), _nt(b), jnp.array(k_sizes, jnp.int32))):
        assert got.shape == (len(k_sizes), m, n) and got.dtype == jnp.float32
        for g, size in enumerate(k_sizes):
            if size == 0:
                assert (np.asarray(got[g]) == 0).all(), "an empty group must give zeros"
            else:
                assert calc_diff(np.asarray(got[g], np.float64), want[g]) < 1e-9


def test_mn_major_a_scales_reference_matches():
    """The primitive given MN-major A scales (what 128-row tiles take from M >= 1024) computes the same."""
    from jax_deepgemm.k_grouped_gemm import _k_grouped_into
    k_sizes = [256, 0, 128]
    a, b, _, _ = k_grouped_operands(4, k_sizes, 96, 72)
    out = jnp.zeros((3, 96, 72), jnp.float32)
    want = _k_grouped_into(_nt(a), _nt(b), k_sizes, out, sfa_mn_major=False)
    got = _k_grouped_into(_nt(a), _nt(b), k_sizes, out, sfa_mn_major=True)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_accumulate_and_empty_group_returns_c():
    k_sizes = [128, 0, 256]
    a, b, _, _ = k_grouped_operands(2, k_sizes, 64, 40)
    c = jax.random.normal(jax.random.key(3), (3, 64, 40), jnp.float32)
    got = np.asarray(jax.jit(dg.k_grouped_fp8_gemm_tn_contiguous)(a, b, jnp.array(k_sizes), c=c), np.float64)
    want = _oracle(a, b, k_sizes, c)
    assert (got[1] == np.asarray(c[1])).all()
    assert calc_diff(got, want) < 1e-9


def test_device_sizes_out_of_contract_poison_later_groups():
    # Under jit the sizes are device data: 64 breaks the 128-alignment, so groups 1.. are NaN, and
    # negative sizes count as 0.
    k_sizes = [128, 64, 128]
    a, b, _, _ = k_grouped_operands(4, [384], 32, 24)
    got = np.asarray(jax.jit(dg.k_grouped_fp8_gemm_tn_contiguous)(a, b, jnp.array(k_sizes, jnp.int32)))
    assert np.isfinite(got[0]).all() and np.isnan(got[1:]).all()
    neg = np.asarray(jax.jit(dg.k_grouped_fp8_gemm_tn_contiguous)(a, b, jnp.array([-5, 256], jnp.int32)))
    assert (neg[0] == 0).all()
    assert calc_diff(neg[1].astype(np.float64), _oracle(a, b, [0, 256])[1]) < 1e-9


def test_vmap_over_a_batch_of_problems():
    k_sizes = [128, 256]
    ops = [k_grouped_operands(s, k_sizes, 32, 16) for s in (5, 6)]
    a = jax.tree.map(lambda *x: jnp.stack(x), *[o[0] for o in ops])
    b = jax.tree.map(lambda *x: jnp.stack(x), *[o[1] for o in ops])
    got = jax.vmap(lambda a, b: dg.k_grouped_fp8_gemm_tn_contiguous(a, b, jnp.array(k_sizes)))(a, b)
    for i, o in enumerate(ops):
        assert calc_diff(np.asarray(got[i], np.float64), _oracle(o[0], o[1], k_sizes)) < 1e-9


def _bad(**override):
    a, b, _, _ = k_grouped_operands(7, [256], 32, 16)
    args = dict(a=a, b=b, k_group_sizes=np.array([128, 128], np.int32))
    args.update(override)
    return dg.k_grouped_fp8_gemm_tn_contiguous(args["a"], args["b"], args["k_group_sizes"])


def test_bad_inputs_name_the_argument():
    a, b, _, _ = k_grouped_operands(7, [256], 32, 16)
    with pytest.raises(ValueError, match="k_group_sizes must be multiples of 128"):
        _bad(k_group_sizes=np.array([64, 192], np.int32))
    with pytest.raises(ValueError, match="k_group_sizes must sum to at most K = 256"):
        _bad(k_group_sizes=np.array([256, 128], np.int32))
    with pytest.raises(ValueError, match="k_group_sizes must be non-negative"):
        _bad(k_group_sizes=np.array([-128, 128], np.int32))
    with pytest.raises(TypeError, match="k_group_sizes"):
        _bad(k_group_sizes=np.array([128.0, 128.0]))
    with pytest.raises(TypeError, match="a must have dtype float8_e4m3fn"):
        _bad(a=(a[0].astype(jnp.bfloat16), a[1]))
    with pytest.raises(ValueError, match="a_scale must have shape"):
        _bad(a=(a[0], a[1][:1]))
    with pytest.raises(ValueError, match="share K"):
        _bad(b=(b[0][:128], b[1][:1]))
    x = jnp.zeros((200, 32), jnp.float8_e4m3fn)
    with pytest.raises(ValueError, match="K = 200 must be a multiple of 128"):
        _bad(a=(x, jnp.ones((2, 32))), b=(jnp.zeros((200, 16), jnp.float8_e4m3fn), jnp.ones((2, 16))))
    with pytest.raises(ValueError, match="c must have shape"):
        dg.k_grouped_fp8_gemm_tn_contiguous(a, b, np.array([256]), c=jnp.zeros((2, 32, 16)))


# ---------------------------------------------------------------------------------------------
# BF16 (k_grouped_bf16_gemm_{tn,nt}_contiguous)
# ---------------------------------------------------------------------------------------------


# (m, n): in-place TN (multiples of 8) and the transposed fallback (odd M); K = sum + a trailing
# token block in no group, or + 3 rows (K not a multiple of 8: the NT form pads it).
@pytest.mark.parametrize("m,n,tail", [(96, 72, 128), (37, 72, 3), (64, 20, 0)])
@pytest.mark.parametrize("k_sizes", [[256, 0, 128, 384], [0, 0], [128]])
def test_bf16_tn_and_nt_match_float64(k_sizes, m, n, tail):
    _, _, x, y = k_grouped_operands(11, k_sizes + [tail], m, n)
    want = _oracle_bf16(x, y, k_sizes)
    for got in (dg.k_grouped_bf16_gemm_tn_contiguous(x, y, np.array(k_sizes, np.int32)),
                jax.jit(dg.k_grouped_bf16_gemm_nt_contiguous)(x.T, y.T, jnp.array(k_sizes, jnp.int32))):
        assert got.shape == (len(k_sizes), m, n) and got.dtype == jnp.float32
        for g, size in enumerate(k_sizes):
            if size == 0:
                assert (np.asarray(got[g]) == 0).all(), "an empty group must give zeros"
            else:
                # bf16 products are exact in float32; only the float32 summation order differs.
                assert calc_diff(np.asarray(got[g], np.float64), want[g]) < 1e-9


def test_bf16_accumulate_device_sizes_and_vmap():
    k_sizes = [128, 0, 256]
    _, _, x, y = k_grouped_operands(12, k_sizes, 64, 40)
    c = jax.random.normal(jax.random.key(3), (3, 64, 40), jnp.float32)
    got = np.asarray(jax.jit(dg.k_grouped_bf16_gemm_tn_contiguous)(x, y, jnp.array(k_sizes), c=c), np.float64)
    assert (got[1] == np.asarray(c[1])).all(), "an empty group must give C exactly"
    assert calc_diff(got, _oracle_bf16(x, y, k_sizes, c)) < 1e-9
    # Device sizes out of contract: from the first size that is not a multiple of 128 on, NaN;
    # negative sizes count as 0.
    bad = np.asarray(jax.jit(dg.k_grouped_bf16_gemm_tn_contiguous)(x, y, jnp.array([128, 64, 128], jnp.int32)))
    assert np.isfinite(bad[0]).all() and np.isnan(bad[1:]).all()
    neg = np.asarray(jax.jit(dg.k_grouped_bf16_gemm_tn_contiguous)(x, y, jnp.array([-5, 256], jnp.int32)))
    assert (neg[0] == 0).all()
    assert calc_diff(neg[1].astype(np.float64), _oracle_bf16(x, y, [0, 256])[1]) < 1e-9
    # vmap: one problem per batch element, each with its own operands.
    xs, ys = jnp.stack([x, -x]), jnp.stack([y, y * 2])
    batched = jax.vmap(lambda a, b: dg.k_grouped_bf16_gemm_tn_contiguous(a, b, jnp.array(k_sizes)))(xs, ys)
    for i in range(2):
        assert calc_diff(np.asarray(batched[i], np.float64), _oracle_bf16(xs[i], ys[i], k_sizes)) < 1e-9


def test_bf16_bad_inputs_name_the_argument():
    _, _, x, y = k_grouped_operands(13, [256], 32, 16)
    f = dg.k_grouped_bf16_gemm_tn_contiguous
    sizes = np.array([128, 128], np.int32)
    with pytest.raises(ValueError, match="k_group_sizes must be multiples of 128"):
        f(x, y, np.array([64, 192], np.int32))
    with pytest.raises(ValueError, match="k_group_sizes must sum to at most K = 256"):
        f(x, y, np.array([256, 128], np.int32))
    with pytest.raises(TypeError, match="k_group_sizes"):
        f(x, y, np.array([128.0, 128.0]))
    with pytest.raises(TypeError, match="a must have dtype bfloat16"):
        f(x.astype(jnp.float32), y, sizes)
    with pytest.raises(TypeError, match="b must have dtype bfloat16"):
        f(x, y.astype(jnp.float8_e4m3fn), sizes)
    with pytest.raises(ValueError, match="b must have rank 2"):
        f(x, y[None], sizes)
    with pytest.raises(ValueError, match="share K"):
        f(x, y[:128], sizes)
    with pytest.raises(ValueError, match="share K"):
        dg.k_grouped_bf16_gemm_nt_contiguous(x.T, y.T[:, :128], sizes)
    with pytest.raises(ValueError, match="c must have shape"):
        f(x, y, sizes, c=jnp.zeros((2, 16, 32)))
    with pytest.raises(TypeError, match="c must have dtype float32"):
        f(x, y, sizes, c=jnp.zeros((2, 32, 16), jnp.bfloat16))
