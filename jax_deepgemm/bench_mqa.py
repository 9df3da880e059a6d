"""Lightning-indexer cases of the benchmark: ``python -m jax_deepgemm.bench --mqa``.

Every MQA anchor row of ``../shared/anchors.md`` (DeepGEMM v2.6.1's SM90 kernels on our H100), plus
the FP4 variants at the same shapes. Per case: kernel µs from the profiler (ranged, non-compressed:
ours fuses the -inf cleaning, so it is compared with DeepGEMM's logits + clean kernels), TFLOPS =
2 * valid pairs * H * D / t, GB/s = bytes of q, kv (paged: the cache rows of the tiles read), weights,
ranges and the logits written, and in the same run the loop time of the plain JAX path users write
today (MaxText's indexer: a BF16 einsum, relu, weighted head sum, mask), with the ratio. Rows with a
DeepGEMM anchor are also timed by DeepGEMM's own protocol (``fl``: each call after an 8 GB flush).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_deepgemm import fp4 as F
from jax_deepgemm.testing import timing
from jax_deepgemm.testing.bench_json import BenchJson, fmt, ratio
from jax_deepgemm.testing.shapes import case_selected

# (S, S_kv, H, D, CP, compressed, logits dtype) -> DeepGEMM µs: (logits kernel, its separate clean kernel)
# Compressed rows run with clean_logits=False (DeepGEMM's only option there); the others clean, which
# our kernel fuses: compare ours with the sum.
RANGED_ANCHORS = {
    (2048, 8192, 32, 64, True, False, "float32"): (62.0, 20.0),
    (2048, 8192, 64, 128, False, False, "float32"): (220.0, 7.0),
    (2048, 8192, 64, 128, True, False, "bfloat16"): (131.0, 11.0),
    (2048, 65536, 64, 32, True, True, "bfloat16"): (716.0, 0.0),
    (8192, 8192, 64, 128, True, False, "float32"): (501.0, 72.0),
    (8192, 8192, 32, 128, True, False, "float32"): (288.0, 72.0),
    (2048, 8192, 64, 32, False, False, "float32"): (155.0, 7.0),
    (8192, 8192, 32, 128, False, True, "bfloat16"): (311.0, 0.0),
}
# (B, next_n, H, L) -> DeepGEMM µs; block_kv 64, D 128, 2-D context lens (no cleaning: DeepGEMM rejects
# it for 2-D lens; ours runs with clean_logits=False here too; the schedule is computed once, outside)
PAGED_ANCHORS = {
    (256, 1, 64, 8192, "bfloat16"): 110.0,
    (256, 1, 64, 65536, "float32"): 804.0,
    (256, 1, 32, 8192, "bfloat16"): 110.0,
    (256, 2, 32, 65536, "float32"): 816.0,
    (4096, 2, 64, 8192, "bfloat16"): 1626.0,
    (4096, 1, 32, 8192, "float32"): 1597.0,
}
PAGED_BLOCK_KV, PAGED_D = 64, 128


def cp_ranges(s, s_kv, cp):
    if not cp:
        return np.zeros(s, np.int32), (np.arange(s) + (s_kv - s)).astype(np.int32)
    chunk, cp_size = s // 2, s_kv // s
    cp_id = cp_size // 3
    ke = np.zeros(s, np.int32)
    i = np.arange(chunk)
    ke[:chunk] = cp_id * chunk + i
    ke[chunk:] = (cp_size * 2 - 1 - cp_id) * chunk + i
    return np.zeros(s, np.int32), ke


def _kernel(fn, sets) -> timing.Timing:
    return timing.time_with_profiler(fn, inputs=sets, n_reps=5)


def _loop_us(fn, sets, reps, target_ms) -> float:
    return timing.time_device(fn, inputs=sets, n_reps=reps, target_rep_ms=target_ms).median_us


def _jax_ranged(q, kv, kv_scale, w, ks, ke, max_seqlen_k, dtype):
    """What users write today (MaxText-style indexer), on the dequantized inputs in BF16."""
    s_kv = kv.shape[0]
    scores = jnp.einsum("shd,td->sht", q.astype(jnp.bfloat16), kv.astype(jnp.bfloat16),
                        preferred_element_type=jnp.float32)
    logits = jnp.einsum("sht,sh->st", jnp.maximum(scores, 0).astype(jnp.bfloat16), w.astype(jnp.bfloat16),
                        preferred_element_type=jnp.float32) * kv_scale[None, :]
    j = jnp.arange(s_kv)[None, :]
    logits = jnp.where((j >= ks[:, None]) & (j < ke[:, None]), logits, -jnp.inf)
    if max_seqlen_k:
        idx = jnp.clip(ks[:, None] + jnp.arange(max_seqlen_k)[None, :], 0, s_kv - 1)
        logits = jnp.take_along_axis(logits, idx, axis=1)
    return logits.astype(dtype)


def _try(row, name, fn):
    try:
        row[name] = fn()
    except Exception as e:  # noqa: BLE001 - a baseline XLA cannot run must not hide ours
        row[name] = None
        row[name.replace("_us", "_error")] = f"{type(e).__name__}: {str(e)[:200]}"


def _flushed(row, ours, sets):
    """DeepGEMM's own protocol (each call after an 8 GB flush) for the rows it has anchors for."""
    if row["deepgemm_anchor_us"]:
        _try(row, "ours_flushed_us", lambda: timing.time_with_flush(ours, inputs=sets).median_us)


