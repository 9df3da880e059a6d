"""Shape lists for tests and benchmarks.

The (N, K) pairs are the dense GEMMs of DeepSeek-V3 inference that DeepGEMM's own test suite
(`tests/generators.py`, ``enumerate_normal``) and README tables use; keeping the same lists
lets our numbers be compared with theirs row by row.
"""

from __future__ import annotations

import re

__all__ = ["NORMAL_NK", "BENCH_NK", "BENCH_M", "TEST_M", "CI_CASES", "ANCHORS_H100", "case_selected"]

NORMAL_NK: list[tuple[int, int]] = [
    (2112, 7168),
    (576, 7168),
    (24576, 1536),
    (32768, 512),
    (7168, 16384),
    (4096, 7168),
    (7168, 2048),
]
"""(N, K) of DeepGEMM's normal-GEMM test list."""

BENCH_NK: list[tuple[int, int]] = [
    (2112, 7168),
    (24576, 1536),
    (32768, 512),
    (7168, 16384),
    (4096, 7168),
    (7168, 2048),
]
"""(N, K) of the dense rows of DeepGEMM's published performance table (and our anchors)."""

BENCH_M: list[int] = [64, 128, 4096]
"""M values of the performance table: two decode-like sizes and one prefill size."""

TEST_M: list[int] = [1, 64, 128, 4096, 200]
"""M values for GPU correctness tests; 200 is deliberately not a multiple of 64 (partial tile)."""

CI_CASES: list[tuple[int, int, int]] = [
    (1, 128, 128),
    (7, 256, 384),
    (65, 384, 256),
    (200, 576, 512),
]
"""Cheap (M, N, K) cases for CPU tests: single row, odd M, M just over a 64 tile, N=576."""

ANCHORS_H100: dict[tuple[int, int, int], float] = {
    # (M, N, K): DeepGEMM v2.6.1 SM90 1D2D kernel time in microseconds on our H100 SXM
    # (FP8 e4m3, 1x128 / 128x128 FP32 scales, BF16 out; L2 flushed, 30 calls averaged).
    # Source: /work/shared/anchors.md, measured 2026-11-24.
    (64, 2112, 7168): 10.95,
    (64, 24576, 1536): 20.81,
    (64, 32768, 512): 11.35,
    (64, 7168, 16384): 52.82,
    (64, 4096, 7168): 16.99,
    (64, 7168, 2048): 9.59,
    (128, 2112, 7168): 11.35,
    (128, 24576, 1536): 22.47,
    (128, 32768, 512): 12.59,
    (128, 7168, 16384): 54.71,
    (128, 4096, 7168): 17.48,
    (128, 7168, 2048): 10.70,
    (4096, 2112, 7168): 96.17,
    (4096, 24576, 1536): 238.0,
    (4096, 32768, 512): 134.5,
    (4096, 7168, 16384): 652.8,
    (4096, 4096, 7168): 168.1,
    (4096, 7168, 2048): 93.11,
}
"""DeepGEMM's own kernel time (µs) per dense (M, N, K) on our H100: the numbers to beat."""


def case_selected(key, filters) -> bool:
    """Whether a benchmark case passes ``--filter``: its key (a tuple) written ``'x'``-joined (e.g.
    ``(4, 4096, 7168, 8192)`` -> ``'4x4096x7168x8192'``) matches any of the regexes; no filters keeps all."""
    if not filters:
        return True
    name = "x".join(str(v) for v in key) if isinstance(key, tuple) else str(key)
    return any(re.search(f, name) for f in filters)
