"""M-grouped (MoE) FP8 GEMMs: each row of A is multiplied by the weights of its expert.

``m_grouped_fp8_gemm_nt_ragged`` takes ``jax.lax.ragged_dot``'s layout (group sizes on the device,
groups of any size): the kernel reads A and writes D in place, computing a 128-row tile that
straddles groups once per group in it (no gathers, no host synchronisation).

``m_grouped_fp8_gemm_nt_masked`` takes fixed per-expert buffers ``A [G, max_m, K]`` with the valid
row count of each expert on the device (decode under CUDA graphs).

``m_grouped_fp8_gemm_nt_contiguous`` takes DeepGEMM's contiguous layout: the rows of all experts
stacked in ``A [M, K]``, each expert's segment starting at a multiple of 128 rows, given either per
row (expert id, ``-1`` = padding) or as cumulative segment ends (psum, the DeepEPv2 layout). On
CUDA it runs the dense 1D2D kernel with a per-tile expert (``ffi/m_grouped_fp8_gemm.cu``); elsewhere
the jnp reference, with the same output semantics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jax_deepgemm import _checks, _ffi
from jax_deepgemm.fp8_gemm import _SFA_MN_MAJOR_MIN_M, _sfa_k_major, _sfa_mn_major
from jax_deepgemm import grouped_layout as _gl
from jax_deepgemm import reference as _ref
from jax_deepgemm._primitive import OpSpec, batch_by_map, int32_attrs, make_primitive, tile_attrs

CONTIGUOUS_ALIGNMENT = 128
"""Row alignment of expert segments in the contiguous layout (the kernel's BLOCK_M)."""

_FP8 = (jnp.float8_e4m3fn,)
_F32 = (jnp.float32,)


def _contiguous_rows(a, a_scale, b, b_scale, row_ids, *out, sfa_mn_major: int = 0, **_):
    """What the kernel computes, in jnp: each 128-row tile uses the expert of its first row; rows of
    that expert get ``A[r] @ B[g]^T``, padding rows (-1, or an id outside [0, G)) get 0, and a row of
    another expert (a misaligned segment) gets NaN."""
    m, num_groups = a.shape[0], b.shape[0]
    a_scale = _sfa_k_major(a_scale, sfa_mn_major, m)
    ids = jnp.where((row_ids >= 0) & (row_ids < num_groups), row_ids, -1)
    tile_group = ids[(jnp.arange(m) // CONTIGUOUS_ALIGNMENT) * CONTIGUOUS_ALIGNMENT]
    valid = _ref._m_grouped_rows(a, a_scale, b, b_scale, jnp.where(ids == tile_group, ids, -1))
    misaligned = (ids >= 0) & (ids != tile_group)
    return (jnp.where(misaligned[:, None], jnp.nan, valid).astype(jnp.bfloat16),)


_contiguous_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_m_grouped_fp8_gemm_nt_contiguous",
        target="jax_deepgemm_m_grouped_fp8_gemm_nt_contiguous_v3",
        out_shapes=lambda a, sa, b, sb, ids, *out, **_: [((a.shape[0], b.shape[1]), jnp.bfloat16)],
        reference=_contiguous_rows,
        attrs=int32_attrs,
        batch=batch_by_map,
        aliased_output_operand=5,
    )
)


def _fp8_pairs(op: str, a, b):
    """``(a_fp8, a_scale), (b_fp8, b_scale)`` unpacked, dtypes checked (e4m3 data, float32 scales)."""
    a_fp8, a_scale = _checks.check_pair(a, op, "a")
    b_fp8, b_scale = _checks.check_pair(b, op, "b")
    _checks.check_dtype(a_fp8, op, "a", _FP8)
    _checks.check_dtype(b_fp8, op, "b", _FP8)
    _checks.check_dtype(a_scale, op, "a_scale", _F32)
    _checks.check_dtype(b_scale, op, "b_scale", _F32)
    return a_fp8, a_scale, b_fp8, b_scale


def _validate(op: str, a, b, grouped_layout, use_psum_layout: bool):
    a_fp8, a_scale, b_fp8, b_scale = _fp8_pairs(op, a, b)
    a_fp8, a_scale, b_fp8, b_scale = _ref._check_m_grouped_operands(op, a_fp8, a_scale, b_fp8, b_scale)
    m, k = a_fp8.shape
    if k % 16 != 0:
        raise ValueError(f"{op}: K={k} must be a multiple of 16 (the kernel's TMA loads need 16-byte aligned rows)")
    if b_fp8.shape[0] == 0:
        raise ValueError(f"{op}: b must hold at least one group (got G = 0)")
    use_psum_layout = _ref._check_static_bool(op, "use_psum_layout", use_psum_layout)
    num_groups = b_fp8.shape[0]
    if use_psum_layout:
        psum = _gl.check_psum(grouped_layout, fn=op, name="grouped_layout", num_rows=m, num_groups=num_groups,
                              alignment=CONTIGUOUS_ALIGNMENT)
        row_ids = _gl._psum_row_ids(psum, m, CONTIGUOUS_ALIGNMENT)
    else:
        row_ids = _gl.check_row_ids(grouped_layout, fn=op, name="grouped_layout", num_groups=num_groups, num_rows=m,
                                    alignment=CONTIGUOUS_ALIGNMENT)
    return a_fp8, a_scale, b_fp8, b_scale, row_ids.astype(jnp.int32)


def m_grouped_fp8_gemm_nt_contiguous(
    a: tuple[jax.Array, jax.Array],
    b: tuple[jax.Array, jax.Array],
    grouped_layout: jax.Array,
    *,
    use_psum_layout: bool = False,
    num_sms: int = 0,
    block_m: int = 0,
    block_n: int = 0,
) -> jax.Array:
    """MoE grouped GEMM over a contiguous row layout: ``D[r] = A[r] @ B[expert(r)]^T`` in BF16.

    Args:
      a: ``(a_fp8, a_scale)``: ``[M, K]`` float8_e4m3fn rows of all experts and ``[M, ceil(K/128)]``
        float32 1x128 scales.
      b: ``(b_fp8, b_scale)``: ``[G, N, K]`` float8_e4m3fn expert weights and
        ``[G, ceil(N/128), ceil(K/128)]`` float32 128x128 block scales.
      grouped_layout: int32. ``use_psum_layout=False``: ``[M]`` expert id per row, ``-1`` for
        padding rows. ``use_psum_layout=True``: ``[G]`` cumulative segment ends; expert g owns rows
        ``[align(psum[g-1], 128), psum[g])``. Every expert segment starts at a multiple of 128 rows.
      use_psum_layout: static, selects the reading of ``grouped_layout``.
      num_sms: use at most this many SMs (0 = all).
      block_m: force the tile height, 128 or 256 (tuning, tests); 0 = heuristic (256 when the experts
        average at least 2048 rows). A 256-row tile whose two 128-row blocks belong to different experts
        runs its K loop once per block, each with its own expert.
      block_n: force a compiled tile width (tuning, tests); 0 = heuristic.

    Returns:
      ``[M, N]`` bfloat16. **Padding rows** (id -1, ids outside ``[0, G)``, psum gaps and rows past
      the last segment) **are 0**. Layout values given as host data (lists, NumPy) are validated at
      trace time (``ValueError`` naming ``grouped_layout``: ids out of range, misaligned segments,
      decreasing psum). Device data cannot be inspected without a host sync; there, a row whose
      expert differs from the expert of the first row of its 128-row tile (a misaligned segment)
      comes out **NaN**: never a silently wrong product, never an out-of-bounds access.
    """
    op = "m_grouped_fp8_gemm_nt_contiguous"
    a_fp8, a_scale, b_fp8, b_scale, row_ids = _validate(op, a, b, grouped_layout, use_psum_layout)
    _check_contiguous_block_m(op, block_m)
    tile_attrs_ = _check_tile(op, "contiguous", block_m, block_n)
    m, n = a_fp8.shape[0], b_fp8.shape[1]
    if m == 0 or n == 0:
        return jnp.zeros((m, n), jnp.bfloat16)
    sa, mn_major = _kernel_a_scales(a_scale)
    (d,) = _contiguous_p.bind(a_fp8, sa, b_fp8, b_scale, row_ids, **tile_attrs_, num_sms=int(num_sms),
                              sfa_mn_major=mn_major)
    return d


def _check_contiguous_block_m(op: str, block_m) -> None:
    if not isinstance(block_m, int) or block_m not in (0, CONTIGUOUS_ALIGNMENT, 2 * CONTIGUOUS_ALIGNMENT):
        raise ValueError(f"{op}: block_m must be 0 (heuristic), {CONTIGUOUS_ALIGNMENT} or "
                         f"{2 * CONTIGUOUS_ALIGNMENT}, got {block_m!r}")


_RAGGED_MAX_BLOCK_N = 176  # kMaxRaggedBlockN (ffi/fp8_gemm_launch.h): wider tiles lack the ragged walk
# The compiled 1D2D tiles (block_m, block_n, cluster_m, cluster_n) each form's handler may run: clusters only along N
# (one expert per pair), contiguous tiles of one or two 128-row layout blocks, masked ones of at most 128 rows.
_FORM_TILES = {
    "contiguous": lambda t: t[2] == 1 and t[0] in (CONTIGUOUS_ALIGNMENT, 2 * CONTIGUOUS_ALIGNMENT),
    "ragged": lambda t: t[2] == 1 and t[1] <= _RAGGED_MAX_BLOCK_N,
    "masked": lambda t: t[2] == 1 and t[0] <= 128,
}


def _check_tile(op: str, form: str, block_m: int, block_n: int) -> dict[str, int]:
    """A forced (block_m, block_n) (0 = heuristic's) must be a tile compiled for this form: checked at trace time.
    Returns the primitive's tile attributes."""
    tiles = [t for t in _ffi.fp8_gemm_tiles()["1d2d"] if _FORM_TILES[form](t)]
    _checks.check_compiled_tile(op, (block_m, block_n), tiles, "(block_m, block_n)")
    return dict(block_m=int(block_m), block_n=int(block_n))


def _m_grouped_wants_mn_major_sfa(m: int) -> bool:
    """The contiguous and ragged kernels' 128- and 256-row tiles stage MN-major A scales by TMA (instead of
    register loads or the scale warp's copies); the transpose is one small XLA kernel, not worth its launch
    for few rows."""
    return m >= _SFA_MN_MAJOR_MIN_M and _ffi.has_cuda_kernels()


def _kernel_a_scales(a_scale: jax.Array, mn_major: bool | None = None) -> tuple[jax.Array, int]:
    """The ``[M, ceil(K/128)]`` A scales in the layout the contiguous/ragged kernels get, and the ``sfa_mn_major``
    attribute saying which (``mn_major`` forces it; None: ``_m_grouped_wants_mn_major_sfa``)."""
    if mn_major is None:
        mn_major = _m_grouped_wants_mn_major_sfa(a_scale.shape[0])
    return (_sfa_mn_major(a_scale) if mn_major else a_scale), int(mn_major)


def _group_ends(sizes: jax.Array, m: int) -> jax.Array:
    """Cumulative row ends of ragged groups, int32 [G]: negative sizes count as 0 and ends clamp at M
    (rows that do not exist are dropped, later groups first)."""
    return jnp.minimum(jnp.cumsum(jnp.clip(sizes.astype(jnp.int32), 0, m), dtype=jnp.int32), m)


def _ragged_reference(a, a_scale, b, b_scale, ends, *out, sfa_mn_major: int = 0, **_):
    m = a.shape[0]
    a_scale = _sfa_k_major(a_scale, sfa_mn_major, m)
    return (_ref._m_grouped_rows(a, a_scale, b, b_scale, _gl._rows_of_ends(ends, m)),)


_ragged_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_m_grouped_fp8_gemm_nt_ragged",
        target="jax_deepgemm_m_grouped_fp8_gemm_nt_ragged_v2",
        out_shapes=lambda a, sa, b, sb, ends, *out, **_: [((a.shape[0], b.shape[1]), jnp.bfloat16)],
        reference=_ragged_reference,
        attrs=int32_attrs,
        batch=batch_by_map,
        aliased_output_operand=5,
    )
)


