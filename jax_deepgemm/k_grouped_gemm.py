"""K-grouped GEMMs (MoE weight gradients): ``D[g] = C[g] + A_g @ B_g^T`` over consecutive K ranges.

Expert g owns K range ``[koff[g], koff[g+1])`` (``koff`` = exclusive cumsum of ``k_group_sizes``),
typically the tokens routed to it: ``dW[g] = dY_g^T @ X_g``. Unlike DeepGEMM's SM90 API the sizes
are **device data** (no host list, no host synchronisation, CUDA-graph safe). Every size must be a
multiple of 128; empty groups are allowed. Output: float32 ``[G, M, N]``.

* FP8 (``k_grouped_fp8_gemm_{nt,tn}_contiguous``): both operands carry 1x128 FP32 scales along K
  (``per_channel_cast_to_fp8`` of the token-major tensors; a scale block never straddles two
  experts). On CUDA the dense 1D1D kernel walks each group's M x N tiles over that group's K-blocks
  (``ffi/k_grouped_fp8_gemm.cu``).
* BF16 (``k_grouped_bf16_gemm_{tn,nt}_contiguous``, DeepGEMM's ``k_grouped_bf16_gemm_tn_contiguous``
  with device sizes): the BF16 kernel with the same walk (``ffi/bf16_gemm.cu``); the TN form reads
  the token-major ``[K, M]`` / ``[K, N]`` operands in place (no transpose) when M and N are
  multiples of 8.

Elsewhere every op lowers to a jnp reference with the same semantics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jax_deepgemm import _checks, _ffi
from jax_deepgemm import grouped_layout as _gl
from jax_deepgemm.fp8_gemm import _SFA_MN_MAJOR_MIN_M, _sfa_k_major, _sfa_mn_major
from jax_deepgemm import reference as _ref
from jax_deepgemm._primitive import OpSpec, batch_by_map, int32_attrs, make_primitive, tile_attrs

K_GROUP_ALIGNMENT = 128
"""Every group's K size is a multiple of this (the scale block along K)."""

_FP8 = (jnp.float8_e4m3fn,)
_BF16 = (jnp.bfloat16,)
_F32 = (jnp.float32,)

# The BF16 kernel's operand-major values (ffi/instances/bf16_gemm_instances.h): both K-major, both MN-major.
_MAJOR_NT, _MAJOR_TN = 0, 3


def _poison_broken_groups(d: jax.Array, sizes: jax.Array) -> jax.Array:
    """What the kernel does with device sizes that break the contract: from the first size that is
    not a multiple of 128 on, every group's offsets miss the scale blocks, and its output is NaN."""
    broken = jnp.cumsum((jnp.maximum(sizes, 0) % K_GROUP_ALIGNMENT != 0).astype(jnp.int32)) > 0
    return jnp.where(broken[:, None, None], jnp.nan, d)


def _reference_nt(a, a_scale, b, b_scale_t, sizes, *out, accumulate: int, sfa_mn_major: int = 0, **_):
    """The kernel's operands (K-major, B scales transposed and padded) through the TN reference."""
    n = b.shape[0]
    a_scale = _sfa_k_major(a_scale, sfa_mn_major, a.shape[0])
    c = out[0] if (out and accumulate) else None
    d = _ref._k_grouped_core(a.T, a_scale.T, b.T, b_scale_t[:, :n], sizes, c)
    return (_poison_broken_groups(d, sizes),)


_k_grouped_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_k_grouped_fp8_gemm_nt_contiguous",
        target="jax_deepgemm_k_grouped_fp8_gemm_nt_contiguous_v2",
        out_shapes=lambda a, sa, b, sbt, sizes, *out, **_: [((sizes.shape[0], a.shape[0], b.shape[0]), jnp.float32)],
        reference=_reference_nt,
        attrs=int32_attrs,
        batch=batch_by_map,
        aliased_output_operand=5,
    )
)


