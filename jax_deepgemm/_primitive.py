"""One generic way to turn an op description into a JAX primitive.

Every op family declares an :class:`OpSpec` (FFI target, abstract eval, jnp reference, attributes,
batching) and calls :func:`make_primitive`. This is the only module that touches JAX's primitive
machinery (``jax.extend.core.Primitive``, ``jax.interpreters.mlir/batching``); if JAX's recommended
extension API changes (HiJAX), this is the file to change.

Lowering:
  * CUDA: the versioned XLA FFI target (``jax.ffi.ffi_lowering``) with the op's attributes; when the
    install has no CUDA kernels, lowering raises a clear error instead of running something slow.
  * every other platform: the jnp reference, lowered through ``mlir.lower_fun``, so the same user
    code runs on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from jax_deepgemm import _ffi


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """Everything the primitive layer needs to know about one kernel entry point.

    Attributes:
      name: primitive name, e.g. ``"jax_deepgemm_fp8_gemm_nt_1d2d"``.
      target: XLA FFI target; versioned (``_v1``) and never reused with new semantics.
      out_shapes: ``(*avals, **params) -> tuple[(shape, dtype), ...]``; raises ``ValueError``/``TypeError``
        naming the argument for bad input (trace time).
      reference: ``(*arrays, **params) -> tuple[jax.Array, ...]`` in pure jnp: the non-CUDA lowering
        and the test oracle.
      attrs: ``params -> dict`` of FFI attributes as exact numpy scalar types (``np.int32(...)``).
      batch: ``(prim, args, dims, **params) -> (outs, out_dims)``, the vmap rule.
      aliased_output_operand: index of an optional trailing operand that, when passed, is the
        buffer of output 0 (XLA aliases them): in-place accumulation, or a pre-filled output.
    """

    name: str
    target: str
    out_shapes: Callable[..., Sequence[tuple[tuple[int, ...], Any]]]
    reference: Callable[..., Sequence[jax.Array]]
    attrs: Callable[..., dict[str, Any]]
    batch: Callable[..., tuple[Sequence[jax.Array], Sequence[int | None]]]
    aliased_output_operand: int | None = None


def _varying_axes(aval) -> frozenset:
    """The manual mesh axes a value varies over inside ``jax.shard_map`` (jax >= 0.12: ``aval.mat.varying``;
    jax 0.11: ``aval.vma``)."""
    mat = getattr(aval, "mat", None)
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", None) or ())


def _out_aval(shape, dtype, avals) -> jax.core.ShapedArray:
    """An output type that varies over every mesh axis any input varies over (inside ``jax.shard_map``),
    so custom_vjp rules and out_specs see the same manual-axis types as for a jnp computation."""
    vma = frozenset().union(*(_varying_axes(a) for a in avals))
    if not vma:
        return jax.core.ShapedArray(shape, dtype)
    base = next(a for a in avals if _varying_axes(a))
    if getattr(base, "mat", None) is not None:  # jax >= 0.12: manual axis types ride on the sharding's mesh
        sharding = jax.sharding.NamedSharding(base.sharding.mesh, jax.sharding.PartitionSpec())
        return base.update(shape=tuple(shape), dtype=dtype, weak_type=False, sharding=sharding,
                           manual_axis_type=base.mat.update(varying=vma))
    return jax.core.ShapedArray(shape, dtype, vma=vma)


def make_primitive(spec: OpSpec) -> Primitive:
    """Builds and registers the primitive for ``spec`` (impl, abstract eval, lowerings, batching)."""
    prim = Primitive(spec.name)
    prim.multiple_results = True

    @functools.cache
    def jitted_bind(params: tuple) -> Any:
        # One jitted bind per parameter set: a new jax.jit object per eager call would retrace and
        # recompile every time.
        return jax.jit(functools.partial(prim.bind, **dict(params)))

    def impl(*args, **params):
        return jitted_bind(tuple(sorted(params.items())))(*args)

    def abstract_eval(*avals, **params):
        return tuple(_out_aval(shape, dtype, avals) for shape, dtype in spec.out_shapes(*avals, **params))

    def cuda_lowering(ctx, *args, **params):
        if spec.target not in _ffi.registered_targets():
            raise RuntimeError(_ffi.missing_kernels_message(spec.name))
        aliased = spec.aliased_output_operand
        aliases = {aliased: 0} if aliased is not None and len(args) > aliased else None
        lower = jax.ffi.ffi_lowering(spec.target, operand_output_aliases=aliases)
        return lower(ctx, *args, **spec.attrs(**params))

    def reference_lowering(*args, **params):
        return tuple(spec.reference(*args, **params))

    prim.def_impl(impl)
    prim.def_abstract_eval(abstract_eval)
    mlir.register_lowering(prim, mlir.lower_fun(reference_lowering, multiple_results=True))
    mlir.register_lowering(prim, cuda_lowering, platform="cuda")
    batching.primitive_batchers[prim] = functools.partial(spec.batch, prim)
    return prim


def int32_attr(value: int) -> np.int32:
    """FFI integer attributes must carry the exact C++ type of the handler's ``.Attr<int32_t>``."""
    return np.int32(value)


def int32_attrs(**params) -> dict[str, np.int32]:
    """Every primitive parameter as an int32 FFI attribute (the ``attrs`` of most op specs)."""
    return {name: int32_attr(value) for name, value in params.items()}


def tile_attrs(tile) -> dict[str, int]:
    """``tile`` = None (the handler's heuristic) or ``(block_m, block_n)``: the kernel-shape attributes."""
    block_m, block_n = tuple(tile) if tile is not None else (0, 0)
    return dict(block_m=int(block_m), block_n=int(block_n))


def move_batch_dim_to_front(x: jax.Array, dim: int | None, size: int) -> jax.Array:
    """Puts the vmapped dimension first (broadcasting unbatched operands), for batching rules."""
    if dim is None:
        return jax.numpy.broadcast_to(x, (size, *x.shape))
    return jax.numpy.moveaxis(x, dim, 0)


def batch_size(args, dims) -> int:
    for x, d in zip(args, dims):
        if d is not None:
            return x.shape[d]
    raise ValueError("batching rule called without a batched operand")


def batch_by_map(prim, args, dims, **params):
    """Generic vmap rule: one primitive call per batch element (``lax.map``), for ops whose operands
    cannot be folded into a larger call."""
    size = batch_size(args, dims)
    moved = [move_batch_dim_to_front(x, d, size) for x, d in zip(args, dims)]
    outs = jax.lax.map(lambda xs: tuple(prim.bind(*xs, **params)), tuple(moved))
    return outs, (0,) * len(outs)