def m_grouped_fp8_gemm_nt_ragged(
    a: tuple[jax.Array, jax.Array],
    b: tuple[jax.Array, jax.Array],
    group_sizes: jax.Array,
    *,
    num_sms: int = 0,
    tile: tuple[int, int] | None = None,
) -> jax.Array:
    """MoE grouped GEMM with ``jax.lax.ragged_dot`` semantics, FP8 in, BF16 out.

    Group g owns rows ``[sum(group_sizes[:g]), sum(group_sizes[:g+1]))`` of A (any sizes, empty
    groups allowed, no alignment) and ``D[r] = A[r] @ B[g]^T`` there; rows at or past
    ``sum(group_sizes)`` are 0.

    Args:
      a: ``(a_fp8, a_scale)``: ``[M, K]`` float8_e4m3fn and ``[M, ceil(K/128)]`` float32 1x128 scales.
      b: ``(b_fp8, b_scale)``: ``[G, N, K]`` float8_e4m3fn and ``[G, ceil(N/128), ceil(K/128)]`` float32.
      group_sizes: ``[G]`` integer rows per group. Host data must be non-negative and sum to at most
        M (``ValueError`` naming ``group_sizes``); device data: negative sizes count as 0 and rows
        past M are dropped (later groups first).
      num_sms: use at most this many SMs (0 = all).
      tile: ``(block_m, block_n)`` forces a compiled tile (tests, tuning); None = heuristic.

    Implementation: one kernel over A and D in place. A row tile (128 rows, or 256 when the groups average
    at least 2048 rows) that straddles a group boundary is computed once per group it holds, each pass
    computing only the 128-row waves that hold the group's rows and storing only those rows, so unaligned
    groups cost at most G extra row tiles over the same rows aligned.
    """
    op = "m_grouped_fp8_gemm_nt_ragged"
    a_fp8, a_scale, b_fp8, b_scale = _fp8_pairs(op, a, b)
    a_fp8, a_scale, b_fp8, b_scale = _ref._check_m_grouped_operands(op, a_fp8, a_scale, b_fp8, b_scale)
    m, k = a_fp8.shape
    num_groups, n = b_fp8.shape[0], b_fp8.shape[1]
    if k % 16 != 0:
        raise ValueError(f"{op}: K={k} must be a multiple of 16 (the kernel's TMA loads need 16-byte aligned rows)")
    sizes = _gl.check_group_sizes(group_sizes, fn=op, num_rows=m, num_groups=num_groups, rows_name="M")
    if m == 0 or n == 0 or num_groups == 0:
        return jnp.zeros((m, n), jnp.bfloat16)
    sa, mn_major = _kernel_a_scales(a_scale)
    tile_attrs_ = _check_tile(op, "ragged", **tile_attrs(tile))
    (d,) = _ragged_p.bind(a_fp8, sa, b_fp8, b_scale, _group_ends(sizes, m), **tile_attrs_, num_sms=int(num_sms),
                          sfa_mn_major=mn_major)
    return d


