"""A/B of the contiguous M-grouped FP8 GEMM's tile height and A-scale layout, kernel time.

    python3 -P scripts/ab_contiguous.py [CONFIG ...]     (DeepGEMM's four contiguous anchor shapes)

CONFIG is BLOCK_M:LAYOUT, e.g. ``128:mn 256:mn 256:k`` (the default: ``128:mn 256:mn``); BLOCK_M 0 is the
heuristic's, LAYOUT ``mn`` gives the kernel MN-major A scales (staged by TMA; the transpose is timed too),
``k`` K-major ones; an optional third field MxN (``128:mn:2x1``) sets JAX_DEEPGEMM_MGROUPED_CLUSTER for that config,
a cluster override for kernel variants (session 32's m-grouped-pairs read it; main ignores it). Same group sizes and
operands as ``python -m jax_deepgemm.bench --grouped contiguous`` (its seeded ``expected * U(0.7, 1.3)``), timed with
the CUDA profiler over rotating input sets. Prints us and TFLOPS per config and the calc_diff of each output against
the first config's.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jax_deepgemm as dg
from jax_deepgemm import m_grouped_gemm
from jax_deepgemm.bench_grouped import CONTIGUOUS_ANCHORS, _sizes
from jax_deepgemm.testing import timing
from jax_deepgemm.testing.generators import m_grouped_operands
from jax_deepgemm.testing.numeric import calc_diff

CLUSTER_ENV = "JAX_DEEPGEMM_MGROUPED_CLUSTER"


def main(configs) -> None:
    for groups, expected, n, k in CONTIGUOUS_ANCHORS:
        sizes = _sizes(groups * expected + n, groups, expected)

        def make(i):
            a, b, _, _, ids, _ = m_grouped_operands(i, sizes, n, k)
            return a, b, jnp.asarray(ids)

        first = None
        for config in configs:
            block_m, layout, *cluster = config.split(":")
            os.environ.pop(CLUSTER_ENV, None)
            if cluster:
                os.environ[CLUSTER_ENV] = cluster[0]
            m_grouped_gemm._m_grouped_wants_mn_major_sfa = lambda m, mn=(layout == "mn"): mn
            fn = jax.jit(lambda a, b, ids, bm=int(block_m): dg.m_grouped_fp8_gemm_nt_contiguous(a, b, ids, block_m=bm))
            us = timing.time_with_profiler(fn, make_inputs=make, n_reps=3).median_us
            out = np.asarray(fn(*make(0)).astype(jnp.float32))
            first = out if first is None else first
            tflops = 2 * sum(sizes) * n * k / us / 1e6
            print(f"{groups}x{expected}x{n}x{k} {config:11s} {us:9.1f} us {tflops:6.0f} TFLOPS "
                  f"diff {calc_diff(out, first):.1e}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["128:mn", "256:mn"])