def _validate_nt(op: str, a, b, k_group_sizes, c):
    a_fp8, a_scale = _checks.check_pair(a, op, "a")
    b_fp8, b_scale = _checks.check_pair(b, op, "b")
    for name, x, allowed in (("a", a_fp8, _FP8), ("b", b_fp8, _FP8), ("a_scale", a_scale, _F32),
                             ("b_scale", b_scale, _F32)):
        _checks.check_dtype(x, op, name, allowed)
        _checks.check_rank(x, op, name, exact=2)
    m, total_k = a_fp8.shape
    n = b_fp8.shape[0]
    if b_fp8.shape[1] != total_k:
        raise ValueError(f"{op}: a and b must share K (the grouped reduction axis), got a {a_fp8.shape} and b "
                         f"{b_fp8.shape}")
    if total_k % K_GROUP_ALIGNMENT != 0:
        raise ValueError(f"{op}: K = {total_k} must be a multiple of {K_GROUP_ALIGNMENT} (pad each group's tokens to "
                         "a multiple of 128 with zero rows)")
    kb = total_k // K_GROUP_ALIGNMENT
    _checks.check_shape(a_scale, op, "a_scale", (m, kb), "1x128 scales along K")
    _checks.check_shape(b_scale, op, "b_scale", (n, kb), "1x128 scales along K")
    sizes = _gl.check_group_sizes(k_group_sizes, fn=op, name="k_group_sizes", num_rows=total_k,
                                  multiple_of=K_GROUP_ALIGNMENT, rows_name="K")
    num_groups = sizes.shape[0]
    if c is not None:
        _checks.check_dtype(c, op, "c", _F32)
        _checks.check_shape(c, op, "c", (num_groups, m, n), "the accumulator has the output's shape [G, M, N]")
    return a_fp8, a_scale, b_fp8, b_scale, sizes


def _tile_attrs(tile, num_sms: int) -> dict[str, int]:
    """``tile`` = None (heuristic) or ``(block_m, block_n[, cluster_m])``, a compiled 1D1D kernel shape."""
    tile = tuple(tile) if tile is not None else ()
    if len(tile) not in (0, 2, 3):
        raise ValueError(f"tile must be (block_m, block_n[, cluster_m]), got {tile!r}")
    block_m, block_n, cluster_m = (*tile, 0, 0, 0)[:3]
    _checks.check_compiled_tile("tile", (block_m, block_n, cluster_m), _ffi.fp8_gemm_tiles()["1d1d"],
                                "(block_m, block_n, cluster_m)")
    return dict(block_m=int(block_m), block_n=int(block_n), cluster_m=int(cluster_m), num_sms=int(num_sms))


def k_grouped_fp8_gemm_nt_contiguous(
    a: tuple[jax.Array, jax.Array],
    b: tuple[jax.Array, jax.Array],
    k_group_sizes: jax.Array,
    *,
    c: jax.Array | None = None,
    num_sms: int = 0,
    tile: tuple[int, int] | None = None,
) -> jax.Array:
    """``D[g] = C[g] + A[:, koff[g]:koff[g+1]] @ B[:, koff[g]:koff[g+1]]^T`` in float32 (K-major operands).

    Args:
      a: ``(a_fp8, a_scale)``: ``[M, K]`` float8_e4m3fn and ``[M, K/128]`` float32 (1x128 along K).
      b: ``(b_fp8, b_scale)``: ``[N, K]`` float8_e4m3fn and ``[N, K/128]`` float32.
      k_group_sizes: ``[G]`` int32 K sizes, on the device or host. Host data must be non-negative
        multiples of 128 summing to at most K (``ValueError`` naming ``k_group_sizes``). Device data:
        negative sizes count as 0, K past the operands' is dropped, and from the first size that is
        not a multiple of 128 on, the groups' outputs are NaN (never another group's data).
      c: optional float32 ``[G, M, N]`` accumulator (aliased to the output: updated in place under ``jax.jit``
        when donated, else XLA copies it first).
      num_sms: use at most this many SMs (0 = all).
      tile: ``(block_m, block_n[, cluster_m])`` forces a compiled 1D1D kernel shape (tests, tuning; see
        ``jax_deepgemm._ffi.fp8_gemm_tiles()["1d1d"]``); None = heuristic.

    Returns:
      ``[G, M, N]`` float32; an empty group gives ``C[g]`` (or zeros). K must be a multiple of 128.
    """
    op = "k_grouped_fp8_gemm_nt_contiguous"
    a_fp8, a_scale, b_fp8, b_scale, sizes = _validate_nt(op, a, b, k_group_sizes, c)
    m, total_k = a_fp8.shape
    n, num_groups = b_fp8.shape[0], sizes.shape[0]
    if num_groups == 0 or m == 0 or n == 0 or total_k == 0:
        base = c if c is not None else jnp.zeros((num_groups, m, n), jnp.float32)
        return _poison_broken_groups(base, sizes) if num_groups else base
    b_scale_t = jnp.pad(b_scale.T, ((0, 0), (0, (-n) % 4)))  # [K/128, align(N, 4)]: one TMA box per K-block
    extra = () if c is None else (c,)
    mn_major = _k_grouped_wants_mn_major_sfa(m)
    (d,) = _k_grouped_p.bind(a_fp8, _sfa_mn_major(a_scale) if mn_major else a_scale, b_fp8, b_scale_t, sizes, *extra,
                             accumulate=int(c is not None), **_tile_attrs(tile, num_sms), sfa_mn_major=int(mn_major))
    return d


