"""BF16 GEMMs: dense ``bf16_gemm_nt/nn/tn/tt`` and the M-grouped (MoE) ``m_grouped_bf16_gemm_nt_*`` (and
``m_grouped_bf16_gemm_nn_ragged``, ``lax.ragged_dot``'s own layout).

BF16 operands, FP32 accumulation over the whole K (in the tensor cores' FP32 accumulators), BF16
or FP32 output. No scales. On CUDA the ops run the library's sm_90a kernel
(``ffi/kernels/sm90_bf16_gemm.cuh``: DeepGEMM's ``sm90_bf16_gemm`` design); elsewhere they lower to
a jnp reference with the same semantics, so the same program runs on CPU.

Layouts and semantics of the grouped ops mirror the FP8 ones (:mod:`jax_deepgemm.m_grouped_gemm`)
exactly: same contiguous (per-row ids or psum) layout with 128-row aligned segments, same padding
(0) and misaligned-row (NaN) outputs, same masked buffers, same ragged (``jax.lax.ragged_dot``)
layout in one kernel (no gathers).

Alignment rules (checked at trace time): K must be a multiple of 8 (the kernel's TMA loads need
16-byte aligned rows: 8 bf16). M and N are free. The ``nn``, ``tn`` and ``tt`` forms pass their
MN-major operands (A stored ``[K, M]``, B stored ``[K, N]``) to the kernel as they are (bf16 WGMMA
reads transposed shared-memory tiles) when that operand's row pitch is 16-byte aligned (M, resp. N,
a multiple of 8) and, for A, when it has no batch dims; otherwise that operand is transposed in
XLA first (one extra read and write of it).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_deepgemm import _checks
from jax_deepgemm import grouped_layout as _gl
from jax_deepgemm import reference as _ref
from jax_deepgemm.m_grouped_gemm import _group_ends
from jax_deepgemm._primitive import (
    OpSpec,
    batch_by_map,
    batch_size,
    int32_attrs,
    make_primitive,
    move_batch_dim_to_front,
    tile_attrs,
)

__all__ = [
    "bf16_gemm_nt",
    "bf16_gemm_nn",
    "bf16_gemm_tn",
    "bf16_gemm_tt",
    "m_grouped_bf16_gemm_nt_contiguous",
    "m_grouped_bf16_gemm_nt_masked",
    "m_grouped_bf16_gemm_nt_ragged",
    "m_grouped_bf16_gemm_nn_ragged",
    "bf16_gemm_nt_reference",
]

K_ALIGNMENT = 8
"""K must be a multiple of this: 8 bf16 = the 16-byte row pitch TMA needs."""

CONTIGUOUS_ALIGNMENT = 128
"""Row alignment of expert segments in the contiguous layout (the kernel's BLOCK_M), as for FP8."""

MASKED_MAX_M_ALIGNMENT = 128
"""``max_m`` must be a multiple of this: a tile never straddles two groups' buffers."""

# The operand-major mask of the dense kernel (ffi/instances/bf16_gemm_instances.h).
MAJOR_NT, MAJOR_A_MN, MAJOR_B_MN = 0, 1, 2

# Whether nn/tn/tt hand MN-major operands to the kernel as they are (else: XLA transposes, then NT).
_MN_MAJOR_KERNELS = True

_BF16 = (jnp.bfloat16,)
_F32 = (jnp.float32,)


# ---------------------------------------------------------------------------------------------
# References (pure jnp; the non-CUDA lowering and the test oracle)
# ---------------------------------------------------------------------------------------------


def _dot_nt_f32(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a[M, K] @ b[N, K]^T`` of bf16 operands, products and sums in FP32 (exact bf16 products)."""
    return jax.lax.dot_general(a, b, (((a.ndim - 1,), (1,)), ((), ())), precision=jax.lax.Precision.HIGHEST,
                               preferred_element_type=jnp.float32)


def bf16_gemm_nt_reference(a: jax.Array, b: jax.Array, c: jax.Array | None = None, out_dtype: Any = None) -> jax.Array:
    """``D = A @ B.T (+ C)`` with A ``[..., M, K]`` and B ``[N, K]`` bf16, accumulated in FP32.

    ``out_dtype`` defaults to bfloat16 without ``c`` and float32 with it (``c`` is float32).
    """
    if out_dtype is None:
        out_dtype = jnp.bfloat16 if c is None else jnp.float32
    d = _dot_nt_f32(a, b)
    if c is not None:
        d = d + c.astype(jnp.float32)
    return d.astype(out_dtype)


# ---------------------------------------------------------------------------------------------
# Dense primitive (2-D operands only; the public functions fold batch dims into M)
# ---------------------------------------------------------------------------------------------

# Operands: a [M, K] (or [K, M] when major & 1) bf16, b [N, K] (or [K, N] when major & 2) bf16
# [, out: aliased to D (holds C when accumulate=1)]. Outputs: D, and the split-K scratch (u8: the FP32 partials when
# the kernel splits K, else one byte).
# Params: block_m, block_n, cluster_m (0 = heuristic), split_k (0 = heuristic, 1 = none), num_sms (0 = all),
# accumulate (0/1), major (operand-major mask), out_fp32 (0/1: output dtype; not an FFI attribute, the handler reads
# D's dtype), workspace_bytes (the scratch's size: an output shape, not an attribute).


def _k_major(a, b, major: int):
    """The operands as [M, K] and [N, K] (XLA transposes: the reference path only)."""
    return (a.T if major & MAJOR_A_MN else a), (b.T if major & MAJOR_B_MN else b)


def _dense_mnk(a, b, major: int) -> tuple[int, int, int]:
    m, k = a.shape[::-1] if major & MAJOR_A_MN else a.shape
    n = b.shape[1] if major & MAJOR_B_MN else b.shape[0]
    return m, n, k


def _dense_out_shape(a, b, *out, out_fp32: int, major: int, workspace_bytes: int, **_):
    m, n, _k = _dense_mnk(a, b, major)
    return [((m, n), jnp.float32 if out_fp32 else jnp.bfloat16), ((max(workspace_bytes, 1),), jnp.uint8)]


def _dense_reference(a, b, *out, out_fp32: int, accumulate: int, major: int, workspace_bytes: int, **_):
    c = out[0] if (out and accumulate) else None
    a, b = _k_major(a, b, major)
    return (bf16_gemm_nt_reference(a, b, c, jnp.float32 if out_fp32 else jnp.bfloat16),
            jnp.zeros((max(workspace_bytes, 1),), jnp.uint8))


def _dense_attrs(*, out_fp32: int, workspace_bytes: int, **params) -> dict[str, Any]:
    del out_fp32, workspace_bytes  # statics of the primitive (output dtype and scratch size), not kernel attributes
    return int32_attrs(**params)


_TILE_PARAMS = ("block_m", "block_n", "cluster_m", "split_k", "num_sms")


def _dense_params(m: int, n: int, k: int, tile_params: dict[str, int], *, out_fp32: int, major: int) -> dict[str, int]:
    """The dense primitive's params: the tile attributes, the output dtype and the size of the split-K scratch output
    (asked of the kernel's heuristic for this problem, as the handler will decide)."""
    from jax_deepgemm import _ffi

    p = tile_params
    num_sms = p["num_sms"] or _ffi.device_sm_count()
    workspace = _ffi.bf16_gemm_split_workspace_bytes(m, n, k, num_sms, p["block_m"], p["block_n"], p["cluster_m"],
                                                     p["split_k"], bool(out_fp32), major)
    if workspace < 0:
        raise ValueError(f"tile: no compiled kernel runs block_m={p['block_m']}, block_n={p['block_n']}, "
                         f"cluster_m={p['cluster_m']}, split_k={p['split_k']} for this operand layout (major={major}) "
                         f"at M={m}, N={n} (paired tiles are NT only; a split launch holds at most "
                         f"{_SPLIT_K_MAX_TILES} output tiles)")
    return dict(p, out_fp32=int(out_fp32), major=int(major), workspace_bytes=int(workspace))


def _batch_dense(prim, args, dims, **params):
    """vmap rule: batched A-side operands (a, c) fold into M; a batched B loops (lax.map)."""
    size = batch_size(args, dims)
    if dims[1] is None and not params["major"] & MAJOR_A_MN:
        a_side = (0, 2) if len(args) == 3 else (0,)
        flat = list(args)
        for i in a_side:
            x = move_batch_dim_to_front(args[i], dims[i], size)
            flat[i] = x.reshape(size * x.shape[1], *x.shape[2:])
        # the folded M may split K differently
        m, n, k = _dense_mnk(flat[0], flat[1], params["major"])
        params = dict(params, **_dense_params(m, n, k, {key: params[key] for key in _TILE_PARAMS},
                                              out_fp32=params["out_fp32"], major=params["major"]))
        out, scratch = prim.bind(*flat, **params)
        return (out.reshape(size, -1, out.shape[-1]), scratch), (0, None)
    return batch_by_map(prim, args, dims, **params)


_bf16_gemm_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_bf16_gemm",
        target="jax_deepgemm_bf16_gemm_v2",
        out_shapes=_dense_out_shape,
        reference=_dense_reference,
        attrs=_dense_attrs,
        batch=_batch_dense,
        aliased_output_operand=2,
    )
)


SPLIT_K_MAX = 8
"""Most CTAs the dense kernel splits one output tile's K over (kBf16MaxSplitK, ffi/bf16_gemm_launch.h)."""
_SPLIT_K_MAX_BLOCK_N = 128  # Bf16GemmMaySplitK: split-K is compiled into NT tiles up to 128 wide, unpaired
_SPLIT_K_MAX_TILES = 1024  # kBf16SplitMaxTiles: the split launch's arrival counters


def _tile_params(tile, num_sms: int, major: int = MAJOR_NT) -> dict[str, int]:
    """``tile`` = None (heuristic) or (block_m, block_n[, cluster_m[, split_k]]) (0 = heuristic's choice, split_k 1 =
    no split); the kernel's operand majors come from the op (nt/nn/tn/tt), not from ``tile``."""
    tile = tuple(tile) if tile is not None else ()
    if len(tile) not in (0, 2, 3, 4):
        raise ValueError(f"tile must be (block_m, block_n[, cluster_m[, split_k]]), got {tile!r}")
    block_m, block_n, cluster_m, split_k = (*tile, 0, 0, 0, 0)[:4]
    _checks.check_compiled_tile("tile", (block_m, block_n, cluster_m), bf16_gemm_tiles(), "(block_m, block_n, cluster_m)")
    if not isinstance(num_sms, int) or num_sms < 0:
        raise ValueError(f"num_sms must be a non-negative Python int, got {num_sms!r}")
    if not 0 <= int(split_k) <= SPLIT_K_MAX:
        raise ValueError(f"tile: split_k must be in [0, {SPLIT_K_MAX}] (0 = heuristic, 1 = none), got {split_k}")
    if int(split_k) > 1 and (major != MAJOR_NT or int(cluster_m) > 1 or not 0 < int(block_n) <= _SPLIT_K_MAX_BLOCK_N):
        raise ValueError("tile: split_k > 1 needs the NT form (bf16_gemm_nt), an unpaired tile (cluster_m 1) and "
                         f"block_n given, at most {_SPLIT_K_MAX_BLOCK_N}; got tile={tile!r}")
    return dict(block_m=int(block_m), block_n=int(block_n), cluster_m=int(cluster_m), split_k=int(split_k),
                num_sms=int(num_sms))


def _check_k(op: str, k: int) -> None:
    if k % K_ALIGNMENT != 0:
        raise ValueError(
            f"{op}: K={k} must be a multiple of {K_ALIGNMENT} (the kernel's TMA loads need 16-byte aligned bf16 "
            f"rows); pad K with zeros to the next multiple of {K_ALIGNMENT}"
        )


def _validate_dense(op: str, a, b, c, out_dtype, *, a_mn: bool = False, b_mn: bool = False):
    """Checks every operand at trace time (A stored [..., M, K] or, a_mn, [..., K, M]; B stored [N, K]
    or, b_mn, [K, N]); returns (batch, M, N, K, resolved out dtype)."""
    _checks.check_dtype(a, op, "a", _BF16)
    _checks.check_dtype(b, op, "b", _BF16)
    _checks.check_rank(a, op, "a", at_least=2)
    _checks.check_rank(b, op, "b", exact=2)
    *batch, m, k = a.shape
    if a_mn:
        k, m = m, k
    n, k_b = b.shape[::-1] if b_mn else b.shape
    if k_b != k:
        raise ValueError(f"{op}: a and b must share K (the contracting dim): a has K={k}, b has K={k_b}")
    _check_k(op, k)
    if out_dtype is None:
        out_dtype = jnp.bfloat16 if c is None else jnp.float32
    if jnp.dtype(out_dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)):
        raise TypeError(f"{op}: out_dtype must be bfloat16 or float32, got {_checks.dtype_name(out_dtype)}")
    if c is not None:
        _checks.check_dtype(c, op, "c", _F32)
        _checks.check_shape(c, op, "c", (*batch, m, n), "the accumulator has the output's shape")
    return tuple(batch), m, n, k, jnp.dtype(out_dtype)


