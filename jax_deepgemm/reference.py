"""Pure-jnp reference implementations of the FP8 GEMM ops.

Used in two ways, so both constraints apply:

* as the CPU lowering of the GPU op: everything is traceable with static shapes (no Python
  control flow on array values; only shapes and dtypes steer the code);
* as the test oracle for the CUDA kernels: the math is exact dequantization followed by a
  float32 matmul at ``Precision.HIGHEST`` (no TF32 / bf16 passes on GPU), which is what the
  kernels approximate (they accumulate FP8 products and promote with the scales every 128 K).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from .quantize import per_block_dequantize, per_token_dequantize

__all__ = ["SCALE_BLOCK", "fp8_gemm_nt_reference", "resolve_b_scale_kind"]

SCALE_BLOCK = 128
"""K (and, for 128x128 weight scales, N) extent that shares one scale."""

BScaleKind = Literal["auto", "block", "channel"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def resolve_b_scale_kind(b_shape, b_scale_shape, b_scale_kind: str = "auto") -> str:
    """Decides how ``b_scale`` is laid out: ``"block"`` or ``"channel"``.

    * ``"block"``   (1D2D): ``b_scale [ceil(N/128), ceil(K/128)]``, one scale per 128x128 tile;
    * ``"channel"`` (1D1D): ``b_scale [N, ceil(K/128)]``, one scale per row per 128 K.

    ``"auto"`` picks ``"block"`` when the shape matches the block form, else ``"channel"``. The
    two forms coincide only when ``ceil(N/128) == N`` (N == 1, or N == 0); there every row lies
    in one tile so both readings give the same dequantized B, and the choice does not matter.

    Raises:
      ValueError: unknown ``b_scale_kind`` or a ``b_scale`` shape that fits neither form
        (or not the explicitly requested one).
    """
    fn = "fp8_gemm_nt_reference"
    if b_scale_kind not in ("auto", "block", "channel"):
        raise ValueError(
            f"{fn}: b_scale_kind must be 'auto', 'block' or 'channel', got {b_scale_kind!r}"
        )
    n, k = b_shape
    num_k_blocks = _ceil_div(k, SCALE_BLOCK)
    expected = {
        "block": (_ceil_div(n, SCALE_BLOCK), num_k_blocks),
        "channel": (n, num_k_blocks),
    }
    got = tuple(b_scale_shape)
    if b_scale_kind == "auto":
        for kind in ("block", "channel"):
            if got == expected[kind]:
                return kind
        raise ValueError(
            f"{fn}: b_scale must have shape {expected['block']} (128x128 blocks) or "
            f"{expected['channel']} (per row) for b of shape {tuple(b_shape)}, got {got}"
        )
    if got != expected[b_scale_kind]:
        raise ValueError(
            f"{fn}: b_scale with b_scale_kind={b_scale_kind!r} must have shape "
            f"{expected[b_scale_kind]} for b of shape {tuple(b_shape)}, got {got}"
        )
    return b_scale_kind


def _check_operand(fn: str, name: str, x, rank_text: str, rank_ok) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must have a floating-point dtype, got {x.dtype}")
    if not rank_ok(x.ndim):
        raise ValueError(f"{fn}: {name} must have rank {rank_text}, got shape {tuple(x.shape)}")
    return x


def _check_c(fn: str, c, out_shape: tuple[int, ...]) -> jax.Array:
    c = _check_operand(fn, "c", c, ">= 1", lambda r: r >= 1)
    try:
        broadcast = np.broadcast_shapes(tuple(c.shape), out_shape)
    except ValueError:
        broadcast = None
    if broadcast != out_shape:
        raise ValueError(
            f"{fn}: c must have shape {out_shape} (or broadcast to it), got {tuple(c.shape)}"
        )
    return c


def fp8_gemm_nt_reference(
    a,
    a_scale,
    b,
    b_scale,
    c=None,
    out_dtype=jnp.bfloat16,
    *,
    b_scale_kind: BScaleKind = "auto",
) -> jax.Array:
    """Reference ``D = dequant(A) @ dequant(B)^T (+ C)`` for block-scaled FP8 operands.

    Args:
      a: ``[..., M, K]`` quantized activations (float8_e4m3fn in the op contract; any float
        dtype is accepted, its values are used as they are).
      a_scale: ``[..., M, ceil(K/128)]`` float scales, one per row per 128 K (same leading dims
        as ``a``).
      b: ``[N, K]`` quantized weights (unbatched).
      b_scale: ``[ceil(N/128), ceil(K/128)]`` (128x128 blocks, "1D2D") or
        ``[N, ceil(K/128)]`` (per row, "1D1D"); see ``b_scale_kind``.
      c: optional addend, ``[..., M, N]`` or anything broadcasting to it; added in float32.
      out_dtype: dtype of D (the GPU op uses bfloat16 for 1D2D and float32 for 1D1D).
      b_scale_kind: ``"auto"`` (infer from the shape), ``"block"`` or ``"channel"``; see
        :func:`resolve_b_scale_kind`.

    Returns:
      ``[..., M, N]`` array of ``out_dtype``. ``K`` need not be a multiple of 128 (the last
      scale block is partial). Math: dequantize to float32, matmul at
      ``Precision.HIGHEST`` with float32 accumulation, add ``c`` in float32, then cast.
    """
    fn = "fp8_gemm_nt_reference"
    a = _check_operand(fn, "a", a, ">= 2", lambda r: r >= 2)
    b = _check_operand(fn, "b", b, "2", lambda r: r == 2)
    a_scale = _check_operand(fn, "a_scale", a_scale, ">= 2", lambda r: r >= 2)
    b_scale = _check_operand(fn, "b_scale", b_scale, "2", lambda r: r == 2)
    out_dtype = jnp.dtype(out_dtype)
    if not jnp.issubdtype(out_dtype, jnp.floating):
        raise TypeError(f"{fn}: out_dtype must be a floating-point dtype, got {out_dtype}")

    *lead, m, k = a.shape
    n, b_k = b.shape
    if b_k != k:
        raise ValueError(
            f"{fn}: a and b must have the same K (last dim), got a {tuple(a.shape)} and "
            f"b {tuple(b.shape)}"
        )
    expected_a_scale = (*lead, m, _ceil_div(k, SCALE_BLOCK))
    if tuple(a_scale.shape) != expected_a_scale:
        raise ValueError(
            f"{fn}: a_scale must have shape {expected_a_scale} for a of shape "
            f"{tuple(a.shape)}, got {tuple(a_scale.shape)}"
        )
    kind = resolve_b_scale_kind(b.shape, b_scale.shape, b_scale_kind)
    out_shape = (*lead, m, n)
    if c is not None:
        c = _check_c(fn, c, out_shape)

    a_f32 = per_token_dequantize(a, a_scale, gran_k=SCALE_BLOCK)
    if kind == "block":
        b_f32 = per_block_dequantize(b, b_scale, block=SCALE_BLOCK)
    else:
        # Per-row-per-128-K weight scales are the per-token layout applied to B's rows.
        b_f32 = per_token_dequantize(b, b_scale, gran_k=SCALE_BLOCK)

    d = jnp.einsum(
        "...mk,nk->...mn",
        a_f32,
        b_f32,
        precision=jax.lax.Precision.HIGHEST,
        preferred_element_type=jnp.float32,
    )
    if c is not None:
        d = d + c.astype(jnp.float32)
    return d.astype(out_dtype)


# --------------------------------------------------------------------------------------------
# Grouped (MoE) GEMM references
#
# Shared conventions: operands are dequantized exactly to float32 with the quantize.py helpers,
# multiplied at Precision.HIGHEST with float32 accumulation, and cast once at the end. Group
# sizes / ids / counts may be traced (device) arrays: only shapes steer the code, and the values
# of device data are never inspected (see grouped_layout.py for what out-of-range device values
# mean). Host data (Python / NumPy) is validated at trace time and raises ValueError naming the
# argument. Rows that no group owns are exactly 0 in every output, whatever A holds there (NaN
# included): the grouped matmul selects per row, it does not multiply by a mask.
# --------------------------------------------------------------------------------------------

from . import grouped_layout as _gl  # noqa: E402  (appended section; keeps the module order)
from .quantize import per_channel_dequantize  # noqa: E402

__all__ += [
    "m_grouped_fp8_gemm_nt_contiguous_reference",
    "m_grouped_fp8_gemm_nt_ragged_reference",
    "m_grouped_fp8_gemm_nt_masked_reference",
    "k_grouped_fp8_gemm_tn_reference",
]


def _check_scale_shape(fn: str, name: str, x, expected: tuple[int, ...], of: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{fn}: {name} must have shape {tuple(expected)} for {of}, got {tuple(x.shape)}")


def _check_grouped_b(fn: str, b, b_scale, k: int):
    """B ``[G, N, K]`` with per-expert 128x128 scales ``[G, ceil(N/128), ceil(K/128)]``."""
    b = _check_operand(fn, "b", b, "3", lambda r: r == 3)
    b_scale = _check_operand(fn, "b_scale", b_scale, "3", lambda r: r == 3)
    g, n, b_k = b.shape
    if b_k != k:
        raise ValueError(f"{fn}: a and b must have the same K (last dim), got K = {k} for a and b {tuple(b.shape)}")
    expected = (g, _ceil_div(n, SCALE_BLOCK), _ceil_div(k, SCALE_BLOCK))
    _check_scale_shape(fn, "b_scale", b_scale, expected, f"b of shape {tuple(b.shape)} (128x128 blocks per group)")
    return b, b_scale


def _check_static_bool(fn: str, name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be a Python bool (static), got {type(value).__name__}")
    return bool(value)


def _matmul_f32(spec: str, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.einsum(spec, x, y, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


def _rows_by_group_matmul(a_f32: jax.Array, b_f32: jax.Array, row_ids: jax.Array) -> jax.Array:
    """``out[r] = a[r] @ b[row_ids[r]]^T`` for ``0 <= row_ids[r] < G``, 0 for every other row.

    ``a_f32 [M, K]``, ``b_f32 [G, N, K]``, ``row_ids int32[M]`` -> float32 ``[M, N]``. A scan over
    the groups keeps the working set at one ``[M, N]`` product (no ``[M, N, K]`` gather of B and no
    ``[G, M, N]`` intermediate), at G times the FLOPs of the ideal grouped GEMM.
    """
    m, n = a_f32.shape[0], b_f32.shape[1]

    def step(acc, xs):
        b_g, g = xs
        return jnp.where((row_ids == g)[:, None], _matmul_f32("mk,nk->mn", a_f32, b_g), acc), None

    if b_f32.shape[0] == 0:
        return jnp.zeros((m, n), jnp.float32)
    # The carry starts from group 0's product (not from a fresh zeros array) so that inside
    # jax.shard_map it varies over the same mesh axes as the operands (scan needs equal types).
    init = jnp.where((row_ids == 0)[:, None], _matmul_f32("mk,nk->mn", a_f32, b_f32[0]), 0.0)
    groups = jnp.arange(1, b_f32.shape[0], dtype=jnp.int32)
    out, _ = jax.lax.scan(step, init, (b_f32[1:], groups))
    return out


@jax.jit
def _m_grouped_rows(a, a_scale, b, b_scale, row_ids) -> jax.Array:
    """Dequantize, ``D[r] = A[r] @ B[row_ids[r]]^T`` (0 where no group), bf16. Jitted so that an
    eager call is one program rather than one dispatch per op; inlines under an outer jit."""
    a_f32 = per_token_dequantize(a, a_scale, gran_k=SCALE_BLOCK)
    b_f32 = per_block_dequantize(b, b_scale, block=SCALE_BLOCK)
    return _rows_by_group_matmul(a_f32, b_f32, row_ids).astype(jnp.bfloat16)


def _check_m_grouped_operands(fn: str, a, a_scale, b, b_scale):
    a = _check_operand(fn, "a", a, "2", lambda r: r == 2)
    a_scale = _check_operand(fn, "a_scale", a_scale, "2", lambda r: r == 2)
    m, k = a.shape
    _check_scale_shape(fn, "a_scale", a_scale, (m, _ceil_div(k, SCALE_BLOCK)), f"a of shape {tuple(a.shape)}")
    b, b_scale = _check_grouped_b(fn, b, b_scale, k)
    return a, a_scale, b, b_scale


def m_grouped_fp8_gemm_nt_contiguous_reference(
    a,
    a_scale,
    b,
    b_scale,
    grouped_layout,
    *,
    use_psum_layout: bool = False,
    alignment: int = _gl.DEFAULT_ALIGNMENT,
) -> jax.Array:
    """Reference of DeepGEMM's M-grouped contiguous GEMM: ``D[r] = A[r] @ B[g(r)]^T``, bf16.

    Args:
      a: ``[M, K]`` quantized rows of all groups, laid out contiguously (e4m3 in the op contract).
      a_scale: ``[M, ceil(K/128)]`` float32, one scale per row per 128 K (1x128).
      b: ``[G, N, K]`` quantized expert weights.
      b_scale: ``[G, ceil(N/128), ceil(K/128)]`` float32, per-expert 128x128 block scales.
      grouped_layout: int32, either
        * ``use_psum_layout=False``: per-row group ids ``[M]``; ``-1`` marks padding rows;
        * ``use_psum_layout=True``: ``[G]`` cumulative group ends (psum layout): group g owns rows
          ``[align(psum[g-1], alignment), psum[g])``, the gaps are padding.
      use_psum_layout: static bool selecting the reading of ``grouped_layout``.
      alignment: static M alignment of group segments (128 on SM90). For host-data per-row ids the
        alignment contract is checked (each ``alignment``-row tile holds one group then only
        padding: :func:`jax_deepgemm.grouped_layout.check_row_ids`); for psum it defines the starts.

    Returns:
      ``[M, N]`` bfloat16. **Padding rows (id ``-1``, psum gaps, rows past the last group) are 0**,
      whatever ``a`` holds there. DeepGEMM's kernel leaves them unspecified (it writes zeros for
      skipped tiles and computes straddling ones), so kernel tests compare valid rows only.

    Device-data layouts with out-of-range values are not errors (they cannot raise under jit): ids
    outside ``[0, G)`` are padding, psum is clamped and made non-decreasing (grouped_layout.py).
    A misaligned device-data id layout is computed row by row as written (the kernel's result for
    it is unspecified). Host data raises ``ValueError`` naming ``grouped_layout``.
    """
    fn = "m_grouped_fp8_gemm_nt_contiguous_reference"
    use_psum_layout = _check_static_bool(fn, "use_psum_layout", use_psum_layout)
    alignment = _gl._check_positive_int(fn, "alignment", alignment)
    a, a_scale, b, b_scale = _check_m_grouped_operands(fn, a, a_scale, b, b_scale)
    m, num_groups = a.shape[0], b.shape[0]
    if use_psum_layout:
        psum = _gl.check_psum(
            grouped_layout, fn=fn, name="grouped_layout", num_rows=m, num_groups=num_groups, alignment=alignment
        )
        row_ids = _gl._psum_row_ids(psum, m, alignment)
    else:
        row_ids = _gl.check_row_ids(
            grouped_layout, fn=fn, name="grouped_layout", num_groups=num_groups, num_rows=m, alignment=alignment
        )
    return _m_grouped_rows(a, a_scale, b, b_scale, row_ids)


def m_grouped_fp8_gemm_nt_ragged_reference(a, a_scale, b, b_scale, group_sizes) -> jax.Array:
    """Reference of the ragged grouped GEMM with ``jax.lax.ragged_dot`` semantics, bf16.

    Group g owns rows ``[offsets[g], offsets[g+1])`` of ``a`` (``offsets`` = exclusive cumsum of
    ``group_sizes``; groups of any size, empty allowed, no alignment) and ``D[r] = A[r] @ B[g]^T``
    there. Rows at or past ``sum(group_sizes)`` are 0.

    Args:
      a, a_scale: ``[M, K]`` quantized rows and ``[M, ceil(K/128)]`` float32 1x128 scales.
      b, b_scale: ``[G, N, K]`` quantized weights and ``[G, ceil(N/128), ceil(K/128)]`` scales.
      group_sizes: ``[G]`` integer rows per group. Host data must be non-negative and sum to at
        most M (else ``ValueError`` naming ``group_sizes``); device data: negative sizes count as 0
        and a total past M is truncated (the rows that do not exist are dropped).

    Returns:
      ``[M, N]`` bfloat16.
    """
    fn = "m_grouped_fp8_gemm_nt_ragged_reference"
    a, a_scale, b, b_scale = _check_m_grouped_operands(fn, a, a_scale, b, b_scale)
    m, num_groups = a.shape[0], b.shape[0]
    sizes = _gl.check_group_sizes(group_sizes, fn=fn, num_rows=m, num_groups=num_groups, rows_name="M")
    row_ids = _gl._ragged_row_ids(sizes, m)
    return _m_grouped_rows(a, a_scale, b, b_scale, row_ids)


def m_grouped_fp8_gemm_nt_masked_reference(a, a_scale, b, b_scale, masked_m) -> jax.Array:
    """Reference of DeepGEMM's M-grouped masked GEMM: ``D[g, r] = A[g, r] @ B[g]^T`` for ``r < masked_m[g]``.

    Args:
      a, a_scale: ``[G, max_m, K]`` quantized rows and ``[G, max_m, ceil(K/128)]`` float32 scales.
      b, b_scale: ``[G, N, K]`` quantized weights and ``[G, ceil(N/128), ceil(K/128)]`` scales.
      masked_m: ``[G]`` integer count of valid rows per group. Host data must lie in
        ``[0, max_m]`` (else ``ValueError`` naming ``masked_m``); device data is clamped to it.

    Returns:
      ``[G, max_m, N]`` bfloat16. Rows ``>= masked_m[g]`` are 0 here; the kernel leaves them
      undefined (zeros, computed values, or whatever the buffer held), so tests compare only
      ``D[g, :masked_m[g]]``.
    """
    fn = "m_grouped_fp8_gemm_nt_masked_reference"
    a = _check_operand(fn, "a", a, "3", lambda r: r == 3)
    a_scale = _check_operand(fn, "a_scale", a_scale, "3", lambda r: r == 3)
    num_groups, max_m, k = a.shape
    _check_scale_shape(
        fn, "a_scale", a_scale, (num_groups, max_m, _ceil_div(k, SCALE_BLOCK)), f"a of shape {tuple(a.shape)}"
    )
    b, b_scale = _check_grouped_b(fn, b, b_scale, k)
    if b.shape[0] != num_groups:
        raise ValueError(
            f"{fn}: a and b must have the same number of groups (dim 0), got a {tuple(a.shape)} and b {tuple(b.shape)}"
        )
    counts = _gl.check_masked_m(masked_m, fn=fn, num_groups=num_groups, max_m=max_m)
    return _masked_core(a, a_scale, b, b_scale, counts)


@jax.jit
def _masked_core(a, a_scale, b, b_scale, counts) -> jax.Array:
    max_m = a.shape[1]
    counts = jnp.clip(counts, 0, max_m)
    a_f32 = per_token_dequantize(a, a_scale, gran_k=SCALE_BLOCK)
    b_f32 = per_block_dequantize(b, b_scale, block=SCALE_BLOCK)
    d = _matmul_f32("gmk,gnk->gmn", a_f32, b_f32)
    valid = jnp.arange(max_m, dtype=jnp.int32)[None, :] < counts[:, None]
    return jnp.where(valid[:, :, None], d, 0.0).astype(jnp.bfloat16)


def k_grouped_fp8_gemm_tn_reference(a, a_scale, b, b_scale, k_group_sizes, c=None) -> jax.Array:
    """Reference of the K-grouped (weight-gradient) GEMM: ``D[g] = C[g] + A_g^T @ B_g``, float32.

    The K axis is ragged: group g owns rows ``[koff[g], koff[g+1])`` of the ``[sum_K, ...]``
    operands (``koff`` = exclusive cumsum of ``k_group_sizes``), and ``A_g``, ``B_g`` are those
    rows. Typical use: ``A = dY [tokens, M]``, ``B = X [tokens, N]`` sorted by expert.

    Scale layout (1x128 along K, "per channel"): ``a_scale [ceil(sum_K/128), M]`` and
    ``b_scale [ceil(sum_K/128), N]``, one float32 scale per column per 128-row block of the
    concatenated K axis: ``deq(A)[k, m] = a[k, m] * a_scale[k // 128, m]``. With every
    ``K_g % 128 == 0`` (the kernel's contract) the blocks never straddle groups, and this is
    exactly ``per_channel_cast_to_fp8`` applied to each group's ``[K_g, M]`` slice with the
    per-group ``[K_g/128, M]`` scales concatenated along K (equivalently, applied to all of A).

    Args:
      a: ``[sum_K, M]`` quantized (e4m3), stored K-by-M (the "TN" form: no transpose needed).
      a_scale: ``[ceil(sum_K/128), M]`` float32.
      b: ``[sum_K, N]`` quantized.
      b_scale: ``[ceil(sum_K/128), N]`` float32.
      k_group_sizes: ``[G]`` integer K rows per group, on the device (may be traced). Host data must
        be non-negative multiples of 128 summing to at most ``sum_K`` (``ValueError`` naming
        ``k_group_sizes``); 0 is allowed (``D[g] = C[g]``). Device data: negative sizes count as 0,
        a total past ``sum_K`` is truncated, rows past the total belong to no group; sizes that
        are not multiples of 128 are computed with the global 128-row scale blocks above (the
        kernel's result is unspecified for them).
      c: optional addend ``[G, M, N]`` (or broadcasting to it), added in float32.

    Returns:
      ``[G, M, N]`` float32.
    """
    fn = "k_grouped_fp8_gemm_tn_reference"
    a = _check_operand(fn, "a", a, "2", lambda r: r == 2)
    a_scale = _check_operand(fn, "a_scale", a_scale, "2", lambda r: r == 2)
    b = _check_operand(fn, "b", b, "2", lambda r: r == 2)
    b_scale = _check_operand(fn, "b_scale", b_scale, "2", lambda r: r == 2)
    total_k, m = a.shape
    if b.shape[0] != total_k:
        raise ValueError(
            f"{fn}: a and b must have the same K (dim 0, the grouped reduction axis), got a "
            f"{tuple(a.shape)} and b {tuple(b.shape)}"
        )
    n = b.shape[1]
    kb = _ceil_div(total_k, SCALE_BLOCK)
    _check_scale_shape(fn, "a_scale", a_scale, (kb, m), f"a of shape {tuple(a.shape)} (one scale per 128 K per column)")
    _check_scale_shape(fn, "b_scale", b_scale, (kb, n), f"b of shape {tuple(b.shape)} (one scale per 128 K per column)")
    sizes = _gl.check_group_sizes(
        k_group_sizes, fn=fn, name="k_group_sizes", num_rows=total_k, multiple_of=SCALE_BLOCK, rows_name="sum_K"
    )
    num_groups = sizes.shape[0]
    out_shape = (num_groups, m, n)
    if c is not None:
        c = _check_c(fn, c, out_shape)

    return _k_grouped_core(a, a_scale, b, b_scale, sizes, c)


@jax.jit
def _k_grouped_core(a, a_scale, b, b_scale, sizes, c) -> jax.Array:
    a_f32 = per_channel_dequantize(a, a_scale, gran=SCALE_BLOCK)
    b_f32 = per_channel_dequantize(b, b_scale, gran=SCALE_BLOCK)
    return k_grouped_f32(a_f32, b_f32, sizes, c)


@jax.jit
def k_grouped_f32(a_f32: jax.Array, b_f32: jax.Array, sizes: jax.Array, c: jax.Array | None = None) -> jax.Array:
    """``D[g] = C[g] + A[rows of g]^T @ B[rows of g]`` in float32: ``a_f32 [sum_K, M]``, ``b_f32
    [sum_K, N]``, group g owning rows ``[koff[g], koff[g] + sizes[g])`` (clamped as
    ``grouped_layout`` clamps device sizes). The math of every K-grouped reference (FP8 after
    dequantization, BF16 after an exact cast)."""
    total_k, m = a_f32.shape
    num_groups, n = sizes.shape[0], b_f32.shape[1]
    out_shape = (num_groups, m, n)
    row_ids = _gl._ragged_row_ids(sizes, total_k)

    def one_group(g):
        # Select (not multiply) on both operands so another group's NaN/Inf cannot leak in.
        rows = (row_ids == g)[:, None]
        return _matmul_f32("km,kn->mn", jnp.where(rows, a_f32, 0.0), jnp.where(rows, b_f32, 0.0))

    d = jax.lax.map(one_group, jnp.arange(num_groups, dtype=jnp.int32))
    d = d.reshape(out_shape)  # also right for G = 0
    if c is not None:
        d = d + c.astype(jnp.float32)
    return d