def _m_grouped_ragged_into(a, b, group_sizes, out: jax.Array, *, tile=None,
                           sfa_mn_major: bool | None = None) -> jax.Array:
    """Test hook: the ragged kernel writing into (an XLA-aliased copy of) a pre-filled ``out``; ``sfa_mn_major``
    forces the A-scale layout (None: as ``m_grouped_fp8_gemm_nt_ragged`` picks it)."""
    (a_fp8, a_scale), (b_fp8, b_scale) = a, b
    ends = _group_ends(jnp.asarray(group_sizes, jnp.int32), a_fp8.shape[0])
    sa, mn_major = _kernel_a_scales(a_scale, sfa_mn_major)
    return _ragged_p.bind(a_fp8, sa, b_fp8, b_scale, ends, out,
                          **_check_tile("m_grouped_fp8_gemm_nt_ragged", "ragged", **tile_attrs(tile)), num_sms=0,
                          sfa_mn_major=mn_major)[0]


def _m_grouped_contiguous_into(a, b, row_ids, out: jax.Array, sfa_mn_major: bool | None = None,
                               block_m: int = 0, block_n: int = 0) -> jax.Array:
    """Test hook: the kernel writing into (an XLA-aliased copy of) a pre-filled ``out``; ``sfa_mn_major`` forces
    the A-scale layout (None: as ``m_grouped_fp8_gemm_nt_contiguous`` picks it), ``block_m``/``block_n`` the tile."""
    (a_fp8, a_scale), (b_fp8, b_scale) = a, b
    _check_contiguous_block_m("m_grouped_fp8_gemm_nt_contiguous", block_m)
    tile_attrs_ = _check_tile("m_grouped_fp8_gemm_nt_contiguous", "contiguous", block_m, block_n)
    sa, mn_major = _kernel_a_scales(a_scale, sfa_mn_major)
    return _contiguous_p.bind(a_fp8, sa, b_fp8, b_scale, row_ids, out, **tile_attrs_, num_sms=0,
                              sfa_mn_major=mn_major)[0]