def _bf16_gemm(op: str, a, b, *, c, out_dtype, num_sms, tile, a_mn: bool = False, b_mn: bool = False) -> jax.Array:
    """D = op(A) op(B)^T for A stored [..., M, K] (a_mn: [..., K, M]) and B stored [N, K] (b_mn: [K, N])."""
    batch, m, n, k, out_dtype = _validate_dense(op, a, b, c, out_dtype, a_mn=a_mn, b_mn=b_mn)
    out_shape = (*batch, m, n)
    params = _tile_params(tile, num_sms, (MAJOR_A_MN if a_mn else 0) | (MAJOR_B_MN if b_mn else 0))
    if k == 0 or m == 0 or n == 0:
        base = c if c is not None else jnp.zeros(out_shape, jnp.float32)
        return base.astype(out_dtype)
    # MN-major operands go to the kernel as stored when it can read them (16-byte row pitch; A 2-D),
    # else they are transposed here.
    if a_mn and not (_MN_MAJOR_KERNELS and not batch and m % 8 == 0):
        a, a_mn = jnp.swapaxes(a, -1, -2), False
    if b_mn and not (_MN_MAJOR_KERNELS and n % 8 == 0):
        b, b_mn = b.T, False
    a2 = a if a_mn else a.reshape(-1, k)
    major = (MAJOR_A_MN if a_mn else 0) | (MAJOR_B_MN if b_mn else 0)
    # The kernel writes FP32 when asked for it or when it adds C (C + A.B^T is rounded once, at the end).
    out_fp32 = int(c is not None or out_dtype == jnp.float32)
    rows = m * int(np.prod(batch)) if batch else m
    extra = () if c is None else (c.reshape(rows, n),)
    params = _dense_params(rows, n, k, params, out_fp32=out_fp32, major=major)
    d, _ = _bf16_gemm_p.bind(a2, b, *extra, accumulate=int(c is not None), **params)
    return d.reshape(out_shape).astype(out_dtype)


