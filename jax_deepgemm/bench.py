"""Benchmark of ``fp8_gemm_nt`` against what a JAX user has today: ``python -m jax_deepgemm.bench``.

For each (M, N, K) of ``testing.shapes`` (M in BENCH_M, or those of `--m`, x the six (N, K) of BENCH_NK) it times,
in the same run and on the same device:

  ours      ``fp8_gemm_nt((a, a_scale), (b, b_scale))``: 1x128 A scales, 128x128 B scales, bf16 D;
  xla-fp8   XLA per-tensor FP8 (cuBLASLt), two spellings (``testing.baselines.XLA_FP8_VARIANTS``),
            the faster one is the baseline (the table says which);
  dq-bf16   the same block-scaled inputs dequantized to bf16 in the jitted fn + bf16 ``jnp.dot``;

and prints one row per shape with the ratios ``xla-fp8 time / ours`` and ``dq-bf16 time / ours``
and ``DeepGEMM anchor / ours`` (anchors: DeepGEMM's own kernel time on our H100). Timing is
``testing.timing.time_device`` (the loop method: back-to-back calls at sustained clocks, launch
gaps included; printed in the header). With ``--kernel-time`` (default on GPU) every op is also
timed with ``testing.timing.time_with_profiler`` (sum of its kernel durations from a rested GPU:
what DeepGEMM's anchors measure, so ``xDGk`` is the like-for-like ratio to them); the JSON holds
both, per-kernel breakdowns, and what XLA emitted per call (custom calls, fusions, copies).

``--grouped`` runs the MoE grouped cases instead (``bench_grouped.py``: contiguous vs
``jax.lax.ragged_dot`` BF16/FP8, masked vs DeepGEMM's anchors).

On CPU, or without the CUDA kernels, ``--smoke`` runs tiny shapes through the same code path
(the op then runs its reference lowering); without ``--smoke`` it says so and exits 0.
This module never asserts: the ``diff`` column (DeepGEMM's calc_diff of ours against the f32
reference, on the first rows) is there to make a fast-but-wrong kernel visible.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_deepgemm import quantize
from jax_deepgemm.testing import baselines, timing
from jax_deepgemm.testing.bench_json import BenchJson, ratio
from jax_deepgemm.testing.shapes import ANCHORS_H100, BENCH_M, BENCH_NK

SMOKE_SHAPES = [(64, 256, 256), (128, 384, 512)]
DIFF_ROWS = 256  # calc_diff of ours vs the reference on this many rows (host float64)


# ----------------------------------------------------------------------------------------------
# The op under test
# ----------------------------------------------------------------------------------------------


def _load_op() -> tuple[Callable | None, bool, str]:
    """(fp8_gemm_nt or None, has_cuda_kernels, why-not message)."""
    try:
        import jax_deepgemm as pkg
    except Exception as e:  # noqa: BLE001 - a broken package must not hide the baselines
        return None, False, f"import jax_deepgemm failed: {type(e).__name__}: {e}"
    op = getattr(pkg, "fp8_gemm_nt", None)
    if op is None:
        try:
            from jax_deepgemm.fp8_gemm import fp8_gemm_nt as op
        except Exception as e:  # noqa: BLE001
            return None, False, f"fp8_gemm_nt not importable: {type(e).__name__}: {e}"
    has = getattr(pkg, "has_cuda_kernels", None)
    try:
        has_kernels = bool(has()) if has is not None else False
    except Exception:  # noqa: BLE001
        has_kernels = False
    return op, has_kernels, ""


# ----------------------------------------------------------------------------------------------
# Inputs (fresh random data per set; never zeros)
# ----------------------------------------------------------------------------------------------


def _make_block_inputs(m: int, n: int, k: int, seed: int) -> Callable[[int], tuple]:
    """i -> (a_fp8, a_scale [M, K/128], b_fp8, b_scale [N/128, K/128]) with the project quantizers."""

    @jax.jit
    def gen(key):
        ka, kb = jax.random.split(key)
        a = jax.random.normal(ka, (m, k), jnp.bfloat16)
        b = jax.random.normal(kb, (n, k), jnp.bfloat16)
        a_fp8, a_s = quantize.per_token_cast_to_fp8(a)
        b_fp8, b_s = quantize.per_block_cast_to_fp8(b)
        return a_fp8, a_s, b_fp8, b_s

    return lambda i: gen(jax.random.fold_in(jax.random.key(seed), i))


def _make_tensor_inputs(m: int, n: int, k: int, seed: int) -> Callable[[int], tuple]:
    """i -> (a_fp8, a_scale (), b_fp8, b_scale ()) with one scale per tensor (XLA baselines)."""

    @jax.jit
    def gen(key):
        ka, kb = jax.random.split(key)
        a_fp8, a_s = baselines.per_tensor_cast_to_fp8(jax.random.normal(ka, (m, k), jnp.bfloat16))
        b_fp8, b_s = baselines.per_tensor_cast_to_fp8(jax.random.normal(kb, (n, k), jnp.bfloat16))
        return a_fp8, a_s, b_fp8, b_s

    return lambda i: gen(jax.random.fold_in(jax.random.key(seed + 1), i))


def _flops(m, n, k) -> float:
    return 2.0 * m * n * k


def _bytes(m, n, k) -> int:
    """A, B (fp8), both f32 scales and D (bf16), each once."""
    kb = math.ceil(k / 128)
    return m * k + n * k + 4 * m * kb + 4 * math.ceil(n / 128) * kb + 2 * m * n


# ----------------------------------------------------------------------------------------------
# One shape
# ----------------------------------------------------------------------------------------------


def _ours_fn(op):
    def ours(a, a_s, b, b_s):
        return op((a, a_s), (b, b_s), out_dtype=jnp.bfloat16)

    return ours


def _diff_vs_reference(fn, args) -> float:
    from jax_deepgemm.reference import fp8_gemm_nt_reference
    from jax_deepgemm.testing.numeric import calc_diff

    a, a_s, b, b_s = args
    rows = min(DIFF_ROWS, a.shape[0])
    a, a_s = a[:rows], a_s[:rows]
    out = jax.jit(fn)(a, a_s, b, b_s)
    ref = jax.jit(fp8_gemm_nt_reference)(a, a_s, b, b_s)
    return calc_diff(np.asarray(out.astype(jnp.float32)), np.asarray(ref.astype(jnp.float32)))


def _entry(t: timing.Timing | None, m, n, k, *, err: str = "", extra: dict | None = None) -> dict:
    if t is None:
        return {"error": err or "not run", **(extra or {})}
    us = t.median_us
    # Rates from the device time when it was measured (the loop time adds launch gaps: ~4 us per call at M = 64).
    kern = _kernel_us(extra or {})
    rate_us = kern or us
    return {
        "us": us,
        "tflops": _flops(m, n, k) / rate_us / 1e6,
        "gbps": _bytes(m, n, k) / rate_us / 1e3,
        "rates_from": "kernel" if kern else "loop",
        "timing": t.as_dict(),
        **(extra or {}),
    }


def _safe(what: str, f: Callable, errors: list[str]):
    try:
        return f()
    except Exception as e:  # noqa: BLE001 - one failing variant must not stop the benchmark
        msg = f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        errors.append(msg)
        print(f"  ! {msg}", file=sys.stderr, flush=True)
        return None


def _time_one(name: str, fn, sets: timing.InputSets, m, n, k, *, timing_kw, kernel_time, errors,
              extra: dict | None = None) -> dict:
    """Loop time (with what XLA made of one call in the timed loop) and, if asked, kernel time."""
    t = _safe(name, lambda: timing.time_device(fn, inputs=sets, **timing_kw["loop"]), errors)
    if t is None:
        return _entry(None, m, n, k, err=errors[-1])
    extra = dict(extra or {})
    extra["hlo"] = t.hlo
    if kernel_time:
        tk = _safe(f"{name} kernel time",
                   lambda: timing.time_with_profiler(fn, inputs=sets, **timing_kw["prof"]), errors)
        extra["kernel"] = tk.as_dict() if tk is not None else None
        tf = _safe(f"{name} flushed kernel time",
                   lambda: timing.time_with_flush(fn, inputs=sets, **timing_kw["flush"]), errors)
        extra["flushed"] = tf.as_dict() if tf is not None else None
    return _entry(t, m, n, k, extra=extra)


OPS = ("ours", "xla", "dq")


def bench_shape(m, n, k, *, op, timing_kw: dict, kernel_time: bool, seed: int, ops=OPS,
                previous: dict | None = None) -> dict:
    """Times ours, both XLA FP8 variants and dequant->bf16 (those named in ``ops``) on (m, n, k);
    returns the JSON row. Entries not timed are taken from ``previous`` (a row of an earlier
    JSON, same shape), marked ``"from": <file>``."""
    row: dict[str, Any] = {"M": m, "N": n, "K": k, "flops": _flops(m, n, k), "bytes": _bytes(m, n, k)}
    errors: list[str] = []
    kw = dict(timing_kw=timing_kw, kernel_time=kernel_time, errors=errors)
    skipped = {"error": "not selected (--ops)"}
    row["ours"] = row["dequant_bf16"] = skipped
    for name in baselines.XLA_FP8_VARIANTS:
        row[name] = skipped

    # Block-scaled sets: ours and dequant->bf16 read the same arrays.
    if "ours" in ops or "dq" in ops:
        sets = timing.build_input_sets(_make_block_inputs(m, n, k, seed), **timing_kw["sets"])
        try:
            if "ours" in ops and op is not None:
                ours = _ours_fn(op)
                diff = _safe("ours diff", lambda: _diff_vs_reference(ours, sets.sets[0]), errors)
                row["ours"] = _time_one("ours", ours, sets, m, n, k, extra={"diff": diff}, **kw)
            elif "ours" in ops:
                row["ours"] = _entry(None, m, n, k, err="op not available")
            if "dq" in ops:
                row["dequant_bf16"] = _time_one("dequant_bf16", baselines.dequant_bf16_gemm, sets, m, n, k, **kw)
        finally:
            sets.delete()

    # Per-tensor sets for the XLA FP8 GEMM.
    if "xla" in ops:
        sets = timing.build_input_sets(_make_tensor_inputs(m, n, k, seed), **timing_kw["sets"])
        try:
            for name, f in baselines.XLA_FP8_VARIANTS.items():
                row[name] = _time_one(name, f, sets, m, n, k, **kw)
        finally:
            sets.delete()
    for key in ("dequant_bf16", *baselines.XLA_FP8_VARIANTS):
        if row[key] is skipped and previous and "us" in previous.get(key, {}):
            row[key] = {**previous[key], "from": previous["_file"]}
    timed = [v for v in baselines.XLA_FP8_VARIANTS if "us" in row[v]]
    row["xla_fp8_best"] = min(timed, key=lambda v: row[v]["us"]) if timed else None

    anchor = ANCHORS_H100.get((m, n, k))
    row["deepgemm_anchor_us"] = anchor
    ours_us = row["ours"].get("us")
    kern = _kernel_us(row["ours"])
    flushed = _flushed_us(row["ours"])
    best = row["xla_fp8_best"]
    dq_us = row["dequant_bf16"].get("us")
    row["ratios"] = {
        "x_xla_fp8": row[best]["us"] / ours_us if ours_us and best else None,
        "x_dequant_bf16": ratio(dq_us, ours_us),
        "x_deepgemm": ratio(anchor, ours_us),
        "x_deepgemm_kernel": ratio(anchor, kern),
        "x_deepgemm_flushed": ratio(anchor, flushed),
        "x_xla_fp8_flushed": ratio(_flushed_us(row[best]), flushed) if best else None,
        # DeepGEMM's protocol times its GEMM kernel alone; ours also runs XLA's A-scale transpose (~2 us)
        "x_deepgemm_gemm_flushed": ratio(anchor, timing.kernels_us((row["ours"].get("flushed") or {}).get("kernels"),
                                                                   timing.GEMM_KERNEL)),
    }
    row["errors"] = errors
    return row


def _kernel_us(entry: dict) -> float | None:
    return (entry.get("kernel") or {}).get("median_us")


def _flushed_us(entry: dict) -> float | None:
    return (entry.get("flushed") or {}).get("median_us")


# ----------------------------------------------------------------------------------------------
# Printing
# ----------------------------------------------------------------------------------------------

_SHORT = {"xla_fp8_dot": "dot", "xla_fp8_dq_pattern": "dq-pat"}
_TIMED = ("ours", "xla_fp8_dot", "xla_fp8_dq_pattern", "dequant_bf16")


def _f(x, fmt, width):
    return f"{x:{width}{fmt}}" if isinstance(x, (int, float)) else f"{'-':>{width}}"


def format_header(meta: dict) -> str:
    return "\n".join([
        "# jax_deepgemm.bench  fp8_gemm_nt (1x128 A / 128x128 B scales, bf16 D)",
        f"# device: {meta['device']} ({meta['platform']}), jax {meta['jax_version']}, {meta['date']}",
        f"# us (loop): {meta['method']['loop']}",
        f"# kern us: {meta['method']['kernel']}" if meta.get("kernel_time") else "# kern us: not measured",
        f"# fl us: {meta['method']['flushed']}" if meta.get("kernel_time") else "# fl us: not measured",
        "# TFLOPS = 2MNK/us; GB/s = bytes of A, B, both scales and D (each once)/us, both from kern us where"
        " measured (else from loop us); xXLA, xDQ = their loop"
        " us / ours; xDG = DeepGEMM anchor us / ours (loop), xDGk = anchor / ours (kern), xDGf = anchor / ours (fl:"
        " DeepGEMM's own protocol), xDGg = anchor / our GEMM kernel alone under that protocol (DeepGEMM's anchors time"
        " its GEMM kernel only; ours also runs the A-scale transpose), xXf = xla-fp8 fl us / ours;"
        " diff = calc_diff(ours, f32 reference) on the first rows; sus, xsus = loop us / kern us of ours and of"
        " xla-fp8 (sustained vs burst clocks: how far the power cap slows each)",
    ])


COLUMNS = (f"{'M':>5} {'N':>6} {'K':>6} | {'ours us':>8} {'TFLOPS':>7} {'GB/s':>6} {'kern us':>8} {'fl us':>8}"
           f" {'diff':>7} | {'xla-fp8':>8} {'(var)':>6} {'xXLA':>5} {'xXf':>5} | {'dq-bf16':>8} {'xDQ':>5} |"
           f" {'DG us':>7} {'xDG':>5} {'xDGk':>5} {'xDGf':>5} {'xDGg':>5} | {'sus':>5} {'xsus':>5}")


def format_row(r: dict) -> str:
    o = r["ours"]
    best = r.get("xla_fp8_best")
    x = r[best] if best else {}
    q = r["ratios"]
    return (f"{r['M']:>5} {r['N']:>6} {r['K']:>6} | {_f(o.get('us'), '.2f', 8)} {_f(o.get('tflops'), '.0f', 7)}"
            f" {_f(o.get('gbps'), '.0f', 6)} {_f(_kernel_us(o), '.2f', 8)} {_f(_flushed_us(o), '.2f', 8)}"
            f" {_f(o.get('diff'), '.1e', 7)} | {_f(x.get('us'), '.2f', 8)} {_SHORT.get(best, '-'):>6}"
            f" {_f(q['x_xla_fp8'], '.2f', 5)} {_f(q.get('x_xla_fp8_flushed'), '.2f', 5)} |"
            f" {_f(r['dequant_bf16'].get('us'), '.2f', 8)} {_f(q['x_dequant_bf16'], '.2f', 5)} |"
            f" {_f(r['deepgemm_anchor_us'], '.2f', 7)} {_f(q['x_deepgemm'], '.2f', 5)}"
            f" {_f(q['x_deepgemm_kernel'], '.2f', 5)} {_f(q.get('x_deepgemm_flushed'), '.2f', 5)}"
            f" {_f(q.get('x_deepgemm_gemm_flushed'), '.2f', 5)} | {_f(ratio(o.get('us'), _kernel_us(o)), '.2f', 5)}"
            f" {_f(ratio(x.get('us'), _kernel_us(x)), '.2f', 5)}")


def format_lowering(rows: list[dict], warn: bool = True) -> list[str]:
    """Per timed fn (first row where it ran): XLA's custom calls per call in the timed loop and,
    when measured, the kernels per call with their time; a warning if an XLA FP8 baseline did
    not become a cuBLASLt FP8 GEMM."""
    out = []
    for key in _TIMED:
        for r in rows:
            e = r.get(key, {})
            if "us" not in e:
                continue
            hlo = e.get("hlo") or {}
            kern = (e.get("kernel") or {}).get("kernels") or {}
            ks = ", ".join(f"{name[:48]} x{v['count']:g} {v['us']:.2f}us" for name, v in list(kern.items())[:4])
            out.append(f"#   {key:<18} ({r['M']}x{r['N']}x{r['K']}): custom calls/call {hlo.get('custom_calls')},"
                       f" fusions/call {hlo.get('fusions')}, copies/call {hlo.get('copies')}"
                       + (f"; kernels/call: {ks}" if ks else ""))
            fp8_call = baselines.CUBLASLT_FP8_TARGET in (hlo.get("custom_calls") or {})
            if warn and key.startswith("xla_fp8") and not fp8_call:
                out.append(f"#   WARNING: {key} did not lower to {baselines.CUBLASLT_FP8_TARGET}")
            break
    return out


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def _load_previous(path: str, device_kind: str) -> dict[tuple[int, int, int], dict]:
    with open(path) as f:
        data = json.load(f)
    if data.get("device") != device_kind:
        print(f"# WARNING: --baselines-from {path} was measured on {data.get('device')!r}, not {device_kind!r}")
    return {(r["M"], r["N"], r["K"]): {**r, "_file": path} for r in data.get("rows", [])}


def _jaxlib_version() -> str | None:
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # noqa: BLE001
        return None


def _shapes(smoke: bool, filters: list[str] | None, ms: list[int] | None = None) -> list[tuple[int, int, int]]:
    shapes = list(SMOKE_SHAPES) if smoke else [(m, n, k) for m in (ms or BENCH_M) for n, k in BENCH_NK]
    if filters:
        pats = [re.compile(f) for f in filters]
        shapes = [s for s in shapes if any(p.search("{}x{}x{}".format(*s)) for p in pats)]
    return shapes


# The other benchmark suites: flag -> module (each has PARTS and run(json_path, reps, target_ms, meta, parts,
# filters)).
_SUITES = {"mqa": "bench_mqa", "bf16": "bench_bf16", "grouped": "bench_grouped"}


def _run_suite(parser: argparse.ArgumentParser, args: argparse.Namespace, flag: str) -> int:
    if jax.devices()[0].platform != "gpu":
        print(f"--{flag} needs a GPU (its anchors are H100 kernel times)")
        return 0
    module = importlib.import_module(f"jax_deepgemm.{_SUITES[flag]}")
    meta = {"device": jax.devices()[0].device_kind, "date": datetime.date.today().isoformat(),
            "jax_version": jax.__version__}
    parts = tuple(x.strip() for x in getattr(args, flag).split(",") if x.strip())
    if not set(parts) <= set(module.PARTS):
        parser.error(f"--{flag}: unknown {sorted(set(parts) - set(module.PARTS))}")
    extra = {}
    if flag == "mqa":  # its baseline is the plain-jnp path: --ops ours skips it while tuning kernels
        extra["baselines"] = args.ops.replace(" ", "") != "ours"
    return module.run(json_path=args.json, reps=args.reps, target_ms=args.target_ms, meta=meta, parts=parts,
                      filters=args.filter, **extra)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jax_deepgemm.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes, few calls (CPU check of the code path)")
    p.add_argument("--json", default="bench_results.json", help="output JSON path (default: %(default)s)")
    p.add_argument("--filter", nargs="*", metavar="REGEX",
                   help="keep shapes whose 'MxNxK' matches any REGEX, e.g. '^4096x' or 'x7168$' (--grouped: the case's"
                        " 'GxMxNxK' key, e.g. '^16x' for the 16-group cases; --bf16/--mqa: their case keys)")
    p.add_argument("--m", nargs="+", type=int, metavar="M",
                   help="rows of A to bench at the six (N, K) instead of 64, 128 and 4096, e.g. '--m 1 4' for decode"
                        " (no DeepGEMM anchor there: its ratio columns stay empty)")
    p.add_argument("--reps", type=int, default=20, help="timed repetitions per op (median reported)")
    p.add_argument("--target-ms", type=float, default=5.0, help="minimum duration of one repetition")
    p.add_argument("--kernel-time", choices=("auto", "on", "off"), default="auto",
                   help="also time ours with the profiler (auto: on GPU only)")
    p.add_argument("--ops", default=",".join(OPS),
                   help="comma list of what to time: ours, xla (both XLA FP8 spellings), dq (dequant->bf16);"
                        " e.g. --ops ours while tuning kernels (the baselines do not change)")
    p.add_argument("--baselines-from", metavar="JSON",
                   help="take the entries not timed now (see --ops) from this earlier bench JSON (same device)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grouped", nargs="?", const="contiguous,masked,k_grouped", metavar="PARTS",
                   help="run the MoE grouped cases instead: any of contiguous,masked,k_grouped (default all; "
                        "see bench_grouped.py)")
    p.add_argument("--bf16", nargs="?", const="dense,contiguous,masked", metavar="PARTS",
                   help="run the BF16 cases instead: any of dense,contiguous,masked (default all; see bench_bf16.py)")
    p.add_argument("--mqa", nargs="?", const="ranged,paged,fp4", metavar="PARTS",
                   help="run the lightning-indexer (MQA logits) cases instead: any of ranged,paged,fp4 (default all;"
                        " see bench_mqa.py)")
    args = p.parse_args(argv)
    if args.m and (args.smoke or min(args.m) < 1):
        p.error("--m takes positive row counts, and not with --smoke")
    suites = [flag for flag in _SUITES if getattr(args, flag)]
    if len(suites) > 1:  # one family per run (each writes its own JSON): say so rather than run only the first
        p.error(f"--{' and --'.join(suites)}: one family per run; run them one after the other")
    if suites:
        return _run_suite(p, args, suites[0])
    ops = tuple(o.strip() for o in args.ops.split(",") if o.strip())
    if not set(ops) <= set(OPS):
        p.error(f"--ops: unknown {sorted(set(ops) - set(OPS))}; choose from {', '.join(OPS)}")

    dev = jax.devices()[0]
    on_gpu = dev.platform == "gpu"
    op, has_kernels, why = _load_op()
    if not args.smoke and not on_gpu:
        print(f"jax_deepgemm.bench: no GPU (jax backend: {dev.platform}); nothing to time. "
              "Use --smoke to check the code path on tiny shapes.")
        return 0
    if on_gpu and not has_kernels:
        print(f"# WARNING: jax_deepgemm CUDA kernels not available ({why or 'has_cuda_kernels() is False'});"
              " timing the baselines only", flush=True)
        op = None
    elif op is None:
        print(f"# WARNING: {why}; timing the baselines only", flush=True)

    kernel_time = args.kernel_time == "on" or (args.kernel_time == "auto" and on_gpu)
    if args.smoke:
        timing_kw = {"sets": {"max_sets": 4},
                     "loop": {"max_calls": 8, "n_reps": 3, "target_rep_ms": 1.0, "warmup_ms": 0.0},
                     "prof": {"n_reps": 2, "max_calls": 4, "idle_s": 0.0},
                     "flush": {"n_calls": 3, "flush_bytes": 1 << 22}}
    else:
        timing_kw = {"sets": {}, "loop": {"n_reps": args.reps, "target_rep_ms": args.target_ms}, "prof": {},
                     "flush": {}}
    fk = timing_kw["flush"]
    lk, pk = timing_kw["loop"], timing_kw["prof"]
    meta = {
        "device": dev.device_kind,
        "platform": dev.platform,
        "jax_version": jax.__version__,
        "jaxlib_version": _jaxlib_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "ops": list(ops),
        "has_cuda_kernels": has_kernels,
        "kernel_time": kernel_time,
        "method": {
            "loop": timing.LOOP_METHOD.format(
                l2_multiple="4", warmup=2, n_reps=lk["n_reps"], target_ms=f"{lk['target_rep_ms']:g}",
                warmup_ms=f"{lk.get('warmup_ms', timing.DEFAULT_WARMUP_MS):g}"),
            "kernel": timing.PROFILER_METHOD.format(
                n_reps=pk.get("n_reps", 5), idle_s=f"{pk.get('idle_s', timing.DEFAULT_IDLE_S):g}"),
            "flushed": timing.FLUSH_METHOD.format(n_calls=fk.get("n_calls", 30),
                                                  flush_gb=fk.get("flush_bytes", 8 * 10**9) / 1e9),
        },
        "anchors": "DeepGEMM v2.6.1 SM90 kernel time, H100 SXM, L2 flushed (testing.shapes.ANCHORS_H100)",
    }
    print(format_header(meta))
    print(COLUMNS, flush=True)

    previous = _load_previous(args.baselines_from, dev.device_kind) if args.baselines_from else {}
    out = BenchJson(args.json, meta, ("rows",))
    rows = out.rows["rows"]
    for m, n, k in _shapes(args.smoke, args.filter, args.m):
        t0 = time.perf_counter()
        r = bench_shape(m, n, k, op=op, timing_kw=timing_kw, kernel_time=kernel_time, seed=args.seed, ops=ops,
                        previous=previous.get((m, n, k)))
        r["bench_wall_s"] = round(time.perf_counter() - t0, 1)
        print(format_row(out.add("rows", r)), flush=True)

    print("# xla-fp8 = faster of xla_fp8_dot (dot) / xla_fp8_dq_pattern (dq-pat), per row. What XLA ran:")
    for line in format_lowering(rows, warn=on_gpu):
        print(line)
    out.finish()
    n_err = sum(len(r["errors"]) for r in rows)
    if n_err:
        print(f"# {n_err} errors (see stderr and 'errors' in the JSON)")
    print(f"# wrote {args.json} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
