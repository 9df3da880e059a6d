"""Kernel time of every compiled FP8 GEMM tile shape on given problems, next to the heuristic's pick.

For fitting `ffi/heuristics/sm90_fp8_gemm.h` on the GPU in one device call:

    python3 -P scripts/sweep_tiles.py 4096x7168x16384 64x2112x7168 ...   (default: the 18 bench shapes)
    SWEEP_TILES=128x128x1x2,64x64x1x1x4 python3 -P scripts/sweep_tiles.py ...  (only these; 5th entry: split-K)
    SWEEP_SFA_MN_MAJOR_MIN_M=1000000 python3 -P scripts/sweep_tiles.py ...  (A scales K-major at any M)
    SWEEP_XLA=1 python3 -P scripts/sweep_tiles.py ...  (also XLA's per-tensor FP8 GEMM, all its kernels, same timer)
    SWEEP_BF16=1 python3 -P scripts/sweep_tiles.py ...  (the BF16 GEMM's heuristic pick instead, beside XLA's bf16 dot)
    SWEEP_BF16=1 SWEEP_TILES=64x16x1,64x32x1 python3 -P scripts/sweep_tiles.py ...  (and these BF16 tiles)

Times with the CUDA profiler (testing.timing.time_with_profiler: rotating input sets larger than L2).
Prints one block per shape: tile, µs, TFLOPS, calc_diff against the reference on the first and last
rows (a kernel experiment that is fast but wrong shows up as 'WRONG'), and '<- heuristic' on the
default choice.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jax_deepgemm as dg
from jax_deepgemm import _ffi
from jax_deepgemm.reference import fp8_gemm_nt_reference
from jax_deepgemm.testing import timing
from jax_deepgemm.testing.baselines import per_tensor_cast_to_fp8, xla_fp8_dot
from jax_deepgemm.testing.generators import fp8_gemm_operands
from jax_deepgemm.testing.numeric import calc_diff
from jax_deepgemm.testing.shapes import BENCH_M, BENCH_NK


def _shapes(argv):
    if argv:
        return [tuple(int(v) for v in s.split("x")) for s in argv]
    return [(m, n, k) for m in BENCH_M for n, k in BENCH_NK]


def _kernel_us(m, n, k, tile) -> float:
    fn = jax.jit(lambda a, b: dg.fp8_gemm_nt(a, b, tile=tile))
    make = lambda i: fp8_gemm_operands(seed=i, m=m, n=n, k=k)[:2]  # noqa: E731
    return timing.time_with_profiler(fn, make_inputs=make, n_reps=3).median_us


def _xla_us(m, n, k) -> float:
    """XLA's per-tensor FP8 GEMM (cuBLASLt, plus whatever kernels XLA adds to the call) on the same timer."""

    def make(i):
        ka, kb = jax.random.split(jax.random.key(i))
        return (*per_tensor_cast_to_fp8(jax.random.normal(ka, (m, k))),
                *per_tensor_cast_to_fp8(jax.random.normal(kb, (n, k))))

    return timing.time_with_profiler(jax.jit(xla_fp8_dot), make_inputs=make, n_reps=3).median_us


def _diff(m, n, k, tile, rows: int = 256) -> float:
    """calc_diff of the full-size GEMM (forced tile) against the reference on its first and last rows."""
    (a, sa), (b, sb), _, _ = fp8_gemm_operands(seed=7, m=m, n=n, k=k)
    out = jax.jit(lambda a, b: dg.fp8_gemm_nt(a, b, tile=tile))((a, sa), (b, sb))
    idx = np.unique(np.concatenate([np.arange(min(rows, m)), np.arange(max(m - rows, 0), m)]))
    ref = jax.jit(fp8_gemm_nt_reference)(a[idx], sa[idx], b, sb)
    return calc_diff(np.asarray(out[idx].astype(jnp.float32)), np.asarray(ref.astype(jnp.float32)))