def bf16_gemm_nt(
    a: jax.Array,
    b: jax.Array,
    *,
    c: jax.Array | None = None,
    out_dtype: Any = None,
    num_sms: int = 0,
    tile: tuple[int, ...] | None = None,
) -> jax.Array:
    """``D = A @ B.T (+ C)`` over bf16 operands, accumulated in FP32.

    Args:
      a: ``[..., M, K]`` bfloat16 (leading batch dims fold into M).
      b: ``[N, K]`` bfloat16.
      c: optional float32 ``[..., M, N]`` accumulator: ``D = C + A @ B.T``, added in FP32.
      out_dtype: ``bfloat16`` or ``float32``. Default: bfloat16 without ``c``, float32 with it.
      num_sms: use at most this many SMs (0 = all).
      tile: ``(block_m, block_n[, cluster_m[, split_k]])`` forces a compiled kernel shape (tuning and tests; see
        :func:`bf16_gemm_tiles`) and, with ``split_k`` > 1, that many CTAs per output tile sharing its K (NT form,
        unpaired tiles up to 128 wide); None = heuristic, which splits K where few tiles would leave SMs idle
        (decode shapes).

    Returns:
      ``[..., M, N]`` in ``out_dtype``. K must be a multiple of 8 (``ValueError`` otherwise); M and N
      are free. M = 0 or N = 0 give an empty result, K = 0 gives ``C`` (or zeros).
    """
    return _bf16_gemm("bf16_gemm_nt", a, b, c=c, out_dtype=out_dtype, num_sms=num_sms, tile=tile)


