"""A/B of the contiguous M-grouped FP8 GEMM's A-scale layout (K-major vs MN-major by TMA), kernel time.

    python3 -P scripts/ab_contiguous_scales.py            (DeepGEMM's four contiguous anchor shapes)

Same group sizes and operands as ``python -m jax_deepgemm.bench --grouped contiguous`` (its seeded
``expected * U(0.7, 1.3)``), timed with the CUDA profiler over rotating input sets; the MN-major time
includes the scale transpose. Prints us and TFLOPS per layout and the calc_diff of the two outputs.
"""

import jax
import jax.numpy as jnp
import numpy as np

import jax_deepgemm as dg
from jax_deepgemm import m_grouped_gemm
from jax_deepgemm.bench_grouped import CONTIGUOUS_ANCHORS, _sizes
from jax_deepgemm.testing import timing
from jax_deepgemm.testing.generators import m_grouped_operands
from jax_deepgemm.testing.numeric import calc_diff


def main() -> None:
    for groups, expected, n, k in CONTIGUOUS_ANCHORS:
        sizes = _sizes(groups * expected + n, groups, expected)

        def make(i):
            a, b, _, _, ids, _ = m_grouped_operands(i, sizes, n, k)
            return a, b, jnp.asarray(ids)

        outs = {}
        for mn_major in (False, True):
            m_grouped_gemm._contiguous_wants_mn_major_sfa = lambda m, mn=mn_major: mn
            fn = jax.jit(lambda a, b, ids: dg.m_grouped_fp8_gemm_nt_contiguous(a, b, ids))
            us = timing.time_with_profiler(fn, make_inputs=make, n_reps=3).median_us
            outs[mn_major] = np.asarray(fn(*make(0)).astype(jnp.float32))
            tflops = 2 * sum(sizes) * n * k / us / 1e6
            print(f"{groups}x{expected}x{n}x{k} {'MN-major' if mn_major else 'K-major '} {us:9.1f} us "
                  f"{tflops:6.0f} TFLOPS", flush=True)
        print(f"  diff(K, MN) {calc_diff(outs[False], outs[True]):.1e}", flush=True)


if __name__ == "__main__":
    main()
