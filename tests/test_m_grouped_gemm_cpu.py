"""M-grouped contiguous FP8 GEMM on CPU: API, layouts, padding and misalignment semantics, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_deepgemm as dg
from jax_deepgemm.testing.generators import m_grouped_operands
from jax_deepgemm.testing.numeric import calc_diff

pytestmark = pytest.mark.usefixtures("on_cpu")

N, K = 256, 384
SIZES = [130, 0, 60, 128]


def _exact(x, w, row_ids):
    """float64 per-row product with the unquantized sources, 0 on padding rows."""
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    out = np.zeros((x64.shape[0], w64.shape[1]))
    for r, g in enumerate(row_ids):
        if g >= 0:
            out[r] = w64[g] @ x64[r]
    return out


@pytest.mark.parametrize("use_psum", [False, True])
def test_matches_float64_product(use_psum):
    a, b, x, w, row_ids, psum = m_grouped_operands(1, SIZES, N, K, extra_rows=3)
    layout = jnp.asarray(psum if use_psum else row_ids)
    out = jax.jit(dg.m_grouped_fp8_gemm_nt_contiguous, static_argnames="use_psum_layout")(
        a, b, layout, use_psum_layout=use_psum)
    assert out.shape == (len(row_ids), N) and out.dtype == jnp.bfloat16
    got = np.asarray(out, np.float64)
    want = _exact(x, w, row_ids)
    pad = row_ids < 0
    assert (got[pad] == 0).all(), "padding rows must be exactly 0"
    assert calc_diff(got[~pad], want[~pad]) < 1e-3


def test_host_layout_equals_device_layout():
    a, b, _, _, row_ids, _ = m_grouped_operands(2, SIZES, N, K)
    host = dg.m_grouped_fp8_gemm_nt_contiguous(a, b, row_ids)
    dev = dg.m_grouped_fp8_gemm_nt_contiguous(a, b, jnp.asarray(row_ids))
    np.testing.assert_array_equal(np.asarray(host, np.float32), np.asarray(dev, np.float32))


def test_misaligned_device_layout_gives_nan_rows():
    a, b, _, _, row_ids, _ = m_grouped_operands(3, [128, 128], N, K)
    bad = row_ids.copy()
    bad[100:128] = 1  # expert 1 starts inside expert 0's tile
    out = np.asarray(dg.m_grouped_fp8_gemm_nt_contiguous(a, b, jnp.asarray(bad)), np.float32)
    assert np.isnan(out[100:128]).all()
    assert np.isfinite(out[:100]).all() and np.isfinite(out[128:]).all()


def test_out_of_range_device_ids_are_padding():
    a, b, _, _, row_ids, _ = m_grouped_operands(4, [128, 128], N, K)
    ids = row_ids.copy()
    ids[128:] = 7
    out = np.asarray(dg.m_grouped_fp8_gemm_nt_contiguous(a, b, jnp.asarray(ids)), np.float32)
    assert (out[128:] == 0).all() and np.isfinite(out[:128]).all() and np.abs(out[:128]).sum() > 0


def test_vmap_over_a():
    a, b, _, _, row_ids, _ = m_grouped_operands(5, [128, 64], N, K)
    a2 = (jnp.stack([a[0], a[0]]), jnp.stack([a[1], a[1] * 2]))
    out = jax.vmap(lambda x, s: dg.m_grouped_fp8_gemm_nt_contiguous((x, s), b, jnp.asarray(row_ids)))(*a2)
    single = dg.m_grouped_fp8_gemm_nt_contiguous(a, b, jnp.asarray(row_ids))
    np.testing.assert_array_equal(np.asarray(out[0], np.float32), np.asarray(single, np.float32))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a, b, ids: (a, b, ids[:-1]), "grouped_layout"),
        (lambda a, b, ids: (a, b, ids.astype(np.float32)), "grouped_layout"),
        (lambda a, b, ids: (a, b, np.where(np.arange(len(ids)) == 5, 9, ids)), "grouped_layout"),
        (lambda a, b, ids: (a, b, np.roll(ids, 3)), "not aligned"),
        (lambda a, b, ids: ((a[0].astype(jnp.bfloat16), a[1]), b, ids), r": a\b"),
        (lambda a, b, ids: (a, (b[0][0], b[1][0]), ids), r": b\b"),
        (lambda a, b, ids: (a, (b[0], b[1][:, :1]), ids), "b_scale"),
    ],
)
def test_bad_inputs_name_the_argument(mutate, match):
    a, b, _, _, row_ids, _ = m_grouped_operands(6, [128, 60], N, K)
    a, b, ids = mutate(a, b, row_ids)
    with pytest.raises((ValueError, TypeError), match=match):
        dg.m_grouped_fp8_gemm_nt_contiguous(a, b, ids)


@pytest.mark.parametrize("block_m", [64, 192, 512, -128, 128.0])
def test_bad_contiguous_block_m_is_rejected(block_m):
    a, b, _, _, row_ids, _ = m_grouped_operands(6, [128, 60], N, K)
    with pytest.raises(ValueError, match="block_m"):
        dg.m_grouped_fp8_gemm_nt_contiguous(a, b, jnp.asarray(row_ids), block_m=block_m)


def test_contiguous_block_m_does_not_change_the_reference():
    a, b, _, _, row_ids, _ = m_grouped_operands(6, [128, 60], N, K)
    want = dg.m_grouped_fp8_gemm_nt_contiguous(a, b, jnp.asarray(row_ids))
    for block_m in (128, 256):
        got = dg.m_grouped_fp8_gemm_nt_contiguous(a, b, jnp.asarray(row_ids), block_m=block_m)
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_bad_psum_is_rejected():
    a, b, _, _, _, psum = m_grouped_operands(7, [128, 60], N, K)
    with pytest.raises(ValueError, match="grouped_layout"):
        dg.m_grouped_fp8_gemm_nt_contiguous(a, b, psum[::-1].copy(), use_psum_layout=True)


# --------------------------------------------------------------------------- masked


def _masked_operands(seed, num_groups, max_m, n, k):
    a, b, x, w, _, _ = m_grouped_operands(seed, [max_m] * num_groups, n, k)
    a3 = (a[0].reshape(num_groups, max_m, k), a[1].reshape(num_groups, max_m, -1))
    return a3, b, np.asarray(x, np.float64).reshape(num_groups, max_m, k), np.asarray(w, np.float64)


def test_masked_matches_float64_product():
    a, b, x, w = _masked_operands(8, 3, 128, N, K)
    masked_m = np.array([5, 0, 128], np.int32)
    out = np.asarray(jax.jit(dg.m_grouped_fp8_gemm_nt_masked, static_argnames="expected_m")(
        a, b, jnp.asarray(masked_m), expected_m=64), np.float64)
    assert out.shape == (3, 128, N)
    for g, mm in enumerate(masked_m):
        if mm:
            assert calc_diff(out[g, :mm], x[g, :mm] @ w[g].T) < 1e-3


def test_masked_mn_major_scales_match_float64_product():
    """The masked primitive given MN-major A scales ([ceil(K/128), align(G * max_m, 4)], what the kernel may take)
    reads each group's own scale rows."""
    from jax_deepgemm.m_grouped_gemm import _m_grouped_masked_into
    a, b, x, w = _masked_operands(9, 3, 128, N, K)
    masked_m = np.array([7, 128, 0], np.int32)
    out = np.asarray(_m_grouped_masked_into(a, b, jnp.asarray(masked_m), jnp.zeros((3, 128, N), jnp.bfloat16),
                                            sfa_mn_major=True), np.float64)
    for g, mm in enumerate(masked_m):
        if mm:
            assert calc_diff(out[g, :mm], x[g, :mm] @ w[g].T) < 1e-3