def _defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - {"out_dtype", "c", "num_sms", "tile"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    return dict(out_dtype=kwargs.get("out_dtype"), c=kwargs.get("c"), num_sms=kwargs.get("num_sms", 0),
                tile=kwargs.get("tile"))


def bf16_gemm_nn(a, b, **kwargs) -> jax.Array:
    """``D = A @ B`` with A ``[..., M, K]`` and B stored ``[K, N]`` (read MN-major by the kernel when
    N % 8 == 0, else transposed in XLA first). Keywords as :func:`bf16_gemm_nt`."""
    return _bf16_gemm("bf16_gemm_nn", a, b, b_mn=True, **_defaults(kwargs))


def bf16_gemm_tn(a, b, **kwargs) -> jax.Array:
    """``D = A.T @ B`` with A stored ``[..., K, M]`` and B stored ``[K, N]`` (each read MN-major by the
    kernel when its pitch allows, see the module docstring). Keywords as :func:`bf16_gemm_nt`."""
    return _bf16_gemm("bf16_gemm_tn", a, b, a_mn=True, b_mn=True, **_defaults(kwargs))


def bf16_gemm_tt(a, b, **kwargs) -> jax.Array:
    """``D = A.T @ B.T`` with A stored ``[..., K, M]`` and B ``[N, K]``. Keywords as :func:`bf16_gemm_nt`."""
    return _bf16_gemm("bf16_gemm_tt", a, b, a_mn=True, **_defaults(kwargs))


def _bf16_gemm_nt_into(a, b, out: jax.Array, *, tile=None, major: int = 0) -> jax.Array:
    """Test hook: the dense kernel for 2-D operands in their stored layouts (``major``: bit 0 = A is
    [K, M], bit 1 = B is [K, N]) writing into (an XLA-aliased copy of) ``out`` (bf16 or float32, no
    accumulate). Tests fill ``out`` with NaN so an unwritten element shows."""
    m, n, k = _dense_mnk(a, b, int(major))
    params = _dense_params(m, n, k, _tile_params(tile, 0, int(major)), out_fp32=int(out.dtype == jnp.float32),
                           major=int(major))
    return _bf16_gemm_p.bind(a, b, out, accumulate=0, **params)[0]


def bf16_gemm_tiles() -> list[tuple[int, int, int, int]]:
    """Compiled ``(block_m, block_n, cluster_m, major)`` shapes of the BF16 kernel (empty without CUDA
    kernels); ``major``: 0 NT (dense and grouped), 1 TT, 2 NN, 3 TN (dense only)."""
    from jax_deepgemm import _ffi

    c_module = getattr(_ffi, "_C", None)
    if c_module is None or not hasattr(c_module, "bf16_gemm_tiles"):
        return []
    return [tuple(t) for t in c_module.bf16_gemm_tiles()]


# ---------------------------------------------------------------------------------------------
# M-grouped contiguous (MoE prefill/training)
# ---------------------------------------------------------------------------------------------


def _contiguous_rows(a, b, row_ids, *out, **_):
    """What the kernel computes, in jnp: each 128-row tile uses the expert of its first row; rows of
    that expert get ``A[r] @ B[g]^T``, padding rows (-1, or an id outside [0, G)) get 0, and a row of
    another expert (a misaligned segment) gets NaN."""
    m, num_groups = a.shape[0], b.shape[0]
    ids = jnp.where((row_ids >= 0) & (row_ids < num_groups), row_ids, -1)
    tile_group = ids[(jnp.arange(m) // CONTIGUOUS_ALIGNMENT) * CONTIGUOUS_ALIGNMENT]
    valid = _ref._rows_by_group_matmul(a.astype(jnp.float32), b.astype(jnp.float32), jnp.where(ids == tile_group, ids, -1))
    misaligned = (ids >= 0) & (ids != tile_group)
    return (jnp.where(misaligned[:, None], jnp.nan, valid).astype(jnp.bfloat16),)


_contiguous_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_m_grouped_bf16_gemm_nt_contiguous",
        target="jax_deepgemm_m_grouped_bf16_gemm_nt_contiguous_v1",
        out_shapes=lambda a, b, ids, *out, **_: [((a.shape[0], b.shape[1]), jnp.bfloat16)],
        reference=_contiguous_rows,
        attrs=int32_attrs,
        batch=batch_by_map,
        aliased_output_operand=3,
    )
)


def _check_grouped_operands(op: str, a, b, *, a_rank: int, b_k_axis: int = 2):
    """dtype/rank/K checks shared by the grouped ops (B's K on axis ``b_k_axis``); returns K."""
    _checks.check_dtype(a, op, "a", _BF16)
    _checks.check_dtype(b, op, "b", _BF16)
    _checks.check_rank(a, op, "a", exact=a_rank)
    _checks.check_rank(b, op, "b", exact=3)
    k = a.shape[-1]
    if b.shape[b_k_axis] != k:
        raise ValueError(f"{op}: a and b must share K (the contracting dim, b's axis {b_k_axis}): a has K={k}, b "
                         f"has shape {tuple(b.shape)}")
    _check_k(op, k)
    return k


def _validate_contiguous(op: str, a, b, grouped_layout, use_psum_layout):
    _check_grouped_operands(op, a, b, a_rank=2)
    if b.shape[0] == 0:
        raise ValueError(f"{op}: b must hold at least one group (got G = 0)")
    use_psum_layout = _ref._check_static_bool(op, "use_psum_layout", use_psum_layout)
    m, num_groups = a.shape[0], b.shape[0]
    if use_psum_layout:
        psum = _gl.check_psum(grouped_layout, fn=op, name="grouped_layout", num_rows=m, num_groups=num_groups,
                              alignment=CONTIGUOUS_ALIGNMENT)
        row_ids = _gl._psum_row_ids(psum, m, CONTIGUOUS_ALIGNMENT)
    else:
        row_ids = _gl.check_row_ids(grouped_layout, fn=op, name="grouped_layout", num_groups=num_groups, num_rows=m,
                                    alignment=CONTIGUOUS_ALIGNMENT)
    return row_ids.astype(jnp.int32)


def m_grouped_bf16_gemm_nt_contiguous(
    a: jax.Array,
    b: jax.Array,
    grouped_layout: jax.Array,
    *,
    use_psum_layout: bool = False,
    num_sms: int = 0,
    block_n: int = 0,
) -> jax.Array:
    """MoE grouped GEMM over a contiguous row layout: ``D[r] = A[r] @ B[expert(r)]^T`` in BF16.

    Args:
      a: ``[M, K]`` bfloat16 rows of all experts.
      b: ``[G, N, K]`` bfloat16 expert weights.
      grouped_layout: int32. ``use_psum_layout=False``: ``[M]`` expert id per row, ``-1`` for
        padding rows. ``use_psum_layout=True``: ``[G]`` cumulative segment ends; expert g owns rows
        ``[align(psum[g-1], 128), psum[g])``. Every expert segment starts at a multiple of 128 rows.
      use_psum_layout: static, selects the reading of ``grouped_layout``.
      num_sms: use at most this many SMs (0 = all).
      block_n: force a compiled tile width (tuning, tests); 0 = heuristic.

    Returns:
      ``[M, N]`` bfloat16, FP32-accumulated. Padding rows (id -1, ids outside ``[0, G)``, psum gaps
      and rows past the last segment) are 0. Host-data layouts are validated at trace time
      (``ValueError`` naming ``grouped_layout``); with device data, a row whose expert differs from
      the expert of the first row of its 128-row tile (a misaligned segment) comes out NaN. K must be
      a multiple of 8.
    """
    op = "m_grouped_bf16_gemm_nt_contiguous"
    row_ids = _validate_contiguous(op, a, b, grouped_layout, use_psum_layout)
    if not isinstance(num_sms, int) or num_sms < 0:
        raise ValueError(f"{op}: num_sms must be a non-negative Python int, got {num_sms!r}")
    m, n = a.shape[0], b.shape[1]
    if m == 0 or n == 0:
        return jnp.zeros((m, n), jnp.bfloat16)
    (d,) = _contiguous_p.bind(a, b, row_ids, block_n=int(block_n), num_sms=int(num_sms))
    return d


def _ragged_reference(a, b, ends, *out, **_):
    ids = _gl._rows_of_ends(ends, a.shape[0])
    return (_ref._rows_by_group_matmul(a.astype(jnp.float32), b.astype(jnp.float32), ids).astype(jnp.bfloat16),)


_ragged_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_m_grouped_bf16_gemm_nt_ragged",
        target="jax_deepgemm_m_grouped_bf16_gemm_nt_ragged_v1",
        out_shapes=lambda a, b, ends, *out, **_: [((a.shape[0], b.shape[1]), jnp.bfloat16)],
        reference=_ragged_reference,
        attrs=int32_attrs,
        batch=batch_by_map,
        aliased_output_operand=3,
    )
)


