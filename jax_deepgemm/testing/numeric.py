"""Numeric comparison helpers, following DeepGEMM's ``deep_gemm/testing/numeric.py``.

All comparisons happen on the host in NumPy (float64 where arithmetic is involved), so they
are independent of the JAX computation being checked.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "FP8_TOLERANCE",
    "FP4_ONE_OPERAND_TOLERANCE",
    "calc_diff",
    "assert_bitwise_equal",
    "count_bytes",
]

FP8_TOLERANCE = 1e-3
"""DeepGEMM's pass bar for ``calc_diff`` of an FP8 x FP8 GEMM against its reference."""

FP4_ONE_OPERAND_TOLERANCE = 1e-2
"""DeepGEMM's pass bar for ``calc_diff`` when one operand is FP4."""

# Unsigned integer views of the same width, used to compare raw bit patterns.
_UINT_OF_ITEMSIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _to_float64(x: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"calc_diff: {name} cannot be converted to float64: {e}") from e


def calc_diff(x: Any, y: Any) -> float:
    """DeepGEMM's similarity metric ``1 - 2 * sum(x*y) / sum(x*x + y*y)``, in float64.

    0 means identical, 1 means orthogonal, 2 means ``y == -x``. Unlike an element-wise
    tolerance it is insensitive to the overall magnitude, which suits FP8 GEMM outputs.

    Returns 0.0 when both inputs are all zeros (denominator 0). Returns ``inf`` when either
    input contains NaN or Inf, so that output elements a kernel never wrote (poisoned with NaN)
    or that overflowed always fail a ``calc_diff(...) < tol`` check.

    Raises:
      ValueError: the shapes differ (broadcasting could hide a layout bug).
    """
    x64 = _to_float64(x, "x")
    y64 = _to_float64(y, "y")
    if x64.shape != y64.shape:
        raise ValueError(f"calc_diff: x and y must have the same shape, got {x64.shape} and {y64.shape}")
    if not (np.isfinite(x64).all() and np.isfinite(y64).all()):
        return float("inf")
    denominator = float(np.sum(x64 * x64 + y64 * y64))
    if denominator == 0.0:
        return 0.0
    return 1.0 - 2.0 * float(np.sum(x64 * y64)) / denominator


def _raw_bits(a: np.ndarray) -> np.ndarray:
    """Views ``a`` as unsigned integers of the same width (bytes for unusual widths)."""
    a = np.ascontiguousarray(a)
    uint = _UINT_OF_ITEMSIZE.get(a.dtype.itemsize)
    if uint is not None:
        return a.view(uint)
    # e.g. complex128 (16 bytes): one trailing byte axis per element.
    return a.view(np.uint8).reshape(*a.shape, a.dtype.itemsize)


def assert_bitwise_equal(x: Any, y: Any) -> None:
    """Asserts that two arrays have the same shape, dtype and raw bytes.

    Comparing bits (not values) makes NaN == NaN with the same payload, and distinguishes
    +0 from -0 -- what a determinism or layout check needs.

    Raises:
      AssertionError: naming the first mismatching index with both values and bit patterns.
    """
    xa, ya = np.asarray(x), np.asarray(y)
    if xa.shape != ya.shape:
        raise AssertionError(f"assert_bitwise_equal: shapes differ: {xa.shape} vs {ya.shape}")
    if xa.dtype != ya.dtype:
        raise AssertionError(f"assert_bitwise_equal: dtypes differ: {xa.dtype} vs {ya.dtype}")
    xb, yb = _raw_bits(xa), _raw_bits(ya)
    differs = xb != yb
    if differs.ndim > xa.ndim:  # per-byte comparison for unusual widths
        differs = differs.any(axis=-1)
    if not differs.any():
        return
    num_bad = int(np.count_nonzero(differs))
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(differs)), differs.shape))
    raise AssertionError(
        f"assert_bitwise_equal: {num_bad} of {differs.size} elements differ; first at index "
        f"{first}: {xa[first]!r} (bits {_hex(xb[first])}) vs {ya[first]!r} (bits {_hex(yb[first])})"
    )


def _hex(bits: np.ndarray) -> str:
    flat = np.atleast_1d(bits)
    width = flat.dtype.itemsize * 2
    return "0x" + "".join(f"{int(v):0{width}x}" for v in flat)


def count_bytes(*arrays: Any) -> int:
    """Total size in bytes of the given arrays.

    Accepts NumPy/JAX arrays and anything with ``shape`` and ``dtype`` (e.g.
    ``jax.ShapeDtypeStruct``, so benchmarks can count bytes without materializing data);
    nested tuples/lists are flattened and ``None`` entries are skipped (optional operands).
    """
    total = 0
    for item in arrays:
        if item is None:
            continue
        if isinstance(item, (tuple, list)):
            total += count_bytes(*item)
            continue
        total += math.prod(item.shape) * np.dtype(item.dtype).itemsize
    return total