def _bf16_sweep(shapes, tiles) -> None:
    """The BF16 GEMM (heuristic pick) and XLA's bf16 dot (as `--bf16` of the bench spells it) on the same timer,
    calc_diff against the f32 product."""
    from jax_deepgemm.bench_bf16 import _normal_bf16

    for m, n, k in shapes:
        def make(i):
            return _normal_bf16(2 * i, (m, k)), _normal_bf16(2 * i + 1, (n, k))

        ours = jax.jit(dg.bf16_gemm_nt)
        xla = jax.jit(lambda a, b: jnp.dot(a, b.T, preferred_element_type=jnp.float32).astype(jnp.bfloat16))
        a, b = make(7)
        exact = np.asarray(jnp.dot(a.astype(jnp.float32), b.astype(jnp.float32).T,
                                   precision=jax.lax.Precision.HIGHEST))
        diff = calc_diff(np.asarray(ours(a, b).astype(jnp.float32)), exact)
        us = [timing.time_with_profiler(f, make_inputs=make, n_reps=3).median_us for f in (ours, xla)]
        print(f"{m}x{n}x{k}: bf16 {us[0]:8.2f} us  xla-bf16 {us[1]:8.2f} us  {_verdict(diff)}", flush=True)
        for tile in tiles:
            forced = jax.jit(lambda a, b, tile=tile: dg.bf16_gemm_nt(a, b, tile=tile))
            diff = calc_diff(np.asarray(forced(a, b).astype(jnp.float32)), exact)
            tile_us = timing.time_with_profiler(forced, make_inputs=make, n_reps=3).median_us
            print(f"  {str(tile):>14} {tile_us:8.2f} us  {_verdict(diff)}", flush=True)


def _verdict(diff: float) -> str:
    return f"diff {diff:.1e}" + ("" if diff < 1e-3 else " WRONG")


def main(argv) -> int:
    if os.environ.get("SWEEP_SFA_MN_MAJOR_MIN_M"):
        from jax_deepgemm import fp8_gemm

        fp8_gemm._SFA_MN_MAJOR_MIN_M = int(os.environ["SWEEP_SFA_MN_MAJOR_MIN_M"])
    if os.environ.get("SWEEP_BF16"):
        if jax.devices()[0].platform != "gpu" or not dg.has_cuda_kernels():
            print("needs a GPU and the CUDA kernels")
            return 0
        wanted = os.environ.get("SWEEP_TILES", "")
        _bf16_sweep(_shapes(argv), [tuple(int(v) for v in t.split("x")) for t in wanted.split(",") if t])
        return 0
    tiles = _ffi.fp8_gemm_tiles()["1d2d"]
    if os.environ.get("SWEEP_TILES"):
        # a fifth entry forces split-K (e.g. 64x64x1x1x4); 4-entry tiles leave it to the heuristic
        wanted = [tuple(int(v) for v in t.split("x")) for t in os.environ["SWEEP_TILES"].split(",")]
        tiles = [w for w in wanted if tuple(w[:4]) in {tuple(t) for t in tiles}]
    if not tiles or jax.devices()[0].platform != "gpu":
        print("needs a GPU and the CUDA kernels")
        return 0
    for m, n, k in _shapes(argv):
        flops = 2.0 * m * n * k
        default_us = _kernel_us(m, n, k, None)
        print(f"\n{m}x{n}x{k}: heuristic {default_us:8.2f} us {flops / default_us / 1e6:7.0f} TFLOPS"
              f"  {_verdict(_diff(m, n, k, None))}", flush=True)  # (a timeout must not lose the lines)
        if os.environ.get("SWEEP_XLA"):
            xla_us = _xla_us(m, n, k)
            print(f"  {'xla-fp8':>14} {xla_us:8.2f} us {flops / xla_us / 1e6:7.0f} TFLOPS", flush=True)
        for tile in tiles:
            if not os.environ.get("SWEEP_TILES") and ((tile[0] == 128 and m <= 64) or (tile[0] == 64 and m >= 1024)):
                continue
            us = _kernel_us(m, n, k, tile)
            mark = "  <- heuristic?" if abs(us - default_us) < 0.01 * default_us else ""
            print(f"  {str(tile):>14} {us:8.2f} us {flops / us / 1e6:7.0f} TFLOPS  {_verdict(_diff(m, n, k, tile))}{mark}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