def m_grouped_bf16_gemm_nt_ragged(
    a: jax.Array,
    b: jax.Array,
    group_sizes: jax.Array,
    *,
    num_sms: int = 0,
    tile: tuple[int, int] | None = None,
) -> jax.Array:
    """MoE grouped GEMM with ``jax.lax.ragged_dot`` semantics, BF16 in and out (FP32 accumulation).

    Group g owns rows ``[sum(group_sizes[:g]), sum(group_sizes[:g+1]))`` of A (any sizes, empty
    groups allowed, no alignment) and ``D[r] = A[r] @ B[g]^T`` there; rows at or past
    ``sum(group_sizes)`` are 0.

    Args:
      a: ``[M, K]`` bfloat16.
      b: ``[G, N, K]`` bfloat16 (``ragged_dot``'s rhs is ``[G, K, N]``: pass ``swapaxes(rhs, 1, 2)``).
      group_sizes: ``[G]`` integer rows per group. Host data must be non-negative and sum to at most
        M (``ValueError`` naming ``group_sizes``); device data: negative sizes count as 0 and rows
        past M are dropped (later groups first).
      num_sms: use at most this many SMs (0 = all).
      tile: ``(block_m, block_n)`` forces a compiled tile (tests, tuning); None = heuristic.

    Implementation: as the FP8 ragged op, one kernel over A and D in place. A row tile that
    straddles a group boundary is computed once per group it holds, each pass storing only that
    group's rows, so unaligned groups cost at most G extra row tiles (no gathers).
    """
    op = "m_grouped_bf16_gemm_nt_ragged"
    _check_grouped_operands(op, a, b, a_rank=2)
    return _bind_ragged(op, _ragged_p, a, b, group_sizes, b.shape[1], num_sms, tile)


