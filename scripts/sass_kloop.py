"""The K loop of each WGMMA kernel in a SASS listing (scripts/sass_local.sh's output), counted on the CPU machine:
what sits on a K-block's critical path besides the tensor-core work.

    bash scripts/sass_local.sh fp8:JDG_FP8_1D2D_BM256 > /tmp/k.sass && python3 scripts/sass_kloop.py /tmp/k.sass

Per kernel, for each full-barrier wait (`SYNCS.PHASECHK.TRANS64.TRYWAIT`) the instructions from it to the next
`WARPGROUP.ARRIVE` (what runs between a stage landing and the first WGMMA on it), and for each WGMMA wait
(`WARPGROUP.DEPBAR`) the instructions to the next `WARPGROUP.ARRIVE` in program order, split into FFMA (the
promotion) and the rest. Session 31 compared DeepGEMM's SM90 kernel this way (its 256 x 128 loop: 0 instructions
from a wait to the issue, which sits inside the previous promotion; 128 x 192: 96 FFMA + 11 others per K-block).
The DEPBAR count follows program order, not the loop's back edge: where a loop ends in a branch back to its top,
the instructions past the branch are another copy of the loop (read the listing there).
"""

import re
import sys
from collections import Counter

_LINE = re.compile(r"\s+/\*([0-9a-f]+)\*/\s+(.*?)\s*;")


def kernels(path: str) -> dict[str, list[str]]:
    """Instruction texts per kernel (nvdisasm -c output: `.text.NAME:` sections)."""
    out: dict[str, list[str]] = {}
    name = None
    with open(path) as f:
        for line in f:
            if line.startswith(".text."):
                name = line[6:].rstrip().rstrip(":")
                out[name] = []
            elif name and (m := _LINE.match(line)):
                out[name].append(m.group(2))
    return out


def opcode(ins: str) -> str:
    parts = ins.split()
    return parts[1] if parts[0].startswith("@") else parts[0]


def gaps(ins: list[str], start: str) -> list[list[str]]:
    """The instructions between each `start` instruction and the next WARPGROUP.ARRIVE (within 400)."""
    found = []
    for i, text in enumerate(ins):
        if start in text:
            for j in range(i + 1, min(i + 400, len(ins))):
                if "WARPGROUP.ARRIVE" in ins[j]:
                    found.append(ins[i + 1 : j])
                    break
    return found


def main(path: str) -> None:
    for name, ins in kernels(path).items():
        if not any("GMMA" in x for x in ins):
            continue
        waits = [len(g) for g in gaps(ins, "SYNCS.PHASECHK.TRANS64.TRYWAIT")]
        depbars = []
        for g in gaps(ins, "WARPGROUP.DEPBAR"):
            ops = Counter(opcode(x) for x in g)
            depbars.append(f"{len(g)} ({ops['FFMA']} FFMA)")
        print(f"{name[:90]}\n  full wait -> first WGMMA: {waits[:8]}\n  WGMMA wait -> next issue: {depbars[:6]}")


if __name__ == "__main__":
    main(sys.argv[1])
