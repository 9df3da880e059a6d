"""CPU tests of jax_deepgemm.grouped_layout (MoE row layouts and their conversions).

Expected layouts come from plain-Python loops written here from the definitions (DeepGEMM's
contiguous / psum layouts, ``lax.ragged_dot``'s group sizes), never from the code under test.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_deepgemm import grouped_layout as gl

pytestmark = pytest.mark.usefixtures("on_cpu")  # conftest.py: keep these on the host


# ---------------------------------------------------------------------------------------------
# Independent oracles (Python loops over the definitions)
# ---------------------------------------------------------------------------------------------


def align(x: int, a: int) -> int:
    return -(-x // a) * a


def py_offsets(sizes):
    out = [0]
    for s in sizes:
        out.append(out[-1] + s)
    return out


def py_row_ids(sizes, num_rows):
    ids = []
    for g, s in enumerate(sizes):
        ids += [g] * s
    ids = ids[:num_rows]
    return ids + [-1] * (num_rows - len(ids))


def py_aligned(sizes, num_rows_padded, alignment):
    """(psum, row ids, gather indices) of DeepGEMM's aligned contiguous layout."""
    psum, ids, gather = [], [], []
    ragged = 0
    for g, s in enumerate(sizes):
        start = len(ids)
        assert start % alignment == 0
        ids += [g] * s + [-1] * (align(s, alignment) - s)
        gather += list(range(ragged, ragged + s)) + [-1] * (align(s, alignment) - s)
        psum.append(start + s)
        ragged += s
    assert len(ids) <= num_rows_padded
    pad = num_rows_padded - len(ids)
    return psum, ids + [-1] * pad, gather + [-1] * pad


def py_psum_row_ids(psum, num_rows, alignment):
    ids = [-1] * num_rows
    prev = 0
    for g, end in enumerate(psum):
        for r in range(align(prev, alignment), end):
            ids[r] = g
        prev = end
    return ids


def py_inverse(sizes, num_rows, alignment):
    """Ragged row -> padded row, -1 past the total."""
    out, aligned_start = [], 0
    for s in sizes:
        out += list(range(aligned_start, aligned_start + s))
        aligned_start += align(s, alignment)
    return out + [-1] * (num_rows - len(out))


# Routing cases: (group sizes, num_rows). Cover empty groups (first, middle, last), totals below
# num_rows, skewed routing (a few hot experts, most experts empty), M = 1, a single group.
CASES = {
    "balanced": ([64, 64, 64, 64], 256),
    "unaligned": ([3, 130, 127, 1, 200], 461),
    "empty_groups": ([0, 5, 0, 0, 129, 0], 134),
    "total_below_rows": ([7, 0, 20], 40),
    "skewed": ([0] * 10 + [300] + [0] * 20 + [1] + [0] * 30 + [150] + [0] * 2, 451),
    "m1": ([0, 0, 1, 0], 1),
    "m1_unused": ([0, 0, 0], 1),
    "one_group": ([200], 200),
    "all_empty": ([0, 0, 0, 0, 0], 9),
}


# ---------------------------------------------------------------------------------------------
# Offsets and ragged row ids
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_offsets_and_row_ids(case):
    sizes, num_rows = CASES[case]
    offsets = gl.group_sizes_to_offsets(np.array(sizes, np.int32))
    assert offsets.dtype == jnp.int32 and offsets.shape == (len(sizes) + 1,)
    np.testing.assert_array_equal(offsets, py_offsets(sizes))

    ids = gl.group_sizes_to_row_ids(np.array(sizes, np.int32), num_rows)
    assert ids.dtype == jnp.int32 and ids.shape == (num_rows,)
    np.testing.assert_array_equal(ids, py_row_ids(sizes, num_rows))

    counted = gl.row_ids_to_group_sizes(ids, len(sizes))
    assert counted.dtype == jnp.int32
    np.testing.assert_array_equal(counted, sizes)


def test_zero_groups_and_zero_rows():
    np.testing.assert_array_equal(gl.group_sizes_to_offsets([]), [0])
    np.testing.assert_array_equal(gl.group_sizes_to_row_ids(np.zeros(0, np.int32), 3), [-1, -1, -1])
    assert gl.group_sizes_to_row_ids(np.zeros(4, np.int32), 0).shape == (0,)
    psum, ids, gather = gl.aligned_contiguous_layout(np.zeros(0, np.int32), 128)
    assert psum.shape == (0,)
    np.testing.assert_array_equal(ids, -np.ones(128))
    np.testing.assert_array_equal(gather, -np.ones(128))
    np.testing.assert_array_equal(gl.psum_to_row_ids(np.zeros(0, np.int32), 5), -np.ones(5))
    np.testing.assert_array_equal(gl.row_ids_to_group_sizes(np.array([-1, -1], np.int32), 0), np.zeros(0))


