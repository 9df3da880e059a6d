"""The benchmark's CPU paths: `--smoke` runs every timed op end to end on tiny shapes and writes its
JSON; the GPU-only suites say so and exit 0; case filters select what they name. (Timings on CPU mean
nothing; the point is that the device run of the bench cannot die on a code path CI never ran.)"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jax_deepgemm import bench
from jax_deepgemm.testing.shapes import case_selected


def _run_bench(tmp_path, *args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-P", "-m", "jax_deepgemm.bench", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def test_smoke_run_writes_every_op(tmp_path):
    out = tmp_path / "smoke.json"
    proc = _run_bench(tmp_path, "--smoke", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert bench.COLUMNS in proc.stdout
    data = json.loads(out.read_text())
    assert data["smoke"] and len(data["rows"]) >= 1 and data["complete"] is True
    for row in data["rows"]:
        assert not row["errors"], row["errors"]
        for op in ("ours", "xla_fp8_dot", "xla_fp8_dq_pattern", "dequant_bf16"):
            assert row[op]["us"] > 0, (op, row[op])
            # no kernel time on the CPU: the rates come from the loop time
            assert row[op]["rates_from"] == "loop"
            assert row[op]["gbps"] == pytest.approx(row["bytes"] / row[op]["us"] / 1e3)
        assert row["ours"]["diff"] < 1e-3, "the smoke shapes must still compute the right product"
        assert row["ratios"]["x_xla_fp8"] > 0


def test_m_option_picks_the_rows_of_a():
    """`--m 1 4` benches decode rows at the six (N, K) in place of 64 / 128 / 4096; filters still apply."""
    assert bench._shapes(False, None, [1, 4]) == [(m, n, k) for m in (1, 4) for n, k in bench.BENCH_NK]
    assert bench._shapes(False, ["x7168$"], [1]) == [(1, n, k) for n, k in bench.BENCH_NK if k == 7168]
    assert bench._shapes(False, None) == [(m, n, k) for m in bench.BENCH_M for n, k in bench.BENCH_NK]


def test_m_option_rejects_nonpositive_rows(tmp_path):
    proc = _run_bench(tmp_path, "--m", "0", "--json", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and "--m takes positive row counts" in proc.stderr


@pytest.mark.parametrize("flag", ["--grouped", "--bf16", "--mqa"])
def test_gpu_only_suites_exit_cleanly_on_cpu(tmp_path, flag):
    proc = _run_bench(tmp_path, flag, "--json", str(tmp_path / "x.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{flag} needs a GPU" in proc.stdout


def test_two_suites_in_one_run_are_an_error(tmp_path):
    """Session 29's `--mqa --grouped` ran the indexer only and said nothing of the grouped cases."""
    proc = _run_bench(tmp_path, "--mqa", "--grouped", "--json", str(tmp_path / "x.json"))
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "--mqa and --grouped: one family per run" in proc.stderr


def test_suites_import_and_declare_their_parts():
    """The GPU-only suites are never run in CI; at least each must import and name its parts."""
    import importlib

    for flag, module in bench._SUITES.items():
        parts = importlib.import_module(f"jax_deepgemm.{module}").PARTS
        assert parts and all(isinstance(p, str) for p in parts), (flag, parts)


def test_bench_json_keeps_the_rows_of_a_run_cut_short(tmp_path):
    """Session 38's dense bench was killed by the call's time limit after four rows and wrote nothing."""
    from jax_deepgemm.testing.bench_json import BenchJson

    path = tmp_path / "b.json"
    out = BenchJson(str(path), {"device": "x"}, ("a", "b"))
    assert json.loads(path.read_text()) == {"device": "x", "a": [], "b": [], "complete": False}
    row = {"us": 1.5}
    assert out.add("b", row) is row
    out.add("a", {"us": 2.0})
    assert json.loads(path.read_text()) == {"device": "x", "a": [{"us": 2.0}], "b": [row], "complete": False}
    out.finish()
    assert json.loads(path.read_text())["complete"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]  # no temporary file left


def _stub_suite(monkeypatch, module, benches, formats):
    """Replaces a GPU-only suite's per-case bench and format functions with recorders (key, kwargs)."""
    calls = []
    for name in benches:
        def bench(key, _name=name, **kw):
            calls.append((_name, key, kw))
            return {"bench": _name, "key": list(key)}
        monkeypatch.setattr(module, name, bench)
    for name in formats:
        monkeypatch.setattr(module, name, lambda r: f"row {r['bench']} {r['key']}")
    return calls


