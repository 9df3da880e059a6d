"""The FP4 -> e4m3 decode of the WGMMA indexer kernels, checked on CPU: the byte-permute table in
ffi/kernels/sm90_mqa_logits_wgmma.cuh against ml_dtypes' e4m3 rounding, a bit-exact model of
DecodeE2m1Word (PRMT semantics), and the claim that a row decoded against its reference exponent
reproduces every value times its group's scale exactly when the group exponents span <= 14 binades, that the
KV rows' quad-shuffled reference exponent (DecodeFp4Fragment) gives the query rows' scheme's numbers, and
the one K order shared by the register-decoded KV fragments and the decoded query rows."""

import pathlib
import re

import ml_dtypes
import numpy as np
import pytest

HEADER = pathlib.Path(__file__).resolve().parents[1] / "ffi" / "kernels" / "sm90_mqa_logits_wgmma.cuh"
MAGNITUDES = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], np.float64)
E2M1 = np.concatenate([MAGNITUDES, -MAGNITUDES])  # code 8 + m: the negative of magnitude m


def _lut():
    text = HEADER.read_text()
    body = text[text.index("kE2m1Lut[kE2m1LutSize][2] = {"):]
    body = body[: body.index("};")]
    words = [int(w, 16) for w in re.findall(r"0x([0-9a-fA-F]{8})u", body)]
    size = int(re.search(r"constexpr int kE2m1LutSize = (\d+);", text).group(1))
    assert len(words) == 2 * size
    return [(words[2 * i], words[2 * i + 1]) for i in range(size)]


def _e4m3_bytes(values):
    return np.asarray(values, np.float64).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)


def _byte_perm(x, y, sel):  # PTX prmt.b32, default mode
    src = [(x >> (8 * i)) & 0xFF for i in range(4)] + [(y >> (8 * i)) & 0xFF for i in range(4)]
    out = 0
    for i in range(4):
        s = (sel >> (4 * i)) & 0xF
        b = src[s & 7]
        if s & 8:
            b = 0xFF if b & 0x80 else 0
        out |= b << (8 * i)
    return out


def _decode_word(x, lut):  # DecodeE2m1Word
    sel = x & 0x77777777
    mag_lo = _byte_perm(lut[0], lut[1], sel)
    mag_hi = _byte_perm(lut[0], lut[1], ((sel >> 16) | (sel << 16)) & 0xFFFFFFFF)  # rotated by 16
    x4 = (x << 4) & 0xFFFFFFFF
    lo = mag_lo | (_byte_perm(x, x4, 0x1504) & 0x80808080)
    hi = mag_hi | (_byte_perm(x, x4, 0x3726) & 0x80808080)
    return np.array([(lo >> (8 * i)) & 0xFF for i in range(4)] + [(hi >> (8 * i)) & 0xFF for i in range(4)], np.uint8)


def _row_ref_exponent(exps):  # RowRefExponent
    e_max, e_min = max(exps), min(exps)
    return e_max - max(0, min(min(e_max - e_min - 8, 6), e_max - 1))


def test_table_is_e4m3_of_the_scaled_magnitudes():
    lut = _lut()
    for i, (lo, hi) in enumerate(lut):
        k = i - 6
        want = _e4m3_bytes(MAGNITUDES * 2.0 ** -k)
        got = np.array([(lo >> (8 * j)) & 0xFF for j in range(4)] + [(hi >> (8 * j)) & 0xFF for j in range(4)],
                       np.uint8)
        np.testing.assert_array_equal(got, want, err_msg=f"kE2m1Lut[{i}] (2^{-k})")
        if -6 <= k <= 8:  # the exact range the kernels rely on
            np.testing.assert_array_equal(got.view(ml_dtypes.float8_e4m3fn).astype(np.float64),
                                          MAGNITUDES * 2.0 ** -k)


@pytest.mark.parametrize("shift", [-6, -1, 0, 3, 8, 9, 15])
def test_decode_word_matches_e4m3_conversion(shift):
    lut = _lut()[shift + 6]
    rng = np.random.default_rng(shift + 100)
    for x in rng.integers(0, 2**32, 500, dtype=np.uint64):
        x = int(x)
        codes = [(x >> (4 * i)) & 0xF for i in range(8)]
        got = _decode_word(x, lut).view(ml_dtypes.float8_e4m3fn).astype(np.float64)
        want = _e4m3_bytes(E2M1[codes] * 2.0 ** -shift).view(ml_dtypes.float8_e4m3fn).astype(np.float64)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_row_decode_is_exact_within_fourteen_binades():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        groups = int(rng.choice([1, 2, 4]))
        base, spread = int(rng.integers(1, 240)), int(rng.integers(0, 15))
        exps = [min(base + int(rng.integers(0, spread + 1)), 254) for _ in range(groups)]
        e_ref = _row_ref_exponent(exps)
        for e in exps:
            values = E2M1[rng.integers(0, 16, 32)]
            k = min(max(e_ref - e, -6), 15)
            decoded = _e4m3_bytes(values * 2.0 ** -k).view(ml_dtypes.float8_e4m3fn).astype(np.float64)
            if max(exps) - min(exps) <= 14:
                np.testing.assert_array_equal(decoded * 2.0 ** (e_ref - 127), values * 2.0 ** (e - 127))


