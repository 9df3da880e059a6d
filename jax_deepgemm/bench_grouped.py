"""Grouped (MoE) cases of the benchmark: ``python -m jax_deepgemm.bench --grouped``.

Contiguous: DeepGEMM's four anchor shapes (groups x expected rows, N, K), group sizes
expected * U(0.7, 1.3) (seeded), each segment 128-aligned, per-row ids. Timed in the same run:
ours, ``jax.lax.ragged_dot`` in BF16 (dequantized operands) and in FP8 (e4m3 operands, per-tensor,
bf16 out) at the same group sizes (the aligned segment lengths, so the same total rows).
Masked: DeepGEMM's six anchor shapes (max_m 4096), masked_m = expected * U(0.7, 1.3).
K-grouped (weight gradients): DeepGEMM's four test shapes (groups, M, N, expected K), K sizes
expected * U(0.7, 1.3) aligned to 128 with group 1 empty, token-major operands
(``k_grouped_fp8_gemm_tn_contiguous``, its operand transposes included in its times; the NT entry's kernel alone
on the same operands K-major, DeepGEMM's SM90 layout and its anchors' convention; and
``k_grouped_bf16_gemm_tn_contiguous`` on the bf16 sources, read in place) vs the dW that
``jax.vjp`` of ``lax.ragged_dot`` computes in BF16 (what a JAX user's backward runs today).
TFLOPS count valid rows only (the anchors' convention). Kernel time from the profiler; for the rows
with a DeepGEMM anchor also DeepGEMM's own protocol (``fl``: each call after an 8 GB flush,
``testing.timing.time_with_flush``), the like-for-like comparison (``xDGf``); loop time for the ratios
against ragged_dot (loop vs loop, as the dense bench does).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_deepgemm.testing import timing
from jax_deepgemm.testing.bench_json import BenchJson, fmt, ratio, run_suites
from jax_deepgemm.testing.generators import contiguous_layout, k_grouped_operands, m_grouped_operands

# (groups, expected rows per group, N, K) -> DeepGEMM's kernel µs on our H100 (../shared/anchors.md)
CONTIGUOUS_ANCHORS = {(4, 8192, 4096, 7168): 1422.0, (4, 8192, 7168, 2048): 754.7,
                      (8, 4096, 4096, 7168): 1433.0, (8, 4096, 7168, 2048): 751.6}
MASKED_ANCHORS = {(1, 1024, 4096, 7168): 69.66, (1, 1024, 7168, 2048): 32.09, (2, 512, 4096, 7168): 74.35,
                  (2, 512, 7168, 2048): 35.29, (4, 256, 4096, 7168): 81.38, (4, 256, 7168, 2048): 39.00}
# DeepGEMM's TFLOPS at those anchors (valid rows of its own draw of the group sizes). Our seeded draws hold other
# row counts (e.g. 35431 valid rows at 4 x 8192 x 4096 x 7168 against DeepGEMM's ~34300), so a time ratio charges
# us for rows DeepGEMM did not compute: ``xDG TF`` (ours TFLOPS / DeepGEMM's) compares the same work rate.
CONTIGUOUS_ANCHOR_TFLOPS = {(4, 8192, 4096, 7168): 1417.0, (4, 8192, 7168, 2048): 1335.0,
                            (8, 4096, 4096, 7168): 1395.0, (8, 4096, 7168, 2048): 1330.0}
MASKED_ANCHOR_TFLOPS = {(1, 1024, 4096, 7168): 1041.0, (1, 1024, 7168, 2048): 1130.0, (2, 512, 4096, 7168): 954.0,
                        (2, 512, 7168, 2048): 1005.0, (4, 256, 4096, 7168): 768.0, (4, 256, 7168, 2048): 801.0}
MASKED_MAX_M = 4096
# (groups, M, N, expected K per group): DeepGEMM's K-grouped test shapes; the bar is 800 TFLOPS (no anchor)
K_GROUPED_SHAPES = [(4, 4096, 7168, 8192), (4, 7168, 2048, 8192), (8, 4096, 7168, 4096), (16, 7168, 2048, 2048)]


def _sizes(seed: int, groups: int, expected: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(expected * rng.uniform(0.7, 1.3)) for _ in range(groups)]


def contiguous_sizes(key) -> list[int]:
    """The bench's group sizes for a contiguous case ``(groups, expected_m, N, K)``: expected * U(0.7, 1.3), seeded
    (each segment padded to 128 rows by the layout)."""
    groups, expected, n, _ = key
    return _sizes(groups * expected + n, groups, expected)


def contiguous_operands(i: int, sizes, n: int, k: int):
    """Input set ``i`` of a contiguous case: ``((a, a_scale), (b, b_scale), per-row expert ids)``."""
    a, b, _, _, row_ids, _ = m_grouped_operands(i, sizes, n, k)
    return a, b, jnp.asarray(row_ids)


def masked_counts(key) -> np.ndarray:
    """The bench's ``masked_m`` for a masked case ``(groups, expected_m, N, K)``: expected * U(0.7, 1.3), seeded."""
    groups, expected, n, _ = key
    return np.minimum(np.asarray(_sizes(groups * expected + n, groups, expected), np.int32), MASKED_MAX_M)