def _k_grouped_wants_mn_major_sfa(m: int) -> bool:
    """128-row tiles stage MN-major A scales (``[K/128, align(M, 4)]``, which the token-major TN form already
    holds) per stage by TMA instead of loading them into registers; for few rows the heuristic runs 64-row
    tiles, which read MN-major scales more slowly."""
    return m >= _SFA_MN_MAJOR_MIN_M and _ffi.has_cuda_kernels()


def k_grouped_fp8_gemm_tn_contiguous(
    a: tuple[jax.Array, jax.Array],
    b: tuple[jax.Array, jax.Array],
    k_group_sizes: jax.Array,
    *,
    c: jax.Array | None = None,
    num_sms: int = 0,
    tile: tuple[int, int] | None = None,
) -> jax.Array:
    """``D[g] = C[g] + A_g^T @ B_g`` with token-major operands: the weight-gradient form.

    Args:
      a: ``(a_fp8, a_scale)``: ``[K, M]`` float8_e4m3fn (e.g. dY, tokens sorted by expert) and
        ``[K/128, M]`` float32 (``per_channel_cast_to_fp8(dY)``).
      b: ``(b_fp8, b_scale)``: ``[K, N]`` and ``[K/128, N]`` (e.g. X).
      k_group_sizes, c, num_sms, tile: as :func:`k_grouped_fp8_gemm_nt_contiguous`.

    Returns ``[G, M, N]`` float32. Both FP8 operands are transposed in memory first (the kernel reads
    K-major tiles); the scales need no work beyond a transpose of ``[K/128, M]``.
    """
    op = "k_grouped_fp8_gemm_tn_contiguous"
    a_fp8, a_scale = _checks.check_pair(a, op, "a")
    b_fp8, b_scale = _checks.check_pair(b, op, "b")
    for name, x in (("a", a_fp8), ("a_scale", a_scale), ("b", b_fp8), ("b_scale", b_scale)):
        _checks.check_rank(x, op, name, exact=2)
    return k_grouped_fp8_gemm_nt_contiguous((a_fp8.T, a_scale.T), (b_fp8.T, b_scale.T), k_group_sizes, c=c,
                                            num_sms=num_sms, tile=tile)


def _k_grouped_into(a, b, k_group_sizes, out: jax.Array, *, tile=None, sfa_mn_major: bool | None = None) -> jax.Array:
    """Test hook: the kernel (K-major operands) writing into (an XLA-aliased copy of) a pre-filled ``out``;
    ``sfa_mn_major`` forces the A-scale layout (None: as ``k_grouped_fp8_gemm_nt_contiguous`` picks it)."""
    (a_fp8, a_scale), (b_fp8, b_scale) = a, b
    n = b_fp8.shape[0]
    b_scale_t = jnp.pad(b_scale.T, ((0, 0), (0, (-n) % 4)))
    sizes = jnp.asarray(k_group_sizes, jnp.int32)
    mn_major = _k_grouped_wants_mn_major_sfa(a_fp8.shape[0]) if sfa_mn_major is None else sfa_mn_major
    return _k_grouped_p.bind(a_fp8, _sfa_mn_major(a_scale) if mn_major else a_scale, b_fp8, b_scale_t, sizes, out,
                             accumulate=0, **_tile_attrs(tile, 0), sfa_mn_major=int(mn_major))[0]