# ---------------------------------------------------------------------------------------------
# Aligned contiguous layout, psum, round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alignment", [128, 8, 1])
@pytest.mark.parametrize("case", CASES)
def test_aligned_layout_matches_definition(case, alignment):
    sizes, num_rows = CASES[case]
    padded = gl.max_aligned_rows(num_rows, len(sizes), alignment)
    psum, ids, gather = gl.aligned_contiguous_layout(np.array(sizes, np.int32), padded, alignment=alignment)
    want_psum, want_ids, want_gather = py_aligned(sizes, padded, alignment)
    for got, want in ((psum, want_psum), (ids, want_ids), (gather, want_gather)):
        assert got.dtype == jnp.int32
        np.testing.assert_array_equal(got, want)
    # The produced per-row layout satisfies DeepGEMM's alignment contract (host check).
    gl.check_row_ids(np.asarray(ids), fn="test", num_groups=len(sizes), alignment=alignment)
    # psum -> row ids reproduces the per-row form, for both the library and the loop oracle.
    np.testing.assert_array_equal(gl.psum_to_row_ids(np.asarray(psum), padded, alignment=alignment), want_ids)
    np.testing.assert_array_equal(py_psum_row_ids(want_psum, padded, alignment), want_ids)


@pytest.mark.parametrize("case", CASES)
def test_round_trip_ragged_aligned_ids_sizes(case):
    """ragged sizes -> aligned layout -> psum -> row ids -> sizes, and the data round trip."""
    sizes, num_rows = CASES[case]
    g, alignment = len(sizes), 128
    padded = gl.max_aligned_rows(num_rows, g, alignment)
    psum, ids, gather = gl.aligned_contiguous_layout(np.array(sizes, np.int32), padded, alignment=alignment)
    ids_from_psum = gl.psum_to_row_ids(psum, padded, alignment=alignment)  # device-data path
    np.testing.assert_array_equal(ids_from_psum, ids)
    np.testing.assert_array_equal(gl.row_ids_to_group_sizes(ids_from_psum, g), sizes)

    # Rows: padded copy has zero padding; mapping back gives the ragged rows, zeros past the total.
    x = np.arange(1, num_rows * 3 + 1, dtype=np.float32).reshape(num_rows, 3)
    x_padded = np.asarray(gl.take_rows(x, gather))
    ids_np = np.asarray(ids)
    assert (x_padded[ids_np < 0] == 0).all()
    assert (x_padded[ids_np >= 0] != 0).all()
    inverse = gl.ragged_to_aligned_indices(np.array(sizes, np.int32), num_rows, padded, alignment=alignment)
    np.testing.assert_array_equal(inverse, py_inverse(sizes, num_rows, alignment))
    back = np.asarray(gl.take_rows(x_padded, inverse))
    total = sum(sizes)
    np.testing.assert_array_equal(back[:total], x[:total])
    assert (back[total:] == 0).all()


def test_psum_empty_group_conventions():
    # DeepGEMM writes an empty group as psum[g] = align(psum[g-1]); group 2 starts at 256.
    np.testing.assert_array_equal(
        gl.psum_to_row_ids(np.array([130, 256, 260], np.int32), 260),
        [0] * 130 + [-1] * 126 + [2] * 4,
    )
    # An empty group written as psum[g] = psum[g-1] (unaligned) breaks the host-data contract
    # (its end lies before its aligned start); as device data it is just an empty group.
    with pytest.raises(ValueError, match=r"psum\[1\] = 130 < 256"):
        gl.psum_to_row_ids(np.array([130, 130, 260], np.int32), 260)
    np.testing.assert_array_equal(
        gl.psum_to_row_ids(jnp.array([130, 130, 260], jnp.int32), 260),
        [0] * 130 + [-1] * 126 + [2] * 4,
    )
    # Empty first group.
    np.testing.assert_array_equal(gl.psum_to_row_ids(np.array([0, 3], np.int32), 4), [1, 1, 1, -1])


