"""Dense FP8 GEMMs with DeepSeek's block scaling: ``fp8_gemm_nt`` and its ``nn``/``tn``/``tt`` forms.

Recipes (all scales FP32, K blocks of 128):
  * A: 1x128 per-token scales ``a_scale[..., M, ceil(K/128)]``.
  * B: either 128x128 block scales ``b_scale[ceil(N/128), ceil(K/128)]`` ("1D2D") or per-row
    (1x128) scales ``b_scale[N, ceil(K/128)]`` ("1D1D", what weight gradients need).

Kernels: 1D2D with BF16 output runs the ``fp8_gemm_nt_1d2d`` kernel; every other combination (FP32
output, an accumulator ``c``, per-row B scales) runs the ``1d1d`` kernel, to which 128x128 block scales
are passed expanded per row (exact). On non-CUDA platforms both lower to the jnp reference.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jax_deepgemm import _checks, _ffi
from jax_deepgemm._primitive import OpSpec, batch_size, int32_attrs, make_primitive, move_batch_dim_to_front
from jax_deepgemm.reference import fp8_gemm_nt_reference

_BLOCK = 128
_FP8 = (jnp.float8_e4m3fn,)
_F32 = (jnp.float32,)


# ---------------------------------------------------------------------------------------------
# Primitives (2-D operands only; the public functions fold batch dims into M)
# ---------------------------------------------------------------------------------------------


# Params of both primitives: block_m, block_n, cluster_m, cluster_n (0 = heuristic), num_sms (0 = all); the 1D1D one
# also takes accumulate (1: the aliased output operand holds C and D = C + A.B^T), the 1D2D one sfa_mn_major (1:
# a_scale is given MN-major, [ceil(K/128), align(M, 4)]).
# Operands: a, a_scale, b, b_scale (1D1D: transposed per-row scales) [, out: aliased to D].

# The 1D2D kernel's 256-row tiles stream each stage's 256 A scales with one TMA load when the scales are
# MN-major, instead of 256 4-byte copies through L1: 10-18 % faster at M = 4096 (H200, session 9), while
# smaller tiles read MN-major scales slower. So from this M on, fp8_gemm_nt asks the kernel's heuristic
# whether it would run a 256-row tile and, if so, transposes the scales: one small XLA kernel (0.9 MB at
# M = 4096, K = 7168), not worth its launch below.
_SFA_MN_MAJOR_MIN_M = 1024


def _wants_mn_major_sfa(m: int, n: int, k: int, params: dict[str, int]) -> bool:
    if m < _SFA_MN_MAJOR_MIN_M:
        return False
    num_sms = params["num_sms"] or _ffi.device_sm_count()
    return _ffi.fp8_gemm_prefers_mn_major_sfa(m, n, k, num_sms, params["block_m"], params["block_n"],
                                              params["cluster_m"], params["cluster_n"])


def _sfa_mn_major(a_scale: jax.Array) -> jax.Array:
    """``[M, ceil(K/128)]`` scales as ``[ceil(K/128), align(M, 4)]`` (rows 16-byte aligned for TMA)."""
    m = a_scale.shape[0]
    return jnp.pad(a_scale.T, ((0, 0), (0, (-m) % 4)))


def _sfa_k_major(a_scale: jax.Array, sfa_mn_major: int, m: int) -> jax.Array:
    return a_scale[:, :m].T if sfa_mn_major else a_scale


def _tile_params(tile, num_sms: int) -> dict[str, int]:
    """``tile`` = None (heuristic) or (block_m, block_n[, cluster_m[, cluster_n[, split_k]]]) (0 = heuristic's choice;
    split_k 1 = no split-K)."""
    tile = tuple(tile) if tile is not None else ()
    if len(tile) not in (0, 2, 3, 4, 5):
        raise ValueError(f"tile must be (block_m, block_n[, cluster_m[, cluster_n[, split_k]]]), got {tile!r}")
    block_m, block_n, cluster_m, cluster_n, split_k = (*tile, 0, 0, 0, 0, 0)[:5]
    if int(split_k) == -1:
        raise ValueError("tile: split_k must be >= 0 (0 = heuristic, 1 = none) or < -1 (that split through global "
                         "memory), got -1")
    return dict(block_m=int(block_m), block_n=int(block_n), cluster_m=int(cluster_m), cluster_n=int(cluster_n),
                num_sms=int(num_sms), split_k=int(split_k))


_TILE_FIELDS = "(block_m, block_n, cluster_m, cluster_n)"


def _tile_fields(params: dict[str, int]) -> tuple[int, int, int, int]:
    return params["block_m"], params["block_n"], params["cluster_m"], params["cluster_n"]


def _params_1d1d(params: dict[str, int]) -> dict[str, int]:
    """The 1D1D kernel has no split-K (its FP32 output may accumulate into C)."""
    params = dict(params)
    if abs(params.pop("split_k")) > 1:
        raise ValueError("tile: split_k applies to the BF16-output (128x128 block-scaled B) kernel only")
    _checks.check_compiled_tile("tile", _tile_fields(params), _ffi.fp8_gemm_tiles()["1d1d"], _TILE_FIELDS)
    return params


_SPLIT_K_MAX_BLOCK = 128  # kFp8SplitKMaxBlockN and the one-wave BLOCK_M limit (ffi/fp8_gemm_launch.h)


_SPLIT_GLOBAL_MAX_AREA = 128 * 64  # Fp8GemmMaySplitGlobal (ffi/fp8_gemm_launch.h)
_TILE_PARAMS = ("block_m", "block_n", "cluster_m", "cluster_n", "num_sms", "split_k")


def _params_1d2d(m: int, n: int, k: int, params: dict[str, int], sfa_mn_major: bool) -> dict[str, int]:
    """The 1D2D primitive's params: the tile attributes, the A-scale layout and the size of its split-K scratch output
    (asked of the kernel's heuristic for this problem, as the handler will decide)."""
    _checks.check_compiled_tile("tile", _tile_fields(params), _ffi.fp8_gemm_tiles()["1d2d"], _TILE_FIELDS)
    split = abs(params["split_k"])
    if split > 1 and (params["block_m"] > _SPLIT_K_MAX_BLOCK or params["block_n"] > _SPLIT_K_MAX_BLOCK):
        raise ValueError(f"tile: split_k is compiled into tiles up to {_SPLIT_K_MAX_BLOCK} x {_SPLIT_K_MAX_BLOCK} only, "
                         f"got block_m={params['block_m']}, block_n={params['block_n']}")
    if split > 1 and (params["cluster_m"] > 1 or params["cluster_n"] > 1):
        raise ValueError("tile: split_k needs an unpaired tile (cluster_m = cluster_n = 1): the splits of a tile share "
                         f"its output, got cluster_m={params['cluster_m']}, cluster_n={params['cluster_n']}")
    if params["split_k"] < -1 and not 0 < params["block_m"] * params["block_n"] <= _SPLIT_GLOBAL_MAX_AREA:
        raise ValueError("tile: a split through global memory (split_k < -1) needs block_m and block_n, and is compiled "
                         f"into tiles up to 128 x 64 only, got block_m={params['block_m']}, "
                         f"block_n={params['block_n']}")
    num_sms = params["num_sms"] or _ffi.device_sm_count()
    workspace = _ffi.fp8_gemm_split_workspace_bytes(m, n, k, num_sms, params["block_m"], params["block_n"],
                                                    params["cluster_m"], params["cluster_n"], params["split_k"],
                                                    sfa_mn_major)
    return dict(params, sfa_mn_major=int(sfa_mn_major), workspace_bytes=int(workspace))


def _out_shape_1d2d(a, a_scale, b, b_scale, *out, workspace_bytes: int, **_):
    # D, and the split-K scratch: the FP32 partials of a split through global memory, else one byte (an XLA buffer
    # either way)
    return [((a.shape[0], b.shape[0]), jnp.bfloat16), ((max(workspace_bytes, 1),), jnp.uint8)]


def _attrs_1d2d(workspace_bytes: int, **params) -> dict:
    """The scratch size is the shape of an output, not an attribute."""
    return int32_attrs(**params)


def _out_shape_1d1d(a, a_scale, b, b_scale_t, *out, **_):
    return [((a.shape[0], b.shape[0]), jnp.float32)]


def _reference_1d2d(a, a_scale, b, b_scale, *out, sfa_mn_major: int = 0, workspace_bytes: int, **_):
    a_scale = _sfa_k_major(a_scale, sfa_mn_major, a.shape[0])
    return (fp8_gemm_nt_reference(a, a_scale, b, b_scale, out_dtype=jnp.bfloat16, b_scale_kind="block"),
            jnp.zeros((max(workspace_bytes, 1),), jnp.uint8))


def _reference_1d1d(a, a_scale, b, b_scale_t, *out, accumulate: int, **_):
    b_scale = b_scale_t[:, : b.shape[0]].T
    acc = out[0] if (out and accumulate) else None
    return (fp8_gemm_nt_reference(a, a_scale, b, b_scale, c=acc, out_dtype=jnp.float32, b_scale_kind="channel"),)


def _batch_gemm(prim, args, dims, **params):
    """vmap rule: batched A-side operands (a, a_scale, c) fold into M; a batched B loops (lax.map)."""
    size = batch_size(args, dims)
    if params.get("sfa_mn_major"):
        # MN-major scales do not fold into M: hand them over K-major (a_scale batched like a).
        a = move_batch_dim_to_front(args[0], dims[0], size)
        a_scale = move_batch_dim_to_front(args[1], dims[1], size)
        args = (a, jnp.swapaxes(a_scale[:, :, : a.shape[1]], 1, 2), *args[2:])
        dims = (0, 0, *dims[2:])
        params = dict(params, sfa_mn_major=0)
    a_side = (0, 1, 4) if len(args) == 5 else (0, 1)
    if dims[2] is None and dims[3] is None:
        flat = list(args)
        for i in a_side:
            x = move_batch_dim_to_front(args[i], dims[i], size)
            flat[i] = x.reshape(size * x.shape[1], *x.shape[2:])
        if "workspace_bytes" in params:  # the folded M may split K differently
            tile = {key: params[key] for key in _TILE_PARAMS}
            params = _params_1d2d(flat[0].shape[0], flat[2].shape[0], flat[0].shape[1], tile,
                                  bool(params["sfa_mn_major"]))
        out, *rest = prim.bind(*flat, **params)
        return (out.reshape(size, -1, out.shape[-1]), *rest), (0,) + (None,) * len(rest)
    moved = [move_batch_dim_to_front(x, d, size) for x, d in zip(args, dims)]
    outs = jax.lax.map(lambda xs: tuple(prim.bind(*xs, **params)), tuple(moved))
    return outs, (0,) * len(outs)


_fp8_gemm_nt_1d2d_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_fp8_gemm_nt_1d2d",
        target="jax_deepgemm_fp8_gemm_nt_1d2d_v4",
        out_shapes=_out_shape_1d2d,
        reference=_reference_1d2d,
        attrs=_attrs_1d2d,
        batch=_batch_gemm,
        aliased_output_operand=4,
    )
)

