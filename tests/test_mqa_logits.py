"""Lightning-indexer kernels on the GPU vs the jnp references (skipped without an sm_90 GPU).

DeepGEMM's grid (``../shared/research/deepgemm.md`` §8), reduced to a representative subset so the
file stays within a few minutes: every anchor row of ``anchors.md`` (MQA) is in it. Checks per case:
the ``-inf`` mask identical to the reference, ``calc_diff`` < 1e-3 (FP8) / 0.02 (FP4) against the
reference on the unquantized inputs, a tight match against the reference on the dequantized inputs,
outputs NaN-poisoned first (the kernel writes into an XLA-aliased NaN buffer) so that any element the
contract says is written but the kernel skipped is caught.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_deepgemm as dg
from jax_deepgemm import fp4 as F
from jax_deepgemm import mqa_logits as M
from jax_deepgemm import mqa_reference as R
from jax_deepgemm.testing.numeric import assert_bitwise_equal, calc_diff

pytestmark = pytest.mark.gpu

FP8_TOL, FP4_TOL = 1e-3, 0.02
DEQUANT_TOL = 1e-5  # same quantized inputs, FP32 both sides: only summation order differs


def cp_ranges(s, s_kv, disable_cp):
    """DeepGEMM's test_mqa_logits ks/ke: causal tail (non-CP) or two chunks of a CP rank."""
    if disable_cp:
        return np.zeros(s, np.int32), (np.arange(s) + (s_kv - s)).astype(np.int32)
    chunk, cp_size = s // 2, s_kv // s
    cp_id = cp_size // 3
    ks = np.zeros(s, np.int32)
    ke = np.zeros(s, np.int32)
    i = np.arange(chunk)
    ke[:chunk] = cp_id * chunk + i
    ke[chunk:] = (cp_size * 2 - 1 - cp_id) * chunk + i
    return ks, ke


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _make_fp8(key, _, s, s_kv, hd):
    h, d = hd
    k1, k2, k3 = jax.random.split(key, 3)
    q = jax.random.normal(k1, (s, h, d), jnp.float32).astype(jnp.bfloat16).astype(jnp.float32)
    kv = jax.random.normal(k2, (s_kv, d), jnp.float32).astype(jnp.bfloat16).astype(jnp.float32)
    w = jax.random.normal(k3, (s, h), jnp.float32)
    kv8, sc = F.per_token_cast_to_fp8_e4m3(kv)
    return q, kv, w, q.astype(jnp.float8_e4m3fn), kv8, sc