def test_grouped_suite_runs_its_parts_and_writes_each_row(tmp_path, monkeypatch, capsys):
    from jax_deepgemm import bench_grouped as g

    calls = _stub_suite(monkeypatch, g, ("bench_contiguous", "bench_masked", "bench_k_grouped"),
                        ("format_contiguous", "format_masked", "format_k_grouped"))
    path = tmp_path / "g.json"
    assert g.run(json_path=str(path), reps=3, target_ms=1.0, meta={"m": 1}, parts=("contiguous", "k_grouped"),
                 filters=["^4x8192x7168", "^16x"]) == 0
    assert calls == [("bench_contiguous", (4, 8192, 7168, 2048), {"reps": 3, "target_ms": 1.0}),
                     ("bench_k_grouped", (16, 7168, 2048, 2048), {"reps": 3, "target_ms": 1.0})]
    data = json.loads(path.read_text())
    assert data["complete"] is True and data["masked"] == []
    assert data["contiguous"] == [{"bench": "bench_contiguous", "key": [4, 8192, 7168, 2048]}]
    lines = capsys.readouterr().out.splitlines()
    # each part's header, then its rows as they are measured
    assert lines[0] == g.CONTIGUOUS_HEADER and lines[1] == "row bench_contiguous [4, 8192, 7168, 2048]"
    assert lines[2] == g.MASKED_HEADER and lines[3] == g.K_GROUPED_HEADER


def test_bf16_suite_passes_dense_shapes_as_n_and_k(tmp_path, monkeypatch):
    from jax_deepgemm import bench_bf16 as b

    calls = []
    monkeypatch.setattr(b, "bench_dense", lambda n, k, **kw: calls.append((n, k, kw)) or {"n": n, "k": k})
    monkeypatch.setattr(b, "format_dense", lambda r: "dense")
    path = tmp_path / "b.json"
    n, k = b.BENCH_NK[0]
    assert b.run(json_path=str(path), reps=2, target_ms=1.0, meta={}, parts=("dense",),
                 filters=[f"^{b.DENSE_M}x{n}x{k}$"]) == 0
    assert calls == [(n, k, {"reps": 2, "target_ms": 1.0})]
    data = json.loads(path.read_text())
    assert data["dense"] == [{"n": n, "k": k}] and data["contiguous"] == [] and data["complete"] is True


def test_case_filters():
    assert case_selected((4, 4096, 7168, 8192), None)
    assert case_selected((4, 4096, 7168, 8192), ["^4x4096"])
    assert not case_selected((16, 7168, 2048, 2048), ["^4x", "x8192$"])
    assert case_selected((16, 7168, 2048, 2048), ["^4x", "x2048$"])
    assert case_selected((2048, 8192, 32, 64, True, False, "float32"), ["x32x64xTrue"])


def test_flushed_timing_splits_calls_at_flush_kernels():
    """DeepGEMM's protocol (testing.timing.time_with_flush): each call's time is the sum of the kernels
    between two flushes; kernels before the first flush (warm-up residue) are not a call."""
    from jax_deepgemm.testing.timing import _split_calls_at_flushes

    flush = {"flush_fusion"}
    # (name, start_ns, duration_ns), deliberately out of start order
    events = [("gemm", 150, 40), ("stray", 10, 5), ("flush_fusion", 100, 30), ("flush_fusion", 200, 30),
              ("gemm", 250, 42), ("epilogue", 300, 3), ("flush_fusion", 400, 30), ("gemm", 450, 41)]
    per_call, by_name = _split_calls_at_flushes(events, flush)
    assert per_call == [40, 45, 41]
    assert by_name == {"gemm": [40, 42, 41], "epilogue": [3]}
    assert _split_calls_at_flushes([("gemm", 0, 5)], flush) == ([], {})  # no flush: no call


