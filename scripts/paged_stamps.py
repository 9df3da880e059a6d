"""Per-CTA time stamps of the paged indexer kernel, from the `debug-paged-stamps` variant (never on main):

    python3 -P scripts/paged_stamps.py fp4:256:1:64:8192 fp4:64:1:64:32768 fp8:256:1:64:8192

Each math warpgroup writes its entry time (globaltimer), SM cycles to its first KV tile, first query stage, first
stored logits and exit, its tile and atom counts and its exit time into the last 128 columns of the FP32 logits
(max_context_len is 256 past the longest context, no cleaning). Prints, per row: the launch ramp (spread of CTA
entry), the median / max of each warpgroup's start-up stamps, the cycles per tile after the first, and the tail
(last CTA exit against the median one).
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jax_deepgemm.bench_mqa import paged_problem


def run(spec: str) -> None:
    kind, b, next_n, h, l_avg = spec.split(":")
    fp4, b, next_n, h, l_avg = kind == "fp4", int(b), int(next_n), int(h), int(l_avg)
    op, q, cache, w, lens_d, table_d, meta, max_ctx = paged_problem(b, next_n, h, l_avg, fp4)
    width = int(max_ctx) + 256
    f = jax.jit(lambda q, cache, w: op(q, cache, w, lens_d, table_d, meta, width, clean_logits=False,
                                       logits_dtype=jnp.float32)[:, -128:])
    for _ in range(3):
        tail = np.asarray(jax.block_until_ready(f(q, cache, w)))
    words = tail.view(np.uint32).reshape(-1, 8)  # slot = cta * 5 + warpgroup, 16 slots per row
    slots = np.arange(words.shape[0])
    # Only the launched CTAs' slots hold stamps (one CTA per schedule row, one schedule row per SM); the others hold
    # whatever the uncleaned logits buffer held (session 36 read that as stamps where B * next_n * 16 slots > 5 x SMs).
    num_ctas = meta.shape[0] - 1  # the schedule's [num_sms + 1, 2] rows
    math = (slots % 5 < 4) & (slots // 5 < num_ctas) & (words[:, 0] | words[:, 1]).astype(bool)
    wv, sv = words[math].astype(np.int64), slots[math]
    if not len(wv) or not (wv[:, 6] & 0xFFFF).any():  # no warpgroup counted a tile: main's kernel, or a CPU
        print(f"== {spec}: no stamps in the logits (needs a GPU and the debug-paged-stamps build)")
        return
    entry = (wv[:, 1] << 32) | wv[:, 0]
    clk = wv[:, 2:6]  # first KV, first query, first store, exit (SM cycles after entry)
    tiles, atoms, exit_ns = wv[:, 6] & 0xFFFF, wv[:, 6] >> 16, wv[:, 7]
    ghz = np.median(clk[:, 3] / np.maximum(exit_ns, 1))
    us = clk / ghz / 1e3
    t0 = entry.min()
    cta_exit = {}
    for s_, e, x in zip(sv, entry, exit_ns):
        cta_exit[s_ // 5] = max(cta_exit.get(s_ // 5, 0), e - t0 + x)
    ends = np.asarray(list(cta_exit.values())) / 1e3
    per_tile = (clk[:, 3] - clk[:, 2]) / np.maximum(tiles - 1, 1) / ghz / 1e3
    print(f"== {spec}  ({len(cta_exit)} CTAs, {len(sv)} warpgroups, SM clock {ghz:.2f} GHz from cycles / ns)")
    print(f"  launch ramp (CTA entry spread): {(entry.max() - t0) / 1e3:6.2f} us;  kernel span {ends.max():7.2f} us;"
          f"  CTA exit median {np.median(ends):7.2f}, min {ends.min():7.2f}, max {ends.max():7.2f} us")
    for i, name in enumerate(("first KV tile", "first query", "first store", "exit")):
        print(f"  {name:13s} after entry: median {np.median(us[:, i]):7.2f}  max {us[:, i].max():7.2f} us")
    print(f"  tiles per WG: mean {tiles.mean():.1f} max {tiles.max()};  atoms per WG: mean {atoms.mean():.2f} max"
          f" {atoms.max()};  us per tile after the first: median {np.median(per_tile):.3f}")
    by_wg = [np.median(us[sv % 5 == g, 3] - us[sv % 5 == g, 2]) for g in range(4)]
    print("  first store -> exit, median per WG: " + " ".join(f"{x:.1f}" for x in by_wg) + " us")


if __name__ == "__main__":
    for spec in sys.argv[1:]:
        run(spec)
