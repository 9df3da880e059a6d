"""Top stalled SASS instructions of an ncu report (the kernel's hot spots), printed as a short table.

On the GPU machine:
  ncu --set full -k regex:Sm90Fp8GemmKernel --launch-skip 1 --launch-count 1 -o prof \
      python3 -P scripts/profile_one.py 4096 4096 7168
  ncu --import prof.ncu-rep --page source --csv --print-source sass > source.csv
  python3 scripts/ncu_top_stalls.py source.csv [N] [--regions NAME=LO-HI,...]

Addresses print as offsets from the kernel's first instruction, as `scripts/sass_local.sh`'s listing numbers them
(`/*2880*/`), so a hot spot can be read in context on the CPU machine. `--regions` sums the samples, executed
instructions and stall reasons per range of offsets (hex, LO inclusive), e.g. the K loop against the tile prologue:
  --regions prologue=540-2350,kloop=2350-7c00,epilogue=7c00-8400,producer=c910-20000
"""

import csv
import sys


def main(path: str, top: int, regions: list[tuple[str, int, int]] = ()) -> None:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header_at = next((i for i, r in enumerate(rows) if any("Warp Stall Sampling" in c for c in r)), None)
    if header_at is None:  # a profile of sections without source counters (e.g. memory sections only)
        print("(no warp stall samples in this report: its sections collected no source counters)")
        return
    header, body = rows[header_at], rows[header_at + 1:]
    col = {name: i for i, name in enumerate(header)}
    samples = next(i for n, i in col.items() if n.startswith("Warp Stall Sampling (All"))
    source = next((i for n, i in col.items() if n == "Source"), None)
    address = next((i for n, i in col.items() if n == "Address"), None)

    def value(r):
        return _number(r, samples)

    base = min((int(r[address], 16) for r in body), default=0) if address is not None else 0

    def offset(r) -> int:
        return int(r[address], 16) - base if address is not None else -1

    total = sum(value(r) for r in body) or 1.0
    print(f"{len(body)} SASS lines, {total:.0f} stall samples; top {top}:")
    for r in sorted(body, key=value, reverse=True)[:top]:
        where = f"{offset(r):#06x}" if address is not None else "?"
        text = r[source] if source is not None else ""
        print(f"{100 * value(r) / total:5.1f}%  {where:>6}  {text[:110]}")
    def opcode(r) -> str:  # "@!P0 BRA.U ..." -> "BRA"
        words = (r[source] if source is not None else "").split()
        if words and words[0].startswith("@"):
            words = words[1:]
        return words[0].split(".")[0] if words else "?"

    def by_opcode(metric) -> dict[str, float]:
        sums: dict[str, float] = {}
        for r in body:
            sums[opcode(r)] = sums.get(opcode(r), 0.0) + metric(r)
        return dict(sorted(sums.items(), key=lambda kv: -kv[1]))

    # Per opcode class: where the math warps wait (barrier tries, WGMMA waits, FFMA promotion, ...).
    print("by opcode:", ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in list(by_opcode(value).items())[:14]))
    # Why the warps wait, summed over the kernel (the stall_* columns), and what they execute: the executed
    # instruction mix says which pipe a kernel fills (LOP3 / PRMT / SHF: ALU; IMAD, FMUL: FMA).
    reasons = [(n, i) for n, i in col.items() if n.startswith("stall_") and "Not Issued" not in n]
    totals = {n: sum(_number(r, i) for r in body) for n, i in reasons}
    all_stalls = sum(totals.values()) or 1.0
    print("by reason:", ", ".join(f"{n[6:]} {100 * v / all_stalls:.1f}%" for n, v in
                                  sorted(totals.items(), key=lambda kv: -kv[1])[:10]))
    executed = col.get("Instructions Executed")
    for name, lo, hi in regions:
        rows_in = [r for r in body if lo <= offset(r) < hi]
        why = {n[6:]: sum(_number(r, i) for r in rows_in) for n, i in reasons}
        why_total = sum(why.values()) or 1.0
        ran = sum(_number(r, executed) for r in rows_in) if executed is not None else 0.0
        print(f"region {name} [{lo:#x}, {hi:#x}): {100 * sum(value(r) for r in rows_in) / total:.1f}% of samples, "
              f"{ran:.0f} warp instructions executed; " + ", ".join(
                  f"{n} {100 * v / why_total:.0f}%" for n, v in sorted(why.items(), key=lambda kv: -kv[1])[:5]))
    if executed is not None:
        mix = by_opcode(lambda r: _number(r, executed))
        count = sum(mix.values()) or 1.0
        print(f"executed: {count:.0f} warp instructions;",
              ", ".join(f"{k} {100 * v / count:.1f}%" for k, v in list(mix.items())[:16]))


def _number(row: list[str], index: int) -> float:
    try:
        return float(row[index].replace(",", ""))
    except (ValueError, IndexError):
        return 0.0


def _regions(spec: str) -> list[tuple[str, int, int]]:
    """'kloop=2350-7c00,epilogue=7c00-8400' -> [("kloop", 0x2350, 0x7c00), ...]"""
    out = []
    for item in filter(None, spec.split(",")):
        name, span = item.split("=")
        lo, hi = span.split("-")
        out.append((name, int(lo, 16), int(hi, 16)))
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    spec = ""
    if "--regions" in args:
        at = args.index("--regions")
        spec = args[at + 1]
        del args[at:at + 2]
    main(args[0], int(args[1]) if len(args) > 1 else 30, _regions(spec))
