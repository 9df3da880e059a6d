"""Device-time measurement of jitted JAX callables (used by ``jax_deepgemm.bench``; reusable by
every op family: dense, grouped GEMMs, indexer).

Wall-clock time around one jitted call includes ~30 us of host dispatch, which swamps kernels of
5-50 us. Three ways around it live here; each states its method in the result (``Timing.method``).

Primary: :func:`time_device` ("loop")
  1. Build ``n_sets`` input sets with ``make_inputs(i)`` (distinct device arrays, fresh random data,
     never zeros). ``n_sets`` is chosen so that all sets together exceed ``l2_multiple`` x the L2
     (4 x 50 MB on H100): by the time a set comes round again its operands have been evicted,
     so no call reads L2-resident operands. Total input memory is capped (``max_input_bytes``).
  2. Build ONE jitted function that calls ``fn`` ``n_calls`` times, unrolled in Python, call ``j``
     on set ``j % n_sets``, and returns ALL outputs (XLA cannot dead-code-eliminate any call, and
     no extra reduction kernel is added). Each call's array inputs (not 0-d scalars) pass through
     ``lax.optimization_barrier`` together with the previous call's outputs: a no-op at run time
     (no kernel, no copy) that (a) orders the calls one after another, as in a real model where
     one GEMM feeds the next, so independent calls cannot overlap on the GPU, and (b) makes
     every call's operands distinct to XLA, so CSE cannot merge two calls on the same set.
  3. ``n_calls`` is adaptive: a probe run estimates the time per call, then ``n_calls`` is raised
     until one repetition lasts >= ``target_rep_ms`` (5 ms: the ~30 us dispatch is < 1 %), capped
     by ``max_calls`` and by ``max_output_bytes`` for the returned outputs.
  4. Warm up (compile + ``warmup_reps`` runs), then time ``n_reps`` repetitions of the whole
     jitted call with ``time.perf_counter()`` around ``jax.block_until_ready``; report the median
     (and min) divided by ``n_calls``.
  The result is per-call time as a JAX program sees it back to back: kernel time plus whatever
  gap XLA leaves between consecutive kernels (~1-1.5 us per kernel inside a CUDA graph, ~3 us
  without; a custom call is captured in XLA's CUDA graphs only if its FFI handler is
  ``kCmdBufferCompatible``), at sustained load: on H100 a long run of dense GEMMs is power-limited
  (bf16 8192^3 kernels: ~1350 us in the first reps after idle, ~1450-1550 us sustained).

Secondary: :func:`time_with_profiler` ("kernel")
  Runs the same loop function (``n_calls = n_sets``, 5 reps) under ``jax.profiler`` and sums
  the durations of the GPU kernels recorded on the device's stream lines (CUPTI activity), per
  repetition, divided by ``n_calls``; reps are told apart by equal kernel counts. No launch
  gaps, no dispatch, short bursts after an idle moment. ``Timing.kernels``
  breaks the time down per kernel name. Raises ``RuntimeError`` when the trace holds no GPU
  kernels (CPU backend, no CUPTI). While the profiler is active XLA may launch the kernels of
  its CUDA graphs one by one; that changes the gaps, not the kernel durations.

DeepGEMM's protocol: :func:`time_with_flush` ("flushed")
  30 calls, each after an 8 GB flush kernel, under ``jax.profiler``; the mean of each call's own
  kernel time. This is how every DeepGEMM figure in ``anchors.md`` was measured, so it is the one to
  hold against them. Measured on an H200 (session 6, ``benchmarks/RESULTS.md``): within 1-3 % of the
  profiler method at M = 4096, and 5-25 % above it at M = 64. After the flush, the small GEMMs find
  nothing warm in L2; clock differences did not show.

All return :class:`Timing`. Everything here runs on CPU too (small shapes), so the logic can be
checked without a GPU; ``python -m jax_deepgemm.testing.timing`` is a self-check of the method on
a plain XLA matmul (loop vs profiler).
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "L2_BYTES_H100",
    "InputSets",
    "Timing",
    "build_input_sets",
    "time_device",
    "time_with_profiler",
    "time_with_flush",
    "compiled_hlo_stats",
    "LOOP_METHOD",
    "PROFILER_METHOD",
    "FLUSH_METHOD",
]

L2_BYTES_H100 = 50 * 1024 * 1024
"""H100 SXM L2 size; sets are rotated so their operands total more than a multiple of this."""

GiB = 1024**3

DEFAULT_WARMUP_MS = 300.0
"""Back-to-back warm-up before the loop is timed, so clocks and power settle (H100: a dense FP8
GEMM slows by up to ~20 % over the first ~100 ms of continuous running)."""

DEFAULT_IDLE_S = 1.0
"""Idle time before a profiler trace, so every op's kernel time is taken from the same rested
state (comparable with DeepGEMM's numbers, whose 8 GB L2-flush memsets keep the GEMMs short)."""

LOOP_METHOD = (
    "loop: one jitted fn calls the op n_calls times back to back (unrolled, each call's inputs "
    "tied to the previous call's outputs by optimization_barrier: serial, no CSE) over n_sets "
    "rotating input sets (> {l2_multiple}x L2 of operands, so not L2-resident), returns all "
    "outputs; warm-up = compile + >= {warmup} runs and >= {warmup_ms} ms back to back "
    "(sustained clocks); time = median over {n_reps} reps of perf_counter around "
    "block_until_ready / n_calls; n_calls chosen so a rep lasts >= {target_ms} ms"
)
PROFILER_METHOD = (
    "kernel: same loop fn with n_calls = n_sets, after {idle_s} s idle, under jax.profiler; per "
    "rep, sum of GPU kernel durations on the device stream lines (CUPTI) / n_calls; median over "
    "{n_reps} reps (no launch gaps, no dispatch; short bursts from a rested GPU)"
)


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Timing:
    """Per-call time of one op, with how it was measured."""

    median_us: float
    min_us: float
    n_calls: int
    n_sets: int
    n_reps: int
    method: str
    set_bytes: int = 0
    rep_ms: float = 0.0  # median duration of one repetition (all n_calls calls)
    kernels: dict[str, Any] | None = None  # profiler only: kernel name -> {"us": per call, "count": per call}
    reps_us: tuple[float, ...] = ()  # per-call time of each repetition, in run order
    hlo: dict[str, Any] | None = None  # loop only: what XLA emitted per call in the timed loop
    setup_s: float = 0.0  # wall time of compilation, n_calls probing and warm-up
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        d["reps_us"] = list(self.reps_us)
        return d


@dataclasses.dataclass
class InputSets:
    """``n_sets`` input tuples living on the device, built by :func:`build_input_sets`."""

    sets: tuple[tuple[jax.Array, ...], ...]
    set_bytes: int
    notes: tuple[str, ...] = ()

    @property
    def n_sets(self) -> int:
        return len(self.sets)

    @property
    def total_bytes(self) -> int:
        return self.set_bytes * self.n_sets

    def delete(self) -> None:
        """Frees the device buffers now (instead of waiting for garbage collection)."""
        for s in self.sets:
            for x in jax.tree_util.tree_leaves(s):
                if isinstance(x, jax.Array) and not x.is_deleted():
                    x.delete()
        self.sets = ()


def _tree_nbytes(tree) -> int:
    return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                   for x in jax.tree_util.tree_leaves(tree)))