_fp8_gemm_nt_1d1d_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_fp8_gemm_nt_1d1d",
        target="jax_deepgemm_fp8_gemm_nt_1d1d_v2",
        out_shapes=_out_shape_1d1d,
        reference=_reference_1d1d,
        attrs=int32_attrs,
        batch=_batch_gemm,
        aliased_output_operand=4,
    )
)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def _validate(op: str, a, a_scale, b, b_scale, c, out_dtype) -> tuple[str, Any]:
    """Checks every operand at trace time; returns (b scale kind, resolved out dtype)."""
    _checks.check_dtype(a, op, "a", _FP8)
    _checks.check_dtype(b, op, "b", _FP8)
    _checks.check_dtype(a_scale, op, "a_scale", _F32)
    _checks.check_dtype(b_scale, op, "b_scale", _F32)
    _checks.check_rank(a, op, "a", at_least=2)
    _checks.check_rank(b, op, "b", exact=2)
    *batch, m, k = a.shape
    n, k_b = b.shape
    if k_b != k:
        raise ValueError(f"{op}: a and b must share K (the contracting dim): a has K={k}, b has K={k_b}")
    if k % 16 != 0:
        raise ValueError(
            f"{op}: K={k} must be a multiple of 16 (the kernel's TMA loads need 16-byte aligned rows); "
            "pad K with zeros (and their scales with anything) to the next multiple of 16"
        )
    k_blocks = _checks.ceil_div(k, _BLOCK)
    _checks.check_shape(a_scale, op, "a_scale", (*batch, m, k_blocks), "1x128 per-token scales [..., M, ceil(K/128)]")
    block_shape = (_checks.ceil_div(n, _BLOCK), k_blocks)
    channel_shape = (n, k_blocks)
    if tuple(b_scale.shape) == block_shape:
        kind = "block"
    elif tuple(b_scale.shape) == channel_shape:
        kind = "channel"
    else:
        raise ValueError(
            f"{op}: b_scale must have shape {block_shape} (128x128 block scales) or {channel_shape} "
            f"(per-row 1x128 scales) for b of shape {tuple(b.shape)}, got {tuple(b_scale.shape)}"
        )
    if out_dtype is None:
        out_dtype = jnp.bfloat16 if (kind == "block" and c is None) else jnp.float32
    if jnp.dtype(out_dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)):
        raise TypeError(f"{op}: out_dtype must be bfloat16 or float32, got {_checks.dtype_name(out_dtype)}")
    if c is not None:
        _checks.check_dtype(c, op, "c", _F32)
        _checks.check_shape(c, op, "c", (*batch, m, n), "the accumulator has the output's shape")
    return kind, jnp.dtype(out_dtype)