def test_grouped_rows_print_with_and_without_flushed_time():
    """The grouped suite runs only on a GPU; its row printing (kern, DeepGEMM-protocol fl time, the ratios)
    is checked here on hand-made rows, one whose flushed timing failed (None)."""
    from jax_deepgemm import bench_grouped as bg

    base = {"groups": 4, "expected_m": 256, "N": 4096, "K": 7168, "flops": 2.0 * 1024 * 4096 * 7168,
            "deepgemm_anchor_us": 81.38, "ours_kernel_us": 94.3, "ours_loop_us": 120.0}
    masked = bg.format_masked({**base, "ours_flushed_us": 101.7})
    assert " 101.7 " in masked and f"{81.38 / 101.7:4.2f}" in masked and f"{81.38 / 94.3:4.2f}" in masked
    # fl us, xDGf, xDG TF (no anchor), and the three GEMM-only columns (no breakdown)
    assert bg.format_masked({**base, "ours_flushed_us": None}).count(" - ") == 6
    gemm_only = bg.format_masked({**base, "ours_flushed_us": 101.7, "ours_gemm_kernel_us": 92.0,
                                  "ours_gemm_flushed_us": 99.5})
    assert f"| {92.0:8.1f} | {81.38 / 92.0:4.2f} | {81.38 / 99.5:4.2f} |" in gemm_only
    assert bg.format_masked({**base, "ours_flushed_us": None, "masked_m": [200, 256, 257, 300]}).endswith(
        "|   1013 ( 10)")  # 2 + 2 + 3 + 3 row tiles
    tf = 2.0 * 1024 * 4096 * 7168 / 94.3 / 1e6
    assert f"| {tf / 768.0:4.2f} |" in bg.format_masked({**base, "ours_flushed_us": None, "deepgemm_anchor_tflops": 768.0})
    contiguous = bg.format_contiguous({**base, "ours_flushed_us": 98.0, "ragged_dot_bf16_loop_us": 600.0,
                                       "ragged_dot_fp8_loop_us": None, "ragged_unaligned_kernel_us": 99.0})
    assert "5.00" in contiguous and f"{99.0 / 94.3:5.3f}" in contiguous
    assert len(bg.CONTIGUOUS_HEADER.split("|")) == len(contiguous.split("|"))
    assert len(bg.MASKED_HEADER.split("|")) == len(masked.split("|"))


def test_dense_row_prints_deepgemm_ratio_of_the_gemm_kernel_alone():
    """The dense suite's xDGg: DeepGEMM's anchor over our GEMM kernel's flushed time alone (the A-scale transpose
    left out), next to xDGf over the whole call; '-' where no breakdown was recorded."""
    flushed = {"median_us": 100.0, "kernels": {"void jdg::Sm90Fp8GemmKernel<256, 128>(x)": {"us": 97.5, "count": 1.0},
                                               "wrapped_transpose": {"us": 2.5, "count": 1.0}}}
    ours = {"us": 110.0, "tflops": 1.0, "gbps": 1.0, "kernel": {"median_us": 99.0}, "flushed": flushed}
    skipped = {"error": "not selected (--ops)"}
    row = {"M": 4096, "N": 7168, "K": 2048, "ours": ours, "dequant_bf16": skipped, "xla_fp8_best": None,
           "deepgemm_anchor_us": 93.11,
           "ratios": {"x_xla_fp8": None, "x_dequant_bf16": None, "x_deepgemm": 93.11 / 110.0,
                      "x_deepgemm_kernel": 93.11 / 99.0, "x_deepgemm_flushed": 93.11 / 100.0,
                      "x_deepgemm_gemm_flushed": 93.11 / 97.5}}
    line = bench.format_row(row)
    assert f" {93.11 / 100.0:5.2f} {93.11 / 97.5:5.2f} |" in line
    assert len(line.split("|")) == len(bench.COLUMNS.split("|"))
    row["ratios"]["x_deepgemm_gemm_flushed"] = None
    assert f" {93.11 / 100.0:5.2f}     - |" in bench.format_row(row)


def test_gemm_kernel_us_keeps_only_the_gemm_kernels():
    """DeepGEMM's anchors time its GEMM kernel alone: the grouped suite's GEMM-only time sums the breakdown's
    GEMM kernels and leaves out the op's other kernels (the A-scale transpose)."""
    from jax_deepgemm.bench_grouped import gemm_kernel_us

    breakdown = {"void jdg::Sm90Fp8GemmKernel<128, 192, (jdg::BScale)0, 1, 1>(jdg::Fp8GemmParams)": {"us": 36.5,
                                                                                                  "count": 1.0},
                 "loop_transpose_fusion": {"us": 1.9, "count": 1.0}}
    assert gemm_kernel_us(breakdown) == 36.5
    assert gemm_kernel_us({"loop_transpose_fusion": {"us": 1.9, "count": 1.0}}) is None