# ---------------------------------------------------------------------------------------------
# Masked (decode under CUDA graphs): fixed [G, max_m] buffers, valid row counts on the device
# ---------------------------------------------------------------------------------------------

MASKED_MAX_M_ALIGNMENT = 128
"""``max_m`` must be a multiple of this: a 128-row tile never straddles two groups' buffers."""


def _masked_reference(a, a_scale, b, b_scale, masked_m, *out, sfa_mn_major: int = 0, **_):
    groups, max_m, k = a.shape
    if sfa_mn_major:
        a_scale = _sfa_k_major(a_scale, 1, groups * max_m).reshape(groups, max_m, -1)
    return (_ref._masked_core(a, a_scale, b, b_scale, masked_m),)


def _masked_wants_mn_major_sfa(max_m: int, expected_m: int, n: int) -> bool:
    """Whether the masked kernel gets MN-major A scales, which its 128-row tiles stage by TMA: 2-8 % faster for the
    wide (128 x 192) tiles on DeepGEMM's masked shapes (H200, session 12). The transpose moves every row of the
    ``[G, max_m]`` buffers for ``G * expected_m`` rows of GEMM work, so it is only worth it while it costs a few %
    of the GEMM: ``250 * max_m <= expected_m * N`` (an 8-byte-per-K-block copy at ~3 TB/s against the GEMM at
    ~1000 TFLOPS: ~4 % at the bound), and with tiles of 128 rows (``expected_m >= 128``). At 4 x 256 x 4096 x 7168
    (max_m 4096, just inside the bound) the 128 x 192 tile ran 83.3 us with MN-major scales, transpose included,
    and 90.2 with K-major ones (H200, session 13)."""
    expected_m = expected_m or max_m
    return expected_m >= 128 and 250 * max_m <= expected_m * n