def _bind_ragged(op: str, prim, a, b, group_sizes, n: int, num_sms: int, tile) -> jax.Array:
    """The NT and NN ragged ops after their operand checks: sizes checked, empty shapes answered
    here, then one kernel call with the group ends."""
    if not isinstance(num_sms, int) or num_sms < 0:
        raise ValueError(f"{op}: num_sms must be a non-negative Python int, got {num_sms!r}")
    m, num_groups = a.shape[0], b.shape[0]
    sizes = _gl.check_group_sizes(group_sizes, fn=op, num_rows=m, num_groups=num_groups, rows_name="M")
    if m == 0 or n == 0 or num_groups == 0:
        return jnp.zeros((m, n), jnp.bfloat16)
    (d,) = prim.bind(a, b, _group_ends(sizes, m), **tile_attrs(tile), num_sms=int(num_sms))
    return d


def _ragged_nn_reference(a, b, ends, *out, **_):
    return _ragged_reference(a, jnp.swapaxes(b, 1, 2), ends)


_ragged_nn_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_m_grouped_bf16_gemm_nn_ragged",
        target="jax_deepgemm_m_grouped_bf16_gemm_nn_ragged_v1",
        out_shapes=lambda a, b, ends, *out, **_: [((a.shape[0], b.shape[2]), jnp.bfloat16)],
        reference=_ragged_nn_reference,
        attrs=int32_attrs,
        batch=batch_by_map,
        aliased_output_operand=3,
    )
)

