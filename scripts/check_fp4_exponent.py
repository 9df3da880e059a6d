"""Byte-level emulation of the FP4 KV-row decode's exponent schemes (ffi/kernels/sm90_mqa_logits_wgmma.cuh), run on a
CPU machine before a GPU test: `RowRefExponent`'s reference exponent (the largest group exponent lowered by the
clamped spread) against variant fp4-quad-exponent's e_max - 6, found by two quad shuffles of 16-bit maxima. For random
UE8M0 words (narrow, wide and tiny exponent spreads; D = 32, 64, 128) and every E2M1 code, each lane's decoded e4m3
value times its row's power of two must be the same number under both schemes (the logits then agree bitwise). The
byte-permute table is read from the header; PTX prmt, __vmaxu2 and __vminu2 are emulated.

  python3 scripts/check_fp4_exponent.py [ffi/kernels/sm90_mqa_logits_wgmma.cuh]
"""

import random
import re
import sys


def read_lut(header: str) -> list[tuple[int, int]]:
    text = open(header).read()
    body = text[text.index("kE2m1Lut[kE2m1LutSize][2] = {"):]
    words = [int(v, 16) for v in re.findall(r"0x([0-9a-f]+)u", body[: body.index("};")])]
    return [(words[2 * i], words[2 * i + 1]) for i in range(len(words) // 2)]


def e4m3_value(byte: int) -> float:
    sign = -1.0 if byte & 0x80 else 1.0
    exp, man = (byte >> 3) & 15, byte & 7
    return sign * (man / 8 * 2.0**-6 if exp == 0 else (1 + man / 8) * 2.0 ** (exp - 7))


def prmt(a: int, b: int, sel: int) -> int:
    """PTX prmt.b32 (default mode): selector nibble i picks byte i; its bit 3 replicates that byte's sign."""
    src = [(a >> (8 * i)) & 255 for i in range(4)] + [(b >> (8 * i)) & 255 for i in range(4)]
    out = 0
    for i in range(4):
        nibble = (sel >> (4 * i)) & 15
        byte = src[nibble & 7]
        if nibble & 8:
            byte = 255 if byte & 0x80 else 0
        out |= byte << (8 * i)
    return out


def vmax_u2(a: int, b: int) -> int:
    return max(a & 0xFFFF, b & 0xFFFF) | max(a >> 16, b >> 16) << 16


def vmin_u2(a: int, b: int) -> int:
    return min(a & 0xFFFF, b & 0xFFFF) | min(a >> 16, b >> 16) << 16


def ue8m0(e: int) -> float:
    return 0.0 if e == 0 else 2.0 ** (e - 127)  # Ue8m0ToFloat: exponent byte 0 reads as 0


def reference_scheme(word: int, groups: int) -> tuple[int, list[int]]:
    """RowRefExponent and GroupTableIndex: the row's reference exponent and each group's table row."""
    exps = [(word >> (8 * g)) & 255 for g in range(groups)]
    e_max, e_min = max(exps), min(exps)
    e_ref = e_max - max(0, min(min(e_max - e_min - 8, 6), e_max - 1))
    return e_ref, [min(max(e_ref - e, -6), 15) + 6 for e in exps]


def quad_scheme(word_r: int, word_r8: int, d: int) -> list[tuple[int, int, int, int]]:
    """Variant fp4-quad-exponent, per lane t of a quad: (table row of r, of r + 8, e_max of r, of r + 8)."""
    e_g = [prmt(word_r, word_r8, (t * d // 128) * 0x0011 + (4 + t * d // 128) * 0x1100) for t in range(4)]
    e_max = [vmax_u2(e_g[t], e_g[t ^ 1]) for t in range(4)]
    e_max = [vmax_u2(e_max[t], e_max[t ^ 2]) for t in range(4)]
    lanes = []
    for t in range(4):
        row = vmin_u2((e_max[t] - e_g[t]) & 0xFFFFFFFF, 0x15151515)
        lanes.append((row & 255, prmt(row, 0, 0x4442), e_max[t] & 255, (e_max[t] >> 16) & 255))
    return lanes


def random_word(rng: random.Random, groups: int, mode: int) -> int:
    if mode == 0:  # realistic: a few binades apart
        base = rng.randint(100, 140)
        exps = [min(255, max(0, base + rng.randint(-3, 3))) for _ in range(groups)]
    elif mode == 1:  # anything (spreads far past 14 binades)
        exps = [rng.randint(0, 254) for _ in range(groups)]
    elif mode == 2:  # tiny exponents: zero bytes, subnormal row scales
        base = rng.randint(0, 20)
        exps = [max(0, base - rng.randint(0, 20)) for _ in range(groups)]
    else:  # spreads around the 8 and 14 binade edges
        base = rng.randint(10, 250)
        exps = [max(0, base - rng.randint(0, 16)) for _ in range(groups)]
    return sum(e << (8 * g) for g, e in enumerate(exps))


def main(header: str) -> int:
    lut = read_lut(header)

    def decoded(code: int, table_row: int) -> float:  # DecodeE2m1Word for one element
        lo, hi = lut[table_row]
        return e4m3_value((prmt(lo, hi, code & 7) & 255) | (0x80 if code & 8 else 0))

    rng = random.Random(1)
    checked = mismatches = 0
    for d in (32, 64, 128):
        groups = d // 32
        for it in range(20000):
            words = (random_word(rng, groups, it % 4), random_word(rng, groups, it % 4))
            lanes = quad_scheme(words[0], words[1], d)
            for h, word in enumerate(words):
                e_ref, rows = reference_scheme(word, groups)
                for t in range(4):
                    row_new, e_max = lanes[t][h], lanes[t][2 + h]
                    for code in range(16):
                        old = decoded(code, rows[t * d // 128]) * ue8m0(e_ref)
                        new = decoded(code, row_new) * ue8m0(e_max) * 2.0**-6
                        checked += 1
                        if old != new:
                            mismatches += 1
                            if mismatches <= 5:
                                print(f"D {d} word {word:#x} lane {t} code {code}: {old} != {new}")
    print(f"checked {checked} values, {mismatches} mismatches")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "ffi/kernels/sm90_mqa_logits_wgmma.cuh"))
