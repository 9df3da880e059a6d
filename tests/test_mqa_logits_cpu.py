"""Lightning-indexer ops on CPU: references vs float64 NumPy, FP4/paged layouts, metadata, bad inputs, jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_deepgemm as dg
from jax_deepgemm import fp4 as F
from jax_deepgemm import mqa_logits as M
from jax_deepgemm import mqa_reference as R

pytestmark = pytest.mark.usefixtures("on_cpu")


def _fp8_inputs(seed, s, s_kv, h, d):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((s, h, d)), jnp.float8_e4m3fn)
    kv, sc = F.per_token_cast_to_fp8_e4m3(rng.standard_normal((s_kv, d)))
    w = jnp.asarray(rng.standard_normal((s, h)), jnp.float32)
    return q, kv, sc, w


def _ranges(seed, s, s_kv):
    rng = np.random.default_rng(seed)
    ks = rng.integers(0, s_kv, s)
    ke = np.minimum(ks + rng.integers(0, s_kv, s), s_kv)
    ks[0], ke[0] = 0, s_kv  # full row
    ks[-1], ke[-1] = 3, 3  # empty row
    return ks.astype(np.int32), ke.astype(np.int32)


def _f64(x):
    return np.asarray(jnp.asarray(x, jnp.float32), np.float64)


def _oracle_fp8(q, kv, sc, w, ks, ke):
    return R.numpy_mqa_logits_float64(_f64(q), _f64(kv) * _f64(sc)[:, None], np.ones(kv.shape[0]), _f64(w), ks, ke)


@pytest.mark.parametrize("h,d", [(32, 32), (64, 64), (32, 128), (128, 64)])
def test_fp8_matches_float64(h, d):
    s, s_kv = 9, 301
    q, kv, sc, w = _fp8_inputs(h + d, s, s_kv, h, d)
    ks, ke = _ranges(d, s, s_kv)
    out = jax.jit(lambda q, kv, sc, w, ks, ke: dg.fp8_mqa_logits(q, (kv, sc), w, ks, ke))(q, kv, sc, w, ks, ke)
    assert out.shape == (s, s_kv) and out.dtype == jnp.float32
    want = _oracle_fp8(q, kv, sc, w, ks, ke)
    got = np.asarray(out, np.float64)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-5, atol=1e-5 * np.abs(want[fin]).max())


def test_bf16_logits_and_compressed():
    s, s_kv, h, d = 6, 97, 64, 32
    q, kv, sc, w = _fp8_inputs(1, s, s_kv, h, d)
    ks, ke = _ranges(2, s, s_kv)
    full = np.asarray(dg.fp8_mqa_logits(q, (kv, sc), w, ks, ke), np.float64)
    bf = dg.fp8_mqa_logits(q, (kv, sc), w, ks, ke, logits_dtype=jnp.bfloat16)
    assert bf.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(bf, np.float64), full, rtol=1e-2)
    msk = 40
    comp = np.asarray(dg.fp8_mqa_logits(q, (kv, sc), w, ks, ke, max_seqlen_k=msk), np.float64)
    assert comp.shape == (s, msk)
    for i in range(s):
        n = min(ke[i] - ks[i], msk)
        np.testing.assert_array_equal(comp[i, :n], full[i, ks[i]:ks[i] + n])
        assert np.isneginf(comp[i, n:]).all()


def test_fp4_matches_float64():
    s, s_kv, h, d = 5, 130, 32, 128
    rng = np.random.default_rng(3)
    qp, qs = F.per_token_cast_to_fp4(rng.standard_normal((s, h, d)))
    kp, kss = F.per_token_cast_to_fp4(rng.standard_normal((s_kv, d)) * 3)
    w = jnp.asarray(rng.standard_normal((s, h)), jnp.float32)
    ks, ke = _ranges(4, s, s_kv)
    out = jax.jit(lambda *a: dg.fp4_mqa_logits((a[0], a[1]), (a[2], a[3]), *a[4:]))(qp, qs, kp, kss, w, ks, ke)
    want = R.numpy_mqa_logits_float64(_f64(F.fp4_dequantize(qp, qs)), _f64(F.fp4_dequantize(kp, kss)),
                                      np.ones(s_kv), _f64(w), ks, ke)
    got = np.asarray(out, np.float64)
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-5, atol=1e-5 * np.abs(want[fin]).max())


# ------------------------------------------------------------------------------------------------
# FP4 format
# ------------------------------------------------------------------------------------------------


def test_e2m1_codes_roundtrip_and_nibble_order():
    codes = jnp.arange(16, dtype=jnp.uint8)
    np.testing.assert_array_equal(np.asarray(F.e2m1_encode(F.e2m1_decode(codes))), [*range(8), 0, *range(9, 16)])
    packed = F.pack_e2m1(jnp.array([1, 2, 3, 4], jnp.uint8))
    np.testing.assert_array_equal(np.asarray(packed), [0x21, 0x43])  # low nibble = even element
    np.testing.assert_array_equal(np.asarray(F.unpack_e2m1(packed)), [1, 2, 3, 4])


def test_e2m1_rounding_is_nearest_even():
    x = jnp.array([0.2, 0.25, 0.3, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.1, 7.0, -0.75, -100.0])
    want = [0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, -1.0, -6.0]
    np.testing.assert_array_equal(np.asarray(F.e2m1_decode(F.e2m1_encode(x))), want)


@pytest.mark.parametrize("d", [32, 64, 128])
def test_fp4_quantizer_scales_and_error(d):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((7, d)) * np.exp(rng.uniform(-6, 6, (7, 1)))
    x[0] = 0.0
    packed, sf = jax.jit(F.per_token_cast_to_fp4)(x)
    assert packed.shape == (7, d // 2) and packed.dtype == jnp.uint8 and sf.shape == (7,) and sf.dtype == jnp.int32
    words = np.asarray(sf).view(np.uint32)
    for g in range(d // 32, 4):  # unused bytes hold 1.0
        assert ((words >> (8 * g)) & 0xFF == 127).all()
    deq = np.asarray(F.fp4_dequantize(packed, sf), np.float64)
    assert (deq[0] == 0).all()
    groups = x.reshape(7, -1, 32)
    amax = np.abs(groups).max(-1, keepdims=True)
    err = np.abs(deq.reshape(groups.shape) - groups)
    sc = np.asarray(F.unpack_ue8m0(sf, d // 32), np.float64)
    assert (err <= sc[..., None]).all()  # half the coarsest E2M1 step (4 -> 6) times the scale
    assert (amax[1:, :, 0] <= 6 * sc[1:]).all() and (amax[1:, :, 0] > 3 * sc[1:]).all()


def test_fp8_paged_cache_byte_layout():
    rng = np.random.default_rng(5)
    t, d, bkv = 128, 64, 32
    kv, sc = F.per_token_cast_to_fp8_e4m3(rng.standard_normal((t, d)))
    cache = jax.jit(F.build_fp8_paged_kv_cache, static_argnums=2)(kv, sc, bkv)
    assert cache.shape == (t // bkv, bkv, 1, d + 4) and cache.dtype == jnp.uint8
    raw = np.asarray(cache).reshape(t // bkv, -1)
    kv_bytes = np.asarray(jax.lax.bitcast_convert_type(kv, jnp.uint8))
    sc_np = np.asarray(sc, np.float32)
    for blk in range(t // bkv):
        np.testing.assert_array_equal(raw[blk, : bkv * d], kv_bytes[blk * bkv:(blk + 1) * bkv].reshape(-1))
        np.testing.assert_array_equal(raw[blk, bkv * d:].view("<f4"), sc_np[blk * bkv:(blk + 1) * bkv])
    vals, sf = F.split_fp8_paged_kv_cache(cache)
    np.testing.assert_array_equal(np.asarray(vals, np.float32).reshape(t, d), np.asarray(kv, np.float32))
    np.testing.assert_array_equal(np.asarray(sf).reshape(t), sc_np)


def test_fp4_paged_cache_byte_layout():
    rng = np.random.default_rng(6)
    t, d, bkv = 64, 128, 16
    kp, ksf = F.per_token_cast_to_fp4(rng.standard_normal((t, d)))
    cache = F.build_fp4_paged_kv_cache(kp, ksf, bkv)
    assert cache.shape == (t // bkv, bkv, 1, d // 2 + 4)
    raw = np.asarray(cache).reshape(t // bkv, -1)
    np.testing.assert_array_equal(raw[1, : bkv * d // 2], np.asarray(kp)[bkv:2 * bkv].reshape(-1))
    np.testing.assert_array_equal(raw[1, bkv * d // 2:].view("<i4"), np.asarray(ksf)[bkv:2 * bkv])


# ------------------------------------------------------------------------------------------------
# Paged
# ------------------------------------------------------------------------------------------------


def _paged_case(seed, b, next_n, h, d, bkv, avg, fp4=False):
    rng = np.random.default_rng(seed)
    lens_last = rng.integers(int(0.7 * avg), int(1.3 * avg) + 1, b)
    lens_last[0] = 0
    lens = np.stack([np.maximum(lens_last - (next_n - 1 - j), 0) for j in range(next_n)], 1).astype(np.int32)
    max_ctx = int(lens.max()) + 5
    max_blocks = -(-max_ctx // bkv)
    nb = b * max_blocks + 3
    perm = rng.permutation(nb)[: b * max_blocks].reshape(b, max_blocks).astype(np.int32)
    tokens = rng.standard_normal((nb * bkv, d))
    if fp4:
        kp, ksf = F.per_token_cast_to_fp4(tokens)
        cache = F.build_fp4_paged_kv_cache(kp, ksf, bkv)
        qp, qs = F.per_token_cast_to_fp4(rng.standard_normal((b, next_n, h, d)))
        q = (qp, qs)
        kv_deq = np.asarray(F.fp4_dequantize(kp, ksf), np.float64)
        q_deq = np.asarray(F.fp4_dequantize(qp, qs), np.float64)
    else:
        kv, sc = F.per_token_cast_to_fp8_e4m3(tokens)
        cache = F.build_fp8_paged_kv_cache(kv, sc, bkv)
        q = jnp.asarray(rng.standard_normal((b, next_n, h, d)), jnp.float8_e4m3fn)
        kv_deq = _f64(kv) * _f64(sc)[:, None]
        q_deq = _f64(q)
    w = jnp.asarray(rng.standard_normal((b * next_n, h)), jnp.float32)
    want = np.full((b * next_n, max_ctx), -np.inf)
    for bi in range(b):
        for j in range(next_n):
            n = lens[bi, j]
            t = np.arange(n)
            rows = perm[bi, t // bkv] * bkv + t % bkv
            s = np.einsum("hd,td->ht", q_deq[bi, j], kv_deq[rows])
            want[bi * next_n + j, :n] = np.maximum(s, 0).T @ _f64(w)[bi * next_n + j]
    return q, cache, w, lens, perm, max_ctx, want


@pytest.mark.parametrize("next_n,h,bkv,fp4", [(1, 32, 64, False), (2, 64, 32, False), (3, 32, 16, False),
                                              (4, 64, 64, False), (2, 32, 64, True), (1, 64, 128, True)])
def test_paged_matches_float64(next_n, h, bkv, fp4):
    d = 128 if not fp4 else 64
    q, cache, w, lens, bt, max_ctx, want = _paged_case(next_n * 10 + h, 3, next_n, h, d, bkv, 300, fp4)
    meta = dg.get_paged_mqa_logits_metadata(lens, bkv, 8)
    fn = dg.fp4_paged_mqa_logits if fp4 else dg.fp8_paged_mqa_logits
    out = jax.jit(fn, static_argnums=6)(q, cache, w, jnp.asarray(lens), jnp.asarray(bt), meta, max_ctx)
    got = np.asarray(out, np.float64)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-5, atol=1e-5 * np.abs(want[fin]).max())


def _meta_numpy(lens, num_sms):
    """Direct transcription: enumerate all work units, cut into num_sms contiguous ranges."""
    b, next_n = lens.shape
    atoms = -(-next_n // 2) if next_n >= 2 else 1
    units = []
    for bi in range(b):
        splits = -(-int(lens[bi, -1]) // 256)
        for a in range(atoms):
            for sp in range(splits):
                units.append((bi * atoms + a, sp))
    total = len(units)
    qq, r = divmod(total, num_sms)
    rows = []
    for s in range(num_sms):
        start = s * qq + max(0, s - (num_sms - r))
        rows.append(units[start] if start < total else (b * atoms, 0))
    rows.append((b * atoms, 0))
    return np.array(rows)


@pytest.mark.parametrize("next_n,num_sms", [(1, 132), (2, 7), (3, 16), (4, 1), (1, 5)])
def test_metadata_matches_enumeration(next_n, num_sms):
    rng = np.random.default_rng(next_n * num_sms)
    last = rng.integers(0, 3000, 37)
    last[3] = 0
    lens = np.stack([np.maximum(last - k, 0) for k in range(next_n)][::-1], 1).astype(np.int32)
    got = np.asarray(jax.jit(dg.get_paged_mqa_logits_metadata, static_argnums=(1, 2))(jnp.asarray(lens), 64, num_sms))
    np.testing.assert_array_equal(got, _meta_numpy(lens, num_sms))


def test_metadata_1d_lens_is_next_n_1():
    lens = np.array([500, 0, 1024], np.int32)
    np.testing.assert_array_equal(np.asarray(dg.get_paged_mqa_logits_metadata(lens, 64, 4)),
                                  np.asarray(dg.get_paged_mqa_logits_metadata(lens[:, None], 64, 4)))


# ------------------------------------------------------------------------------------------------
# Bad inputs (trace time) and transforms
# ------------------------------------------------------------------------------------------------


def _good_fp8():
    q, kv, sc, w = _fp8_inputs(0, 4, 64, 32, 64)
    return q, kv, sc, w, np.zeros(4, np.int32), np.full(4, 64, np.int32)


@pytest.mark.parametrize("change,err,match", [
    ("heads", ValueError, "heads H = 16"),
    ("dim", ValueError, "head dim D = 48"),
    ("kv_dim", ValueError, "kv must have shape"),
    ("weights", ValueError, "weights must have shape"),
    ("ks_gt_ke", ValueError, "ks must be <= ke"),
    ("ke_big", ValueError, "ke must be <= S_kv"),
    ("ks_neg", ValueError, "ks must be >= 0"),
    ("q_dtype", TypeError, "q must have dtype"),
    ("scale_shape", ValueError, "kv_scale must have shape"),
    ("logits_dtype", TypeError, "logits_dtype"),
    ("ks_float", TypeError, "ks must have an integer dtype"),
    ("kv_not_pair", TypeError, "kv must be a pair"),
])
def test_fp8_bad_inputs(change, err, match):
    q, kv, sc, w, ks, ke = _good_fp8()
    kw = {}
    kvp = (kv, sc)
    if change == "heads":
        q, w = q[:, :16], w[:, :16]
    elif change == "dim":
        q = q[:, :, :48]
    elif change == "kv_dim":
        kvp = (kv[:, :32], sc)
    elif change == "weights":
        w = w[:3]
    elif change == "ks_gt_ke":
        ks = ks.copy(); ks[2] = 10; ke = ke.copy(); ke[2] = 5
    elif change == "ke_big":
        ke = ke + 1
    elif change == "ks_neg":
        ks = ks - 1
    elif change == "q_dtype":
        q = q.astype(jnp.bfloat16)
    elif change == "scale_shape":
        kvp = (kv, sc[:10])
    elif change == "logits_dtype":
        kw["logits_dtype"] = jnp.float16
    elif change == "ks_float":
        ks = ks.astype(np.float32)
    elif change == "kv_not_pair":
        kvp = kv
    with pytest.raises(err, match=match):
        dg.fp8_mqa_logits(q, kvp, w, ks, ke, **kw)


def test_paged_bad_inputs():
    q, cache, w, lens, bt, max_ctx, _ = _paged_case(0, 2, 2, 32, 128, 64, 200)
    meta = dg.get_paged_mqa_logits_metadata(lens, 64, 4)
    ok = dict(q=q, kv_cache=cache, weights=w, context_lens=lens, block_table=bt, schedule_meta=meta,
              max_context_len=max_ctx)

    def call(**kw):
        return dg.fp8_paged_mqa_logits(**{**ok, **kw})

    with pytest.raises(ValueError, match="block_table entries"):
        call(block_table=bt + 10_000)
    with pytest.raises(ValueError, match="max_context_len"):
        call(max_context_len=int(lens.max()) - 1)
    with pytest.raises(ValueError, match="largest length"):
        call(context_lens=lens[:, ::-1].copy() if (lens[:, 0] != lens[:, 1]).any() else lens - np.array([0, 1]))
    with pytest.raises(ValueError, match="kv_cache must have shape"):
        call(kv_cache=cache[..., :-1])
    with pytest.raises(ValueError, match="block_kv"):
        call(kv_cache=jnp.zeros((4, 48, 1, 132), jnp.uint8))
    with pytest.raises(ValueError, match="next_n"):
        call(q=jnp.zeros((2, 5, 32, 128), jnp.float8_e4m3fn), weights=jnp.zeros((10, 32)))
    with pytest.raises(ValueError, match="weights must have shape"):
        call(weights=w[:1])
    with pytest.raises(ValueError, match="schedule_meta"):
        call(schedule_meta=meta[:1])
    with pytest.raises(ValueError, match="capacity"):
        call(block_table=bt[:, :1], max_context_len=max_ctx)
    with pytest.raises(ValueError, match="block_table too large"):  # (row, split) ordinals past int32
        jax.eval_shape(lambda t: call(block_table=t), jax.ShapeDtypeStruct((2, 2**33), jnp.int32))
    # 2 rows of 2^30 - 1 splits fit int32 but not once each row is padded to a multiple of 32 splits
    with pytest.raises(ValueError, match="block_table too large"):
        jax.eval_shape(lambda t: call(block_table=t), jax.ShapeDtypeStruct((2, 4 * (2**30 - 1)), jnp.int32))
    with pytest.raises(ValueError, match="next_n"):
        dg.get_paged_mqa_logits_metadata(np.zeros((2, 7), np.int32), 64, 4)


def test_vmap_matches_loop():
    q, kv, sc, w = _fp8_inputs(9, 4, 64, 32, 32)
    qs = jnp.stack([q, q[::-1]])
    ws = jnp.stack([w, -w])
    ks, ke = np.array([0, 1, 2, 3], np.int32), np.array([10, 64, 30, 3], np.int32)
    out = jax.vmap(lambda q, w: dg.fp8_mqa_logits(q, (kv, sc), w, ks, ke))(qs, ws)
    for i in range(2):
        np.testing.assert_array_equal(np.asarray(out[i]), np.asarray(dg.fp8_mqa_logits(qs[i], (kv, sc), ws[i], ks, ke)))


def test_device_ranges_are_traced():
    q, kv, sc, w, ks, ke = _good_fp8()
    f = jax.jit(lambda ks, ke: dg.fp8_mqa_logits(q, (kv, sc), w, ks, ke, logits_dtype=jnp.bfloat16))
    out = f(jnp.asarray(ks), jnp.asarray(ke))
    assert out.dtype == jnp.bfloat16 and out.shape == (4, 64)


def _kernel_walk(meta, last, atoms, num_sms, ctas_per_row=1):
    """Python transcription of the paged kernel's per-CTA walk (PagedSettle in sm90_paged_mqa_logits.cuh)."""
    total_atoms = len(last) * atoms
    seen = []
    for cta in range(num_sms * ctas_per_row):
        s, mine = divmod(cta, ctas_per_row)
        counter = 0
        atom, split = min(max(meta[s, 0], 0), total_atoms), max(meta[s, 1], 0)
        end_atom, end_split = min(max(meta[s + 1, 0], 0), total_atoms), max(meta[s + 1, 1], 0)
        sub = 0
        while True:  # settle
            if atom >= total_atoms or not (atom < end_atom or (atom == end_atom and split < end_split)):
                break
            ctx = last[atom // atoms]
            if sub < 4 and split * 256 + sub * 64 < ctx:
                if counter % ctas_per_row == mine:
                    seen.append((atom, split * 4 + sub))
                sub += 1
                counter += 1
                continue
            if sub == 0:
                atom, split = atom + 1, 0
            else:
                split, sub = split + 1, 0
    return seen


@pytest.mark.parametrize("ctas_per_row", [1, 3, 4])
@pytest.mark.parametrize("next_n,num_sms", [(1, 132), (2, 7), (3, 16), (4, 1), (1, 500)])
def test_paged_schedule_covers_every_tile_once(next_n, num_sms, ctas_per_row):
    rng = np.random.default_rng(next_n + num_sms)
    last = rng.integers(0, 3000, 41)
    last[5] = 0
    last[6] = 256
    lens = np.repeat(last[:, None], next_n, 1).astype(np.int32)
    meta = np.asarray(dg.get_paged_mqa_logits_metadata(lens, 64, num_sms))
    atoms = -(-next_n // 2) if next_n >= 2 else 1
    seen = _kernel_walk(meta, last, atoms, num_sms, ctas_per_row)
    want = [(b * atoms + a, t) for b in range(len(last)) for a in range(atoms) for t in range(-(-int(last[b]) // 64))]
    assert len(seen) == len(set(seen)), "a tile is computed twice"
    assert sorted(seen) == sorted(want)


def test_aliased_output_hooks_trace_on_cpu():
    """The GPU tests' poisoning hooks (output operand aliased to the result) lower on CPU too."""
    q, kv, sc, w, ks, ke = _good_fp8()
    poison = jnp.full((4, 64), jnp.nan, jnp.float32)
    out = jax.jit(M._fp8_mqa_logits_into, static_argnames=("clean_logits", "max_seqlen_k", "logits_dtype"))(
        q, kv, sc, w, ks, ke, poison, clean_logits=True, max_seqlen_k=0, logits_dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(dg.fp8_mqa_logits(q, (kv, sc), w, ks, ke)))
    qp, cache, wp, lens, bt, max_ctx, _ = _paged_case(1, 2, 1, 32, 128, 64, 100)
    meta = dg.get_paged_mqa_logits_metadata(lens, 64, 4)
    out = M._fp8_paged_mqa_logits_into(qp, cache, wp, lens, bt, meta, jnp.full((2, max_ctx), jnp.nan),
                                       clean_logits=True, max_context_len=max_ctx, logits_dtype=jnp.float32)
    assert not np.isnan(np.asarray(out)).any()


def test_fp4_int8_packed_is_the_same_bytes():
    rng = np.random.default_rng(11)
    qp, qs = F.per_token_cast_to_fp4(rng.standard_normal((3, 32, 64)))
    kp, kss = F.per_token_cast_to_fp4(rng.standard_normal((50, 64)))
    w = jnp.asarray(rng.standard_normal((3, 32)), jnp.float32)
    ks, ke = np.zeros(3, np.int32), np.array([50, 20, 1], np.int32)
    as_i8 = lambda x: jax.lax.bitcast_convert_type(x, jnp.int8)
    a = dg.fp4_mqa_logits((qp, qs), (kp, kss), w, ks, ke)
    b = dg.fp4_mqa_logits((as_i8(qp), qs), (as_i8(kp), kss), w, ks, ke)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