def fp8_gemm_nt(
    a: tuple[jax.Array, jax.Array],
    b: tuple[jax.Array, jax.Array],
    *,
    out_dtype: Any = None,
    c: jax.Array | None = None,
    num_sms: int = 0,
    tile: tuple[int, int] | None = None,
) -> jax.Array:
    """``D = A @ B.T (+ C)`` over FP8 operands with DeepSeek block scales.

    Args:
      a: ``(a_fp8, a_scale)``: ``[..., M, K]`` float8_e4m3fn and ``[..., M, ceil(K/128)]`` float32.
      b: ``(b_fp8, b_scale)``: ``[N, K]`` float8_e4m3fn and float32 scales of shape
        ``[ceil(N/128), ceil(K/128)]`` (128x128 blocks) or ``[N, ceil(K/128)]`` (per row, 1x128).
      out_dtype: ``bfloat16`` or ``float32``. Default: bfloat16 for block-scaled B without ``c``,
        else float32.
      c: optional float32 ``[..., M, N]`` accumulator: ``D = C + A @ B.T`` (computed in FP32).
      num_sms: use at most this many SMs (0 = all), e.g. to leave SMs to overlapping communication.
      tile: ``(block_m, block_n[, cluster_m[, cluster_n[, split_k]]])`` forces a compiled kernel shape (tuning and
        tests; see ``jax_deepgemm._ffi.fp8_gemm_tiles()``; cluster_m/cluster_n = 2: CTA pairs multicasting B/A;
        split_k > 1 shares each tile's K-blocks among a cluster of that many CTAs (at most 8; BF16-output kernel,
        unpaired tiles up to 128 x 128; a forced split launches tiles x split_k CTAs whatever num_sms says),
        split_k < -1 the same split (at most 4) without clusters, its FP32 partials summed through global memory,
        1 = never); 0 entries and None = heuristic.

    Returns:
      ``[..., M, N]`` in ``out_dtype``. M = 0 or N = 0 give an empty result; K = 0 gives ``C`` (or zeros).
      K must be a multiple of 16. NaN/Inf in the inputs or scales propagate as in a float matmul:
      any output element whose dot product touches one is NaN/Inf.
    """
    return _fp8_gemm("fp8_gemm_nt", a, b, out_dtype=out_dtype, c=c, num_sms=num_sms, tile=tile)