def _masked_a_scales(a_scale: jax.Array, mn_major: bool) -> jax.Array:
    """``[G, max_m, ceil(K/128)]`` scales in the layout of ``sfa_mn_major = mn_major``."""
    return _sfa_mn_major(a_scale.reshape(-1, a_scale.shape[-1])) if mn_major else a_scale


_masked_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_m_grouped_fp8_gemm_nt_masked",
        target="jax_deepgemm_m_grouped_fp8_gemm_nt_masked_v2",
        out_shapes=lambda a, sa, b, sb, mm, *out, **_: [((a.shape[0], a.shape[1], b.shape[1]), jnp.bfloat16)],
        reference=_masked_reference,
        attrs=int32_attrs,
        batch=batch_by_map,
        aliased_output_operand=5,
    )
)


def m_grouped_fp8_gemm_nt_masked(
    a: tuple[jax.Array, jax.Array],
    b: tuple[jax.Array, jax.Array],
    masked_m: jax.Array,
    *,
    expected_m: int = 0,
    num_sms: int = 0,
    tile: tuple[int, int] | None = None,
) -> jax.Array:
    """MoE grouped GEMM over fixed per-expert buffers: ``D[g, r] = A[g, r] @ B[g]^T`` for ``r < masked_m[g]``.

    The decode form: buffer shapes are static (CUDA-graph friendly) and the valid row count of
    each expert lives on the device; the kernel runs only the 128- or 64-row tiles each expert needs.

    Args:
      a: ``(a_fp8, a_scale)``: ``[G, max_m, K]`` float8_e4m3fn and ``[G, max_m, ceil(K/128)]`` float32.
        ``max_m`` must be a multiple of 128.
      b: ``(b_fp8, b_scale)``: ``[G, N, K]`` float8_e4m3fn and ``[G, ceil(N/128), ceil(K/128)]`` float32.
      masked_m: ``[G]`` int32 valid rows per group. Host data must lie in ``[0, max_m]``
        (``ValueError``); device values are clamped to it.
      expected_m: static hint, the typical ``masked_m`` (picks the tile shape; 0 = max_m). It never
        bounds the computation.
      num_sms: use at most this many SMs (0 = all).
      tile: ``(block_m, block_n)`` forces a compiled tile (tuning, tests); None = heuristic.

    Returns:
      ``[G, max_m, N]`` bfloat16. Only ``D[g, :masked_m[g]]`` is defined. The GPU kernel leaves the
      other rows unspecified: rows inside a tile it ran hold the product of those (padding) rows of
      A, rows of tiles it skipped hold whatever the output buffer held. (The CPU path writes 0.)
    """
    op = "m_grouped_fp8_gemm_nt_masked"
    a_fp8, a_scale, b_fp8, b_scale = _fp8_pairs(op, a, b)
    _checks.check_rank(a_fp8, op, "a", exact=3)
    num_groups, max_m, k = a_fp8.shape
    _checks.check_shape(a_scale, op, "a_scale", (num_groups, max_m, _checks.ceil_div(k, 128)), "1x128 scales")
    b_fp8, b_scale = _ref._check_grouped_b(op, b_fp8, b_scale, k)
    if b_fp8.shape[0] != num_groups:
        raise ValueError(f"{op}: a and b must have the same number of groups, got a {a_fp8.shape} and b {b_fp8.shape}")
    if k % 16 != 0:
        raise ValueError(f"{op}: K={k} must be a multiple of 16 (the kernel's TMA loads need 16-byte aligned rows)")
    if max_m % MASKED_MAX_M_ALIGNMENT != 0:
        raise ValueError(f"{op}: max_m = a.shape[1] = {max_m} must be a multiple of {MASKED_MAX_M_ALIGNMENT}")
    counts = _gl.check_masked_m(masked_m, fn=op, num_groups=num_groups, max_m=max_m).astype(jnp.int32)
    if not isinstance(expected_m, int) or expected_m < 0:
        raise ValueError(f"{op}: expected_m must be a non-negative Python int, got {expected_m!r}")
    n = b_fp8.shape[1]
    if num_groups == 0 or max_m == 0 or n == 0:
        return jnp.zeros((num_groups, max_m, n), jnp.bfloat16)
    expected_m = min(expected_m, max_m)
    mn_major = _ffi.has_cuda_kernels() and _masked_wants_mn_major_sfa(max_m, expected_m, n)
    (d,) = _masked_p.bind(a_fp8, _masked_a_scales(a_scale, mn_major), b_fp8, b_scale, counts, expected_m=expected_m,
                          **_check_tile(op, "masked", **tile_attrs(tile)), num_sms=int(num_sms),
                          sfa_mn_major=int(mn_major))
    return d


def _m_grouped_masked_into(a, b, masked_m, out: jax.Array, *, expected_m: int = 0, tile=None,
                           sfa_mn_major: bool = False) -> jax.Array:
    """Test hook: the masked kernel writing into (an XLA-aliased copy of) a pre-filled ``out``; ``sfa_mn_major``
    and ``tile`` force the A-scale layout and the tile."""
    (a_fp8, a_scale), (b_fp8, b_scale) = a, b
    tile_attrs_ = _check_tile("m_grouped_fp8_gemm_nt_masked", "masked", **tile_attrs(tile))
    return _masked_p.bind(a_fp8, _masked_a_scales(a_scale, sfa_mn_major), b_fp8, b_scale, masked_m, out,
                          expected_m=expected_m, **tile_attrs_, num_sms=0, sfa_mn_major=int(sfa_mn_major))[0]
