"""Trace-time validation helpers: every message names the op and the argument, and says the rule."""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np


def dtype_name(dtype: Any) -> str:
    return np.dtype(dtype).name


def check_pair(value: Any, op: str, name: str) -> tuple[Any, Any]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{op}: {name} must be a pair ({name}_fp8, {name}_scale), got {type(value).__name__}")
    return value[0], value[1]


def check_dtype(x: Any, op: str, name: str, allowed: Sequence[Any]) -> None:
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"{op}: {name} must be an array, got {type(x).__name__}")
    if not any(jnp.dtype(x.dtype) == jnp.dtype(d) for d in allowed):
        want = " or ".join(dtype_name(d) for d in allowed)
        raise TypeError(f"{op}: {name} must have dtype {want}, got {dtype_name(x.dtype)}")


def check_rank(x: Any, op: str, name: str, *, exact: int | None = None, at_least: int | None = None) -> None:
    if exact is not None and x.ndim != exact:
        raise ValueError(f"{op}: {name} must have rank {exact}, got shape {tuple(x.shape)}")
    if at_least is not None and x.ndim < at_least:
        raise ValueError(f"{op}: {name} must have rank >= {at_least}, got shape {tuple(x.shape)}")


def check_shape(x: Any, op: str, name: str, expected: Sequence[int], why: str = "") -> None:
    if tuple(x.shape) != tuple(expected):
        suffix = f" ({why})" if why else ""
        raise ValueError(f"{op}: {name} must have shape {tuple(expected)}{suffix}, got {tuple(x.shape)}")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def check_compiled_tile(op: str, requested: Sequence[int], compiled: Sequence[Sequence[int]], fields: str) -> None:
    """A forced kernel shape must be one the library compiled (there is no runtime compiler): ``requested`` holds the
    values of ``fields`` (0 = the heuristic's choice), ``compiled`` the compiled shapes (their leading entries are
    those fields). Raises ValueError at trace time, listing what exists, instead of a launch error when the op runs.
    Without CUDA kernels (``compiled`` empty) the reference path ignores tiles: nothing to check."""
    req = tuple(int(v) for v in requested)
    if not compiled or not any(req):
        return
    if any(all(r in (0, c) for r, c in zip(req, shape)) for shape in compiled):
        return
    shapes = sorted({tuple(shape[:len(req)]) for shape in compiled})
    listing = ", ".join("x".join(str(v) for v in shape) for shape in shapes)
    raise ValueError(f"{op}: no compiled kernel has {fields} = {req} (0 = any); compiled: {listing}")
