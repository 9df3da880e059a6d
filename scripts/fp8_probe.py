"""Kernel time of a fixed set of FP8 problems, one line each: the quick A/B of a kernel change.

    python3 -P scripts/fp8_probe.py TAG [--out FILE] [--masked] [--k-grouped] [--contiguous] [--bf16]
    python3 -P scripts/fp8_probe.py TAG [--out FILE] --small-m

The set covers each FP8 kernel form the bars depend on: the 1D2D GEMM at short K on a wide tile
(1193 x 7168 x 2048, 128 x 192, the masked decode tile), dense M = 4096 at short and long K (the
heuristic's tiles, K from 512 to 16384), the 1D1D GEMM (per-channel B, FP32 out, 256 x 128 A-multicast pairs and
128 x 128 B-multicast pairs), the K-grouped weight gradient at 16 x 7168 x 2048 (the heuristic's tile and 128 x 128)
and two masked anchors (``--masked``: all six of DeepGEMM's; ``--k-grouped``: the heuristic's tile on the other
three K-grouped shapes of the bench too, the BF16 K-grouped kernel on all four and the FP8 one accumulating into C;
``--contiguous``: DeepGEMM's four contiguous M-grouped anchors; ``--bf16``: the BF16 GEMM's TMA-stored epilogue, dense
M = 4096 at three (N, K) and contiguous at two of the anchors). ``--small-m`` instead times only the bench's twelve
M = 64 / 128 shapes with the heuristic's tile (what a change to its small-M branch moves). Operands as the bench
draws them;
timed with the CUDA profiler over rotating input sets (``testing.timing.time_with_profiler``).
``scripts/ab_fp8_kernel.sh`` runs it once per kernel variant.
"""

import functools

import jax
import jax.numpy as jnp

import jax_deepgemm as dg
from jax_deepgemm.bench_grouped import (CONTIGUOUS_ANCHORS, K_GROUPED_SHAPES, MASKED_ANCHORS, contiguous_operands,
                                        contiguous_sizes, k_grouped_sizes, masked_counts, masked_operands)
from jax_deepgemm.testing import timing
from jax_deepgemm.testing.generators import contiguous_layout, fp8_gemm_operands, k_grouped_operands
from jax_deepgemm.testing.probe import ProbeLog, probe_parser
from jax_deepgemm.testing.shapes import BENCH_NK

DENSE = [  # m, n, k, B scale recipe, forced tile (None: the heuristic's)
    (1193, 7168, 2048, "block", (128, 192, 1, 1)),
    (4096, 7168, 2048, "block", None),
    (4096, 2112, 7168, "block", None),
    (4096, 4096, 7168, "block", None),  # long K (session 17: 4-5 % slower than session 12 on these two)
    (4096, 7168, 16384, "block", None),
    (4096, 32768, 512, "block", None),  # short K: 4 and 12 K-blocks per tile (what staggering costs per K loop)
    (4096, 24576, 1536, "block", None),
    (7168, 2048, 2048, "channel", (256, 128, 1, 2)),
    (7168, 2048, 2048, "channel", (128, 128, 2, 1)),  # 1D1D one-wave tiles (two accumulator sets: an A/B variant)
]
MASKED = [(1, 1024, 7168, 2048), (4, 256, 4096, 7168)]


BF16_DENSE = [(4096, 32768, 512), (4096, 7168, 2048), (4096, 24576, 1536)]  # BF16 out: D through TMA stores
BF16_CONTIGUOUS = [(4, 8192, 7168, 2048), (8, 4096, 4096, 7168)]


def _run(log: ProbeLog, name, fn, make, flops, n_reps: int = 3):
    t = timing.time_with_profiler(fn, make_inputs=make, n_reps=n_reps)
    # The library's kernels alone (the TN entries' operand transposes and XLA's copy of a non-donated C are
    # in the total, the same in every variant).
    own_us = timing.kernels_us(t.kernels, "Sm90") or 0.0
    log.add(name, t.median_us, f"{flops / t.median_us / 1e6:6.0f} TFLOPS; own kernels {own_us:8.1f} us")


def small_m(log: ProbeLog) -> None:
    """The bench's small-M rows (memory-bound: GB/s is the figure of merit; more repetitions, the times are short)."""
    fn = jax.jit(dg.fp8_gemm_nt)
    for m in (64, 128):
        for n, k in BENCH_NK:
            _run(log, f"dense {m}x{n}x{k} block None", fn, lambda i, m=m, n=n, k=k: fp8_gemm_operands(i, m, n, k)[:2],
                 2 * m * n * k, n_reps=7)


