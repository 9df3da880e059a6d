"""A/B of the masked M-grouped FP8 GEMM's tile and A-scale layout, kernel time.

    python3 -P scripts/ab_masked.py [CONFIG ...]     (DeepGEMM's six masked anchor shapes)

CONFIG is BLOCK_MxBLOCK_N:LAYOUT, e.g. ``0x0:k 128x176:mn`` (the default: ``0x0:k 0x0:mn``); 0x0 is the
heuristic's tile, LAYOUT ``mn`` gives the kernel MN-major A scales (staged by TMA; the transpose is timed too),
``k`` K-major ones; an optional third field MxN (``128x192:mn:1x2``) sets JAX_DEEPGEMM_MGROUPED_CLUSTER for that
config, a cluster override for kernel variants (session 32's m-grouped-pairs read it; main ignores it).
Same masked_m and operands as ``python -m jax_deepgemm.bench --grouped masked``, timed with
the CUDA profiler over rotating input sets. Prints us, TFLOPS and x DeepGEMM's H100 anchor per config and the
calc_diff of each config's valid rows against the first config's.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jax_deepgemm as dg
from jax_deepgemm import m_grouped_gemm
from jax_deepgemm.bench_grouped import MASKED_ANCHORS, masked_counts, masked_operands
from jax_deepgemm.testing import timing
from jax_deepgemm.testing.numeric import calc_diff

CLUSTER_ENV = "JAX_DEEPGEMM_MGROUPED_CLUSTER"


def main(configs) -> None:
    for key, anchor_us in MASKED_ANCHORS.items():
        groups, expected, n, k = key
        masked_m = masked_counts(key)
        counts = jnp.asarray(masked_m)

        def make(i, key=key):
            return masked_operands(i, key)

        first = None
        for config in configs:
            tile, layout, *cluster = config.split(":")
            os.environ.pop(CLUSTER_ENV, None)
            if cluster:
                os.environ[CLUSTER_ENV] = cluster[0]
            block_m, block_n = (int(v) for v in tile.split("x"))
            m_grouped_gemm._masked_wants_mn_major_sfa = lambda *_, mn=(layout == "mn"): mn
            tile_arg = (block_m, block_n) if block_m else None
            fn = jax.jit(lambda a, b, t=tile_arg: dg.m_grouped_fp8_gemm_nt_masked(a, b, counts, expected_m=expected,
                                                                                  tile=t))
            try:
                us = timing.time_with_profiler(fn, make_inputs=make, n_reps=3).median_us
            except Exception as e:  # noqa: BLE001 - an uncompiled tile: report, go on
                print(f"{groups}x{expected}x{n}x{k} {config:16s} failed: {str(e)[:120]}", flush=True)
                continue
            out = np.asarray(fn(*make(0)).astype(jnp.float32))
            valid = np.concatenate([out[g, :mm] for g, mm in enumerate(masked_m)])
            first = valid if first is None else first
            tflops = 2 * float(masked_m.sum()) * n * k / us / 1e6
            print(f"{groups}x{expected}x{n}x{k} {config:16s} {us:8.1f} us {tflops:6.0f} TFLOPS "
                  f"x DG {anchor_us / us:4.2f}  diff {calc_diff(valid, first):.1e}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["0x0:k", "0x0:mn"])