def _vmax_u2(a, b):  # __vmaxu2
    return max(a & 0xFFFF, b & 0xFFFF) | max(a >> 16, b >> 16) << 16


def _vmin_u2(a, b):  # __vminu2
    return min(a & 0xFFFF, b & 0xFFFF) | min(a >> 16, b >> 16) << 16


def _quad_table_rows(word_r, word_r8, d):
    """DecodeFp4Fragment's exponent logic for the 4 lanes of a quad (rows r and r + 8, lane t holding scale group
    t * d / 128): per lane, the table rows of r and r + 8 and the two rows' largest exponents."""
    e_g = [_byte_perm(word_r, word_r8, (t * d // 128) * 0x0011 + (4 + t * d // 128) * 0x1100) for t in range(4)]
    e_max = [_vmax_u2(e_g[t], e_g[t ^ 1]) for t in range(4)]  # __shfl_xor_sync(.., 1)
    e_max = [_vmax_u2(e_max[t], e_max[t ^ 2]) for t in range(4)]  # __shfl_xor_sync(.., 2)
    lanes = []
    for t in range(4):
        row = _vmin_u2((e_max[t] - e_g[t]) & 0xFFFFFFFF, 0x15151515)
        lanes.append(((row & 0xFF, _byte_perm(row, 0, 0x4442)), (e_max[t] & 0xFF, (e_max[t] >> 16) & 0xFF)))
    return lanes


def _ue8m0(e):  # Ue8m0ToFloat: exponent byte 0 reads as 0
    return 0.0 if e == 0 else 2.0 ** (e - 127)


@pytest.mark.parametrize("d", [32, 64, 128])
def test_quad_reference_exponent_gives_the_same_numbers(d):
    """The KV rows take e_max - 6 as reference exponent (two quad shuffles of 16-bit maxima over both rows),
    the query rows RowRefExponent's clamped one: every decoded value times its row's power of two must be the
    same number under both, narrow spreads, wide ones (past 14 binades: the same rounding) and tiny exponents."""
    lut = _lut()
    rng = np.random.default_rng(d)
    groups = d // 32
    for it in range(1500):
        kind = it % 4
        if kind == 0:  # a few binades apart
            exps = rng.integers(100, 141, 1)[0] + rng.integers(-3, 4, (2, groups))
        elif kind == 1:  # anything
            exps = rng.integers(0, 255, (2, groups))
        elif kind == 2:  # tiny: zero bytes, subnormal row scales
            exps = rng.integers(0, 21, 1)[0] - rng.integers(0, 21, (2, groups))
        else:  # around the 8 and 14 binade edges
            exps = rng.integers(10, 251, 1)[0] - rng.integers(0, 17, (2, groups))
        exps = np.clip(exps, 0, 254)
        words = [sum(int(e) << (8 * g) for g, e in enumerate(row)) for row in exps]
        lanes = _quad_table_rows(words[0], words[1], d)
        x = int(rng.integers(0, 2**32))  # 8 random E2M1 codes
        for h, row in enumerate(exps):
            e_ref = _row_ref_exponent([int(e) for e in row])
            for t in range(4):
                g = t * d // 128
                old = _decode_word(x, lut[min(max(e_ref - int(row[g]), -6), 15) + 6])
                new = _decode_word(x, lut[lanes[t][0][h]])
                old = old.view(ml_dtypes.float8_e4m3fn).astype(np.float64) * _ue8m0(e_ref)
                new = new.view(ml_dtypes.float8_e4m3fn).astype(np.float64) * _ue8m0(lanes[t][1][h]) * 2.0**-6
                np.testing.assert_array_equal(new, old, err_msg=f"exponents {row.tolist()}, lane {t}")


def _fp4_k_column(d, wi):  # Fp4KColumn<kD>
    words_per_lane = d // 32
    return (wi % words_per_lane) * 32 + 4 * (wi // words_per_lane)


@pytest.mark.parametrize("d", [32, 64, 128])
def test_register_fragments_and_query_rows_share_one_k_order(d):
    """KV rows go into WGMMA A fragments (DecodeFp4Fragment), query rows into the B tile (DecodeFp4QRows):
    the logical element at every physical K column must be the same on both sides, each column used once,
    and each lane's run must sit inside one 32-element scale group (the lane applies one group's table)."""
    from_a, from_q = {}, {}
    for t in range(4):  # lane % 4
        run = t * d // 4  # first logical element of the lane's run of d / 8 packed bytes
        assert run // 32 == (run + d // 4 - 1) // 32 == t * d // 128
        for kk in range(d // 32):  # packed word kk of the run -> registers 0/1 (cols 4t..) and 2/3 (16 + 4t..)
            for j in range(4):
                from_a[kk * 32 + 4 * t + j] = run + 8 * kk + j
                from_a[kk * 32 + 16 + 4 * t + j] = run + 8 * kk + 4 + j
    for wi in range(d // 8):  # packed word wi of a query row: elements 8 wi .. 8 wi + 7
        for j in range(4):
            from_q[_fp4_k_column(d, wi) + j] = 8 * wi + j
            from_q[_fp4_k_column(d, wi) + 16 + j] = 8 * wi + 4 + j
    assert sorted(from_a) == sorted(from_q) == list(range(d))
    assert sorted(from_a.values()) == list(range(d))
    assert from_a == from_q
