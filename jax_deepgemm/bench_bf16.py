"""BF16 cases of the benchmark: ``python -m jax_deepgemm.bench --bf16 [dense,contiguous,masked]``.

Dense: M = 4096 at the six anchor (N, K) pairs (anchors.md), ``bf16_gemm_nt`` (BF16 out) vs XLA's
bf16 dot (``jnp.dot`` of the same bf16 operands, BF16 out, FP32 accumulation: cuBLAS).
Contiguous: DeepGEMM's four grouped anchor shapes (groups x expected rows, N, K), group sizes
expected * U(0.7, 1.3) (seeded, as bench_grouped.py), 128-aligned per-row ids, vs
``jax.lax.ragged_dot`` bf16 at the same (aligned) group sizes, and our ragged op
(``m_grouped_bf16_gemm_nt_ragged``: one kernel, unaligned groups) on the unaligned sizes (rows past
their sum, the few alignment rows, come back 0).
Masked: DeepGEMM's six masked shapes (max_m 4096, masked_m = expected * U(0.7, 1.3)); no baseline.

Every op is timed twice in the same run: kernel time from the profiler (sum of the GPU kernels of
one call, L2 cold: input sets rotate through > 4x L2) and loop time (``time_device``). Ratios are
kernel vs kernel and loop vs loop. TFLOPS count valid rows only (the anchors' convention).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_deepgemm.testing import timing
from jax_deepgemm.testing.bench_json import BenchJson, fmt, ratio, run_suites
from jax_deepgemm.testing.generators import contiguous_layout
from jax_deepgemm.testing.shapes import BENCH_NK

DENSE_M = 4096
# (groups, expected rows per group, N, K): the grouped anchor shapes (anchors.md); ragged_dot bf16
# wall-time TFLOPS there on our H100: 181 / 197 / 95 / 101.
CONTIGUOUS_SHAPES = [(4, 8192, 4096, 7168), (4, 8192, 7168, 2048), (8, 4096, 4096, 7168), (8, 4096, 7168, 2048)]
MASKED_SHAPES = [(1, 1024, 4096, 7168), (1, 1024, 7168, 2048), (2, 512, 4096, 7168), (2, 512, 7168, 2048),
                 (4, 256, 4096, 7168), (4, 256, 7168, 2048)]
MASKED_MAX_M = 4096
PARTS = ("dense", "contiguous", "masked")


def _sizes(seed: int, groups: int, expected: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(expected * rng.uniform(0.7, 1.3)) for _ in range(groups)]


def _normal_bf16(seed: int, shape) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32).astype(jnp.bfloat16)


def _time(fn, sets, reps: int, target_ms: float) -> dict[str, Any]:
    """Kernel and loop time of one op; a measurement that fails gives None and its error (a
    baseline XLA cannot run must not hide ours)."""
    out: dict[str, Any] = {"kernel_us": None, "loop_us": None}
    try:
        kern = timing.time_with_profiler(fn, inputs=sets, n_reps=5)
        out["kernel_us"], out["kernels"] = kern.median_us, kern.kernels
    except Exception as e:  # noqa: BLE001
        out["error"] = f"kernel time: {type(e).__name__}: {str(e)[:300]}"
    try:
        out["loop_us"] = timing.time_device(fn, inputs=sets, n_reps=reps, target_rep_ms=target_ms).median_us
    except Exception as e:  # noqa: BLE001
        out["error"] = out.get("error", "") + f" loop time: {type(e).__name__}: {str(e)[:300]}"
    return out


def bench_dense(n: int, k: int, *, reps: int, target_ms: float) -> dict[str, Any]:
    import jax_deepgemm as dg

    m = DENSE_M

    def make(i):
        return _normal_bf16(2 * i, (m, k)), _normal_bf16(2 * i + 1, (n, k))

    sets = timing.build_input_sets(make, max_input_bytes=6 * timing.GiB)
    ours = jax.jit(lambda a, b: dg.bf16_gemm_nt(a, b))
    xla = jax.jit(lambda a, b: jnp.dot(a, b.T, preferred_element_type=jnp.float32).astype(jnp.bfloat16))
    row: dict[str, Any] = {"M": m, "N": n, "K": k, "flops": 2.0 * m * n * k}
    row["ours"] = _time(ours, sets, reps, target_ms)
    row["xla_bf16_dot"] = _time(xla, sets, reps, target_ms)
    row["x_xla_kernel"] = ratio(row["xla_bf16_dot"]["kernel_us"], row["ours"]["kernel_us"])
    row["x_xla_loop"] = ratio(row["xla_bf16_dot"]["loop_us"], row["ours"]["loop_us"])
    sets.delete()
    return row


def bench_contiguous(key, *, reps: int, target_ms: float) -> dict[str, Any]:
    import jax_deepgemm as dg

    groups, expected, n, k = key
    sizes = _sizes(groups * expected + n, groups, expected)
    row_ids, _ = contiguous_layout(sizes)
    m_total = len(row_ids)
    # ragged_dot's groups: the aligned segment lengths (padding rows included), summing to M
    segments = jnp.asarray([-(-s // 128) * 128 for s in sizes], jnp.int32)
    ragged_sizes = jnp.asarray(sizes, jnp.int32)
    ids = jnp.asarray(row_ids)

    def make(i):
        a = _normal_bf16(2 * i, (m_total, k))
        b = _normal_bf16(2 * i + 1, (groups, n, k))
        return a, b, jnp.swapaxes(b, 1, 2)  # ragged_dot's rhs layout [G, K, N], materialised outside the loop

    sets = timing.build_input_sets(make, max_input_bytes=6 * timing.GiB)
    ours = jax.jit(lambda a, b, bt: dg.m_grouped_bf16_gemm_nt_contiguous(a, b, ids))
    ours_ragged = jax.jit(lambda a, b, bt: dg.m_grouped_bf16_gemm_nt_ragged(a, b, ragged_sizes))
    # the NN form on ragged_dot's own rhs layout (also bf16_grouped_linear's dgrad), read in place
    ours_ragged_nn = jax.jit(lambda a, b, bt: dg.m_grouped_bf16_gemm_nn_ragged(a, bt, ragged_sizes))
    rd = jax.jit(lambda a, b, bt: jax.lax.ragged_dot(a, bt, segments))
    flops = 2.0 * sum(sizes) * n * k
    row: dict[str, Any] = {"groups": groups, "expected_m": expected, "N": n, "K": k, "total_m": m_total,
                           "valid_m": sum(sizes), "flops": flops}
    row["ours_contiguous"] = _time(ours, sets, reps, target_ms)
    row["ours_ragged"] = _time(ours_ragged, sets, reps, target_ms)
    row["ours_ragged_nn"] = _time(ours_ragged_nn, sets, reps, target_ms)
    row["ragged_dot_bf16"] = _time(rd, sets, reps, target_ms)
    for name in ("ours_contiguous", "ours_ragged", "ours_ragged_nn"):
        row[f"x_ragged_dot_kernel_{name}"] = ratio(row["ragged_dot_bf16"]["kernel_us"], row[name]["kernel_us"])
        row[f"x_ragged_dot_loop_{name}"] = ratio(row["ragged_dot_bf16"]["loop_us"], row[name]["loop_us"])
    sets.delete()
    return row


def bench_masked(key, *, reps: int, target_ms: float) -> dict[str, Any]:
    import jax_deepgemm as dg

    groups, expected, n, k = key
    masked_m = np.minimum(np.asarray(_sizes(groups * expected + n, groups, expected), np.int32), MASKED_MAX_M)
    counts = jnp.asarray(masked_m)

    def make(i):
        return _normal_bf16(2 * i, (groups, MASKED_MAX_M, k)), _normal_bf16(2 * i + 1, (groups, n, k))

    sets = timing.build_input_sets(make, max_input_bytes=6 * timing.GiB)
    ours = jax.jit(lambda a, b: dg.m_grouped_bf16_gemm_nt_masked(a, b, counts, expected_m=expected))
    row: dict[str, Any] = {"groups": groups, "expected_m": expected, "N": n, "K": k, "max_m": MASKED_MAX_M,
                           "masked_m": masked_m.tolist(), "flops": 2.0 * float(masked_m.sum()) * n * k}
    row["ours"] = _time(ours, sets, reps, target_ms)
    sets.delete()
    return row


def _tflops(flops, us):
    return flops / us / 1e6 if us else None


def format_dense(r: dict) -> str:
    o, x = r["ours"], r["xla_bf16_dot"]
    return (f"{r['M']:5d} x {r['N']:5d} x {r['K']:5d} | {fmt(o['kernel_us'], '8.1f')} |"
            f" {fmt(_tflops(r['flops'], o['kernel_us']), '6.0f')} | {fmt(x['kernel_us'], '8.1f')} |"
            f" {fmt(_tflops(r['flops'], x['kernel_us']), '6.0f')} | {fmt(r['x_xla_kernel'], '5.2f')} |"
            f" {fmt(r['x_xla_loop'], '5.2f')}" + (f"  ERROR {o['error']}" if "error" in o else ""))


def format_contiguous(r: dict) -> str:
    names = ("ours_contiguous", "ours_ragged", "ours_ragged_nn")
    o, g, nn, rd = r["ours_contiguous"], r["ours_ragged"], r["ours_ragged_nn"], r["ragged_dot_bf16"]
    return (f"{r['groups']:3d} x {r['expected_m']:5d}  N {r['N']:5d} K {r['K']:5d} | {fmt(o['kernel_us'], '8.1f')} |"
            f" {fmt(_tflops(r['flops'], o['kernel_us']), '6.0f')} | {fmt(g['kernel_us'], '8.1f')} /"
            f" {fmt(nn['kernel_us'], '8.1f')} | {fmt(rd['kernel_us'], '8.1f')} |"
            f" {fmt(_tflops(r['flops'], rd['kernel_us']), '6.0f')} |"
            f" {' / '.join(fmt(r[f'x_ragged_dot_kernel_{x}'], '5.2f') for x in names)} |"
            f" {' / '.join(fmt(r[f'x_ragged_dot_loop_{x}'], '5.2f') for x in names)}")


def format_masked(r: dict) -> str:
    o = r["ours"]
    return (f"{r['groups']:3d} x {r['expected_m']:5d}  N {r['N']:5d} K {r['K']:5d} | {fmt(o['kernel_us'], '8.1f')} |"
            f" {fmt(_tflops(r['flops'], o['kernel_us']), '6.0f')} | {fmt(o['loop_us'], '8.1f')}")


def run(*, json_path: str, reps: int, target_ms: float, meta: dict, parts=PARTS, filters=None) -> int:
    out = BenchJson(json_path, meta, ("dense", "contiguous", "masked"))
    suites = (
        ("dense", [(DENSE_M, n, k) for n, k in BENCH_NK], lambda key, **kw: bench_dense(key[1], key[2], **kw),
         f"# dense bf16_gemm_nt, M={DENSE_M}, BF16 out: kern us | TFLOPS | XLA bf16 dot kern us | TFLOPS |"
         " x XLA (kern) | x XLA (loop)", format_dense),
        ("contiguous", CONTIGUOUS_SHAPES, bench_contiguous,
         "# contiguous bf16 (per-row ids): kern us | TFLOPS (valid rows) | ragged op kern us (NT / NN) |"
         " ragged_dot bf16 kern us | TFLOPS | x ragged_dot (kern: contiguous / ragged NT / ragged NN) | x (loop)",
         format_contiguous),
        ("masked", MASKED_SHAPES, bench_masked,
         f"# masked bf16 (max_m {MASKED_MAX_M}): kern us | TFLOPS (valid rows) | loop us", format_masked),
    )
    run_suites(out, suites, parts, filters, reps=reps, target_ms=target_ms)
    out.finish()
    print(f"# wrote {json_path}")
    return 0
