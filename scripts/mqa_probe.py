"""Kernel time of a fixed set of indexer problems, one line each: the quick A/B of an MQA kernel change.

    python3 -P scripts/mqa_probe.py TAG [--out FILE] [--filter REGEX ...]

The set (~1 min): the paged anchors where FP4 is furthest from its bar, FP8 and FP4 (B 256 n 1 H 64, B 4096 n 2
H 64), and the three FP8 ranged rows nearest DeepGEMM's time (two at D = 32, one at D = 128). `--all` adds
the other four paged anchor rows (B 256 n 1 H 32 L 8192, the two L 65536 ones, B 4096 n 1 H 32), FP4 ranged and
another D = 128 ranged row. Inputs and timing as `python -m jax_deepgemm.bench --mqa` (CUDA profiler, rotating input
sets), without its baselines. `PROBE=scripts/mqa_probe.py scripts/ab_fp8_kernel.sh base variants/x` runs it once
per variant.
"""

from jax_deepgemm.bench_mqa import PAGED_ANCHORS, bench_paged, bench_ranged
from jax_deepgemm.testing.probe import ProbeLog, probe_parser
from jax_deepgemm.testing.shapes import case_selected

PAGED = [(256, 1, 64, 8192, "bfloat16"), (4096, 2, 64, 8192, "bfloat16")]
PAGED_MORE = [key for key in PAGED_ANCHORS if key not in PAGED]  # the other four of DeepGEMM's paged rows
# The same cache tokens per call as B 256 n 1 H 64 L 8192 BF16 in fewer / more batch rows, and that row with FP32
# logits: where the FP4 kernel's time per token differs from L 65536's (session 29's `--mqa`: 72.1 us at L 8192
# against 482.3 / 8 = 60.3 at L 65536 FP32; FP8 102.7 vs 100.8), these tell per-CTA costs (start, tail) from
# per-atom ones (query switch) and from the logits dtype (B 4096 n 2 with FP32 logits: within 2 % of BF16 for both
# kernels, session 37).
PAGED_SCALING = [(64, 1, 64, 32768, "bfloat16"), (1024, 1, 64, 2048, "bfloat16"), (256, 1, 64, 8192, "float32"),
                 (4096, 2, 64, 8192, "float32")]
RANGED = [(2048, 8192, 64, 32, False, False, "float32"), (2048, 65536, 64, 32, True, True, "bfloat16"),
          (8192, 8192, 32, 128, False, True, "bfloat16")]
RANGED_MORE = [(2048, 8192, 64, 128, False, False, "float32")]


def main(log: ProbeLog, filters, everything: bool, scaling: bool) -> None:
    paged, ranged = (PAGED + PAGED_MORE, RANGED + RANGED_MORE) if everything else (PAGED, RANGED)
    if scaling:
        paged = paged + PAGED_SCALING
    cases = [(bench_paged, key, fp4) for key in paged for fp4 in (False, True)]
    cases += [(bench_ranged, key, fp4) for key in ranged for fp4 in ((False, True) if everything else (False,))]
    for bench, key, fp4 in cases:
        name = f"{'fp4' if fp4 else 'fp8'} {'paged' if bench is bench_paged else 'ranged'} {'x'.join(map(str, key))}"
        if not case_selected(name, filters):  # the line's name: --filter fp4.paged selects by kind too
            continue
        r = bench(key, fp4=fp4, reps=1, target_ms=0.5, baselines=False)
        us = r["ours_kernel_us"]
        log.add(name, us, f"{r['bytes'] / us / 1e3:6.0f} GB/s")


if __name__ == "__main__":
    parser = probe_parser(__doc__)
    parser.add_argument("--filter", nargs="*", metavar="REGEX")
    parser.add_argument("--all", action="store_true", help="the larger set")
    parser.add_argument("--scaling", action="store_true", help="add the paged rows of PAGED_SCALING")
    args = parser.parse_args()
    main(ProbeLog(args.tag, args.out), args.filter, args.all, args.scaling)