NN_RAGGED_K_ALIGNMENT = 64
"""``m_grouped_bf16_gemm_nn_ragged`` reads ``b [G, K, N]`` in place when K is a multiple of this (a
64-row load never reaches into the next expert) and N of 8; otherwise B is transposed in XLA first."""


def m_grouped_bf16_gemm_nn_ragged(
    a: jax.Array,
    b: jax.Array,
    group_sizes: jax.Array,
    *,
    num_sms: int = 0,
    tile: tuple[int, int] | None = None,
) -> jax.Array:
    """``jax.lax.ragged_dot(a, b, group_sizes)`` exactly in its layout: BF16, B ``[G, K, N]``.

    As :func:`m_grouped_bf16_gemm_nt_ragged` (same groups, zero tail, one kernel, no gathers) with
    the experts' matrices stored ``[K, N]``: ``D[r] = A[r] @ B[g]``. This is also the dgrad of the NT
    form: ``dX = ragged(dY, W)`` with the forward's ``W [G, N, K]`` read as ``[G, K'=N, N'=K]``.

    Args:
      a: ``[M, K]`` bfloat16.
      b: ``[G, K, N]`` bfloat16, read in place when K is a multiple of 64 and N of 8 (else transposed
        in XLA first: one extra pass over B).
      group_sizes, num_sms, tile: as :func:`m_grouped_bf16_gemm_nt_ragged` (``tile`` picks among the
        MN-major kernels, ``bf16_gemm_tiles()`` with major 2, when B is read in place).
    """
    op = "m_grouped_bf16_gemm_nn_ragged"
    k = _check_grouped_operands(op, a, b, a_rank=2, b_k_axis=1)
    if k % NN_RAGGED_K_ALIGNMENT != 0 or b.shape[2] % 8 != 0:
        return m_grouped_bf16_gemm_nt_ragged(a, jnp.swapaxes(b, 1, 2), group_sizes, num_sms=num_sms, tile=tile)
    return _bind_ragged(op, _ragged_nn_p, a, b, group_sizes, b.shape[2], num_sms, tile)


def _m_grouped_ragged_nn_into(a, b, group_sizes, out: jax.Array, *, tile=None) -> jax.Array:
    """Test hook: the NN ragged kernel (B [G, K, N] in place) writing into a pre-filled ``out``."""
    ends = _group_ends(jnp.asarray(group_sizes, jnp.int32), a.shape[0])
    return _ragged_nn_p.bind(a, b, ends, out, **tile_attrs(tile), num_sms=0)[0]


def _m_grouped_ragged_into(a, b, group_sizes, out: jax.Array, *, tile=None) -> jax.Array:
    """Test hook: the ragged kernel writing into (an XLA-aliased copy of) a pre-filled ``out``."""
    ends = _group_ends(jnp.asarray(group_sizes, jnp.int32), a.shape[0])
    return _ragged_p.bind(a, b, ends, out, **tile_attrs(tile), num_sms=0)[0]


