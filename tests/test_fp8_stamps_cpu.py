"""scripts/fp8_stamps.py on a hand-made D: where it finds each CTA's stamps and how it turns them into intervals."""

import importlib.util
import pathlib

import ml_dtypes
import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "fp8_stamps", pathlib.Path(__file__).resolve().parents[1] / "scripts" / "fp8_stamps.py")
fp8_stamps = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fp8_stamps)


def _d_with_stamps(m, n, block_m, block_n, values):
    """A BF16 D whose tile (i, j) carries values[tile] (one uint64 per field) over rows 0.., columns 0-3."""
    d = np.full((m, n), 0x7FC0, np.uint16)  # NaN elsewhere: nothing else may be read
    tile = 0
    for m0 in range(0, m, block_m):
        for n0 in range(0, n, block_n):
            for i, v in enumerate(values[tile]):
                d[m0 + i, n0:n0 + 4] = np.array([v], np.uint64).view(np.uint16)
            tile += 1
    return d.view(ml_dtypes.bfloat16)


def test_reads_each_tiles_stamps_in_tile_order():
    fields = len(fp8_stamps.FIELDS)
    values = [[1_000_000 * t + i for i in range(fields)] for t in range(4)]
    stamps = fp8_stamps.read_stamps(_d_with_stamps(128, 32, 64, 16, values), 128, 32, 64, 16)
    assert list(stamps) == list(fp8_stamps.FIELDS)
    for i, name in enumerate(fp8_stamps.FIELDS):
        assert stamps[name].tolist() == [values[t][i] for t in range(4)]


def test_intervals_use_each_ctas_clock_rate_and_survive_a_clock_wrap():
    c0 = 0xFFFF_FF00  # the 32-bit %clock wraps during the run
    s = {name: np.array([0], np.uint64) for name in fp8_stamps.FIELDS}
    s["g0"][0], s["g_end"][0] = 10_000, 15_000  # 5 us
    s["c0"][0], s["c_end"][0] = c0, (c0 + 9_000) & 0xFFFF_FFFF  # 9000 cycles in 5 us: 1.8 GHz
    s["c_first"][0] = (c0 + 1_800) & 0xFFFF_FFFF
    s["c_kdone"][0] = (c0 + 7_200) & 0xFFFF_FFFF
    s["c_wait"][0] = 900
    got = dict(fp8_stamps.summarize(s))
    assert got["SM clock (GHz)"][0] == pytest.approx(1.8)
    assert got["consumer's first stage full (us)"][0] == pytest.approx(1.0)
    assert got["K loop: first full to last K-block (us)"][0] == pytest.approx(3.0)
    assert got["  of it waiting for full stages (us)"][0] == pytest.approx(0.5)
    assert got["epilogue: last K-block to stores landed (us)"][0] == pytest.approx(1.0)


def test_fine_stamps_sit_in_columns_4_to_7_and_become_start_up_intervals():
    fields, fine = len(fp8_stamps.FIELDS), len(fp8_stamps.FINE_FIELDS)
    d = np.asarray(_d_with_stamps(64, 16, 64, 16, [[7] * fields])).view(np.uint16).copy()
    c0 = 1_000
    for i in range(fine):  # 1800 cycles (1 us at 1.8 GHz) per step after c0
        d[i, 4:8] = np.array([c0 + 1_800 * (i + 1)], np.uint64).view(np.uint16)
    stamps = fp8_stamps.read_stamps(d.view(ml_dtypes.bfloat16), 64, 16, 64, 16, fine=True)
    assert list(stamps) == list(fp8_stamps.FIELDS) + list(fp8_stamps.FINE_FIELDS)
    assert stamps["smid"].tolist() == [7]  # the coarse fields still come from columns 0-3
    s = {**stamps, "g0": np.array([0], np.uint64), "g_end": np.array([5_000], np.uint64),
         "c0": np.array([c0], np.uint64), "c_end": np.array([c0 + 9_000], np.uint64)}
    got = dict(fp8_stamps.summarize(s))
    assert got["  producer: registers released (us)"][0] == pytest.approx(1.0)
    assert got["  producer: first tile walked (us)"][0] == pytest.approx(3.0)
    assert got["  producer: its B load issued (us)"][0] == pytest.approx(4.0)
    assert got["  consumer: at its first full wait (us)"][0] == pytest.approx(7.0)
    assert "  producer: registers released (us)" not in dict(fp8_stamps.summarize(
        {name: s[name] for name in fp8_stamps.FIELDS}))