# ---------------------------------------------------------------------------------------------
# BF16
# ---------------------------------------------------------------------------------------------


def _bf16_dims(a, b, major: int) -> tuple[int, int, int]:
    """(M, N, K) of the BF16 kernel's operands: TN = a [K, M], b [K, N]; NT = a [M, K], b [N, K]."""
    if major == _MAJOR_TN:
        return a.shape[1], b.shape[1], a.shape[0]
    return a.shape[0], b.shape[0], a.shape[1]


def _reference_bf16(a, b, sizes, *out, accumulate: int, major: int, **_):
    a_km, b_kn = (a, b) if major == _MAJOR_TN else (a.T, b.T)
    c = out[0] if (out and accumulate) else None
    d = _ref.k_grouped_f32(a_km.astype(jnp.float32), b_kn.astype(jnp.float32), sizes, c)
    return (_poison_broken_groups(d, sizes),)


def _bf16_out_shapes(a, b, sizes, *out, major: int, **_):
    m, n, _ = _bf16_dims(a, b, major)
    return [((sizes.shape[0], m, n), jnp.float32)]


_k_grouped_bf16_p = make_primitive(
    OpSpec(
        name="jax_deepgemm_k_grouped_bf16_gemm",
        target="jax_deepgemm_k_grouped_bf16_gemm_v1",
        out_shapes=_bf16_out_shapes,
        reference=_reference_bf16,
        attrs=int32_attrs,
        batch=batch_by_map,
        aliased_output_operand=3,
    )
)


def _validate_bf16(op: str, a, b, k_group_sizes, c, *, token_major: bool):
    for name, x in (("a", a), ("b", b)):
        _checks.check_dtype(x, op, name, _BF16)
        _checks.check_rank(x, op, name, exact=2)
    k_axis = 0 if token_major else 1
    total_k = a.shape[k_axis]
    if b.shape[k_axis] != total_k:
        raise ValueError(f"{op}: a and b must share K (dim {k_axis}, the grouped reduction axis), got a "
                         f"{tuple(a.shape)} and b {tuple(b.shape)}")
    m, n = a.shape[1 - k_axis], b.shape[1 - k_axis]
    sizes = _gl.check_group_sizes(k_group_sizes, fn=op, name="k_group_sizes", num_rows=total_k,
                                  multiple_of=K_GROUP_ALIGNMENT, rows_name="K")
    if c is not None:
        _checks.check_dtype(c, op, "c", _F32)
        _checks.check_shape(c, op, "c", (sizes.shape[0], m, n), "the accumulator has the output's shape [G, M, N]")
    return sizes, m, n, total_k


def _bf16_attrs(tile, num_sms: int, major: int) -> dict[str, int]:
    """``tile`` = None (heuristic) or ``(block_m, block_n)``, a compiled BF16 kernel shape of this major."""
    return dict(**tile_attrs(tile), num_sms=int(num_sms), major=int(major))