def masked_operands(i: int, key):
    """Input set ``i`` of a masked case: ``((a [G, max_m, K], a_scale), (b, b_scale))``."""
    groups, _, n, k = key
    a, b, _, _, _, _ = m_grouped_operands(i, [MASKED_MAX_M] * groups, n, k)
    return (a[0].reshape(groups, MASKED_MAX_M, k), a[1].reshape(groups, MASKED_MAX_M, -1)), b


def k_grouped_sizes(key) -> list[int]:
    """The bench's K sizes for a K-grouped case ``(groups, M, N, expected_k)``: expected * U(0.7, 1.3) rounded down
    to 128, seeded, group 1 empty."""
    groups, m, _, expected = key
    sizes = [int(expected * u) // 128 * 128 for u in np.random.default_rng(groups + m).uniform(0.7, 1.3, groups)]
    sizes[1] = 0
    return sizes


def _kernel_us(fn, sets) -> float:
    return timing.time_with_profiler(fn, inputs=sets, n_reps=5).median_us


def gemm_kernel_us(kernels: dict[str, dict[str, float]]) -> float | None:
    """Per-call µs of the GEMM kernels alone in a ``Timing.kernels`` breakdown: what DeepGEMM's anchors time (its
    ``bench_kineto`` keeps the kernels named like its GEMM). The op's other kernels, e.g. the XLA transpose of the A
    scales into the MN-major layout the masked and 256-row kernels read (~2 µs), are left out. None if no kernel of
    the breakdown is a GEMM."""
    return timing.kernels_us(kernels, timing.GEMM_KERNEL)


def _timed_ours(row: dict[str, Any], fn, sets) -> None:
    """``ours_kernel_us`` / ``ours_flushed_us``: every kernel of the call; ``ours_gemm_kernel_us`` /
    ``ours_gemm_flushed_us``: the GEMM kernel alone (DeepGEMM's method); ``ours_kernels``: the breakdown."""
    t = timing.time_with_profiler(fn, inputs=sets, n_reps=5)
    row["ours_kernel_us"] = t.median_us
    row["ours_kernels"] = t.kernels
    row["ours_gemm_kernel_us"] = gemm_kernel_us(t.kernels)
    try:
        f = timing.time_with_flush(fn, inputs=sets)
        row["ours_flushed_us"], row["ours_gemm_flushed_us"] = f.median_us, gemm_kernel_us(f.kernels)
    except Exception as e:  # noqa: BLE001  (DeepGEMM's protocol; the row survives without it)
        print(f"  ! flushed kernel time: {type(e).__name__}: {str(e)[:200]}", flush=True)
        row["ours_flushed_us"] = row["ours_gemm_flushed_us"] = None


def _loop_us(fn, sets, reps: int, target_ms: float) -> float:
    return timing.time_device(fn, inputs=sets, n_reps=reps, target_rep_ms=target_ms).median_us


def bench_contiguous(key, *, reps: int, target_ms: float) -> dict[str, Any]:
    import jax_deepgemm as dg

    groups, expected, n, k = key
    sizes = contiguous_sizes(key)
    row_ids, _ = contiguous_layout(sizes)
    # ragged_dot's groups: the aligned segment lengths (padding rows included), summing to M
    segments = jnp.asarray([-(-s // 128) * 128 for s in sizes], jnp.int32)

    def make(i):
        a, b, x, w, ids, _ = m_grouped_operands(i, sizes, n, k)
        wt = jnp.swapaxes(w, 1, 2)
        # ragged_dot FP8 gets operands cast outside the timed function (since session 27; before, the casts were
        # timed with it, ~3 % of its time): ours gets pre-quantized operands too
        return a, b, jnp.asarray(ids), x, wt, x.astype(jnp.float8_e4m3fn), wt.astype(jnp.float8_e4m3fn)

    sets = timing.build_input_sets(make, max_input_bytes=6 * timing.GiB)
    ours = jax.jit(lambda a, b, ids, x, wt, x8, wt8: dg.m_grouped_fp8_gemm_nt_contiguous(a, b, ids))
    rd_bf16 = jax.jit(lambda a, b, ids, x, wt, x8, wt8: jax.lax.ragged_dot(x, wt, segments))
    rd_fp8 = jax.jit(lambda a, b, ids, x, wt, x8, wt8: jax.lax.ragged_dot(
        x8, wt8, segments, preferred_element_type=jnp.bfloat16))
    flops = 2.0 * sum(sizes) * n * k
    row: dict[str, Any] = {"groups": groups, "expected_m": expected, "N": n, "K": k, "total_m": len(row_ids),
                           "valid_m": sum(sizes), "flops": flops, "deepgemm_anchor_us": CONTIGUOUS_ANCHORS[key],
                           "deepgemm_anchor_tflops": CONTIGUOUS_ANCHOR_TFLOPS[key]}
    _timed_ours(row, ours, sets)
    row["ours_loop_us"] = _loop_us(ours, sets, reps, target_ms)
    sets.delete()

    # The same groups unaligned (lax.ragged_dot's layout, sum(sizes) rows): the bar is within 10 % of
    # the aligned contiguous kernel's time over the same rows.
    ragged_sizes = jnp.asarray(sizes, jnp.int32)

    def make_ragged(i):
        a, b, _, _, _, _ = m_grouped_operands(i, [sum(sizes)], n, k)
        w = jax.random.normal(jax.random.key(i), (groups, n, k)).astype(jnp.bfloat16)
        return a, dg.per_block_cast_to_fp8(w)

    sets = timing.build_input_sets(make_ragged, max_input_bytes=6 * timing.GiB)
    ragged = jax.jit(lambda a, b: dg.m_grouped_fp8_gemm_nt_ragged(a, b, ragged_sizes))
    row["ragged_unaligned_kernel_us"] = _kernel_us(ragged, sets)
    sets.delete()
    sets = timing.build_input_sets(make, max_input_bytes=6 * timing.GiB)
    for name, fn in (("ragged_dot_bf16", rd_bf16), ("ragged_dot_fp8", rd_fp8)):
        try:
            row[f"{name}_loop_us"] = _loop_us(fn, sets, reps, target_ms)
        except Exception as e:  # noqa: BLE001 - a baseline XLA cannot run must not hide ours
            row[f"{name}_loop_us"] = None
            row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    sets.delete()
    return row


def bench_masked(key, *, reps: int, target_ms: float) -> dict[str, Any]:
    import jax_deepgemm as dg

    groups, expected, n, k = key
    masked_m = masked_counts(key)
    sets = timing.build_input_sets(lambda i: masked_operands(i, key), max_input_bytes=6 * timing.GiB)
    counts = jnp.asarray(masked_m)
    ours = jax.jit(lambda a, b: dg.m_grouped_fp8_gemm_nt_masked(a, b, counts, expected_m=expected))
    row: dict[str, Any] = {"groups": groups, "expected_m": expected, "N": n, "K": k, "max_m": MASKED_MAX_M,
                           "masked_m": masked_m.tolist(), "flops": 2.0 * float(masked_m.sum()) * n * k,
                           "deepgemm_anchor_us": MASKED_ANCHORS[key], "deepgemm_anchor_tflops": MASKED_ANCHOR_TFLOPS[key]}
    _timed_ours(row, ours, sets)
    row["ours_loop_us"] = _loop_us(ours, sets, reps, target_ms)
    sets.delete()
    return row


def bench_k_grouped(key, *, reps: int, target_ms: float) -> dict[str, Any]:
    import jax_deepgemm as dg

    groups, m, n, expected = key
    sizes = k_grouped_sizes(key)
    k_sizes = jnp.asarray(sizes, jnp.int32)

    def make(i):
        a, b, x, y = k_grouped_operands(i, sizes, m, n)
        # The same operands K-major ([M, sum K], [N, sum K]): DeepGEMM's SM90 layout, which its test builds by
        # transposing outside the timed kernel.
        a_nt, b_nt = tuple(t.T for t in a), tuple(t.T for t in b)
        return a, b, x, y, a_nt, b_nt

    sets = timing.build_input_sets(make, max_input_bytes=6 * timing.GiB)
    ours = jax.jit(lambda a, b, x, y, a_nt, b_nt: dg.k_grouped_fp8_gemm_tn_contiguous(a, b, k_sizes))
    ours_nt = jax.jit(lambda a, b, x, y, a_nt, b_nt: dg.k_grouped_fp8_gemm_nt_contiguous(a_nt, b_nt, k_sizes))
    ours_bf16 = jax.jit(lambda a, b, x, y, a_nt, b_nt: dg.k_grouped_bf16_gemm_tn_contiguous(x, y, k_sizes))

    def ragged_dw(a, b, x, y, a_nt, b_nt):  # dW[g] = X_g^T Y_g through the VJP of ragged_dot w.r.t. its weights
        w0 = jnp.zeros((groups, m, n), jnp.bfloat16)
        _, vjp = jax.vjp(lambda w: jax.lax.ragged_dot(x, w, k_sizes), w0)
        return vjp(y)[0]

    row: dict[str, Any] = {"groups": groups, "M": m, "N": n, "expected_k": expected, "k_sizes": sizes,
                           "flops": 2.0 * m * n * sum(sizes)}
    row["ours_kernel_us"] = _kernel_us(ours, sets)
    row["ours_loop_us"] = _loop_us(ours, sets, reps, target_ms)
    row["ours_nt_kernel_us"] = _kernel_us(ours_nt, sets)
    row["bf16_kernel_us"] = _kernel_us(ours_bf16, sets)
    row["bf16_loop_us"] = _loop_us(ours_bf16, sets, reps, target_ms)
    try:
        row["ragged_dot_bf16_dw_loop_us"] = _loop_us(jax.jit(ragged_dw), sets, reps, target_ms)
    except Exception as e:  # noqa: BLE001
        row["ragged_dot_bf16_dw_loop_us"] = None
        row["ragged_dot_bf16_dw_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    sets.delete()
    return row


CONTIGUOUS_HEADER = ("# contiguous (per-row ids): case | kern us | fl us | TFLOPS (valid rows, kern) | xDG (kern) | xDGf (fl) |"
                     " xDG TF | GEMM kern us | xDG (GEMM kern) | xDGf (GEMM fl) |"
                     " loop us | ragged_dot bf16 / fp8 loop us | x bf16 | x fp8 | ours unaligned (ragged) kern us |"
                     " unaligned / aligned")
MASKED_HEADER = (f"# masked (max_m {MASKED_MAX_M}): case | kern us | fl us | TFLOPS (valid rows, kern) | xDG (kern) | xDGf (fl)"
                 " | xDG TF | GEMM kern us | xDG (GEMM kern) | xDGf (GEMM fl) | loop us | valid rows (128-row tiles)")


def _shape(r) -> str:
    return f"{r['groups']:3d} x {r['expected_m']:5d}  N {r['N']:5d} K {r['K']:5d}"


def _timed(r) -> str:
    """kern us | fl us | TFLOPS | xDG | xDGf | xDG TF | GEMM kern us | xDG (GEMM kern) | xDGf (GEMM fl) of a
    contiguous or masked row. The first three ratios time every kernel of the call (what a user pays); the last two
    the GEMM kernel alone, as DeepGEMM's anchors do. xDG TF: kernel TFLOPS over DeepGEMM's, the ratio that does not
    depend on the two draws' row counts."""
    k_us, fl, anchor = r["ours_kernel_us"], r.get("ours_flushed_us"), r["deepgemm_anchor_us"]
    gemm, gemm_fl = r.get("ours_gemm_kernel_us"), r.get("ours_gemm_flushed_us")
    tflops = r["flops"] / k_us / 1e6
    return (f"{k_us:8.1f} | {fmt(fl, '8.1f')} | {tflops:6.0f} | {anchor / k_us:4.2f} |"
            f" {fmt(ratio(anchor, fl), '4.2f')} | {fmt(ratio(tflops, r.get('deepgemm_anchor_tflops')), '4.2f')} |"
            f" {fmt(gemm, '8.1f')} | {fmt(ratio(anchor, gemm), '4.2f')} | {fmt(ratio(anchor, gemm_fl), '4.2f')}")


def format_contiguous(r: dict) -> str:
    loop, bf, f8 = r["ours_loop_us"], r.get("ragged_dot_bf16_loop_us"), r.get("ragged_dot_fp8_loop_us")
    unaligned = r["ragged_unaligned_kernel_us"]
    return (f"{_shape(r)} | {_timed(r)} | {loop:8.1f} | {fmt(bf, '8.1f')} / {fmt(f8, '8.1f')} |"
            f" {fmt(ratio(bf, loop), '5.2f')} | {fmt(ratio(f8, loop), '5.2f')} | {unaligned:8.1f} |"
            f" {unaligned / r['ours_kernel_us']:5.3f}")


def format_masked(r: dict) -> str:
    # The draw's 128-row tile count: near a wave boundary one tile more per expert costs a whole wave (4 x 256 x 7168
    # x 2048: 10 row tiles run 40.5 us, 11 run 47-49 us; RESULTS "Session 39"), so a ratio to DeepGEMM's single draw
    # reads right only next to it.
    counts = r.get("masked_m")
    rows = f"{sum(counts):6d} ({sum(-(-c // 128) for c in counts):3d})" if counts else "-"
    return f"{_shape(r)} | {_timed(r)} | {r['ours_loop_us']:8.1f} | {rows}"


PARTS = ("contiguous", "masked", "k_grouped")


def format_k_grouped(r: dict) -> str:
    k_us, loop, bf = r["ours_kernel_us"], r["ours_loop_us"], r["ragged_dot_bf16_dw_loop_us"]
    k16, loop16, k_nt = r["bf16_kernel_us"], r["bf16_loop_us"], r["ours_nt_kernel_us"]
    return (f"{r['groups']:3d} x M {r['M']:5d} N {r['N']:5d} K~{r['expected_k']:5d} | {k_us:8.1f} |"
            f" {r['flops'] / k_us / 1e6:6.0f} | {loop:8.1f} | {k_nt:8.1f} |"
            f" {r['flops'] / k_nt / 1e6:6.0f} | {k16:8.1f} | {r['flops'] / k16 / 1e6:6.0f} |"
            f" {loop16:8.1f} | {fmt(bf, '8.1f')} | {fmt(ratio(bf, loop), '5.2f')} / {fmt(ratio(bf, loop16), '5.2f')}")


K_GROUPED_HEADER = ("# k-grouped (wgrad, group 1 empty): FP8 TN kern us (incl. transposes) | TFLOPS | loop us |"
                    " FP8 NT kern us (K-major operands: DeepGEMM's SM90 layout) | TFLOPS | BF16 kern us |"
                    " TFLOPS | loop us | ragged_dot bf16 dW loop us | x bf16 (FP8 / BF16 loop)")


def run(*, json_path: str, reps: int, target_ms: float, meta: dict, parts=PARTS, filters=None) -> int:
    out = BenchJson(json_path, meta, ("contiguous", "masked", "k_grouped"))
    suites = (("contiguous", CONTIGUOUS_ANCHORS, bench_contiguous, CONTIGUOUS_HEADER, format_contiguous),
              ("masked", MASKED_ANCHORS, bench_masked, MASKED_HEADER, format_masked),
              ("k_grouped", K_GROUPED_SHAPES, bench_k_grouped, K_GROUPED_HEADER, format_k_grouped))
    run_suites(out, suites, parts, filters, reps=reps, target_ms=target_ms)
    out.finish()
    print(f"# wrote {json_path}")
    return 0