def test_max_aligned_rows_is_the_tight_bound():
    """Brute force over every routing of small problems: the bound is attained and never beaten."""
    for alignment in (1, 3, 4):
        for num_groups in range(0, 4):
            for num_rows in range(0, 9):
                worst = 0
                for sizes in itertools.product(range(num_rows + 1), repeat=num_groups):
                    if sum(sizes) <= num_rows:
                        worst = max(worst, sum(align(s, alignment) for s in sizes))
                bound = gl.max_aligned_rows(num_rows, num_groups, alignment)
                assert bound == worst, (alignment, num_groups, num_rows)
                loose = align(num_rows + num_groups * (alignment - 1), alignment)
                assert bound <= loose
    assert gl.max_aligned_rows(1, 256, 128) == 128  # decode: one row, many experts
    assert gl.max_aligned_rows(4096, 8, 128) == 4096 + 8 * 128 - 128


@pytest.mark.parametrize("seed", range(6))
def test_random_routings(seed):
    rng = np.random.default_rng(seed)
    g = int(rng.integers(1, 9))
    num_rows = int(rng.integers(1, 700))
    # Dirichlet-ish skew, some groups forced empty, total possibly below num_rows.
    weights = rng.exponential(size=g) ** 3 * (rng.random(g) > 0.3)
    total = int(rng.integers(0, num_rows + 1))
    sizes = np.floor(weights / max(weights.sum(), 1e-9) * total).astype(np.int32)
    alignment = int(rng.choice([1, 16, 128]))
    padded = gl.max_aligned_rows(num_rows, g, alignment)
    np.testing.assert_array_equal(gl.group_sizes_to_row_ids(sizes, num_rows), py_row_ids(list(sizes), num_rows))
    psum, ids, gather = gl.aligned_contiguous_layout(sizes, padded, alignment=alignment)
    want = py_aligned(list(sizes), padded, alignment)
    for got, w in zip((psum, ids, gather), want):
        np.testing.assert_array_equal(got, w)


# ---------------------------------------------------------------------------------------------
# jit with traced sizes; no host synchronisation
# ---------------------------------------------------------------------------------------------


def test_jit_with_traced_sizes_one_compilation():
    traces = []

    @jax.jit
    def layouts(sizes):
        traces.append(1)
        psum, ids, gather = gl.aligned_contiguous_layout(sizes, 640, alignment=128)
        return (
            gl.group_sizes_to_offsets(sizes),
            gl.group_sizes_to_row_ids(sizes, 300),
            psum,
            ids,
            gather,
            gl.psum_to_row_ids(psum, 640, alignment=128),
            gl.row_ids_to_group_sizes(ids, 4),
            gl.ragged_to_aligned_indices(sizes, 300, 640, alignment=128),
        )

    for sizes in ([3, 0, 130, 5], [0, 0, 0, 300], [1, 1, 1, 1], [0, 0, 0, 0], [100, 0, 100, 0]):
        out = layouts(jnp.array(sizes, jnp.int32))
        psum, ids, gather = py_aligned(sizes, 640, 128)
        np.testing.assert_array_equal(out[0], py_offsets(sizes))
        np.testing.assert_array_equal(out[1], py_row_ids(sizes, 300))
        np.testing.assert_array_equal(out[2], psum)
        np.testing.assert_array_equal(out[3], ids)
        np.testing.assert_array_equal(out[4], gather)
        np.testing.assert_array_equal(out[5], ids)
        np.testing.assert_array_equal(out[6], sizes)
        np.testing.assert_array_equal(out[7], py_inverse(sizes, 300, 128))
    assert len(traces) == 1


def test_traceable_from_abstract_values():
    """Abstract (shape-only) inputs trace: no value is ever needed on the host."""
    sizes = jax.ShapeDtypeStruct((5,), jnp.int32)
    ids = jax.ShapeDtypeStruct((300,), jnp.int32)
    assert jax.eval_shape(gl.group_sizes_to_offsets, sizes).shape == (6,)
    assert jax.eval_shape(lambda s: gl.group_sizes_to_row_ids(s, 77), sizes).shape == (77,)
    outs = jax.eval_shape(lambda s: gl.aligned_contiguous_layout(s, 256, alignment=64), sizes)
    assert [o.shape for o in outs] == [(5,), (256,), (256,)]
    assert jax.eval_shape(lambda p: gl.psum_to_row_ids(p, 99), sizes).shape == (99,)
    assert jax.eval_shape(lambda i: gl.row_ids_to_group_sizes(i, 5), ids).shape == (5,)
    assert jax.eval_shape(lambda s: gl.ragged_to_aligned_indices(s, 10, 256), sizes).shape == (10,)