def main(log: ProbeLog, all_masked: bool, all_k_grouped: bool, contiguous: bool = False, bf16: bool = False) -> None:
    run = functools.partial(_run, log)

    for m, n, k, recipe, tile in DENSE:
        fn = jax.jit(lambda a, b, t=tile: dg.fp8_gemm_nt(a, b, tile=t))
        run(f"dense {m}x{n}x{k} {recipe} {tile}", fn,
            lambda i, m=m, n=n, k=k, r=recipe: fp8_gemm_operands(i, m, n, k, b_recipe=r)[:2], 2 * m * n * k)
    # The last K-grouped shape with the heuristic's tile and both 128 x 128 ones; the others (--k-grouped) its tile.
    for key in K_GROUPED_SHAPES if all_k_grouped else K_GROUPED_SHAPES[-1:]:
        groups, m, n, _ = key
        sizes = k_grouped_sizes(key)
        k_sizes = jnp.asarray(sizes, jnp.int32)
        for tile in (None, (128, 128, 1), (128, 128, 2)) if key == K_GROUPED_SHAPES[-1] else (None,):
            fn = jax.jit(lambda a, b, t=tile, s=k_sizes: dg.k_grouped_fp8_gemm_tn_contiguous(a, b, s, tile=t))
            run(f"k_grouped {key} {tile}", fn, lambda i, s=sizes, m=m, n=n: k_grouped_operands(i, s, m, n)[:2],
                2 * m * n * sum(sizes))
        if all_k_grouped:  # the BF16 kernel's FP32 epilogue, and the FP8 one accumulating into C (D = C + A^T B)
            fn = jax.jit(lambda x, y, s=k_sizes: dg.k_grouped_bf16_gemm_tn_contiguous(x, y, s))
            run(f"k_grouped_bf16 {key}", fn, lambda i, s=sizes, m=m, n=n: k_grouped_operands(i, s, m, n)[2:],
                2 * m * n * sum(sizes))
            if key == K_GROUPED_SHAPES[-1]:
                fn = jax.jit(lambda a, b, c, s=k_sizes: dg.k_grouped_fp8_gemm_tn_contiguous(a, b, s, c=c))
                run(f"k_grouped {key} +C", fn, lambda i, s=sizes, g=groups, m=m, n=n: (
                    *k_grouped_operands(i, s, m, n)[:2], jax.random.normal(jax.random.key(i), (g, m, n), jnp.float32)),
                    2 * m * n * sum(sizes))
    if contiguous:  # DeepGEMM's four contiguous anchors (issue 4's 1330 TFLOPS bar), the bench's draws, per-row ids
        for key in CONTIGUOUS_ANCHORS:
            _, _, n, k = key
            sizes = contiguous_sizes(key)
            fn = jax.jit(lambda a, b, ids: dg.m_grouped_fp8_gemm_nt_contiguous(a, b, ids))
            run(f"contiguous {key}", fn, lambda i, s=sizes, n=n, k=k: contiguous_operands(i, s, n, k),
                2.0 * sum(sizes) * n * k)
    if bf16:
        def normal_bf16(seed, shape):
            return jax.random.normal(jax.random.key(seed), shape, jnp.float32).astype(jnp.bfloat16)

        for m, n, k in BF16_DENSE:
            run(f"bf16 dense {m}x{n}x{k}", jax.jit(lambda a, b: dg.bf16_gemm_nt(a, b)),
                lambda i, m=m, n=n, k=k: (normal_bf16(2 * i, (m, k)), normal_bf16(2 * i + 1, (n, k))), 2 * m * n * k)
        for key in BF16_CONTIGUOUS:
            groups, _, n, k = key
            sizes = contiguous_sizes(key)
            ids = jnp.asarray(contiguous_layout(sizes)[0])
            run(f"bf16 contiguous {key}", jax.jit(lambda a, b, ids=ids: dg.m_grouped_bf16_gemm_nt_contiguous(a, b, ids)),
                lambda i, g=groups, n=n, k=k, m=len(ids): (normal_bf16(2 * i, (m, k)), normal_bf16(2 * i + 1, (g, n, k))),
                2.0 * sum(sizes) * n * k)
    for key in (MASKED_ANCHORS if all_masked else MASKED):
        counts = masked_counts(key)
        masked_m = jnp.asarray(counts)
        fn = jax.jit(lambda a, b, c=masked_m, e=key[1]: dg.m_grouped_fp8_gemm_nt_masked(a, b, c, expected_m=e))
        run(f"masked {key}", fn, lambda i, key=key: masked_operands(i, key), 2 * float(counts.sum()) * key[2] * key[3])


if __name__ == "__main__":
    parser = probe_parser(__doc__)
    parser.add_argument("--masked", action="store_true", help="all six masked anchors, not two")
    parser.add_argument("--k-grouped", action="store_true", help="all four K-grouped shapes (the heuristic's tile)")
    parser.add_argument("--contiguous", action="store_true", help="DeepGEMM's four contiguous anchors")
    parser.add_argument("--bf16", action="store_true", help="BF16 dense and contiguous GEMMs (TMA-stored D)")
    parser.add_argument("--small-m", action="store_true", help="only the bench's M = 64 / 128 shapes")
    args = parser.parse_args()
    if args.small_m:
        small_m(ProbeLog(args.tag, args.out))
    else:
        main(ProbeLog(args.tag, args.out), args.masked, args.k_grouped, args.contiguous, args.bf16)