@pytest.mark.parametrize(
    "kwargs, masked_m, match",
    [
        ({}, np.array([1, 200, 0], np.int32), "masked_m"),
        ({}, np.array([1, 2], np.int32), "masked_m"),
        ({"expected_m": -1}, np.array([1, 2, 3], np.int32), "expected_m"),
    ],
)
def test_masked_bad_inputs(kwargs, masked_m, match):
    a, b, _, _ = _masked_operands(9, 3, 128, N, K)
    with pytest.raises((ValueError, TypeError), match=match):
        dg.m_grouped_fp8_gemm_nt_masked(a, b, masked_m, **kwargs)


def test_masked_max_m_must_be_multiple_of_128():
    a, b, _, _ = _masked_operands(10, 2, 128, N, K)
    a = (a[0][:, :100], a[1][:, :100])
    with pytest.raises(ValueError, match="max_m"):
        dg.m_grouped_fp8_gemm_nt_masked(a, b, np.array([1, 2], np.int32))


# --------------------------------------------------------------------------- ragged (lax.ragged_dot semantics)


def _ragged_exact(x, w, sizes, m):
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    out, start = np.zeros((m, w64.shape[1])), 0
    for g, size in enumerate(sizes):
        size = max(0, min(size, m - start))
        out[start:start + size] = x64[start:start + size] @ w64[g].T
        start += size
    return out


@pytest.mark.parametrize("sizes,m", [([3, 0, 250, 1], 260), ([1], 1), ([0, 0, 0, 0], 5), ([200, 10, 0, 7], 217)])
def test_ragged_matches_float64_product(sizes, m):
    a, b, x, w, _, _ = m_grouped_operands(13, [m], N, K)  # m ragged rows (the layout helper's ids unused)
    a = (a[0][:m], a[1][:m])
    x = np.asarray(x)[:m]
    w = np.asarray(m_grouped_operands(14, [1] * len(sizes), N, K)[3])
    b = dg.per_block_cast_to_fp8(jnp.asarray(w, jnp.bfloat16))
    out = np.asarray(jax.jit(dg.m_grouped_fp8_gemm_nt_ragged)(a, b, jnp.asarray(sizes, jnp.int32)), np.float64)
    want = _ragged_exact(x, w, sizes, m)
    done = min(sum(sizes), m)
    assert (out[done:] == 0).all()
    if done:
        assert calc_diff(out[:done], want[:done]) < 1e-3
    ref = dg.reference.m_grouped_fp8_gemm_nt_ragged_reference(*a, *b, np.asarray(sizes, np.int32))
    if done:
        assert calc_diff(out, np.asarray(ref, np.float64)) < 1e-6