def _fp8_gemm(op: str, a, b, *, out_dtype, c, num_sms, tile) -> jax.Array:
    """fp8_gemm_nt's body; ``op`` names the public entry point in error messages."""
    a_fp8, a_scale = _checks.check_pair(a, op, "a")
    b_fp8, b_scale = _checks.check_pair(b, op, "b")
    kind, out_dtype = _validate(op, a_fp8, a_scale, b_fp8, b_scale, c, out_dtype)
    *batch, m, k = a_fp8.shape
    n = b_fp8.shape[0]
    out_shape = (*batch, m, n)
    if k == 0 or m == 0 or n == 0:
        base = c if c is not None else jnp.zeros(out_shape, jnp.float32)
        return base.astype(out_dtype)
    params = _tile_params(tile, num_sms)

    a2 = a_fp8.reshape(-1, k)
    sa2 = a_scale.reshape(a2.shape[0], -1)
    if kind == "block" and c is None and out_dtype == jnp.bfloat16:
        mn_major = _wants_mn_major_sfa(a2.shape[0], n, k, params)
        sa = _sfa_mn_major(sa2) if mn_major else sa2
        d, _ = _fp8_gemm_nt_1d2d_p.bind(a2, sa, b_fp8, b_scale, **_params_1d2d(a2.shape[0], n, k, params, mn_major))
        return d.reshape(out_shape)
    b_scale_t = _per_row_scales_transposed(b_scale, n, kind)
    extra = () if c is None else (c.reshape(a2.shape[0], n),)
    (d,) = _fp8_gemm_nt_1d1d_p.bind(a2, sa2, b_fp8, b_scale_t, *extra, accumulate=int(c is not None),
                                    **_params_1d1d(params))
    return d.reshape(out_shape).astype(out_dtype)