def bench_ranged(key, *, fp4: bool, reps: int, target_ms: float, baselines: bool = True) -> dict[str, Any]:
    import jax_deepgemm as dg

    s, s_kv, h, d, cp, compressed, dtype_name = key
    dtype = jnp.dtype(dtype_name)
    ks, ke = cp_ranges(s, s_kv, cp)
    msk = int((ke - ks).max()) if compressed else 0
    ks_d, ke_d = jnp.asarray(ks), jnp.asarray(ke)

    def make(i):
        k1, k2, k3 = jax.random.split(jax.random.key(i), 3)
        q = jax.random.normal(k1, (s, h, d), jnp.float32)
        kv = jax.random.normal(k2, (s_kv, d), jnp.float32)
        w = jax.random.normal(k3, (s, h), jnp.float32)
        if fp4:
            return F.per_token_cast_to_fp4(q) + F.per_token_cast_to_fp4(kv) + (w,)
        kv8, sc = F.per_token_cast_to_fp8_e4m3(kv)
        return q.astype(jnp.float8_e4m3fn), kv8, sc, w

    sets = timing.build_input_sets(make, max_input_bytes=4 * timing.GiB)
    if fp4:
        ours = jax.jit(lambda qp, qs, kp, kss, w: dg.fp4_mqa_logits((qp, qs), (kp, kss), w, ks_d, ke_d,
                                                                    clean_logits=not compressed,
                                                                    max_seqlen_k=msk, logits_dtype=dtype))
        jnp_path = jax.jit(lambda qp, qs, kp, kss, w: _jax_ranged(
            F.fp4_dequantize(qp, qs), F.fp4_dequantize(kp, kss), jnp.ones((s_kv,)), w, ks_d, ke_d, msk, dtype))
    else:
        ours = jax.jit(lambda q, kv, sc, w: dg.fp8_mqa_logits(q, (kv, sc), w, ks_d, ke_d, clean_logits=not compressed,
                                                              max_seqlen_k=msk, logits_dtype=dtype))
        jnp_path = jax.jit(lambda q, kv, sc, w: _jax_ranged(q, kv, sc, w, ks_d, ke_d, msk, dtype))
    pairs = float(np.sum(ke - ks))
    width = msk or s_kv
    in_bytes = s * h * d * (0.5 if fp4 else 1) + s_kv * d * (0.5 if fp4 else 1) + s_kv * 4 + s * h * 4 + s * 8
    row: dict[str, Any] = {"case": "ranged", "fp4": fp4, "S": s, "S_kv": s_kv, "H": h, "D": d, "cp": cp,
                           "compressed": compressed, "logits_dtype": dtype_name, "valid_pairs": pairs,
                           "flops": 2.0 * pairs * h * d, "bytes": in_bytes + s * width * dtype.itemsize,
                           "deepgemm_anchor_us": None if fp4 else sum(RANGED_ANCHORS.get(key, (0.0, 0.0))) or None,
                           "deepgemm_anchor_main_clean_us": None if fp4 else RANGED_ANCHORS.get(key)}
    t = _kernel(ours, sets)
    row["ours_kernel_us"] = t.median_us
    row["ours_kernels"] = t.kernels
    row["ours_loop_us"] = _loop_us(ours, sets, reps, target_ms)
    _flushed(row, ours, sets)
    if baselines:
        _try(row, "jnp_loop_us", lambda: _loop_us(jnp_path, sets, reps, target_ms))
    sets.delete()
    return row