def _m_grouped_contiguous_into(a, b, row_ids, out: jax.Array, *, block_n: int = 0) -> jax.Array:
    """Test hook: the contiguous kernel writing into (an XLA-aliased copy of) a pre-filled ``out``."""
    return _contiguous_p.bind(a, b, row_ids, out, block_n=int(block_n), num_sms=0)[0]


# ---------------------------------------------------------------------------------------------
# M-grouped masked (decode under CUDA graphs): fixed [G, max_m] buffers, valid counts on the device
# ---------------------------------------------------------------------------------------------


def _masked_reference(a, b, masked_m, *out, **_):
    max_m = a.shape[1]
    counts = jnp.clip(masked_m, 0, max_m)
    d = jnp.einsum("gmk,gnk->gmn", a, b, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)
    valid = jnp.arange(max_m, dtype=jnp.int32)[None, :] < counts[:, None]
    return (jnp.where(valid[:, :, None], d, 0.0).astype(jnp.bfloat16),)


_masked_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_m_grouped_bf16_gemm_nt_masked",
        target="jax_deepgemm_m_grouped_bf16_gemm_nt_masked_v1",
        out_shapes=lambda a, b, mm, *out, **_: [((a.shape[0], a.shape[1], b.shape[1]), jnp.bfloat16)],
        reference=_masked_reference,
        attrs=int32_attrs,
        batch=batch_by_map,
        aliased_output_operand=3,
    )
)


def m_grouped_bf16_gemm_nt_masked(
    a: jax.Array,
    b: jax.Array,
    masked_m: jax.Array,
    *,
    expected_m: int = 0,
    num_sms: int = 0,
    tile: tuple[int, int] | None = None,
) -> jax.Array:
    """MoE grouped GEMM over fixed per-expert buffers: ``D[g, r] = A[g, r] @ B[g]^T`` for ``r < masked_m[g]``.

    Args:
      a: ``[G, max_m, K]`` bfloat16; ``max_m`` must be a multiple of 128.
      b: ``[G, N, K]`` bfloat16.
      masked_m: ``[G]`` int32 valid rows per group. Host data must lie in ``[0, max_m]``
        (``ValueError``); device values are clamped to it.
      expected_m: static hint, the typical ``masked_m`` (picks the tile shape; 0 = max_m). It never
        bounds the computation.
      num_sms: use at most this many SMs (0 = all).
      tile: ``(block_m, block_n)`` forces a compiled tile (tuning, tests); None = heuristic.

    Returns:
      ``[G, max_m, N]`` bfloat16. Only ``D[g, :masked_m[g]]`` is defined: the GPU kernel leaves the
      other rows unspecified (rows inside a tile it ran hold the product of those rows of A, rows of
      tiles it skipped hold whatever the output buffer held). The CPU path writes 0.
    """
    op = "m_grouped_bf16_gemm_nt_masked"
    k = _check_grouped_operands(op, a, b, a_rank=3)
    num_groups, max_m, _ = a.shape
    if b.shape[0] != num_groups:
        raise ValueError(f"{op}: a and b must have the same number of groups, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    if max_m % MASKED_MAX_M_ALIGNMENT != 0:
        raise ValueError(f"{op}: max_m = a.shape[1] = {max_m} must be a multiple of {MASKED_MAX_M_ALIGNMENT}")
    counts = _gl.check_masked_m(masked_m, fn=op, num_groups=num_groups, max_m=max_m).astype(jnp.int32)
    if not isinstance(expected_m, int) or expected_m < 0:
        raise ValueError(f"{op}: expected_m must be a non-negative Python int, got {expected_m!r}")
    if not isinstance(num_sms, int) or num_sms < 0:
        raise ValueError(f"{op}: num_sms must be a non-negative Python int, got {num_sms!r}")
    del k
    n = b.shape[1]
    if num_groups == 0 or max_m == 0 or n == 0:
        return jnp.zeros((num_groups, max_m, n), jnp.bfloat16)
    (d,) = _masked_p.bind(a, b, counts, expected_m=min(expected_m, max_m), **tile_attrs(tile), num_sms=int(num_sms))
    return d


def _m_grouped_masked_into(a, b, masked_m, out: jax.Array, *, expected_m: int = 0, tile=None) -> jax.Array:
    """Test hook: the masked kernel writing into (an XLA-aliased copy of) a pre-filled ``out``."""
    return _masked_p.bind(a, b, masked_m, out, expected_m=expected_m, **tile_attrs(tile),
                          num_sms=0)[0]
