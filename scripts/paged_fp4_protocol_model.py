"""A model of the FP4 paged indexer's barrier protocol with producer-side decode (benchmarks/variants/
fp4-producer-decode.patch), explored over random schedules on the CPU: does any interleaving deadlock?

One CTA: 4 producer warps (warp 0 also loads the query stages) and 4 math warpgroups, each modelled as one actor
that runs until its next blocking wait. TMA loads land at arbitrary later times. Barriers are counted in completed
phases (a wait for use n of a stage needs n + 1 completions of its full barrier, or n of its empty one), which is
what the kernel's parity waits mean while no ring laps another. The kernel's code is the reference: `producer` follows
the producer loop and `decode_tiles` of PagedMqaLogitsWgmmaKernel, `math` its math loop and `next_q_stage`. A
deadlock prints the schedule and the blocked actors and exits non-zero.

    python3 scripts/paged_fp4_protocol_model.py [--trials 20000] [--seed 0] [--no-drain]
"""

import argparse
import random
import sys

WGS, Q_STAGES, SPLIT, TILE = 4, 2, 256, 64


class Barrier:
    def __init__(self, count):
        self.count, self.arrived, self.done = count, 0, 0

    def arrive(self):
        self.arrived += 1
        if self.arrived == self.count:
            self.arrived, self.done = 0, self.done + 1


def model(units, kv_stages, dec_stages, rng, drain=True):
    """units: [(atom, split, ctx)] in the CTA's walk order. Returns None, or a deadlock description."""
    q_full = [Barrier(1) for _ in range(Q_STAGES)]
    q_empty = [Barrier(WGS) for _ in range(Q_STAGES)]
    packed_full = [[Barrier(1) for _ in range(kv_stages)] for _ in range(WGS)]
    dec_full = [[Barrier(1) for _ in range(dec_stages)] for _ in range(WGS)]
    dec_empty = [[Barrier(1) for _ in range(dec_stages)] for _ in range(WGS)]
    in_flight = []  # TMA loads not landed yet: barriers to complete
    named = {"arrived": 0, "generation": 0}  # the math WGs' 4-WG barrier at each atom switch

    def has_tile(w, u):
        _, split, ctx = units[u]
        return split * SPLIT + w * TILE < ctx

    def producer(w):
        kv_it = dec_it = q_it = 0
        q_atom = -1
        u = 0
        while True:
            have = u < len(units)
            tile = have and has_tile(w, u)
            load_q = have and w == 0 and units[u][0] != q_atom
            qs = q_it % Q_STAGES
            # must: everything at the end or when the query stage is not free; the oldest tile when its
            # packed stage is the one to reload
            q_free = not load_q or q_empty[qs].done >= q_it // Q_STAGES
            must = 0
            if not have or (drain and not q_free):
                must = kv_it
            elif tile and kv_it - dec_it == kv_stages:
                must = dec_it + 1
            while dec_it < kv_it:  # decode_tiles(must)
                ps, ds = dec_it % kv_stages, dec_it % dec_stages

                def ready(ps=ps, ds=ds, n_p=dec_it // kv_stages, n_d=dec_it // dec_stages):
                    return packed_full[w][ps].done >= n_p + 1 and dec_empty[w][ds].done >= n_d

                if dec_it >= must and not ready():
                    break
                yield ready
                dec_full[w][ds].arrive()
                dec_it += 1
            if not have:
                return
            if load_q:
                q_atom = units[u][0]
                n = q_it // Q_STAGES
                yield lambda qs=qs, n=n: q_empty[qs].done >= n
                in_flight.append(q_full[qs])
                q_it += 1
            u += 1
            if tile:
                s = kv_it % kv_stages
                in_flight.append(packed_full[w][s])  # FP4: no empty wait, the decode freed the stage
                kv_it += 1

    def math(w):
        loaded_atom = -1
        q_it = kv_it = 0
        qs = 0
        for u, (atom, _, _) in enumerate(units):
            if atom != loaded_atom:
                if q_it > 0:
                    q_empty[qs].arrive()
                qs, n = q_it % Q_STAGES, q_it // Q_STAGES
                q_it += 1
                yield lambda qs=qs, n=n: q_full[qs].done >= n + 1
                for _ in range(2):  # NamedBarrier::sync(4 WGs) before and after the query decode
                    gen = named["generation"]
                    named["arrived"] += 1
                    if named["arrived"] == WGS:
                        named["arrived"], named["generation"] = 0, gen + 1
                    yield lambda gen=gen: named["generation"] > gen
                loaded_atom = atom
            if has_tile(w, u):
                s, n = kv_it % dec_stages, kv_it // dec_stages
                yield lambda s=s, n=n: dec_full[w][s].done >= n + 1
                dec_empty[w][s].arrive()
                kv_it += 1

    actors = {f"producer {w}": producer(w) for w in range(WGS)}
    actors.update({f"math {w}": math(w) for w in range(WGS)})
    waiting = {}
    for name, gen in list(actors.items()):  # run each to its first wait
        try:
            waiting[name] = next(gen)
        except StopIteration:
            del actors[name]
    while actors or in_flight:
        enabled = [n for n in actors if waiting[n]()]
        choices = enabled + (["tma"] if in_flight else [])
        if not choices:
            return f"deadlock: {sorted(actors)} blocked"
        pick = rng.choice(choices)
        if pick == "tma":
            in_flight.pop(rng.randrange(len(in_flight))).arrive()
            continue
        try:
            waiting[pick] = next(actors[pick])
        except StopIteration:
            del actors[pick]
    return None


def random_units(rng):
    """A CTA's walk: a few atoms (1-2 tokens of a batch row), each split of 256 tokens a unit; the walk may start
    and end inside an atom (the schedule row's range), and with ctas_per_row > 1 it takes every n-th unit."""
    units = []
    for atom in range(rng.randint(1, 6)):
        ctx = rng.choice([1, 63, 64, 65, 200, 256, 257, 700, 1500, rng.randint(1, 3000)])
        units += [(atom, split, ctx) for split in range((ctx + SPLIT - 1) // SPLIT)]
    lo = rng.randrange(len(units))
    units = units[lo:rng.randint(lo + 1, len(units))]
    step = rng.choice([1, 1, 2, 3])
    return units[rng.randrange(step)::step] or units[:1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-drain", action="store_true",
                    help="drop warp 0's drain before a query-stage wait (the model should then find the deadlock)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    for trial in range(args.trials):
        units = random_units(rng)
        kv_stages, dec_stages = rng.choice([(6, 3), (5, 3), (4, 3), (4, 2)])
        err = model(units, kv_stages, dec_stages, rng, drain=not args.no_drain)
        if err:
            print(f"trial {trial}: stages ({kv_stages}, {dec_stages}), units {units}: {err}")
            sys.exit(1)
    print(f"{args.trials} random schedules: no deadlock")


if __name__ == "__main__":
    main()