# ----------------------------------------------------------------------------------------------
# Input sets
# ----------------------------------------------------------------------------------------------


def build_input_sets(
    make_inputs: Callable[[int], tuple],
    *,
    n_sets: int | None = None,
    l2_bytes: int = L2_BYTES_H100,
    l2_multiple: float = 4.0,
    min_sets: int = 2,
    max_sets: int = 64,
    max_input_bytes: int = 8 * GiB,
) -> InputSets:
    """Builds enough distinct input sets that their operands exceed ``l2_multiple`` x L2.

    ``make_inputs(i)`` must return a tuple of arrays (fresh random data for each ``i``, never
    zeros). ``n_sets`` overrides the automatic choice. The automatic choice is
    ``ceil(l2_multiple * l2_bytes / set_bytes)`` clamped to ``[min_sets, max_sets]`` and to
    ``max_input_bytes`` in total (at least one set).
    """
    first = tuple(make_inputs(0))
    set_bytes = max(_tree_nbytes(first), 1)
    notes = []
    if n_sets is None:
        want = max(min_sets, math.ceil(l2_multiple * l2_bytes / set_bytes))
        n_sets = min(want, max_sets)
        if n_sets < want:
            notes.append(f"n_sets capped at max_sets={max_sets} (operands {n_sets * set_bytes / 1e6:.1f} MB"
                         f" < {l2_multiple:g}x L2: may be L2-resident)")
    fit = max(1, max_input_bytes // set_bytes)
    if n_sets > fit:
        notes.append(f"n_sets cut from {n_sets} to {fit} by max_input_bytes={max_input_bytes / GiB:.1f} GiB")
        n_sets = fit
    sets = [first]
    for i in range(1, n_sets):
        sets.append(tuple(make_inputs(i)))
    jax.block_until_ready(sets)
    return InputSets(tuple(sets), set_bytes, tuple(notes))


# ----------------------------------------------------------------------------------------------
# The loop function
# ----------------------------------------------------------------------------------------------


def _tie(args, prev):
    """``args`` with every non-scalar array passed through ``optimization_barrier`` together
    with ``prev`` (the previous call's outputs).

    A run-time no-op (no kernel, no copy) that makes call j start only after call j-1 (no overlap
    on the GPU) and gives two calls on the same set different operands in HLO (no CSE). 0-d
    arrays (per-tensor scales) are left alone: XLA's FP8 GEMM rewriter only folds a scalar scale
    into the cuBLASLt call when it sees the scale directly (checked on H100, jax 0.11.2).
    """
    leaves, tree = jax.tree_util.tree_flatten(args)
    idx = [i for i, x in enumerate(leaves) if getattr(x, "ndim", 0) >= 1]
    tied, _ = jax.lax.optimization_barrier(([leaves[i] for i in idx], prev))
    for i, x in zip(idx, tied):
        leaves[i] = x
    return jax.tree_util.tree_unflatten(tree, leaves)


class _Loop:
    """jit(sets -> [fn(*sets[j % n_sets]) for j in range(n_calls)]), calls serialised, no CSE.

    Compiled once (with ``compiler_options``, XLA debug options such as
    ``{"xla_gpu_enable_command_buffer": ""}``, if given) on first use; ``hlo_text`` is the
    optimized HLO of exactly what is timed.
    """

    def __init__(self, fn: Callable, n_calls: int, n_sets: int, compiler_options: dict | None):
        self.n_calls, self.n_sets = n_calls, n_sets
        self._options = dict(compiler_options) if compiler_options else None
        self._compiled = None

        def loop(sets):
            outs = []
            prev = None
            for j in range(n_calls):
                args = sets[j % n_sets]
                if prev is not None:
                    args = _tie(args, prev)
                out = fn(*args)
                outs.append(out)
                prev = out
            return outs

        self._jitted = jax.jit(loop)

    def compile(self, sets):
        if self._compiled is not None and self._compiled[0] is sets:
            return self._compiled[2]  # same sets object: skip the signature (keeps reps lean)
        key = _signature(sets)
        if self._compiled is None or self._compiled[1] != key:
            self._compiled = (sets, key, self._jitted.lower(sets).compile(self._options))
        else:
            self._compiled = (sets, key, self._compiled[2])
        return self._compiled[2]

    def __call__(self, sets):
        return self.compile(sets)(sets)

    def hlo_text(self, sets) -> str:
        return self.compile(sets).as_text()


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return (treedef, tuple((tuple(x.shape), str(x.dtype)) for x in leaves))


_LOOP_CACHE: dict[tuple, _Loop] = {}
_LOOP_CACHE_SIZE = 16


def _make_loop(fn: Callable, n_calls: int, n_sets: int, compiler_options: dict | None = None) -> _Loop:
    """A :class:`_Loop`, cached so that e.g. the probe loop of :func:`time_device` and the loop of
    :func:`time_with_profiler` (both ``n_calls = n_sets``) share one compilation."""
    key = (fn, n_calls, n_sets, tuple(sorted((compiler_options or {}).items())))
    loop = _LOOP_CACHE.pop(key, None) or _Loop(fn, n_calls, n_sets, compiler_options)
    _LOOP_CACHE[key] = loop  # most recently used last
    while len(_LOOP_CACHE) > _LOOP_CACHE_SIZE:
        _LOOP_CACHE.pop(next(iter(_LOOP_CACHE)))
    return loop


def _run_reps(loop, sets, n_reps: int) -> list[float]:
    times = []
    for _ in range(n_reps):
        t0 = time.perf_counter()
        out = loop(sets)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
        del out
    return times


def _warm(loop, sets, warmup_reps: int, warmup_ms: float = 0.0) -> None:
    """First run (compiles and autotunes), then at least ``warmup_reps - 1`` more runs and at least
    ``warmup_ms`` of back-to-back runs (so the clocks settle at their sustained value)."""
    jax.block_until_ready(loop(sets))
    t0, done = time.perf_counter(), 1
    while done < warmup_reps or (time.perf_counter() - t0) * 1e3 < warmup_ms:
        jax.block_until_ready(loop(sets))
        done += 1


def _out_bytes(fn, args) -> int:
    return _tree_nbytes(jax.eval_shape(fn, *args))


def time_device(
    fn: Callable,
    make_inputs: Callable[[int], tuple] | None = None,
    *,
    inputs: InputSets | None = None,
    n_calls: int | None = None,
    n_sets: int | None = None,
    target_rep_ms: float = 5.0,
    max_calls: int = 1000,
    min_calls: int = 1,
    n_reps: int = 20,
    warmup_reps: int = 2,
    warmup_ms: float = DEFAULT_WARMUP_MS,
    l2_bytes: int = L2_BYTES_H100,
    l2_multiple: float = 4.0,
    max_sets: int = 64,
    max_input_bytes: int = 8 * GiB,
    max_output_bytes: int = 16 * GiB,
    compiler_options: dict | None = None,
    hlo_stats: bool = True,
) -> Timing:
    """Per-call device time of ``fn`` by the loop method (see the module docstring).

    Args:
      fn: the op; ``fn(*make_inputs(i))`` returns an array or pytree of arrays. It is traced
        inside one jitted loop, so it must be jittable (it may itself be jitted).
      make_inputs: ``i -> tuple of arrays``, the i-th input set (fresh random data, not zeros).
      inputs: prebuilt :class:`InputSets` (to time several ops on the same sets); instead of
        ``make_inputs``. They are not freed here.
      n_calls: fixed number of calls per repetition (skips the adaptive choice).
      n_sets: fixed number of input sets (skips the L2-based choice).
      target_rep_ms: the adaptive ``n_calls`` makes one repetition last at least this long.
      max_calls, min_calls: bounds on the adaptive ``n_calls``.
      n_reps: timed repetitions; the median is reported.
      warmup_reps, warmup_ms: untimed runs after compilation: at least this many, for at least
        this long (back to back, so that clocks and power reach their sustained state).
      l2_bytes, l2_multiple, max_sets, max_input_bytes: see :func:`build_input_sets`.
      max_output_bytes: cap on the outputs of one repetition (all of them are returned).
      compiler_options: XLA options for compiling the loop (default: none, i.e. what users get).
      hlo_stats: count what XLA emitted per call in the timed loop (``Timing.hlo``).
    """
    if (make_inputs is None) == (inputs is None):
        raise ValueError("time_device: pass exactly one of make_inputs or inputs")
    own = inputs is None
    if own:
        inputs = build_input_sets(make_inputs, n_sets=n_sets, l2_bytes=l2_bytes,
                                  l2_multiple=l2_multiple, max_sets=max_sets,
                                  max_input_bytes=max_input_bytes)
    try:
        t_setup = time.perf_counter()
        notes = list(inputs.notes)
        if n_calls is None:
            n_calls, loop, more = _choose_n_calls(
                fn, inputs, target_rep_ms=target_rep_ms, max_calls=max_calls, min_calls=min_calls,
                max_output_bytes=max_output_bytes, compiler_options=compiler_options)
            notes += more
        else:
            loop = _make_loop(fn, n_calls, inputs.n_sets, compiler_options)
        _warm(loop, inputs.sets, warmup_reps, warmup_ms)
        setup_s = time.perf_counter() - t_setup
        times = _run_reps(loop, inputs.sets, n_reps)
        hlo = _per_call(_hlo_counts(loop.hlo_text(inputs.sets)), n_calls) if hlo_stats else None
        method = LOOP_METHOD.format(l2_multiple=f"{l2_multiple:g}", warmup=warmup_reps,
                                    warmup_ms=f"{warmup_ms:g}", n_reps=n_reps,
                                    target_ms=f"{target_rep_ms:g}")
        return Timing(
            median_us=statistics.median(times) / n_calls * 1e6,
            min_us=min(times) / n_calls * 1e6,
            n_calls=n_calls,
            n_sets=inputs.n_sets,
            n_reps=n_reps,
            method=method,
            set_bytes=inputs.set_bytes,
            rep_ms=statistics.median(times) * 1e3,
            reps_us=tuple(round(t / n_calls * 1e6, 3) for t in times),
            hlo=hlo,
            setup_s=round(setup_s, 2),
            notes=tuple(notes),
        )
    finally:
        if own:
            inputs.delete()


def _choose_n_calls(fn, inputs: InputSets, *, target_rep_ms, max_calls, min_calls,
                    max_output_bytes, compiler_options) -> tuple[int, _Loop, list[str]]:
    """Probe with ``n_sets`` calls, then grow: returns (n_calls, compiled loop, notes)."""
    notes = []
    sets, n_sets = inputs.sets, inputs.n_sets
    out_cap = max(1, max_output_bytes // max(_out_bytes(fn, sets[0]), 1))
    hi = max(1, min(max_calls, out_cap))
    n = max(min_calls, min(n_sets, hi))
    for _ in range(4):
        loop = _make_loop(fn, n, n_sets, compiler_options)
        _warm(loop, sets, 2)
        rep_s = statistics.median(_run_reps(loop, sets, 3))
        if rep_s * 1e3 >= target_rep_ms or n >= hi:
            break
        per_call = rep_s / n  # over-estimate (includes dispatch): grows n by at least what is needed
        n_new = min(hi, max(n + 1, math.ceil(1.25 * target_rep_ms * 1e-3 / per_call)))
        if n_new <= n:
            break
        n = n_new
    if n >= hi and rep_s * 1e3 < target_rep_ms:
        why = "max_calls" if hi == max_calls else "max_output_bytes"
        notes.append(f"rep {rep_s * 1e3:.2f} ms < target {target_rep_ms} ms: n_calls capped at {n} by {why}")
    return n, loop, notes


# ----------------------------------------------------------------------------------------------
# Profiler (kernel time)
# ----------------------------------------------------------------------------------------------

# Lines of a GPU plane that hold CUPTI activity (one per CUDA stream), e.g. "Stream #13(Compute)".
# The other lines of that plane ("XLA Modules", "XLA Ops", "Steps", ...) are derived from them
# and would double-count.
_STREAM_LINE = re.compile(r"^Stream #\d+")
_GPU_PLANE = re.compile(r"^/device:GPU:(\d+)$")


def _load_profile(log_dir: str, returned) -> Any:
    """ProfileData from stop_trace()'s return value (jax >= 0.12) or the .xplane.pb written."""
    from jax.profiler import ProfileData

    if returned is not None and hasattr(returned, "planes"):
        return returned
    files = sorted(glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True),
                   key=os.path.getmtime)
    if not files:
        raise RuntimeError(f"profiler wrote no .xplane.pb under {log_dir}")
    return ProfileData.from_file(files[-1])


def gpu_kernel_events(profile, device_index: int = 0) -> tuple[list[tuple[str, int, int]], list[tuple[int, int]]]:
    """(kernels, modules) of one GPU plane: kernels as (name, start_ns, duration_ns) from the
    stream lines; module executions as (start_ns, end_ns) from the "XLA Modules" line (may be
    empty)."""
    kernels, modules = [], []
    for plane in profile.planes:
        m = _GPU_PLANE.match(plane.name)
        if not m or int(m.group(1)) != device_index:
            continue
        for line in plane.lines:
            if _STREAM_LINE.match(line.name):
                kernels += [(ev.name, int(ev.start_ns), int(ev.duration_ns)) for ev in line.events]
            elif line.name == "XLA Modules":
                modules += [(int(ev.start_ns), int(ev.start_ns + ev.duration_ns)) for ev in line.events]
    return kernels, modules


def _traced_gpu_events(run: Callable[[], Any], device_index: int, log_dir: str | None = None):
    """``run()`` under ``jax.profiler``: the (kernels, modules) of :func:`gpu_kernel_events`. The trace
    goes to ``log_dir`` if given (kept), else to a temporary folder (removed)."""
    tmp = log_dir or tempfile.mkdtemp(prefix="jdg_prof_")
    try:
        jax.profiler.start_trace(tmp)
        try:
            run()
        finally:
            returned = jax.profiler.stop_trace()
        return gpu_kernel_events(_load_profile(tmp, returned), device_index)
    finally:
        if log_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _per_rep_kernel_ns(kernels, modules, n_reps: int) -> tuple[list[int], str]:
    """Sum of kernel durations per repetition, and how reps were told apart.

    Each repetition launches the same kernel sequence, so kernels sorted by start time are cut
    into ``n_reps`` equal runs. Where the trace has module-execution spans ("XLA Modules" line)
    those are used instead; otherwise, if the count does not divide, the total is split evenly.
    """
    if len(modules) == n_reps:
        sums = [sum(d for _, s, d in kernels if lo <= s <= hi) for lo, hi in sorted(modules)]
        if sum(sums) == sum(d for _, _, d in kernels):
            return sums, "module spans"
    if kernels and len(kernels) % n_reps == 0:
        per = len(kernels) // n_reps
        ks = sorted(kernels, key=lambda e: e[1])
        return [sum(d for _, _, d in ks[i * per:(i + 1) * per]) for i in range(n_reps)], "equal kernel counts"
    total = sum(d for _, _, d in kernels)
    return [total // n_reps] * n_reps, f"{len(kernels)} kernels not divisible by {n_reps} reps: even split"


# Part of the name of every GEMM kernel of ours (jdg::Sm90Fp8GemmKernel, jdg::Sm90Bf16GemmKernel): what kernels_us
# keeps to time a GEMM alone, as DeepGEMM's bench_kineto does.
GEMM_KERNEL = "GemmKernel"


def kernels_us(kernels: dict[str, dict[str, float]] | None, name_part: str) -> float | None:
    """Per-call µs of the kernels of a ``Timing.kernels`` breakdown whose names contain ``name_part`` (e.g. the GEMM
    kernel alone, as DeepGEMM's ``bench_kineto`` times it, without the op's other kernels); None if there are none."""
    us = [v["us"] for name, v in (kernels or {}).items() if name_part in name]
    return sum(us) if us else None


def time_with_profiler(
    fn: Callable,
    make_inputs: Callable[[int], tuple] | None = None,
    *,
    inputs: InputSets | None = None,
    n_calls: int | None = None,
    n_sets: int | None = None,
    n_reps: int = 5,
    warmup_reps: int = 2,
    min_calls: int = 1,
    max_calls: int = 100,
    max_output_bytes: int = 16 * GiB,
    l2_bytes: int = L2_BYTES_H100,
    l2_multiple: float = 4.0,
    max_sets: int = 64,
    max_input_bytes: int = 8 * GiB,
    idle_s: float = DEFAULT_IDLE_S,
    device_index: int = 0,
    log_dir: str | None = None,
    compiler_options: dict | None = None,
) -> Timing:
    """Per-call GPU kernel time of ``fn`` from a ``jax.profiler`` trace (see module docstring).

    The loop function is the same as :func:`time_device`'s; ``n_calls`` defaults to
    ``max(n_sets, min_calls)`` capped by ``max_calls`` (no need to amortise dispatch here; the
    trace grows with the number of kernels), the same loop as :func:`time_device`'s probe, so
    it is compiled once. After warm-up the GPU idles ``idle_s`` seconds, then ``n_reps`` reps
    are traced. ``Timing.kernels`` breaks the time down per kernel name. Raises
    ``RuntimeError`` if no GPU kernel was recorded.
    """
    if (make_inputs is None) == (inputs is None):
        raise ValueError("time_with_profiler: pass exactly one of make_inputs or inputs")
    own = inputs is None
    if own:
        inputs = build_input_sets(make_inputs, n_sets=n_sets, l2_bytes=l2_bytes,
                                  l2_multiple=l2_multiple, max_sets=max_sets,
                                  max_input_bytes=max_input_bytes)
    try:
        if n_calls is None:
            out_cap = max(1, max_output_bytes // max(_out_bytes(fn, inputs.sets[0]), 1))
            n_calls = max(1, min(max(inputs.n_sets, min_calls), max_calls, out_cap))
        loop = _make_loop(fn, n_calls, inputs.n_sets, compiler_options)
        _warm(loop, inputs.sets, warmup_reps)
        time.sleep(idle_s)
        kernels, modules = _traced_gpu_events(lambda: _run_reps(loop, inputs.sets, n_reps), device_index, log_dir)
        if not kernels:
            raise RuntimeError("profiler trace holds no GPU kernel events (CPU backend or no CUPTI)")
        per_rep, split = _per_rep_kernel_ns(kernels, modules, n_reps)
        by_name: dict[str, list[int]] = {}
        for name, _, d in kernels:
            by_name.setdefault(name, []).append(d)
        denom = n_reps * n_calls
        breakdown = {
            name: {"us": sum(ds) / denom / 1e3, "count": len(ds) / denom}
            for name, ds in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))
        }
        notes = list(inputs.notes) + [f"reps split by {split}"]
        return Timing(
            median_us=statistics.median(per_rep) / n_calls / 1e3,
            min_us=min(per_rep) / n_calls / 1e3,
            n_calls=n_calls,
            n_sets=inputs.n_sets,
            n_reps=n_reps,
            method=PROFILER_METHOD.format(n_reps=n_reps, idle_s=f"{idle_s:g}"),
            set_bytes=inputs.set_bytes,
            rep_ms=statistics.median(per_rep) / 1e6,
            kernels=breakdown,
            reps_us=tuple(round(ns / n_calls / 1e3, 3) for ns in per_rep),
            notes=tuple(notes),
        )
    finally:
        if own:
            inputs.delete()


FLUSH_METHOD = (
    "flushed: DeepGEMM's protocol (bench_kineto): {n_calls} calls, each after a {flush_gb:g} GB flush "
    "(an in-place int32 increment: evicts L2, and the GPU runs a memory-bound kernel instead of math "
    "between calls), under jax.profiler; per call, the sum of its own GPU kernels (the flush's are "
    "left out); mean over calls"
)


def _split_calls_at_flushes(kernels, flush_names) -> tuple[list[int], dict[str, list[int]]]:
    """Per-call kernel time (ns) of a trace of flush, call, flush, call, ...: the sum of the
    durations of the kernels between one flush kernel and the next (kernels before the first
    flush are not counted), and the durations per kernel name of the calls' kernels."""
    per_call, current, by_name = [], None, {}
    for name, _, d in sorted(kernels, key=lambda e: e[1]):
        if name in flush_names:  # a flush starts the next call
            if current is not None:
                per_call.append(current)
            current = 0
        elif current is not None:
            current += d
            by_name.setdefault(name, []).append(d)
    if current:
        per_call.append(current)
    return per_call, by_name


def time_with_flush(
    fn: Callable,
    make_inputs: Callable[[int], tuple] | None = None,
    *,
    inputs: InputSets | None = None,
    n_calls: int = 30,
    flush_bytes: int = 8 * 10**9,
    device_index: int = 0,
) -> Timing:
    """Per-call GPU kernel time of ``fn`` measured the way DeepGEMM measures its kernels (and so
    the way every DeepGEMM figure in ``anchors.md`` was taken): each call follows a flush of
    ``flush_bytes`` bytes (DeepGEMM zeroes 8 GB; here an in-place increment, which XLA surely emits as
    a kernel), and only the call's own kernels are summed.

    Between calls the GPU runs a memory-bound kernel instead of GEMMs, and L2 holds nothing of the
    operands. The flush's kernels are told apart by name, from a trace of the flush alone.
    """
    if (make_inputs is None) == (inputs is None):
        raise ValueError("time_with_flush: pass exactly one of make_inputs or inputs")
    own = inputs is None
    if own:
        inputs = build_input_sets(make_inputs, n_sets=2)
    buf = None
    try:
        op = jax.jit(fn)
        flush = jax.jit(lambda b: b + 1, donate_argnums=0)
        buf = jnp.ones((flush_bytes // 4,), jnp.int32)
        for s in inputs.sets:  # compile and warm up
            jax.block_until_ready(op(*s))
        buf = jax.block_until_ready(flush(buf))

        state = {"buf": buf}

        def flush_only():
            state["buf"] = jax.block_until_ready(flush(state["buf"]))

        def calls():
            for i in range(n_calls):
                state["buf"] = flush(state["buf"])
                jax.block_until_ready(op(*inputs.sets[i % inputs.n_sets]))

        flush_names = {name for name, _, _ in _traced_gpu_events(flush_only, device_index)[0]}
        kernels = sorted(_traced_gpu_events(calls, device_index)[0], key=lambda e: e[1])
        buf = state["buf"]
        if not kernels:
            raise RuntimeError("profiler trace holds no GPU kernel events (CPU backend or no CUPTI)")
        per_call, by_name = _split_calls_at_flushes(kernels, flush_names)
        if len(per_call) != n_calls:
            raise RuntimeError(f"time_with_flush: found {len(per_call)} calls between flushes, expected {n_calls}")
        breakdown = {name: {"us": sum(ds) / n_calls / 1e3, "count": len(ds) / n_calls}
                     for name, ds in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))}
        return Timing(
            median_us=statistics.mean(per_call) / 1e3,
            min_us=min(per_call) / 1e3,
            n_calls=n_calls,
            n_sets=inputs.n_sets,
            n_reps=1,
            method=FLUSH_METHOD.format(n_calls=n_calls, flush_gb=flush_bytes / 1e9),
            set_bytes=inputs.set_bytes,
            kernels=breakdown,
            reps_us=tuple(round(ns / 1e3, 3) for ns in per_call),
            notes=tuple(inputs.notes),
        )
    finally:
        del buf
        if own:
            inputs.delete()


# ----------------------------------------------------------------------------------------------
# What XLA made of it
# ----------------------------------------------------------------------------------------------

_CUSTOM_CALL_TARGET = re.compile(r'custom_call_target="([^"]+)"')


def _hlo_counts(text: str) -> dict[str, Any]:
    targets: dict[str, int] = {}
    for t in _CUSTOM_CALL_TARGET.findall(text):
        targets[t] = targets.get(t, 0) + 1
    return {
        "custom_calls": targets,
        "fusions": len(re.findall(r"\bfusion\(", text)),
        "copies": len(re.findall(r"\bcopy\(", text)),
        "dots": len(re.findall(r"\bdot\(", text)),
    }


def _per_call(counts: dict[str, Any], n_calls: int) -> dict[str, Any]:
    per = lambda v: round(v / n_calls, 3)  # noqa: E731
    return {"custom_calls": {k: per(v) for k, v in counts["custom_calls"].items()},
            **{k: per(v) for k, v in counts.items() if k != "custom_calls"}}


def compiled_hlo_stats(fn: Callable, *args, compiler_options: dict | None = None) -> dict[str, Any]:
    """Compiles ``jax.jit(fn)(*args)`` and counts what XLA emitted: custom-call targets (e.g.
    ``__cublas$lt$matmul$f8`` for cuBLASLt FP8, ``__cublas$lt$matmul`` for cuBLASLt), fusions,
    copies and dots in the optimized HLO text. Cheap, no run. (:func:`time_device` reports the
    same counts per call for the timed loop itself in ``Timing.hlo``.)"""
    return _hlo_counts(jax.jit(fn).lower(*args).compile(compiler_options).as_text())


# ----------------------------------------------------------------------------------------------
# Self-check: python -m jax_deepgemm.testing.timing [--small]
# ----------------------------------------------------------------------------------------------


def _selfcheck(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Self-check of the timing methods on XLA matmuls.")
    p.add_argument("--small", action="store_true", help="tiny shapes (CPU)")
    p.add_argument("--dump-planes", action="store_true", help="print the profile's planes and lines")
    args = p.parse_args(argv)
    dev = jax.devices()[0]
    print(f"device: {dev.device_kind} ({dev.platform}), jax {jax.__version__}")
    shapes = [(64, 128, 256), (256, 256, 256)] if args.small else [
        (64, 7168, 2048), (128, 4096, 7168), (4096, 4096, 7168), (8192, 8192, 8192)]

    for m, n, k in shapes:
        def make(i, m=m, n=n, k=k):
            ka, kb = jax.random.split(jax.random.key(1000 + i))
            return (jax.random.normal(ka, (m, k), jnp.bfloat16),
                    jax.random.normal(kb, (n, k), jnp.bfloat16))

        def mm(a, b):
            return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())),
                                       preferred_element_type=jnp.bfloat16)

        sets = build_input_sets(make)
        t = time_device(mm, inputs=sets, max_calls=200 if args.small else 1000)
        stats = t.hlo
        line = (f"bf16 {m}x{n}x{k}: loop {t.median_us:9.2f} us (min {t.min_us:.2f}, n_calls {t.n_calls},"
                f" n_sets {t.n_sets}, rep {t.rep_ms:.2f} ms) {2 * m * n * k / t.median_us / 1e6:7.1f} TFLOPS;"
                f" hlo {stats}")
        try:
            tp = time_with_profiler(mm, inputs=sets)
            line += f"\n    kernel {tp.median_us:9.2f} us; kernels {tp.kernels}; notes {tp.notes}"
        except Exception as e:  # noqa: BLE001 - report, do not fail the check
            line += f"\n    kernel: n/a ({type(e).__name__}: {e})"
        print(line, flush=True)
        sets.delete()

    if args.dump_planes:
        tmp = tempfile.mkdtemp(prefix="jdg_prof_")
        f = jax.jit(lambda x: x @ x)
        x = jnp.ones((512, 512), jnp.float32)
        jax.block_until_ready(f(x))
        jax.profiler.start_trace(tmp)
        jax.block_until_ready(f(x))
        prof = _load_profile(tmp, jax.profiler.stop_trace())
        for plane in prof.planes:
            print("plane", repr(plane.name))
            for line in plane.lines:
                evs = list(line.events)
                print("   line", repr(line.name), len(evs), [e.name for e in evs[:3]])
    return 0


if __name__ == "__main__":
    raise SystemExit(_selfcheck())