def _paged_make(b, next_n, h, l_avg, fp4, seed):
    rng = np.random.default_rng(seed)
    last = rng.integers(int(0.7 * l_avg), int(1.3 * l_avg) + 1, b)
    lens = np.stack([np.maximum(last - (next_n - 1 - j), 0) for j in range(next_n)], 1).astype(np.int32)
    max_ctx = int(lens.max())
    max_blocks = -(-max_ctx // PAGED_BLOCK_KV)
    nb = b * max_blocks
    table = rng.permutation(nb).reshape(b, max_blocks).astype(np.int32)
    return lens, table, max_ctx, nb


def paged_operands(i: int, b: int, next_n: int, h: int, num_blocks: int, fp4: bool):
    """Input set ``i`` of a paged case: ``(*q, cache, weights)``, q as ``(e4m3,)`` or ``(packed E2M1, scales)``,
    the fused cache of ``num_blocks`` blocks (D 128, block_kv 64) built in token chunks (bounded temporaries)."""
    d, bkv = PAGED_D, PAGED_BLOCK_KV
    k1, k2, k3 = jax.random.split(jax.random.key(i), 3)
    w = jax.random.normal(k3, (b * next_n, h), jnp.float32)
    q = jax.random.normal(k1, (b, next_n, h, d), jnp.float32)
    parts = []
    chunk = max(1, (1 << 27) // (bkv * d))  # blocks per chunk
    for c0 in range(0, num_blocks, chunk):
        n = min(chunk, num_blocks - c0)
        tok = jax.random.normal(jax.random.fold_in(k2, c0), (n * bkv, d), jnp.float32)
        if fp4:
            parts.append(F.build_fp4_paged_kv_cache(*F.per_token_cast_to_fp4(tok), bkv))
        else:
            parts.append(F.build_fp8_paged_kv_cache(*F.per_token_cast_to_fp8_e4m3(tok), bkv))
    cache = jnp.concatenate(parts, 0)
    qq = F.per_token_cast_to_fp4(q) if fp4 else (q.astype(jnp.float8_e4m3fn),)
    return (*qq, cache, w)


def paged_problem(b: int, next_n: int, h: int, l_avg: int, fp4: bool, seed: int = 0):
    """One paged case ready to call, for the profiling scripts: ``(op, q, cache, weights, context_lens,
    block_table, schedule_meta, max_context_len)`` on the device, with the bench's lengths and input set 0."""
    import jax_deepgemm as dg

    lens, table, max_ctx, nb = _paged_make(b, next_n, h, l_avg, fp4, seed)
    *qq, cache, w = paged_operands(0, b, next_n, h, nb, fp4)
    lens_d, table_d = jnp.asarray(lens), jnp.asarray(table)
    num_sms = int(getattr(jax.devices()[0], "core_count", 132) or 132)
    meta = dg.get_paged_mqa_logits_metadata(lens_d, PAGED_BLOCK_KV, num_sms)
    op = dg.fp4_paged_mqa_logits if fp4 else dg.fp8_paged_mqa_logits
    return op, (tuple(qq) if fp4 else qq[0]), cache, w, lens_d, table_d, meta, max_ctx


def bench_paged(key, *, fp4: bool, reps: int, target_ms: float, baselines: bool = True) -> dict[str, Any]:
    import jax_deepgemm as dg

    b, next_n, h, l_avg, dtype_name = key
    dtype = jnp.dtype(dtype_name)
    d, bkv = PAGED_D, PAGED_BLOCK_KV
    lens, table, max_ctx, nb = _paged_make(b, next_n, h, l_avg, fp4, b + h + l_avg)
    lens_d, table_d = jnp.asarray(lens), jnp.asarray(table)
    num_sms = int(getattr(jax.devices()[0], "core_count", 132) or 132)

    def make(i):
        return paged_operands(i, b, next_n, h, nb, fp4)

    sets = timing.build_input_sets(make, n_sets=2, max_input_bytes=24 * timing.GiB)

    meta = dg.get_paged_mqa_logits_metadata(lens_d, bkv, num_sms)

    def call(*args):
        *qq, cache, w = args
        if fp4:
            return dg.fp4_paged_mqa_logits(tuple(qq), cache, w, lens_d, table_d, meta, max_ctx, clean_logits=False,
                                           logits_dtype=dtype)
        return dg.fp8_paged_mqa_logits(qq[0], cache, w, lens_d, table_d, meta, max_ctx, clean_logits=False,
                                       logits_dtype=dtype)

    def jnp_path(*args):
        *qq, cache, w = args
        if fp4:
            vals, sf = F.split_fp4_paged_kv_cache(cache)
            qf = F.fp4_dequantize(*qq)
        else:
            vals, sf = F.split_fp8_paged_kv_cache(cache)
            qf = qq[0].astype(jnp.float32)
        t = jnp.arange(max_ctx)
        phys = table_d[:, t // bkv]
        kv = vals[phys, t % bkv]  # [B, L, D(/2)]
        if fp4:
            kv = F.fp4_dequantize(kv, sf[phys, t % bkv])
            scale = jnp.ones(phys.shape)
        else:
            scale = sf[phys, t % bkv]
        scores = jnp.einsum("bnhd,bld->bnhl", qf.astype(jnp.bfloat16), kv.astype(jnp.bfloat16),
                            preferred_element_type=jnp.float32)
        lg = jnp.einsum("bnhl,bnh->bnl", jnp.maximum(scores, 0).astype(jnp.bfloat16),
                        w.reshape(b, next_n, h).astype(jnp.bfloat16), preferred_element_type=jnp.float32)
        lg = lg * scale[:, None, :]
        lg = jnp.where(t[None, None] < lens_d[:, :, None], lg, -jnp.inf)
        return lg.reshape(b * next_n, max_ctx).astype(dtype)

    row_bytes = (d // 2 if fp4 else d) + 4
    tokens_read = float(np.sum(-(-lens[:, -1] // 64) * 64))
    out_bytes = b * next_n * max_ctx * dtype.itemsize
    q_bytes = b * next_n * h * (d // 2 + 4 if fp4 else d)
    cache_bytes = tokens_read * row_bytes
    pairs = float(np.sum(lens))
    row: dict[str, Any] = {"case": "paged", "fp4": fp4, "B": b, "next_n": next_n, "H": h, "D": d, "L_avg": l_avg,
                           "block_kv": bkv, "logits_dtype": dtype_name, "max_context_len": max_ctx,
                           "valid_pairs": pairs, "flops": 2.0 * pairs * h * d,
                           "bytes": cache_bytes + q_bytes + b * next_n * h * 4 + out_bytes,
                           "cache_bytes": cache_bytes, "deepgemm_anchor_us": None if fp4 else PAGED_ANCHORS.get(key)}
    ours = jax.jit(call)
    t = _kernel(ours, sets)
    row["ours_kernel_us"] = t.median_us
    row["ours_kernels"] = t.kernels
    row["ours_loop_us"] = _loop_us(ours, sets, reps, target_ms)
    _flushed(row, ours, sets)
    if baselines:
        _try(row, "jnp_loop_us", lambda: _loop_us(jax.jit(jnp_path), sets, reps, target_ms))
    sets.delete()
    return row


PARTS = ("ranged", "paged", "fp4")


HEADER = "# case | kern us | fl us | TFLOPS | GB/s | DeepGEMM us | xDG (kern) | xDGf (fl) | loop us | jnp loop us | x jnp"


def format_row(r: dict[str, Any]) -> str:
    """One printed row; ``fl`` is DeepGEMM's protocol, timed only where there is an anchor."""
    k_us, loop, base = r["ours_kernel_us"], r["ours_loop_us"], r.get("jnp_loop_us")
    anchor, fl = r["deepgemm_anchor_us"], r.get("ours_flushed_us")
    if r["case"] == "ranged":
        name = (f"{'fp4' if r['fp4'] else 'fp8'} S {r['S']} S_kv {r['S_kv']} H {r['H']} D {r['D']}"
                f"{' CP' if r['cp'] else ''}{' comp' if r['compressed'] else ''} {r['logits_dtype']}")
    else:
        name = (f"{'fp4' if r['fp4'] else 'fp8'} paged B {r['B']} n {r['next_n']} H {r['H']} L {r['L_avg']}"
                f" {r['logits_dtype']}")
    return (f"{name:60s} | {k_us:8.1f} | {fmt(fl, '8.1f')} | {r['flops'] / k_us / 1e6:6.0f} |"
            f" {r['bytes'] / k_us / 1e3:6.0f} | {fmt(anchor, '6.0f')} | {fmt(ratio(anchor, k_us), '4.2f')} |"
            f" {fmt(ratio(anchor, fl), '4.2f')} | {loop:8.1f} | {fmt(base, '8.1f')} |"
            f" {fmt(ratio(base, loop), '5.2f')}")


def run(*, json_path: str, reps: int, target_ms: float, meta: dict, parts=PARTS, filters=None,
        baselines: bool = True) -> int:
    # Rows are printed (and the JSON rewritten) as they are measured, so a run cut short keeps them.
    out = BenchJson(json_path, meta, ("mqa",))
    rows = out.rows["mqa"]
    fp4_too = "fp4" in parts
    cases = []
    if "ranged" in parts:
        cases += [(bench_ranged, key, fp4) for key in RANGED_ANCHORS for fp4 in ((False, True) if fp4_too else (False,))]
    if "paged" in parts:
        cases += [(bench_paged, key, fp4) for key in PAGED_ANCHORS for fp4 in ((False, True) if fp4_too else (False,))]
    cases = [c for c in cases if case_selected(c[1], filters)]
    print(HEADER, flush=True)
    for bench, key, fp4 in cases:
        print(format_row(out.add("mqa", bench(key, fp4=fp4, reps=reps, target_ms=target_ms, baselines=baselines))),
              flush=True)
    # the FP4 bar: paged FP4 >= 1.5x faster than paged FP8 at the same (B, next_n, H, L)
    fp8_paged = {(r["B"], r["next_n"], r["H"], r["L_avg"], r["logits_dtype"]): r["ours_kernel_us"]
                 for r in rows if r["case"] == "paged" and not r["fp4"]}
    for r in rows:
        if r["case"] == "paged" and r["fp4"]:
            key = (r["B"], r["next_n"], r["H"], r["L_avg"], r["logits_dtype"])
            if key in fp8_paged:
                r["speedup_vs_fp8_paged"] = fp8_paged[key] / r["ours_kernel_us"]
                print(f"# fp4 paged {key}: {r['speedup_vs_fp8_paged']:.2f}x the fp8 paged kernel (bar 1.5x)")
    out.finish()
    print(f"# wrote {json_path}")
    return 0
