"""Row layouts of the M-grouped (MoE) GEMMs and conversions between them.

Internal building blocks for the grouped GEMM ops: pure ``jax.numpy``, jittable with static shapes,
and free of host synchronisation (no Python control flow on array values; only shapes, dtypes and
the static Python arguments ``num_rows`` / ``num_groups`` / ``alignment`` steer the code).

Layouts (G groups / experts; every index array is int32):

* **group sizes** ``group_sizes[G]`` (the ``jax.lax.ragged_dot`` layout, "ragged"): group g owns the
  rows ``[offsets[g], offsets[g+1])`` of a ``[num_rows, ...]`` operand, where ``offsets`` is the
  exclusive cumulative sum (:func:`group_sizes_to_offsets`). Groups need not be aligned and may be
  empty; rows at or past ``offsets[G] = sum(group_sizes)`` belong to no group.
* **per-row ids** ``row_ids[num_rows]`` (DeepGEMM's ``m_indices`` / ``grouped_layout``): the group
  owning each row, ``-1`` for a row owned by none (padding, or past the total).
* **aligned contiguous** (DeepGEMM's contiguous layout): group g's rows start at
  ``S_g = sum_{g' < g} align(size_{g'}, alignment)``, i.e. every group segment starts at a multiple
  of ``alignment``; rows ``[S_g + size_g, S_{g+1})`` are padding (id ``-1``), and so is every row at
  or past ``S_G``. :func:`aligned_contiguous_layout` builds it from group sizes.
* **psum** ``psum[G]`` (DeepGEMM's ``use_psum_layout=True``, the DeepEPv2 layout): the cumulative
  *end* of each group in the aligned layout, ``psum[g] = S_g + size_g``; group g occupies
  ``[align(psum[g-1], alignment), psum[g])`` (group 0 starts at 0). An empty group has
  ``psum[g] = align(psum[g-1], alignment)``.

Validation, static versus traced:

* dtypes, ranks, lengths and the static Python arguments are checked at trace time, always, and
  raise ``TypeError`` / ``ValueError`` naming the function and the argument;
* *values* are checked only when they are **host data** (Python ints, lists, tuples, NumPy arrays:
  see :func:`is_host_value`). Then negative sizes, sizes summing past ``num_rows``, group ids out of
  ``[-1, G)``, misaligned segments, decreasing psum entries... raise ``ValueError`` naming the
  argument. A ``jax.Array`` (concrete or traced) is device data: looking at its values would need a
  device-to-host synchronisation (or is impossible under ``jit``), so it is never inspected, and
  cannot raise. Device data gets the defined, runtime-safe behaviour below instead (nothing
  faults, nothing reads out of bounds):

  - a negative group size counts as 0 (it is clamped);
  - group sizes summing past ``num_rows`` are truncated: the rows that do not exist are simply
    not produced, later groups lose their rows first;
  - a per-row id outside ``[0, G)`` (``>= G``, or ``< -1``) is treated as padding (``-1``);
  - psum entries are clamped at 0 and made non-decreasing (running maximum), so each row has at
    most one owner; a group whose end lies before its aligned start is empty.

  int32 arithmetic: sizes are clamped to ``[0, num_rows]`` before any cumulative sum in the
  functions that know ``num_rows``, so nothing overflows for ``G * num_rows < 2**31``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "DEFAULT_ALIGNMENT",
    "is_host_value",
    "check_group_sizes",
    "check_row_ids",
    "check_psum",
    "check_masked_m",
    "group_sizes_to_offsets",
    "group_sizes_to_row_ids",
    "max_aligned_rows",
    "aligned_contiguous_layout",
    "ragged_to_aligned_indices",
    "take_rows",
    "psum_to_row_ids",
    "row_ids_to_group_sizes",
]

DEFAULT_ALIGNMENT = 128
"""DeepGEMM's M alignment of contiguous group segments on SM90 (= BLOCK_M)."""

_INT32_MAX = int(np.iinfo(np.int32).max)


# --------------------------------------------------------------------------------------------
# Static-argument and value validation
# --------------------------------------------------------------------------------------------


