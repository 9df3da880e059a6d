"""Kernel time of every compiled FP8 GEMM tile shape on given problems, next to the heuristic's pick.

For fitting `ffi/heuristics/sm90_fp8_gemm.h` on the GPU in one device call:

    python3 -P scripts/sweep_tiles.py 4096x7168x16384 64x2112x7168 ...   (default: the 18 bench shapes)
    SWEEP_TILES=128x128x1x0,128x128x1x1 python3 -P scripts/sweep_tiles.py ...  (only these tiles)

Times with the CUDA profiler (testing.timing.time_with_profiler: rotating input sets larger than L2).
Prints one block per shape: tile, µs, TFLOPS, and '<- heuristic' on the default choice.
"""

import os
import sys

import jax

import jax_deepgemm as dg
from jax_deepgemm import _ffi
from jax_deepgemm.testing import timing
from jax_deepgemm.testing.generators import fp8_gemm_operands
from jax_deepgemm.testing.shapes import BENCH_M, BENCH_NK


def _shapes(argv):
    if argv:
        return [tuple(int(v) for v in s.split("x")) for s in argv]
    return [(m, n, k) for m in BENCH_M for n, k in BENCH_NK]


def _kernel_us(m, n, k, tile) -> float:
    fn = jax.jit(lambda a, b: dg.fp8_gemm_nt(a, b, tile=tile))
    make = lambda i: fp8_gemm_operands(seed=i, m=m, n=n, k=k)[:2]  # noqa: E731
    return timing.time_with_profiler(fn, make_inputs=make, n_reps=3).median_us


def main(argv) -> int:
    tiles = _ffi.fp8_gemm_tiles()["1d2d"]
    if os.environ.get("SWEEP_TILES"):
        wanted = {tuple(int(v) for v in t.split("x")) for t in os.environ["SWEEP_TILES"].split(",")}
        tiles = [t for t in tiles if tuple(t) in wanted]
    if not tiles or jax.devices()[0].platform != "gpu":
        print("needs a GPU and the CUDA kernels")
        return 0
    for m, n, k in _shapes(argv):
        flops = 2.0 * m * n * k
        default_us = _kernel_us(m, n, k, None)
        print(f"\n{m}x{n}x{k}: heuristic {default_us:8.2f} us {flops / default_us / 1e6:7.0f} TFLOPS")
        for tile in tiles:
            if (tile[0] == 128 and m <= 64) or (tile[0] == 64 and m >= 1024):
                continue
            us = _kernel_us(m, n, k, tile)
            mark = "  <- heuristic?" if abs(us - default_us) < 0.01 * default_us else ""
            print(f"  {str(tile):>14} {us:8.2f} us {flops / us / 1e6:7.0f} TFLOPS{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