def _per_row_scales_transposed(b_scale: jax.Array, n: int, kind: str) -> jax.Array:
    """B scales as the 1D1D kernel reads them: per row (128x128 blocks expanded, exact), transposed to
    ``[ceil(K/128), align(N, 4)]`` so the kernel streams each K block's scales with one TMA load."""
    rows = b_scale if kind == "channel" else jnp.repeat(b_scale, _BLOCK, axis=0)[:n]
    return jnp.pad(rows.T, ((0, 0), (0, (-n) % 4)))


def _fp8_gemm_nt_into(a, b, out: jax.Array, *, tile: tuple[int, int] | None = None,
                      sfa_mn_major: bool | None = None) -> jax.Array:
    """Test hook: runs the kernel for 2-D operands writing into (an XLA-aliased copy of) ``out``.

    Tests fill ``out`` with NaN first, so any element the kernel fails to write shows up. BF16
    ``out`` with block-scaled B selects the 1D2D kernel; FP32 ``out`` the 1D1D one (no accumulate).
    ``sfa_mn_major`` forces the 1D2D kernel's A-scale layout (None: as ``fp8_gemm_nt`` picks it).
    """
    (a_fp8, a_scale), (b_fp8, b_scale) = a, b
    params = _tile_params(tile, 0)
    if out.dtype == jnp.bfloat16:
        if sfa_mn_major is None:
            sfa_mn_major = _wants_mn_major_sfa(a_fp8.shape[0], b_fp8.shape[0], a_fp8.shape[1], params)
        sa = _sfa_mn_major(a_scale) if sfa_mn_major else a_scale
        m, k = a_fp8.shape
        return _fp8_gemm_nt_1d2d_p.bind(a_fp8, sa, b_fp8, b_scale, out,
                                        **_params_1d2d(m, b_fp8.shape[0], k, params, bool(sfa_mn_major)))[0]
    n = b_fp8.shape[0]
    b_scale_t = _per_row_scales_transposed(b_scale, n, "channel" if b_scale.shape[0] == n else "block")
    return _fp8_gemm_nt_1d1d_p.bind(a_fp8, a_scale, b_fp8, b_scale_t, out, accumulate=0, **_params_1d1d(params))[0]


def _defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - {"out_dtype", "c", "num_sms", "tile"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    return dict(out_dtype=kwargs.get("out_dtype"), c=kwargs.get("c"), num_sms=kwargs.get("num_sms", 0),
                tile=kwargs.get("tile"))


def _transposed(op: str, x: tuple[jax.Array, jax.Array], name: str) -> tuple[jax.Array, jax.Array]:
    """Swaps the last two dims of an operand and its scales: exact for 1x128 and 128x128 scaling."""
    data, scale = _checks.check_pair(x, op, name)
    _checks.check_rank(data, op, name, at_least=2)
    _checks.check_rank(scale, op, f"{name}_scale", at_least=2)
    return jnp.swapaxes(data, -1, -2), jnp.swapaxes(scale, -1, -2)


def fp8_gemm_nn(a, b, **kwargs) -> jax.Array:
    """``D = A @ B`` with A ``[..., M, K]`` (scales ``[..., M, ceil(K/128)]``) and B stored ``[K, N]``
    (scales ``[ceil(K/128), ceil(N/128)]`` or ``[ceil(K/128), N]``). B is transposed in memory first."""
    return _fp8_gemm("fp8_gemm_nn", a, _transposed("fp8_gemm_nn", b, "b"), **_defaults(kwargs))


def fp8_gemm_tn(a, b, **kwargs) -> jax.Array:
    """``D = A.T @ B`` with A stored ``[K, M]`` (scales ``[ceil(K/128), M]``, i.e. per-token scales
    along K) and B stored ``[K, N]``; both are transposed in memory first."""
    op = "fp8_gemm_tn"
    return _fp8_gemm(op, _transposed(op, a, "a"), _transposed(op, b, "b"), **_defaults(kwargs))


def fp8_gemm_tt(a, b, **kwargs) -> jax.Array:
    """``D = A.T @ B.T`` with A stored ``[K, M]`` (scales ``[ceil(K/128), M]``) and B ``[N, K]``."""
    return _fp8_gemm("fp8_gemm_tt", _transposed("fp8_gemm_tt", a, "a"), b, **_defaults(kwargs))