def _k_grouped_bf16(op, a, b, k_group_sizes, c, num_sms, tile, *, token_major: bool) -> jax.Array:
    sizes, m, n, total_k = _validate_bf16(op, a, b, k_group_sizes, c, token_major=token_major)
    num_groups = sizes.shape[0]
    if num_groups == 0 or m == 0 or n == 0 or total_k == 0:
        base = c if c is not None else jnp.zeros((num_groups, m, n), jnp.float32)
        return _poison_broken_groups(base, sizes) if num_groups else base
    if token_major and m % 8 == 0 and n % 8 == 0:
        major = _MAJOR_TN  # read in place: the rows of [K, M] and [K, N] are 16-byte aligned
    else:
        # K-major operands; TMA needs K (their row pitch) a multiple of 8: zero rows past every
        # group change nothing.
        major = _MAJOR_NT
        if token_major:
            a, b = a.T, b.T
        pad = (-total_k) % 8
        if pad:
            a, b = (jnp.pad(x, ((0, 0), (0, pad))) for x in (a, b))
    extra = () if c is None else (c,)
    (d,) = _k_grouped_bf16_p.bind(a, b, sizes, *extra, accumulate=int(c is not None),
                                  **_bf16_attrs(tile, num_sms, major))
    return d


def k_grouped_bf16_gemm_tn_contiguous(
    a: jax.Array,
    b: jax.Array,
    k_group_sizes: jax.Array,
    *,
    c: jax.Array | None = None,
    num_sms: int = 0,
    tile: tuple[int, int] | None = None,
) -> jax.Array:
    """``D[g] = C[g] + A[koff[g]:koff[g+1]]^T @ B[koff[g]:koff[g+1]]`` in float32, token-major BF16.

    DeepGEMM's ``k_grouped_bf16_gemm_tn_contiguous`` with the sizes on the device: the BF16 MoE
    weight gradient ``dW[g] = dY_g^T @ X_g`` over tokens sorted by expert.

    Args:
      a: ``[K, M]`` bfloat16 (e.g. dY, tokens sorted by expert).
      b: ``[K, N]`` bfloat16 (e.g. X).
      k_group_sizes: ``[G]`` int32 K sizes (tokens per expert), on the device or host. Host data
        must be non-negative multiples of 128 summing to at most K (``ValueError`` naming
        ``k_group_sizes``). Device data: negative sizes count as 0, K past the operands' is dropped,
        and from the first size that is not a multiple of 128 on, the groups' outputs are NaN.
      c: optional float32 ``[G, M, N]`` accumulator (aliased: updated in place under ``jax.jit``
        when donated).
      num_sms: use at most this many SMs (0 = all).
      tile: ``(block_m, block_n)`` forces a compiled BF16 kernel shape (``bf16_gemm_tiles()``);
        None = heuristic.

    Returns:
      ``[G, M, N]`` float32; an empty group gives ``C[g]`` (or zeros). The kernel reads ``a`` and
      ``b`` in place when M and N are multiples of 8; otherwise both are transposed in XLA first.
    """
    return _k_grouped_bf16("k_grouped_bf16_gemm_tn_contiguous", a, b, k_group_sizes, c, num_sms, tile,
                           token_major=True)


def k_grouped_bf16_gemm_nt_contiguous(
    a: jax.Array,
    b: jax.Array,
    k_group_sizes: jax.Array,
    *,
    c: jax.Array | None = None,
    num_sms: int = 0,
    tile: tuple[int, int] | None = None,
) -> jax.Array:
    """``D[g] = C[g] + A[:, koff[g]:koff[g+1]] @ B[:, koff[g]:koff[g+1]]^T`` in float32, K-major BF16.

    Args:
      a: ``[M, K]`` bfloat16; b: ``[N, K]`` bfloat16 (K contiguous in memory).
      k_group_sizes, c, num_sms, tile: as :func:`k_grouped_bf16_gemm_tn_contiguous`.

    Returns ``[G, M, N]`` float32. K that is not a multiple of 8 is zero-padded in XLA first.
    """
    return _k_grouped_bf16("k_grouped_bf16_gemm_nt_contiguous", a, b, k_group_sizes, c, num_sms, tile,
                           token_major=False)


def _k_grouped_bf16_into(a, b, k_group_sizes, out: jax.Array, *, major: int, tile=None) -> jax.Array:
    """Test hook: the kernel (operands as the kernel takes them for ``major``) writing into (an
    XLA-aliased copy of) a pre-filled ``out``."""
    sizes = jnp.asarray(k_group_sizes, jnp.int32)
    return _k_grouped_bf16_p.bind(a, b, sizes, out, accumulate=0, **_bf16_attrs(tile, 0, major))[0]
