"""Where one FP8 GEMM call's time goes, per CTA: reads the clocks that the `debug-fp8-stamps` diagnostic variant
(benchmarks/variants/) writes over D, and prints their spread over the CTAs.

    python3 -P scripts/fp8_stamps.py 64x2112x7168 128x2112x7168 ...   (the heuristic's tile; unsplit tiles only)
    python3 -P scripts/fp8_stamps.py --tile 64x16 64x2112x7168   (a forced unsplit tile: the heuristic splits this one)
    python3 -P scripts/fp8_stamps.py --fine ...   (with the debug-fp8-stamps-fine variant: the start-up step by step)

Only with that variant's extension (timing only, its D is wrong). Each CTA's consumer thread 0 writes 12 values over
rows 0-11, columns 0-3 of its last tile (8 bytes each): globaltimer at entry and after its last TMA store landed, and
SM clocks (%clock, 32-bit) at entry, after the stage ring's set-up, when its first stage was seen full, after its
last K-block, at its end, the cycles it spent waiting for full stages, and its producer thread's clocks at its first
and last stage issue and the cycles it spent waiting for free stages; then the SM id. The call runs on fresh operand
sets (none in L2, as in the bench's rotation); the last of `--calls` calls is read, the earlier ones warm up.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jax_deepgemm as dg
from jax_deepgemm import _ffi
from jax_deepgemm.testing.generators import fp8_gemm_operands

FIELDS = ("g0", "g_end", "c0", "c_init", "c_first", "c_kdone", "c_end", "c_wait", "p_first", "p_last", "p_wait", "smid")
# `debug-fp8-stamps-fine` (on top of the above): the start-up's clocks over columns 4-7 of rows 0-6.
FINE_FIELDS = ("p_dealloc", "p_prefetched", "p_walked", "p_b_issued", "c_alloc", "c_walked", "c_before_wait")


def read_stamps(d: np.ndarray, m: int, n: int, block_m: int, block_n: int, fine: bool = False) -> dict[str, np.ndarray]:
    """The stamps of every tile of D (one per CTA when the grid holds one tile per CTA)."""
    raw = np.ascontiguousarray(np.asarray(d).view(np.uint16))
    fields = [(name, i, 0) for i, name in enumerate(FIELDS)]
    if fine:
        fields += [(name, i, 4) for i, name in enumerate(FINE_FIELDS)]
    rows = []
    for m0 in range(0, m, block_m):
        for n0 in range(0, n, block_n):
            rows.append([raw[m0 + i, n0 + c:n0 + c + 4].copy().view(np.uint64)[0] for _, i, c in fields])
    table = np.array(rows, dtype=np.uint64)
    return {name: table[:, j] for j, (name, _, _) in enumerate(fields)}


def cycles_since(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """Difference of two 32-bit clock readings (wrap-safe)."""
    return ((later.astype(np.int64) - earlier.astype(np.int64)) & 0xFFFFFFFF).astype(np.float64)


FINE_LABELS = (
    ("p_dealloc", "  producer: registers released (us)"),
    ("p_prefetched", "  producer: descriptors prefetched (us)"),
    ("p_walked", "  producer: first tile walked (us)"),
    ("c_alloc", "  consumer: registers allocated (us)"),
    ("c_walked", "  consumer: first tile walked (us)"),
    ("c_before_wait", "  consumer: at its first full wait (us)"),
)


def summarize(s: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    ns = (s["g_end"] - s["g0"]).astype(np.float64)
    ghz = cycles_since(s["c_end"], s["c0"]) / np.maximum(ns, 1.0)  # SM clock of each CTA's run
    us = lambda cycles: cycles / ghz / 1e3  # noqa: E731
    t0 = s["g0"].min()
    return [
        ("entry after the first CTA's (us)", (s["g0"] - t0).astype(np.float64) / 1e3),
        ("exit after the first CTA's entry (us)", (s["g_end"] - t0).astype(np.float64) / 1e3),
        ("CTA run, entry to its stores landed (us)", ns / 1e3),
        ("SM clock (GHz)", ghz),
        ("ring set-up done (us)", us(cycles_since(s["c_init"], s["c0"]))),
        *[(label, us(cycles_since(s[name], s["c0"]))) for name, label in FINE_LABELS if name in s],
        ("producer's first stage issued (us)", us(cycles_since(s["p_first"], s["c0"]))),
        *([("  producer: its B load issued (us)", us(cycles_since(s["p_b_issued"], s["c0"])))] if "p_b_issued" in s else []),
        ("consumer's first stage full (us)", us(cycles_since(s["c_first"], s["c0"]))),
        ("producer's last stage issued (us)", us(cycles_since(s["p_last"], s["c0"]))),
        ("consumer's last K-block done (us)", us(cycles_since(s["c_kdone"], s["c0"]))),
        ("K loop: first full to last K-block (us)", us(cycles_since(s["c_kdone"], s["c_first"]))),
        ("  of it waiting for full stages (us)", us(s["c_wait"].astype(np.float64))),
        ("producer waiting for free stages (us)", us(s["p_wait"].astype(np.float64))),
        ("epilogue: last K-block to stores landed (us)", us(cycles_since(s["c_end"], s["c_kdone"]))),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shapes", nargs="+", help="MxNxK")
    parser.add_argument("--calls", type=int, default=6)
    parser.add_argument("--tile", help="BMxBN: force this tile, unsplit and unpaired, instead of the heuristic's")
    parser.add_argument("--fine", action="store_true", help="also read debug-fp8-stamps-fine's start-up clocks")
    args = parser.parse_args()
    if jax.devices()[0].platform != "gpu" or not dg.has_cuda_kernels():
        print("needs a GPU and the CUDA kernels (the debug-fp8-stamps variant)")
        return 0
    num_sms = _ffi.device_sm_count()
    for shape in args.shapes:
        m, n, k = (int(v) for v in shape.split("x"))
        if args.tile:
            block_m, block_n = (int(v) for v in args.tile.split("x"))
            split, tile = 1, (block_m, block_n, 1, 1, 1)
        else:
            block_m, block_n, _, _, split = _ffi.fp8_gemm_block_tile(m, n, k, num_sms)
            tile = None
        tiles = -(-m // block_m) * -(-n // block_n)
        if split != 1 or tiles > num_sms:
            print(f"{shape}: tile {block_m}x{block_n} split {split}, {tiles} tiles: stamps need one unsplit tile per CTA")
            continue
        fn = jax.jit(lambda a, b: dg.fp8_gemm_nt(a, b, tile=tile))
        out = None
        for i in range(args.calls):  # fresh operands each call: nothing of them in L2
            a, b = fp8_gemm_operands(seed=100 + i, m=m, n=n, k=k)[:2]
            jax.block_until_ready((a, b))
            out = jax.block_until_ready(fn(a, b))
        stamps = read_stamps(np.asarray(out), m, n, block_m, block_n, fine=args.fine)
        print(f"\n{shape}: tile {block_m}x{block_n}, {tiles} CTAs on {len(set(stamps['smid'].tolist()))} SMs; "
              f"span first entry to last exit {(stamps['g_end'].max() - stamps['g0'].min()) / 1e3:.2f} us")
        print(f"  {'':46} {'min':>7} {'p10':>7} {'median':>7} {'p90':>7} {'max':>7}")
        for name, v in summarize(stamps):
            q = np.percentile(v, [0, 10, 50, 90, 100])
            print(f"  {name:46} " + " ".join(f"{x:7.2f}" for x in q))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