def is_host_value(x: Any) -> bool:
    """Whether ``x`` is host data whose values may be checked at trace time.

    True for Python ints, lists, tuples, NumPy arrays and NumPy scalars; False for ``jax.Array``
    (concrete or traced) and anything else. Values of device data are never inspected (see the
    module docstring).
    """
    if isinstance(x, jax.Array):  # includes tracers
        return False
    return isinstance(x, (int, list, tuple, np.ndarray, np.generic)) and not isinstance(x, bool)


def _check_nonneg_int(fn: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{fn}: {name} must be a non-negative Python int (static), got {value!r}")
    if value > _INT32_MAX:
        raise ValueError(f"{fn}: {name} must fit in int32, got {value!r}")
    return int(value)


def _check_positive_int(fn: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{fn}: {name} must be a positive Python int (static), got {value!r}")
    return int(value)


def _as_int_vector(fn: str, name: str, x) -> tuple[jax.Array, np.ndarray | None]:
    """Checks dtype (integer, not bool) and rank (1) of ``x``.

    Returns ``(x as an int32 jax array, x as an int64 NumPy array or None)``, the NumPy copy being
    present only for host data.
    """
    host = None
    if is_host_value(x):
        host = np.asarray(x)
        if host.size == 0 and isinstance(x, (list, tuple)):
            host = host.astype(np.int64)  # np.asarray([]) is float64
    elif not (hasattr(x, "dtype") and hasattr(x, "shape")):
        raise TypeError(f"{fn}: {name} must be an integer array, got {type(x).__name__}")
    dtype = np.dtype(host.dtype if host is not None else x.dtype)
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        raise TypeError(f"{fn}: {name} must have an integer dtype (int32), got {dtype.name}")
    ndim = host.ndim if host is not None else len(x.shape)
    if ndim != 1:
        shape = host.shape if host is not None else tuple(x.shape)
        raise ValueError(f"{fn}: {name} must have rank 1, got shape {tuple(shape)}")
    if host is not None:
        host = host.astype(np.int64)
        if host.size and (host.max() > _INT32_MAX or host.min() < -_INT32_MAX - 1):
            raise ValueError(f"{fn}: {name} values must fit in int32")
        return jnp.asarray(host, jnp.int32), host
    return jnp.asarray(x).astype(jnp.int32), None


def _check_length(fn: str, name: str, x: jax.Array, length: int, what: str) -> None:
    if x.shape[0] != length:
        raise ValueError(f"{fn}: {name} must have shape ({length},) ({what}), got {tuple(x.shape)}")


def check_group_sizes(
    group_sizes,
    *,
    fn: str,
    name: str = "group_sizes",
    num_rows: int | None = None,
    num_groups: int | None = None,
    multiple_of: int | None = None,
    rows_name: str = "num_rows",
) -> jax.Array:
    """Validates ``group_sizes`` and returns it as an int32 ``jax.Array``.

    Always (trace time): integer dtype, rank 1, and length ``num_groups`` when given. For host data
    also the values: every size ``>= 0``, a multiple of ``multiple_of`` when given, and
    ``sum <= num_rows`` when ``num_rows`` is given. Device data passes unchecked (the callers clamp).

    Raises:
      TypeError: non-integer dtype.
      ValueError: wrong rank or length, or (host data) a bad value; the message names ``name``.
    """
    sizes, host = _as_int_vector(fn, name, group_sizes)
    if num_groups is not None:
        _check_length(fn, name, sizes, num_groups, "one entry per group")
    if host is not None:
        if (host < 0).any():
            bad = int(np.flatnonzero(host < 0)[0])
            raise ValueError(f"{fn}: {name} must be non-negative, got {name}[{bad}] = {host[bad]}")
        if multiple_of is not None and (host % multiple_of).any():
            bad = int(np.flatnonzero(host % multiple_of)[0])
            raise ValueError(
                f"{fn}: {name} must be multiples of {multiple_of}, got {name}[{bad}] = {host[bad]}"
            )
        total = int(host.sum())
        if num_rows is not None and total > num_rows:
            raise ValueError(
                f"{fn}: {name} must sum to at most {rows_name} = {num_rows}, got sum {total}"
            )
        if total > _INT32_MAX:
            raise ValueError(f"{fn}: {name} must sum to a value that fits in int32, got {total}")
    return sizes


def check_row_ids(
    row_ids,
    *,
    fn: str,
    num_groups: int,
    name: str = "row_ids",
    num_rows: int | None = None,
    alignment: int | None = None,
) -> jax.Array:
    """Validates per-row group ids and returns them as an int32 ``jax.Array``.

    Always: integer dtype, rank 1, length ``num_rows`` when given. Host data also: every id in
    ``[-1, num_groups)``, and, when ``alignment`` is given, the contiguous-layout contract of
    DeepGEMM: inside every tile of ``alignment`` rows (tile t = rows ``[t*alignment,
    (t+1)*alignment)``) the ids are one group id ``g >= 0`` repeated, followed only by ``-1``
    rows, or all ``-1``. (Equivalently every group segment starts at a multiple of ``alignment``
    and no tile mixes two groups; the kernel takes a tile's group from its first row and skips
    tiles whose first row is ``-1``.)
    """
    ids, host = _as_int_vector(fn, name, row_ids)
    if num_rows is not None:
        _check_length(fn, name, ids, num_rows, "one id per row")
    if host is not None:
        bad_mask = (host < -1) | (host >= num_groups)
        if bad_mask.any():
            bad = int(np.flatnonzero(bad_mask)[0])
            raise ValueError(
                f"{fn}: {name} must be -1 (padding) or a group id in [0, {num_groups}), "
                f"got {name}[{bad}] = {host[bad]}"
            )
        if alignment is not None and host.size:
            num_tiles = -(-host.size // alignment)
            tiles = np.full(num_tiles * alignment, -1, np.int64)
            tiles[: host.size] = host
            tiles = tiles.reshape(num_tiles, alignment)
            valid = tiles >= 0
            # valid rows must form a prefix of their tile and all carry the tile's first id.
            prefix = np.arange(alignment)[None, :] < valid.sum(axis=1, keepdims=True)
            ok = (valid == prefix).all(axis=1) & ((tiles == tiles[:, :1]) | ~valid).all(axis=1)
            if not ok.all():
                start = int(np.flatnonzero(~ok)[0]) * alignment
                stop = min(start + alignment, host.size)
                raise ValueError(
                    f"{fn}: {name} is not aligned to {alignment} rows: the tile of rows "
                    f"[{start}, {stop}) must hold one group id followed only by "
                    f"-1 padding (each group segment must start at a multiple of {alignment})"
                )
    return ids


def check_psum(
    psum,
    *,
    fn: str,
    name: str = "psum",
    num_rows: int | None = None,
    num_groups: int | None = None,
    alignment: int = DEFAULT_ALIGNMENT,
) -> jax.Array:
    """Validates a psum layout (cumulative group ends) and returns it as an int32 ``jax.Array``.

    Always: integer dtype, rank 1, length ``num_groups`` when given. Host data also:
    ``psum[0] >= 0``, ``psum[g] >= align(psum[g-1], alignment)`` (no negative segment), and
    ``psum[G-1] <= num_rows`` when given.
    """
    ends, host = _as_int_vector(fn, name, psum)
    if num_groups is not None:
        _check_length(fn, name, ends, num_groups, "one end per group")
    if host is not None and host.size:
        starts = np.concatenate([[0], -(-host[:-1] // alignment) * alignment])
        if (host < starts).any():
            bad = int(np.flatnonzero(host < starts)[0])
            raise ValueError(
                f"{fn}: {name} must satisfy {name}[g] >= align({name}[g-1], {alignment}) "
                f"(and {name}[0] >= 0), got {name}[{bad}] = {host[bad]} < {starts[bad]}"
            )
        if num_rows is not None and host[-1] > num_rows:
            raise ValueError(
                f"{fn}: {name} must end at most at the row count {num_rows}, "
                f"got {name}[{host.size - 1}] = {host[-1]}"
            )
    return ends


def check_masked_m(masked_m, *, fn: str, num_groups: int, max_m: int, name: str = "masked_m") -> jax.Array:
    """Validates ``masked_m[G]`` (valid rows per group) and returns it as an int32 ``jax.Array``.

    Always: integer dtype, shape ``(num_groups,)``. Host data also: ``0 <= masked_m[g] <= max_m``.
    """
    counts, host = _as_int_vector(fn, name, masked_m)
    _check_length(fn, name, counts, num_groups, "one count per group")
    if host is not None:
        bad_mask = (host < 0) | (host > max_m)
        if bad_mask.any():
            bad = int(np.flatnonzero(bad_mask)[0])
            raise ValueError(
                f"{fn}: {name} must be in [0, max_m = {max_m}], got {name}[{bad}] = {host[bad]}"
            )
    return counts


# --------------------------------------------------------------------------------------------
# Traced helpers
# --------------------------------------------------------------------------------------------


def _align_up(x: jax.Array, alignment: int) -> jax.Array:
    """``align(x, alignment)`` for non-negative int32 ``x``."""
    return (x + (alignment - 1)) // alignment * alignment


def _exclusive_cumsum(x: jax.Array) -> jax.Array:
    """``[0, x0, x0+x1, ..., sum(x)]`` (length ``len(x) + 1``), int32."""
    return jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(x, dtype=jnp.int32)])


def _owner_of(ends: jax.Array, positions: jax.Array) -> jax.Array:
    """For non-decreasing ``ends[G]``: the g with ``ends[g-1] <= p < ends[g]``, or G if none."""
    return jnp.searchsorted(ends, positions, side="right").astype(jnp.int32)


def _rows_of_ends(ends: jax.Array, num_rows: int) -> jax.Array:
    """Per-row group ids of the ragged layout given by cumulative group ends ``[G]`` (-1 past the last)."""
    owner = _owner_of(ends, jnp.arange(num_rows, dtype=jnp.int32))
    return jnp.where(owner < ends.shape[0], owner, -1)


# --------------------------------------------------------------------------------------------
# Group sizes (ragged) <-> offsets / per-row ids
# --------------------------------------------------------------------------------------------


def group_sizes_to_offsets(group_sizes) -> jax.Array:
    """Group sizes -> offsets: ``int32[G+1]``, ``offsets[g] = sum(group_sizes[:g])``.

    ``offsets[0] = 0`` and ``offsets[G] = sum(group_sizes)`` (the total); group g owns rows
    ``[offsets[g], offsets[g+1])``. Negative sizes of device data count as 0 (host data raises).
    """
    fn = "group_sizes_to_offsets"
    sizes = check_group_sizes(group_sizes, fn=fn)
    return _offsets(sizes)


@jax.jit
def _offsets(sizes: jax.Array) -> jax.Array:
    return _exclusive_cumsum(jnp.maximum(sizes, 0))


def group_sizes_to_row_ids(group_sizes, num_rows: int) -> jax.Array:
    """Group sizes -> per-row ids ``int32[num_rows]`` (the ragged layout of ``lax.ragged_dot``).

    ``row_ids[r] = g`` for ``offsets[g] <= r < offsets[g+1]``, ``-1`` for rows at or past the total
    ``sum(group_sizes)``. Empty groups own no row. Host data summing past ``num_rows`` raises;
    device data is clamped/truncated (module docstring).
    """
    fn = "group_sizes_to_row_ids"
    num_rows = _check_nonneg_int(fn, "num_rows", num_rows)
    sizes = check_group_sizes(group_sizes, fn=fn, num_rows=num_rows)
    return _ragged_row_ids(sizes, num_rows)


# The cores below are jitted (static Python arguments marked static): one compiled program per
# eager call instead of one dispatch per jnp op; inside an outer jit they simply inline.
@functools.partial(jax.jit, static_argnums=(1,))
def _ragged_row_ids(sizes: jax.Array, num_rows: int) -> jax.Array:
    num_groups = sizes.shape[0]
    if num_groups == 0:
        return jnp.full((num_rows,), -1, jnp.int32)
    return _rows_of_ends(jnp.cumsum(jnp.clip(sizes, 0, num_rows), dtype=jnp.int32), num_rows)


def row_ids_to_group_sizes(row_ids, num_groups: int) -> jax.Array:
    """Per-row ids -> group sizes ``int32[num_groups]``: the number of rows carrying each id.

    ``-1`` rows are not counted. Device-data ids outside ``[0, num_groups)`` are not counted either
    (treated as padding); host data with such ids raises. Works for any per-row layout (ragged or
    aligned): it only counts.
    """
    fn = "row_ids_to_group_sizes"
    num_groups = _check_nonneg_int(fn, "num_groups", num_groups)
    ids = check_row_ids(row_ids, fn=fn, num_groups=num_groups)
    return _count_ids(ids, num_groups)


@functools.partial(jax.jit, static_argnums=(1,))
def _count_ids(ids: jax.Array, num_groups: int) -> jax.Array:
    # Out-of-range ids go to index num_groups, which mode="drop" discards (negative indices
    # would wrap around, so -1 must not reach the scatter as it is).
    target = jnp.where((ids >= 0) & (ids < num_groups), ids, num_groups)
    return jnp.zeros((num_groups,), jnp.int32).at[target].add(1, mode="drop")


# --------------------------------------------------------------------------------------------
# Aligned contiguous layout and psum
# --------------------------------------------------------------------------------------------


def max_aligned_rows(num_rows: int, num_groups: int, alignment: int = DEFAULT_ALIGNMENT) -> int:
    """Static upper bound of the aligned row count for ``num_rows`` ragged rows in ``num_groups`` groups.

    Every non-empty group pads at most ``alignment - 1`` rows and at most
    ``k = min(num_groups, num_rows)`` groups are non-empty, so the aligned total
    ``sum_g align(size_g)`` is at most ``num_rows + k * (alignment - 1)``; being a multiple of
    ``alignment`` it is at most that value rounded *down* to a multiple of ``alignment``. This is
    what is returned. It never exceeds the looser ``align(num_rows + num_groups * (alignment - 1),
    alignment)`` and is much smaller when there are more groups than rows (decode, M = 1:
    ``alignment`` rows instead of ``num_groups * alignment``). It is attained (``k - 1`` groups of
    one row plus one group of the other ``num_rows - k + 1`` rows give
    ``(k - 1) * alignment + align(num_rows - k + 1)``, which equals it), so no smaller static
    bound holds for every routing. With no groups it is 0.
    """
    fn = "max_aligned_rows"
    num_rows = _check_nonneg_int(fn, "num_rows", num_rows)
    num_groups = _check_nonneg_int(fn, "num_groups", num_groups)
    alignment = _check_positive_int(fn, "alignment", alignment)
    if num_groups == 0:
        return 0  # no group owns any row
    busy = min(num_groups, num_rows)
    return (num_rows + busy * (alignment - 1)) // alignment * alignment


def _aligned_geometry(sizes: jax.Array, cap: int, alignment: int):
    """Returns (clamped sizes, ragged starts[G], aligned starts S[G], aligned ends[G])."""
    sizes = jnp.clip(sizes, 0, cap)
    ragged_starts = _exclusive_cumsum(sizes)[:-1]
    aligned_ends = jnp.cumsum(_align_up(sizes, alignment), dtype=jnp.int32)
    aligned_starts = _exclusive_cumsum(_align_up(sizes, alignment))[:-1]
    return sizes, ragged_starts, aligned_starts, aligned_ends


def aligned_contiguous_layout(group_sizes, num_rows_padded: int, *, alignment: int = DEFAULT_ALIGNMENT):
    """Ragged group sizes -> DeepGEMM's aligned contiguous layout over ``num_rows_padded`` rows.

    Group g occupies the padded rows ``[S_g, S_g + size_g)`` with
    ``S_g = sum_{g' < g} align(size_{g'}, alignment)``; the rows up to the next aligned start, and
    all rows at or past ``S_G``, are padding.

    Args:
      group_sizes: ``[G]`` integer sizes of the ragged groups (rows ``[offsets[g], offsets[g+1])``
        of the ragged operand).
      num_rows_padded: static row count of the padded operand, e.g.
        ``max_aligned_rows(num_rows, G, alignment)``. Host data whose aligned total exceeds it
        raises; for device data the layout is cut at ``num_rows_padded`` (rows that do not fit
        are dropped: :func:`ragged_to_aligned_indices` marks them ``-1``).
      alignment: static segment alignment (DeepGEMM: 128 = BLOCK_M on SM90).

    Returns:
      ``(psum, row_ids, gather_indices)``:

      * ``psum`` ``int32[G]``: ``psum[g] = S_g + size_g``, the psum layout of these groups (group g
        occupies ``[align(psum[g-1]), psum[g])``);
      * ``row_ids`` ``int32[num_rows_padded]``: the group of each padded row, ``-1`` on padding;
      * ``gather_indices`` ``int32[num_rows_padded]``: the ragged row each padded row copies
        (``offsets[g] + (p - S_g)``), ``-1`` (the sentinel) on padding rows, so that
        ``take_rows(x_ragged, gather_indices)`` builds the padded operand with zero padding rows.
        ``gather_indices >= 0`` exactly where ``row_ids >= 0``.
    """
    fn = "aligned_contiguous_layout"
    num_rows_padded = _check_nonneg_int(fn, "num_rows_padded", num_rows_padded)
    alignment = _check_positive_int(fn, "alignment", alignment)
    sizes = check_group_sizes(group_sizes, fn=fn)
    if is_host_value(group_sizes):
        host = np.asarray(group_sizes, np.int64)
        aligned_total = int((-(-host // alignment) * alignment).sum())
        if aligned_total > num_rows_padded:
            raise ValueError(
                f"{fn}: num_rows_padded = {num_rows_padded} is too small for group_sizes, whose "
                f"{alignment}-aligned layout needs {aligned_total} rows"
            )
    return _aligned_layout(sizes, num_rows_padded, alignment)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _aligned_layout(sizes: jax.Array, num_rows_padded: int, alignment: int):
    num_groups = sizes.shape[0]
    if num_groups == 0:
        empty = jnp.full((num_rows_padded,), -1, jnp.int32)
        return jnp.zeros((0,), jnp.int32), empty, empty

    sizes, ragged_starts, aligned_starts, aligned_ends = _aligned_geometry(
        sizes, num_rows_padded, alignment
    )
    psum = aligned_starts + sizes
    rows = jnp.arange(num_rows_padded, dtype=jnp.int32)
    owner = _owner_of(aligned_ends, rows)
    safe = jnp.minimum(owner, num_groups - 1)
    within = rows - aligned_starts[safe]
    valid = (owner < num_groups) & (within < sizes[safe])
    row_ids = jnp.where(valid, owner, -1)
    gather_indices = jnp.where(valid, ragged_starts[safe] + within, -1)
    return psum, row_ids, gather_indices


def ragged_to_aligned_indices(
    group_sizes, num_rows: int, num_rows_padded: int, *, alignment: int = DEFAULT_ALIGNMENT
) -> jax.Array:
    """Inverse map of :func:`aligned_contiguous_layout`: ragged row -> padded row, ``int32[num_rows]``.

    Ragged row r of group g (``offsets[g] <= r < offsets[g+1]``) lands on padded row
    ``S_g + (r - offsets[g])``; rows past the total (and, for device data, rows whose padded
    position would be ``>= num_rows_padded``) get ``-1``. ``take_rows(y_padded, indices)`` is the
    ragged result with zero rows past the total (``lax.ragged_dot`` semantics).
    """
    fn = "ragged_to_aligned_indices"
    num_rows = _check_nonneg_int(fn, "num_rows", num_rows)
    num_rows_padded = _check_nonneg_int(fn, "num_rows_padded", num_rows_padded)
    alignment = _check_positive_int(fn, "alignment", alignment)
    sizes = check_group_sizes(group_sizes, fn=fn, num_rows=num_rows)
    if is_host_value(group_sizes):
        host = np.asarray(group_sizes, np.int64)
        aligned_total = int((-(-host // alignment) * alignment).sum())
        if aligned_total > num_rows_padded:
            raise ValueError(
                f"{fn}: num_rows_padded = {num_rows_padded} is too small for group_sizes, whose "
                f"{alignment}-aligned layout needs {aligned_total} rows"
            )
    return _ragged_to_aligned(sizes, num_rows, num_rows_padded, alignment)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _ragged_to_aligned(sizes: jax.Array, num_rows: int, num_rows_padded: int, alignment: int) -> jax.Array:
    num_groups = sizes.shape[0]
    if num_groups == 0:
        return jnp.full((num_rows,), -1, jnp.int32)
    sizes, ragged_starts, aligned_starts, _ = _aligned_geometry(sizes, num_rows, alignment)
    rows = jnp.arange(num_rows, dtype=jnp.int32)
    owner = _owner_of(ragged_starts + sizes, rows)
    safe = jnp.minimum(owner, num_groups - 1)
    position = aligned_starts[safe] + (rows - ragged_starts[safe])
    return jnp.where((owner < num_groups) & (position < num_rows_padded), position, -1)


def take_rows(x, indices) -> jax.Array:
    """``out[i] = x[indices[i]]`` for ``0 <= indices[i] < x.shape[0]``, zeros elsewhere (sentinel -1).

    ``x``: ``[R, ...]``; ``indices``: int ``[P]``; returns ``[P, ...]`` of ``x``'s dtype. Indices out
    of range (negative or ``>= R``) give zero rows instead of wrapping or clamping.
    """
    x = jnp.asarray(x)
    idx = jnp.asarray(indices)
    if x.ndim < 1:
        raise ValueError(f"take_rows: x must have rank >= 1, got shape {tuple(x.shape)}")
    if idx.ndim != 1 or not jnp.issubdtype(idx.dtype, jnp.integer):
        raise ValueError(f"take_rows: indices must be a rank-1 integer array, got {idx.dtype}{tuple(idx.shape)}")
    return _take_rows(x, idx)


@jax.jit
def _take_rows(x: jax.Array, idx: jax.Array) -> jax.Array:
    rows = x.shape[0]
    if rows == 0:
        return jnp.zeros((idx.shape[0], *x.shape[1:]), x.dtype)
    idx = idx.astype(jnp.int32)
    valid = (idx >= 0) & (idx < rows)
    gathered = x[jnp.where(valid, idx, 0)]
    mask = valid.reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(mask, gathered, jnp.zeros((), x.dtype))


def psum_to_row_ids(psum, num_rows: int, *, alignment: int = DEFAULT_ALIGNMENT) -> jax.Array:
    """psum layout -> per-row ids ``int32[num_rows]``.

    Row r belongs to group g when ``align(psum[g-1], alignment) <= r < psum[g]`` (with
    ``psum[-1] := 0``); every other row (alignment gaps, rows past ``psum[G-1]``) is ``-1``.
    Host data is validated (:func:`check_psum`); device data is clamped at 0 and made
    non-decreasing first (module docstring).
    """
    fn = "psum_to_row_ids"
    num_rows = _check_nonneg_int(fn, "num_rows", num_rows)
    alignment = _check_positive_int(fn, "alignment", alignment)
    ends = check_psum(psum, fn=fn, num_rows=num_rows, alignment=alignment)
    return _psum_row_ids(ends, num_rows, alignment)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _psum_row_ids(ends: jax.Array, num_rows: int, alignment: int) -> jax.Array:
    num_groups = ends.shape[0]
    if num_groups == 0:
        return jnp.full((num_rows,), -1, jnp.int32)
    # Clamp to [0, num_rows] (rows past num_rows do not exist; also keeps align() from overflowing)
    # and take the running max so ownership is unique.
    ends = jax.lax.cummax(jnp.clip(ends, 0, num_rows), axis=0)
    starts = jnp.concatenate([jnp.zeros((1,), jnp.int32), _align_up(ends[:-1], alignment)])
    rows = jnp.arange(num_rows, dtype=jnp.int32)
    owner = _owner_of(ends, rows)
    safe = jnp.minimum(owner, num_groups - 1)
    valid = (owner < num_groups) & (rows >= starts[safe])
    return jnp.where(valid, owner, -1)