def test_vmap_over_routings():
    batch = jnp.array([[3, 0, 5], [0, 8, 0], [1, 1, 1]], jnp.int32)
    ids = jax.vmap(lambda s: gl.group_sizes_to_row_ids(s, 9))(batch)
    for row, sizes in zip(np.asarray(ids), batch.tolist()):
        np.testing.assert_array_equal(row, py_row_ids(sizes, 9))


# ---------------------------------------------------------------------------------------------
# Runtime-safe behaviour of device data (cannot raise under jit)
# ---------------------------------------------------------------------------------------------


def test_device_negative_sizes_count_as_zero():
    sizes = jnp.array([-5, 3, -1, 2], jnp.int32)
    np.testing.assert_array_equal(gl.group_sizes_to_offsets(sizes), [0, 0, 3, 3, 5])
    np.testing.assert_array_equal(jax.jit(gl.group_sizes_to_row_ids, static_argnums=1)(sizes, 6), [1, 1, 1, 3, 3, -1])
    psum, ids, _ = gl.aligned_contiguous_layout(sizes, 256, alignment=128)
    np.testing.assert_array_equal(psum, [0, 3, 128, 130])


def test_device_sizes_past_num_rows_are_truncated():
    sizes = jnp.array([4, 10, 7], jnp.int32)
    np.testing.assert_array_equal(gl.group_sizes_to_row_ids(sizes, 8), [0] * 4 + [1] * 4)
    # Padded layout too small: rows that do not fit are dropped; the inverse marks them -1.
    _, ids, gather = gl.aligned_contiguous_layout(sizes, 12, alignment=8)
    np.testing.assert_array_equal(ids, [0] * 4 + [-1] * 4 + [1] * 4)
    np.testing.assert_array_equal(gather, [0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7])
    inverse = gl.ragged_to_aligned_indices(sizes, 21, 12, alignment=8)
    np.testing.assert_array_equal(inverse, [0, 1, 2, 3, 8, 9, 10, 11] + [-1] * 13)
    # Huge sizes do not overflow int32.
    big = jnp.array([2**31 - 1, 2**31 - 1], jnp.int32)
    np.testing.assert_array_equal(gl.group_sizes_to_row_ids(big, 3), [0, 0, 0])
    np.testing.assert_array_equal(gl.aligned_contiguous_layout(big, 4, alignment=2)[1], [0, 0, 0, 0])


def test_device_out_of_range_ids_are_padding():
    ids = jnp.array([0, 7, -3, 1, 1, -1, 2], jnp.int32)
    np.testing.assert_array_equal(gl.row_ids_to_group_sizes(ids, 3), [1, 2, 1])


def test_device_psum_is_made_monotone():
    # 300 then 100: group 1 is empty (its end lies before its aligned start 384); group 2 is
    # [384, 500), not [128, 500): every row keeps a single owner. Ends past num_rows are clamped.
    ids = np.asarray(gl.psum_to_row_ids(jnp.array([300, 100, 500, 9999], jnp.int32), 520))
    np.testing.assert_array_equal(ids, [0] * 300 + [-1] * 84 + [2] * 116 + [-1] * 12 + [3] * 8)
    ids = np.asarray(gl.psum_to_row_ids(jnp.array([-4, 2], jnp.int32), 3))
    np.testing.assert_array_equal(ids, [1, 1, -1])


# ---------------------------------------------------------------------------------------------
# Bad static inputs raise, naming the argument
# ---------------------------------------------------------------------------------------------

