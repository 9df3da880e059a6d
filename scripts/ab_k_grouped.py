"""A/B of the K-grouped FP8 GEMM (weight gradient, TN form) over forced tiles and with/without C, kernel time.

    python3 -P scripts/ab_k_grouped.py [CONFIG ...]     (the bench's four K-grouped shapes)

CONFIG is BLOCK_MxBLOCK_NxCLUSTER_M[:c], e.g. ``0x0x0 256x128x1 256x128x2:c``; 0x0x0 is the heuristic's tile (with
cluster_m = 1 the heuristic picks between unpaired and A-multicast pairs), ``:c`` accumulates into a float32 C
(D = C + A^T B). Same K sizes and operands as ``python -m jax_deepgemm.bench --grouped k_grouped``, timed with the
CUDA profiler over rotating input sets. Prints us and TFLOPS per config and the calc_diff of each config's output
(minus C) against the first config's.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import jax_deepgemm as dg
from jax_deepgemm.bench_grouped import K_GROUPED_SHAPES, k_grouped_sizes
from jax_deepgemm.testing import timing
from jax_deepgemm.testing.generators import k_grouped_operands
from jax_deepgemm.testing.numeric import calc_diff


def main(configs) -> None:
    for key in K_GROUPED_SHAPES:
        groups, m, n, expected = key
        sizes = k_grouped_sizes(key)
        k_sizes = jnp.asarray(sizes, jnp.int32)
        c = jax.random.normal(jax.random.key(1), (groups, m, n), jnp.float32)

        def make(i):
            a, b, _, _ = k_grouped_operands(i, sizes, m, n)
            return a, b

        first = None
        for config in configs:
            tile_s, _, acc = config.partition(":")
            bm, bn, cm = (int(v) for v in tile_s.split("x"))
            tile = (bm, bn, cm) if bm else None
            cc = c if acc == "c" else None
            fn = jax.jit(lambda a, b, t=tile, cc=cc: dg.k_grouped_fp8_gemm_tn_contiguous(a, b, k_sizes, c=cc, tile=t))
            try:
                us = timing.time_with_profiler(fn, make_inputs=make, n_reps=3).median_us
            except Exception as e:  # noqa: BLE001 - an uncompiled tile: report, go on
                print(f"{groups}x{m}x{n}x{expected} {config:14s} failed: {str(e)[:120]}", flush=True)
                continue
            out = np.asarray(fn(*make(0)), np.float64) - (np.asarray(cc, np.float64) if cc is not None else 0.0)
            first = out if first is None else first
            tflops = 2.0 * m * n * sum(sizes) / us / 1e6
            print(f"{groups}x{m}x{n}x{expected} {config:14s} {us:8.1f} us {tflops:6.0f} TFLOPS"
                  f"  diff {calc_diff(out, first):.1e}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["0x0x0", "0x0x0:c"])