def test_mqa_rows_print_with_and_without_flushed_time():
    """The indexer suite runs only on a GPU; its row printing is checked on hand-made rows: a paged FP8 row
    with an anchor and a DeepGEMM-protocol time, and an FP4 row (no anchor, so no fl)."""
    from jax_deepgemm import bench_mqa as bm

    paged = {"case": "paged", "fp4": False, "B": 256, "next_n": 1, "H": 64, "L_avg": 8192, "logits_dtype": "bfloat16",
             "flops": 2.0e9, "bytes": 3.0e8, "deepgemm_anchor_us": 110.0, "ours_kernel_us": 273.2,
             "ours_flushed_us": 280.0, "ours_loop_us": 300.0, "jnp_loop_us": 1073.0}
    line = bm.format_row(paged)
    assert f"{110.0 / 273.2:4.2f}" in line and f"{110.0 / 280.0:4.2f}" in line and "3.58" in line
    assert len(line.split("|")) == len(bm.HEADER.split("|"))
    fp4 = {**paged, "fp4": True, "deepgemm_anchor_us": None, "jnp_loop_us": None}
    del fp4["ours_flushed_us"]
    assert bm.format_row(fp4).count(" - ") == 5  # fl, DeepGEMM us, xDG, xDGf, jnp loop (x jnp ends the line)


def test_tile_sweep_checks_each_result():
    """scripts/sweep_tiles.py prints calc_diff per forced tile, so a fast but wrong kernel experiment is
    flagged; its check runs here through the CPU lowering (full-size GEMM, first and last rows)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "sweep_tiles.py"
    spec = importlib.util.spec_from_file_location("sweep_tiles", path)
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    assert sweep._diff(300, 256, 384, None, rows=64) < 1e-6  # CPU: the reference lowering itself
    assert "WRONG" in sweep._verdict(2e-3) and "WRONG" not in sweep._verdict(2e-7)


def test_probe_log_prints_and_appends_each_line(tmp_path, capsys):
    """The A/B probes' lines reach the shared file as they are measured (a probe cut short keeps them) and are
    tagged with their variant."""
    from jax_deepgemm.testing.probe import ProbeLog, probe_parser

    out = tmp_path / "probe.txt"
    out.write_text("base         earlier line\n")
    args = probe_parser("Probe.\n\nMore.").parse_args(["v1", "--out", str(out)])
    log = ProbeLog(args.tag, args.out)
    log.add("dense 4096x7168x2048", 100.44, "1198 TFLOPS")
    assert out.read_text().splitlines()[-1].split() == ["v1", "dense", "4096x7168x2048", "100.4", "us", "1198",
                                                       "TFLOPS"]
    log.add("paged", 78.1, "3703 GB/s")
    assert len(out.read_text().splitlines()) == 3 and out.read_text().startswith("base")
    assert capsys.readouterr().out.count("v1 ") == 2


@pytest.mark.parametrize("fp4", [False, True])
def test_paged_problem_builds_a_callable_case(fp4):
    """The paged bench's inputs (shared with the profiling scripts) form a valid call: the op runs on them (the CPU
    reference here) and gives -inf exactly past each query token's context length when cleaning."""
    from jax_deepgemm import bench_mqa

    op, q, cache, w, lens, table, meta, max_ctx = bench_mqa.paged_problem(3, 2, 32, 100, fp4)
    assert cache.shape[1:] == (bench_mqa.PAGED_BLOCK_KV, 1, bench_mqa.PAGED_D // (2 if fp4 else 1) + 4)
    out = np.asarray(op(q, cache, w, lens, table, meta, max_ctx, clean_logits=True))
    assert out.shape == (3 * 2, max_ctx)
    past = np.arange(max_ctx)[None, :] >= np.asarray(lens).reshape(-1, 1)
    assert np.isneginf(out[past]).all() and np.isfinite(out[~past]).all()


def test_ratio_and_cell_helpers_print_a_dash_for_what_was_not_measured():
    """Every suite's ratios and cells come from these two helpers: an errored or unmeasured time (None, the error
    string a failed case leaves) gives no ratio and a '-' cell, never a crash or a division by zero."""
    from jax_deepgemm import bench_bf16
    from jax_deepgemm.testing.bench_json import fmt, ratio

    assert ratio(93.11, 100.0) == pytest.approx(0.9311)
    assert ratio(None, 100.0) is None and ratio(93.11, None) is None and ratio("error", 1.0) is None
    assert ratio(1.0, 0.0) is None and ratio(1.0, -2.0) is None
    assert fmt(None, "5.2f") == "-" and fmt(0.5, "5.2f") == " 0.50"
    ok = {"kernel_us": 50.0, "loop_us": 60.0}
    row = {"M": 4096, "N": 7168, "K": 2048, "flops": 2.0 * 4096 * 7168 * 2048, "ours": {**ok, "kernel_us": None,
           "error": "boom"}, "xla_bf16_dot": ok, "x_xla_kernel": ratio(50.0, None), "x_xla_loop": ratio(60.0, 55.0)}
    line = bench_bf16.format_dense(row)
    assert line.endswith("ERROR boom") and line.count(" - ") == 3 and f"{60.0 / 55.0:5.2f}" in line