def _ref_chunks(fn, s, *row_args, shared=(), budget=2 ** 31, per_row=1):
    """Runs ``fn(*row_slices, *shared)`` over query-row chunks (bounded memory), concatenated."""
    rows = max(1, min(s, budget // max(per_row, 1)))
    outs = [np.asarray(fn(*(a[i:i + rows] for a in row_args), *shared)) for i in range(0, s, rows)]
    return np.concatenate(outs, 0)


@functools.partial(jax.jit, static_argnames=("max_seqlen_k",))
def _ref_f32(q, kv, kv_scale, w, ks, ke, max_seqlen_k=0):
    return R.fp8_mqa_logits_reference(q, kv, kv_scale, w, ks, ke, max_seqlen_k=max_seqlen_k)


def _check_logits(got, want_deq, want_src, tol, *, valid_only=False):
    # BF16 logits: both sides rounded to BF16, so a few values differ by one BF16 step (DeepGEMM: 3e-5)
    deq_tol = 3e-5 if jnp.asarray(got).dtype == jnp.bfloat16 else DEQUANT_TOL
    got = np.asarray(got, np.float64)
    want_deq = np.asarray(want_deq, np.float64)
    mask = np.isneginf(want_deq)
    if valid_only:
        got = np.where(mask, -np.inf, got)
    else:
        np.testing.assert_array_equal(np.isneginf(got), mask, err_msg="-inf mask differs from the reference")
    fin = ~mask
    assert np.isfinite(got[fin]).all(), f"{np.sum(~np.isfinite(got[fin]))} valid logits unwritten or non-finite"
    d_deq = calc_diff(got[fin], want_deq[fin])
    d_src = calc_diff(got[fin], np.asarray(want_src, np.float64)[fin])
    assert d_deq < deq_tol, f"calc_diff vs the reference on the dequantized inputs {d_deq:.3g}"
    assert d_src < tol, f"calc_diff vs unquantized {d_src:.3g}"


# (S, S_kv, H, D, disable_cp, compressed, logits dtype): every anchor row + coverage of H, D, modes
RANGED_CASES = [
    (2048, 8192, 32, 64, False, False, "float32"),
    (2048, 8192, 64, 128, True, False, "float32"),
    (2048, 8192, 64, 128, False, False, "bfloat16"),
    (2048, 65536, 64, 32, False, True, "bfloat16"),
    (8192, 8192, 64, 128, False, False, "float32"),
    (8192, 8192, 32, 128, False, False, "float32"),
    (2048, 8192, 64, 32, True, False, "float32"),
    (8192, 8192, 32, 128, True, True, "bfloat16"),
    (2048, 8192, 128, 64, False, False, "float32"),
    (2048, 65536, 32, 64, True, False, "bfloat16"),
]


@pytest.mark.parametrize("s,s_kv,h,d,disable_cp,compressed,dtype", RANGED_CASES)
def test_fp8_mqa_logits_grid(s, s_kv, h, d, disable_cp, compressed, dtype):
    q, kv, w, q8, kv8, sc = _make_fp8(jax.random.key(s + s_kv + h + d), 0, s, s_kv, (h, d))
    ks, ke = cp_ranges(s, s_kv, disable_cp)
    msk = int((ke - ks).max()) if compressed else 0
    width = msk or s_kv
    out_dtype = jnp.dtype(dtype)
    poison = jnp.full((s, width), jnp.nan, out_dtype)
    # compressed: clean_logits=True here (ours writes -inf past each row's length)
    got = jax.jit(M._fp8_mqa_logits_into, static_argnames=("clean_logits", "max_seqlen_k", "logits_dtype"))(
        q8, kv8, sc, w, ks, ke, poison, clean_logits=True, max_seqlen_k=msk, logits_dtype=out_dtype)
    per_row = h * s_kv * 4 * 3
    want = _ref_chunks(lambda q_, w_, ks_, ke_: _ref_f32(q_, kv8, sc, w_, ks_, ke_, max_seqlen_k=msk), s,
                       q8, w, jnp.asarray(ks), jnp.asarray(ke), per_row=per_row)
    src = _ref_chunks(lambda q_, w_, ks_, ke_: _ref_f32(q_, kv, jnp.ones((s_kv,), jnp.float32), w_, ks_, ke_,
                                                        max_seqlen_k=msk), s, q, w, jnp.asarray(ks), jnp.asarray(ke),
                      per_row=per_row)
    if out_dtype == jnp.bfloat16:
        want = np.asarray(jnp.asarray(want).astype(jnp.bfloat16), np.float64)
    _check_logits(got, want, src, FP8_TOL)


@pytest.mark.parametrize("h,d", [(32, 32), (64, 64), (128, 128), (32, 128)])
def test_fp8_awkward_ranges_and_unclean(h, d):
    """S not a multiple of the query block, S_kv not of 64, random/empty ranges, device data out of range."""
    s, s_kv = 77, 1000
    q, kv, w, q8, kv8, sc = _make_fp8(jax.random.key(h * d), 0, s, s_kv, (h, d))
    rng = np.random.default_rng(h + d)
    ks = rng.integers(-50, s_kv, s).astype(np.int32)
    ke = (ks + rng.integers(-10, s_kv, s)).astype(np.int32)  # some empty, some past S_kv, ks < 0
    ks_c = np.clip(ks, 0, s_kv)
    ke_c = np.clip(ke, ks_c, s_kv)
    want = np.asarray(_ref_f32(q8, kv8, sc, w, ks_c, ke_c), np.float64)
    src = np.asarray(_ref_f32(q, kv, jnp.ones((s_kv,)), w, ks_c, ke_c), np.float64)
    poison = jnp.full((s, s_kv), jnp.nan, jnp.float32)
    got = M._fp8_mqa_logits_into(q8, kv8, sc, w, jnp.asarray(ks), jnp.asarray(ke), poison, clean_logits=True,
                                 max_seqlen_k=0, logits_dtype=jnp.float32)
    _check_logits(got, want, src, FP8_TOL)
    unclean = dg.fp8_mqa_logits(q8, (kv8, sc), w, jnp.asarray(ks), jnp.asarray(ke), clean_logits=False)
    _check_logits(unclean, want, src, FP8_TOL, valid_only=True)
    comp = np.asarray(dg.fp8_mqa_logits(q8, (kv8, sc), w, jnp.asarray(ks_c), jnp.asarray(ke_c), clean_logits=False,
                                        max_seqlen_k=300), np.float64)
    # compressed mode: row i holds logits[i, ks_i : ks_i + 300] (the FP8 tensor cores' reduced-precision
    # accumulation makes the kernel differ from the float reference by ~1e-4 relative per element)
    got_c, want_c = [], []
    for i in range(s):
        n = min(ke_c[i] - ks_c[i], 300)
        got_c.append(comp[i, :n])
        want_c.append(want[i, ks_c[i]:ks_c[i] + n])
    got_c, want_c = np.concatenate(got_c), np.concatenate(want_c)
    assert np.isfinite(got_c).all()
    assert calc_diff(got_c, want_c) < DEQUANT_TOL


def _fp4_inputs(key, s, s_kv, h, d):
    k1, k2, k3 = jax.random.split(key, 3)
    q = jax.random.normal(k1, (s, h, d), jnp.float32)
    kv = jax.random.normal(k2, (s_kv, d), jnp.float32)
    w = jax.random.normal(k3, (s, h), jnp.float32)
    qp, qs = jax.jit(F.per_token_cast_to_fp4)(q)
    kp, kss = jax.jit(F.per_token_cast_to_fp4)(kv)
    return q, kv, w, qp, qs, kp, kss


@pytest.mark.parametrize("s,s_kv,h,d,disable_cp,compressed", [
    (2048, 8192, 64, 128, False, False), (2048, 8192, 32, 64, True, True), (300, 1000, 128, 32, True, False),
    (77, 1000, 32, 64, True, False)])  # 20 query blocks: KV parts
def test_fp4_mqa_logits(s, s_kv, h, d, disable_cp, compressed):
    q, kv, w, qp, qs, kp, kss = _fp4_inputs(jax.random.key(s + h), s, s_kv, h, d)
    if s_kv % s == 0 and s % 2 == 0:
        ks, ke = cp_ranges(s, s_kv, disable_cp)
    else:
        ks, ke = cp_ranges(s, s_kv, True)
    msk = int((ke - ks).max()) if compressed else 0
    poison = jnp.full((s, msk or s_kv), jnp.nan, jnp.float32)
    got = M._fp4_mqa_logits_into((qp, qs), (kp, kss), w, ks, ke, poison, clean_logits=True, max_seqlen_k=msk,
                                 logits_dtype=jnp.float32)
    ref = jax.jit(lambda *a: R.fp4_mqa_logits_reference(*a, max_seqlen_k=msk))
    want = _ref_chunks(lambda qp_, qs_, w_, ks_, ke_: ref(qp_, qs_, kp, kss, w_, ks_, ke_), s, qp, qs, w,
                       jnp.asarray(ks), jnp.asarray(ke), per_row=h * s_kv * 4 * 8 * (d // 32))
    src = _ref_chunks(lambda q_, w_, ks_, ke_: _ref_f32(q_, kv, jnp.ones((s_kv,)), w_, ks_, ke_, max_seqlen_k=msk),
                      s, q, w, jnp.asarray(ks), jnp.asarray(ke), per_row=h * s_kv * 12)
    _check_logits(got, want, src, FP4_TOL)


def test_fp8_twenty_repeats_bitwise_equal():
    q, kv, w, q8, kv8, sc = _make_fp8(jax.random.key(7), 0, 2048, 8192, (64, 128))
    ks, ke = cp_ranges(2048, 8192, False)
    f = jax.jit(lambda q, kv, sc, w: dg.fp8_mqa_logits(q, (kv, sc), w, ks, ke))
    first = f(q8, kv8, sc, w)
    for _ in range(20):
        assert_bitwise_equal(f(q8, kv8, sc, w), first)


# ------------------------------------------------------------------------------------------------
# Paged
# ------------------------------------------------------------------------------------------------


def _paged_inputs(seed, b, next_n, h, d, bkv, avg, fp4=False):
    rng = np.random.default_rng(seed)
    last = rng.integers(int(0.7 * avg), int(1.3 * avg) + 1, b)
    lens = np.stack([np.maximum(last - rng.integers(0, 3) * (next_n - 1 - j), 0) for j in range(next_n)], 1)
    lens[:, -1] = last
    lens = lens.astype(np.int32)
    max_ctx = int(lens.max())
    max_blocks = -(-max_ctx // bkv)
    nb = b * max_blocks
    table = rng.permutation(nb).reshape(b, max_blocks).astype(np.int32)
    key = jax.random.key(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    tokens = jax.random.normal(k1, (nb * bkv, d), jnp.float32)
    q = jax.random.normal(k2, (b, next_n, h, d), jnp.float32)
    w = jax.random.normal(k3, (b * next_n, h), jnp.float32)
    if fp4:
        kp, ksf = jax.jit(F.per_token_cast_to_fp4)(tokens)
        cache = jax.jit(F.build_fp4_paged_kv_cache, static_argnums=2)(kp, ksf, bkv)
        qq = jax.jit(F.per_token_cast_to_fp4)(q)
    else:
        kv8, sc = jax.jit(F.per_token_cast_to_fp8_e4m3)(tokens)
        cache = jax.jit(F.build_fp8_paged_kv_cache, static_argnums=2)(kv8, sc, bkv)
        qq = q.astype(jnp.float8_e4m3fn)
    return q, tokens, w, qq, cache, lens, table, max_ctx


def _paged_reference(qq, cache, w, lens, table, max_ctx, fp4, rows=16):
    b, next_n = lens.shape
    fn = R.fp4_paged_mqa_logits_reference if fp4 else R.fp8_paged_mqa_logits_reference
    # the cache is an argument, not a closure constant (it would be embedded in the HLO)
    if fp4:
        f = jax.jit(lambda qp, qs, c_, w_, l_, t_: fn(qp, qs, c_, w_, l_, t_, max_context_len=max_ctx))
    else:
        f = jax.jit(lambda q_, c_, w_, l_, t_: fn(q_, c_, w_, l_, t_, max_context_len=max_ctx))
    outs = []
    for i in range(0, b, rows):
        sl = slice(i, min(i + rows, b))
        wsl = w[sl.start * next_n: sl.stop * next_n]
        if fp4:
            outs.append(np.asarray(f(qq[0][sl], qq[1][sl], cache, wsl, lens[sl], table[sl])))
        else:
            outs.append(np.asarray(f(qq[sl], cache, wsl, lens[sl], table[sl])))
    return np.concatenate(outs, 0)


def _paged_source_reference(q, tokens, w, lens, table, bkv, max_ctx, rows=16):
    """float32 logits on the unquantized q and tokens (the calc_diff target)."""
    b, next_n = lens.shape

    @jax.jit
    def f(q_, w_, l_, t_, tokens):
        t = jnp.arange(max_ctx)
        phys = t_[:, t // bkv] * bkv + t % bkv  # [rows, L]
        kv = tokens[phys]
        s_ = jnp.einsum("bnhd,bld->bnhl", q_, kv, precision=jax.lax.Precision.HIGHEST)
        lg = jnp.einsum("bnhl,bnh->bnl", jnp.maximum(s_, 0), w_.reshape(q_.shape[:3]),
                        precision=jax.lax.Precision.HIGHEST)
        lg = jnp.where(t[None, None] < l_[:, :, None], lg, -jnp.inf)
        return lg.reshape(-1, max_ctx)

    outs = []
    for i in range(0, b, rows):
        sl = slice(i, min(i + rows, b))
        outs.append(np.asarray(f(q[sl], w[sl.start * next_n: sl.stop * next_n], lens[sl], table[sl], tokens)))
    return np.concatenate(outs, 0)


def _num_sms():
    return int(getattr(jax.devices()[0], "core_count", 132) or 132)


# (B, next_n, H, D, block_kv, avg context, logits dtype, fp4)
PAGED_CASES = [
    (256, 1, 64, 128, 64, 8192, "bfloat16", False),
    (256, 1, 32, 128, 64, 8192, "bfloat16", False),
    (256, 2, 32, 128, 64, 8192, "float32", False),
    (64, 2, 64, 128, 64, 65536, "float32", False),
    (128, 3, 64, 128, 32, 4096, "float32", False),
    (128, 4, 32, 64, 16, 2048, "bfloat16", False),
    (64, 2, 128, 128, 128, 4096, "float32", False),
    (100, 1, 32, 32, 64, 1000, "float32", False),
    (256, 1, 64, 128, 64, 8192, "float32", True),
    (128, 2, 32, 64, 32, 4096, "bfloat16", True),
    # FP4 on the WGMMA kernel: two column chunks (H 128, next_n 2), 16-token blocks with two atoms, D 32
    (64, 2, 128, 128, 128, 4096, "float32", True),
    (128, 3, 32, 64, 16, 2048, "bfloat16", True),
    (100, 1, 32, 32, 64, 1000, "float32", True),
    # FP4 H 64 next_n 2: one 128-column chunk of two tokens (the bench's B 4096 n 2 H 64 instance), D 128 and 64
    (64, 2, 64, 128, 64, 4096, "bfloat16", True),
    (64, 2, 64, 64, 64, 4096, "float32", True),
]


@pytest.mark.parametrize("b,next_n,h,d,bkv,avg,dtype,fp4", PAGED_CASES)
def test_paged_mqa_logits_grid(b, next_n, h, d, bkv, avg, dtype, fp4):
    q, tokens, w, qq, cache, lens, table, max_ctx = _paged_inputs(b * next_n + h + d, b, next_n, h, d, bkv, avg, fp4)
    out_dtype = jnp.dtype(dtype)
    meta = dg.get_paged_mqa_logits_metadata(jnp.asarray(lens), bkv, _num_sms())
    np.testing.assert_array_equal(np.asarray(meta),
                                  np.asarray(R.paged_mqa_logits_metadata_reference(lens, num_sms=_num_sms())))
    poison = jnp.full((b * next_n, max_ctx), jnp.nan, out_dtype)
    into = M._fp4_paged_mqa_logits_into if fp4 else M._fp8_paged_mqa_logits_into
    got = into(qq, cache, w, jnp.asarray(lens), jnp.asarray(table), meta, poison, clean_logits=True,
               max_context_len=max_ctx, logits_dtype=out_dtype)
    want = _paged_reference(qq, cache, w, jnp.asarray(lens), jnp.asarray(table), max_ctx, fp4)
    if out_dtype == jnp.bfloat16:
        want = np.asarray(jnp.asarray(want).astype(jnp.bfloat16), np.float64)
    src = _paged_source_reference(q, tokens, w, jnp.asarray(lens), jnp.asarray(table), bkv, max_ctx)
    _check_logits(got, want, src, FP4_TOL if fp4 else FP8_TOL)


def test_paged_unclean_and_wide_output():
    """clean_logits=False: valid positions only; max_context_len past the longest row."""
    q, tokens, w, qq, cache, lens, table, max_ctx = _paged_inputs(3, 32, 2, 64, 128, 64, 3000)
    wide = max_ctx + 700
    meta = dg.get_paged_mqa_logits_metadata(jnp.asarray(lens), 64, _num_sms())
    got = dg.fp8_paged_mqa_logits(qq, cache, w, jnp.asarray(lens), jnp.asarray(table), meta, wide, clean_logits=False)
    want = _paged_reference(qq, cache, w, jnp.asarray(lens), jnp.asarray(table), wide, False)
    src = _paged_source_reference(q, tokens, w, jnp.asarray(lens), jnp.asarray(table), 64, wide)
    _check_logits(got, want, src, FP8_TOL, valid_only=True)
    clean = dg.fp8_paged_mqa_logits(qq, cache, w, jnp.asarray(lens), jnp.asarray(table), meta, wide)
    _check_logits(clean, want, src, FP8_TOL)


def _paged_op(fp4):
    return dg.fp4_paged_mqa_logits if fp4 else dg.fp8_paged_mqa_logits


@pytest.mark.parametrize("fp4", [False, True])
def test_paged_small_schedules(fp4):
    """Few SMs (long per-CTA walks: many atoms per CTA, the query ring wrapping) and more SMs than work units."""
    q, tokens, w, qq, cache, lens, table, max_ctx = _paged_inputs(5, 7, 3, 32, 128, 64, 600, fp4)
    want = _paged_reference(qq, cache, w, jnp.asarray(lens), jnp.asarray(table), max_ctx, fp4)
    for sms in (1, 3, 500):
        meta = dg.get_paged_mqa_logits_metadata(jnp.asarray(lens), 64, sms)
        got = _paged_op(fp4)(qq, cache, w, jnp.asarray(lens), jnp.asarray(table), meta, max_ctx)
        np.testing.assert_array_equal(np.isneginf(np.asarray(got)), np.isneginf(want))
        fin = np.isfinite(want)
        assert calc_diff(np.asarray(got)[fin], want[fin]) < 4e-5, (sms, calc_diff(np.asarray(got)[fin], want[fin]))


@pytest.mark.parametrize("fp4", [False, True])
def test_paged_twenty_repeats_bitwise_equal(fp4):
    q, tokens, w, qq, cache, lens, table, max_ctx = _paged_inputs(9, 256, 2, 64, 128, 64, 4096, fp4)
    lens_d, table_d = jnp.asarray(lens), jnp.asarray(table)

    @jax.jit
    def f(qq, cache, w):
        meta = dg.get_paged_mqa_logits_metadata(lens_d, 64, _num_sms())
        return _paged_op(fp4)(qq, cache, w, lens_d, table_d, meta, max_ctx)

    first = f(qq, cache, w)
    for _ in range(20):
        assert_bitwise_equal(f(qq, cache, w), first)


_FALLBACK_SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
import jax_deepgemm as dg
from jax_deepgemm import fp4 as F, mqa_reference as R
from jax_deepgemm.testing.numeric import calc_diff
rng = np.random.default_rng(0)
for h, d in [(32, 32), (64, 64), (128, 128), (32, 128)]:
    s, s_kv = 70, 900
    q = jnp.asarray(rng.standard_normal((s, h, d)), jnp.float8_e4m3fn)
    kv, sc = F.per_token_cast_to_fp8_e4m3(jnp.asarray(rng.standard_normal((s_kv, d)), jnp.float32))
    w = jnp.asarray(rng.standard_normal((s, h)), jnp.float32)
    ks = rng.integers(0, s_kv, s).astype(np.int32)
    ke = np.minimum(ks + rng.integers(0, s_kv, s), s_kv).astype(np.int32)
    got = np.asarray(dg.fp8_mqa_logits(q, (kv, sc), w, ks, ke), np.float64)
    want = np.asarray(R.fp8_mqa_logits_reference(q, kv, sc, w, ks, ke), np.float64)
    assert (np.isneginf(got) == np.isneginf(want)).all(), (h, d)
    fin = np.isfinite(want)
    assert calc_diff(got[fin], want[fin]) < 1e-5, (h, d, calc_diff(got[fin], want[fin]))
for next_n, h, d, bkv in [(1, 64, 128, 64), (2, 32, 64, 32), (3, 128, 32, 16)]:
    b, max_ctx = 5, 700
    lens = np.sort(rng.integers(0, max_ctx, (b, next_n)), axis=1).astype(np.int32)
    max_blocks = -(-max_ctx // bkv)
    table = rng.permutation(b * max_blocks).reshape(b, max_blocks).astype(np.int32)
    kv, sc = F.per_token_cast_to_fp8_e4m3(jnp.asarray(rng.standard_normal((b * max_blocks * bkv, d)), jnp.float32))
    cache = F.build_fp8_paged_kv_cache(kv, sc, bkv)
    q = jnp.asarray(rng.standard_normal((b, next_n, h, d)), jnp.float8_e4m3fn)
    w = jnp.asarray(rng.standard_normal((b * next_n, h)), jnp.float32)
    meta = dg.get_paged_mqa_logits_metadata(jnp.asarray(lens), bkv, 132)
    got = np.asarray(dg.fp8_paged_mqa_logits(q, cache, w, lens, table, meta, max_ctx), np.float64)
    want = np.asarray(R.fp8_paged_mqa_logits_reference(q, cache, w, lens, table, max_context_len=max_ctx), np.float64)
    assert (np.isneginf(got) == np.isneginf(want)).all(), (next_n, h, d)
    fin = np.isfinite(want)
    assert calc_diff(got[fin], want[fin]) < 1e-5, (next_n, h, d, calc_diff(got[fin], want[fin]))
print("ok")
"""


def test_fp8_mma_sync_fallback_in_subprocess(tmp_path):
    """JAX_DEEPGEMM_MQA_MMA_SYNC=1 (read once per process) selects the mma.sync kernels for FP8 (ranged
    and paged): they must agree with the reference too (they are the FP4 path's machinery)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, JAX_DEEPGEMM_MQA_MMA_SYNC="1", XLA_PYTHON_CLIENT_MEM_FRACTION="0.08")
    # -P and a neutral cwd: import the installed package (with its extension), not the source tree
    res = subprocess.run([sys.executable, "-P", "-c", _FALLBACK_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


def test_sanitizer_small_mqa():
    """Small ranged and paged FP8 and FP4 cases for `compute-sanitizer` (gpu_check.sh SANITIZE=1): partial query
    blocks, KV parts (fewer query blocks than SMs), ranges past S_kv, compressed rows, 16-token cache blocks
    (four TMA boxes per tile), 3 query tokens per batch row (two atoms, the second of one token) and both FP4 paged
    walks; outputs NaN-poisoned."""
    s, s_kv, h, d = 37, 300, 64, 128
    q, kv, w, q8, kv8, sc = _make_fp8(jax.random.key(11), 0, s, s_kv, (h, d))
    rng = np.random.default_rng(11)
    ks = rng.integers(-5, s_kv, s).astype(np.int32)
    ke = (ks + rng.integers(-3, s_kv, s)).astype(np.int32)
    ks_c = np.clip(ks, 0, s_kv)
    ke_c = np.clip(ke, ks_c, s_kv)
    want = np.asarray(_ref_f32(q8, kv8, sc, w, ks_c, ke_c), np.float64)
    src = np.asarray(_ref_f32(q, kv, jnp.ones((s_kv,)), w, ks_c, ke_c), np.float64)
    got = M._fp8_mqa_logits_into(q8, kv8, sc, w, jnp.asarray(ks), jnp.asarray(ke),
                                 jnp.full((s, s_kv), jnp.nan, jnp.float32), clean_logits=True, max_seqlen_k=0,
                                 logits_dtype=jnp.float32)
    _check_logits(got, want, src, FP8_TOL)
    comp = np.asarray(dg.fp8_mqa_logits(q8, (kv8, sc), w, jnp.asarray(ks_c), jnp.asarray(ke_c), max_seqlen_k=64,
                                        logits_dtype=jnp.bfloat16).astype(jnp.float32), np.float64)
    for i in range(s):
        n = min(ke_c[i] - ks_c[i], 64)
        row_want = want[i, ks_c[i]:ks_c[i] + n]
        np.testing.assert_allclose(comp[i, :n], row_want, rtol=2e-2, atol=2e-2 * np.abs(row_want).max(initial=1.0))
        assert np.isneginf(comp[i, n:]).all(), f"row {i}: compressed columns past the range must be -inf"

    qp, tokens, wp, qq, cache, lens, table, max_ctx = _paged_inputs(12, 3, 3, 32, 64, 16, 300)
    meta = dg.get_paged_mqa_logits_metadata(jnp.asarray(lens), 16, _num_sms())
    got = M._fp8_paged_mqa_logits_into(qq, cache, wp, jnp.asarray(lens), jnp.asarray(table), meta,
                                       jnp.full((3 * 3, max_ctx), jnp.nan, jnp.float32), clean_logits=True,
                                       max_context_len=max_ctx, logits_dtype=jnp.float32)
    want = _paged_reference(qq, cache, wp, jnp.asarray(lens), jnp.asarray(table), max_ctx, False)
    src = _paged_source_reference(qp, tokens, wp, jnp.asarray(lens), jnp.asarray(table), 16, max_ctx)
    _check_logits(got, want, src, FP8_TOL)

    q, kv, w, qp4, qs4, kp4, ks4 = _fp4_inputs(jax.random.key(14), s, s_kv, h, d)
    got = M._fp4_mqa_logits_into((qp4, qs4), (kp4, ks4), w, jnp.asarray(ks), jnp.asarray(ke),
                                 jnp.full((s, s_kv), jnp.nan, jnp.float32), clean_logits=True, max_seqlen_k=0,
                                 logits_dtype=jnp.float32)
    want = np.asarray(R.fp4_mqa_logits_reference(qp4, qs4, kp4, ks4, w, ks_c, ke_c), np.float64)
    src = np.asarray(_ref_f32(q, kv, jnp.ones((s_kv,)), w, ks_c, ke_c), np.float64)
    _check_logits(got, want, src, FP4_TOL)

    # FP4 paged: the lookahead walk (H 32, two-token atoms: 64 columns; 16-token blocks) and the 128-column walk
    # (H 64, next_n 2, D 128: the bench's B 4096 n 2 instance)
    for seed, b, next_n, h, d, bkv in ((13, 3, 3, 32, 64, 16), (15, 3, 2, 64, 128, 64)):
        qp, tokens, wp, qq, cache, lens, table, max_ctx = _paged_inputs(seed, b, next_n, h, d, bkv, 300, fp4=True)
        meta = dg.get_paged_mqa_logits_metadata(jnp.asarray(lens), bkv, _num_sms())
        got = M._fp4_paged_mqa_logits_into(qq, cache, wp, jnp.asarray(lens), jnp.asarray(table), meta,
                                           jnp.full((b * next_n, max_ctx), jnp.nan, jnp.float32), clean_logits=True,
                                           max_context_len=max_ctx, logits_dtype=jnp.float32)
        want = _paged_reference(qq, cache, wp, jnp.asarray(lens), jnp.asarray(table), max_ctx, True)
        src = _paged_source_reference(qp, tokens, wp, jnp.asarray(lens), jnp.asarray(table), bkv, max_ctx)
        _check_logits(got, want, src, FP4_TOL)