def test_ragged_mn_major_scales_reference_matches():
    """The ragged primitive given MN-major A scales (what the kernel takes from M >= 1024) computes the same."""
    from jax_deepgemm.m_grouped_gemm import _m_grouped_ragged_into
    m = 300
    a, b, _, _, _, _ = m_grouped_operands(19, [m], N, K)
    a = (a[0][:m], a[1][:m])
    sizes = jnp.asarray([100, 0, 150], jnp.int32)
    out = jnp.zeros((m, N), jnp.bfloat16)
    want = _m_grouped_ragged_into(a, b, sizes, out, sfa_mn_major=False)
    got = _m_grouped_ragged_into(a, b, sizes, out, tile=(256, 128), sfa_mn_major=True)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_ragged_device_sizes_past_m_are_truncated():
    m = 64
    a, b, x, w, _, _ = m_grouped_operands(15, [m], N, K)
    a, x = (a[0][:m], a[1][:m]), np.asarray(x)[:m]
    w = np.asarray(m_grouped_operands(16, [1, 1], N, K)[3])
    b = dg.per_block_cast_to_fp8(jnp.asarray(w, jnp.bfloat16))
    out = np.asarray(dg.m_grouped_fp8_gemm_nt_ragged(a, b, jnp.asarray([40, 100], jnp.int32)), np.float64)
    assert calc_diff(out, _ragged_exact(x, w, [40, 100], m)) < 1e-3


@pytest.mark.parametrize("sizes", [[-1, 3], [300, 0], [1, 2, 3]])
def test_ragged_bad_host_sizes(sizes):
    a, b, _, _, _, _ = m_grouped_operands(17, [64, 64], N, K)
    with pytest.raises(ValueError, match="group_sizes"):
        dg.m_grouped_fp8_gemm_nt_ragged(a, b, np.asarray(sizes, np.int32))


# --------------------------------------------------------------------------- expert parallelism


def _expert_parallel(f, args, specs, out_spec):
    from jax.sharding import Mesh, NamedSharding

    mesh = Mesh(np.array(jax.devices("cpu")[:8]), ("ep",))
    placed = [jax.device_put(x, NamedSharding(mesh, s)) for x, s in zip(args, specs)]
    fn = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=tuple(specs), out_specs=out_spec))
    hlo = fn.lower(*placed).compile().as_text()
    return fn(*placed), hlo


def test_shard_map_experts_contiguous_runs_locally():
    """16 experts over 8 devices: each device multiplies its own rows by its 2 local experts."""
    from jax.sharding import PartitionSpec as P

    local_ids = np.array([0] * 100 + [-1] * 28 + [1] * 128, np.int32)  # one device's layout, local expert ids
    a, b, _, _, _, _ = m_grouped_operands(20, [256] * 8, N, K)  # 8 x 256 rows (ids unused)
    b16 = m_grouped_operands(21, [1] * 16, N, K)[1]  # 16 experts
    ids = np.tile(local_ids, 8)
    out, hlo = _expert_parallel(lambda x, s, w, ws, i: dg.m_grouped_fp8_gemm_nt_contiguous((x, s), (w, ws), i),
                                (a[0], a[1], b16[0], b16[1], jnp.asarray(ids)), [P("ep")] * 5, P("ep"))
    for collective in ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter"):
        assert collective not in hlo, f"expert-parallel grouped GEMM emitted a {collective}"
    global_ids = np.where(ids >= 0, ids + 2 * (np.arange(ids.size) // 256), -1).astype(np.int32)
    want = dg.m_grouped_fp8_gemm_nt_contiguous(a, b16, jnp.asarray(global_ids))
    assert calc_diff(np.asarray(out, np.float64), np.asarray(want, np.float64)) < 1e-5


def test_shard_map_experts_masked_runs_locally():
    from jax.sharding import PartitionSpec as P

    groups, max_m = 16, 128
    a, b, _, _, _, _ = m_grouped_operands(22, [max_m] * groups, N, K)
    a3 = (a[0].reshape(groups, max_m, K), a[1].reshape(groups, max_m, -1))
    masked_m = jnp.asarray(np.arange(groups, dtype=np.int32) * 8)
    out, hlo = _expert_parallel(lambda x, s, w, ws, mm: dg.m_grouped_fp8_gemm_nt_masked((x, s), (w, ws), mm),
                                (a3[0], a3[1], b[0], b[1], masked_m), [P("ep")] * 5, P("ep"))
    assert "all-gather" not in hlo and "all-reduce" not in hlo and "all-to-all" not in hlo
    want = np.asarray(dg.m_grouped_fp8_gemm_nt_masked(a3, b, masked_m), np.float64)
    got = np.asarray(out, np.float64)
    for g in range(1, groups):
        mm = 8 * g
        assert calc_diff(got[g, :mm], want[g, :mm]) < 1e-5