BAD = [
    (lambda: gl.group_sizes_to_offsets(np.array([1, -2], np.int32)), ValueError, r"group_sizes must be non-negative, got group_sizes\[1\] = -2"),
    (lambda: gl.group_sizes_to_offsets(np.array([1.0, 2.0])), TypeError, "group_sizes must have an integer dtype"),
    (lambda: gl.group_sizes_to_offsets(jnp.array([True])), TypeError, "group_sizes must have an integer dtype"),
    (lambda: gl.group_sizes_to_offsets(jnp.zeros((2, 2), jnp.int32)), ValueError, "group_sizes must have rank 1"),
    (lambda: gl.group_sizes_to_offsets("12"), TypeError, "group_sizes must be an integer array"),
    (lambda: gl.group_sizes_to_row_ids([3, 4], 6), ValueError, "group_sizes must sum to at most num_rows = 6, got sum 7"),
    (lambda: gl.group_sizes_to_row_ids([3, 4], -1), ValueError, "num_rows must be a non-negative"),
    (lambda: gl.group_sizes_to_row_ids([3, 4], 7.0), ValueError, "num_rows must be a non-negative"),
    (lambda: gl.aligned_contiguous_layout([3, 130], 255), ValueError, "num_rows_padded = 255 is too small"),
    (lambda: gl.aligned_contiguous_layout([3, 130], 384, alignment=0), ValueError, "alignment must be a positive"),
    (lambda: gl.aligned_contiguous_layout([3, -1], 384), ValueError, "group_sizes must be non-negative"),
    (lambda: gl.ragged_to_aligned_indices([3, 130], 133, 255), ValueError, "num_rows_padded = 255 is too small"),
    (lambda: gl.ragged_to_aligned_indices([3, 130], 100, 512), ValueError, "group_sizes must sum to at most num_rows"),
    (lambda: gl.max_aligned_rows(10, -1, 128), ValueError, "num_groups must be a non-negative"),
    (lambda: gl.max_aligned_rows(10, 2, True), ValueError, "alignment must be a positive"),
    (lambda: gl.psum_to_row_ids([130, 200], 300), ValueError, r"psum must satisfy psum\[g\] >= align\(psum\[g-1\], 128\)"),
    (lambda: gl.psum_to_row_ids([-1, 200], 300), ValueError, r"psum\[0\] = -1"),
    (lambda: gl.psum_to_row_ids([130, 300], 299), ValueError, "psum must end at most at the row count 299"),
    (lambda: gl.psum_to_row_ids(np.array([1.5]), 3), TypeError, "psum must have an integer dtype"),
    (lambda: gl.row_ids_to_group_sizes([0, 3, -1], 3), ValueError, r"row_ids must be -1 \(padding\) or a group id in \[0, 3\), got row_ids\[1\] = 3"),
    (lambda: gl.row_ids_to_group_sizes([0, -2], 3), ValueError, r"row_ids\[1\] = -2"),
    (lambda: gl.row_ids_to_group_sizes([0, 1], -3), ValueError, "num_groups must be a non-negative"),
    (lambda: gl.check_masked_m([1, 5], fn="f", num_groups=2, max_m=4), ValueError, r"masked_m must be in \[0, max_m = 4\], got masked_m\[1\] = 5"),
    (lambda: gl.check_masked_m([1, 2, 3], fn="f", num_groups=2, max_m=4), ValueError, r"masked_m must have shape \(2,\)"),
    (lambda: gl.check_group_sizes([128, 100], fn="f", name="k_group_sizes", multiple_of=128), ValueError, r"k_group_sizes must be multiples of 128, got k_group_sizes\[1\] = 100"),
]


@pytest.mark.parametrize("call, exc, fragment", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_static_inputs_raise(call, exc, fragment):
    with pytest.raises(exc, match=fragment):
        call()


@pytest.mark.parametrize(
    "ids, ok",
    [
        ([0] * 4 + [1] * 4, True),  # two full tiles
        ([0, 0, -1, -1, 1, -1, -1, -1], True),  # group then padding per tile
        ([-1] * 4 + [2] * 3 + [-1], True),  # an all-padding tile is fine
        ([0, 0, 1, 1, 1, 1, -1, -1], False),  # group 1 starts mid-tile
        ([-1, 0, 0, 0, 1, 1, 1, 1], False),  # tile starts with padding then a group
        ([0, -1, 0, 0, 1, 1, 1, 1], False),  # padding inside a group's tile
    ],
)
def test_row_id_alignment_contract(ids, ok):
    check = lambda: gl.check_row_ids(np.array(ids, np.int32), fn="f", name="grouped_layout", num_groups=3, alignment=4)  # noqa: E731
    if ok:
        np.testing.assert_array_equal(check(), ids)
    else:
        with pytest.raises(ValueError, match="grouped_layout is not aligned to 4 rows"):
            check()


def test_device_data_is_never_value_checked():
    """Concrete jax arrays are device data: bad values do not raise (and need no host sync)."""
    gl.group_sizes_to_row_ids(jnp.array([3, 4]), 6)
    gl.psum_to_row_ids(jnp.array([130, 200]), 300)
    gl.row_ids_to_group_sizes(jnp.array([0, 5, -7]), 3)
    gl.check_row_ids(jnp.array([0, 1, 0, 1]), fn="f", num_groups=2, alignment=4)
    assert not gl.is_host_value(jnp.zeros(3, jnp.int32))
    assert gl.is_host_value([1, 2]) and gl.is_host_value(np.zeros(2, np.int32)) and not gl.is_host_value(True)
