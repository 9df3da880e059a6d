"""Runs one MQA-logits call (after a warm-up) for `ncu`:

    python scripts/profile_mqa_one.py ranged S S_KV H D [cp] [fp4]   (cp: DeepGEMM's context-parallel ks/ke)
    python scripts/profile_mqa_one.py paged B NEXT_N H L [fp4] [bf16] (D 128, block_kv 64, lengths ~L; FP32 logits
                                                                       unless bf16, as the bench's L 8192 rows)
"""

import sys

import jax
import jax.numpy as jnp

import jax_deepgemm as dg
from jax_deepgemm import fp4 as F
from jax_deepgemm.bench_mqa import cp_ranges, paged_problem

mode, *rest = sys.argv[1:]
flags = {a for a in rest if not a.isdigit()}
dims = [int(a) for a in rest if a.isdigit()]
fp4 = "fp4" in flags
k1, k2, k3 = jax.random.split(jax.random.key(0), 3)


def quantize(x):
    return F.per_token_cast_to_fp4(x) if fp4 else F.per_token_cast_to_fp8_e4m3(x)


if mode == "ranged":
    s, s_kv, h, d = dims
    q = jax.random.normal(k1, (s, h, d), jnp.float32)
    q = quantize(q) if fp4 else q.astype(jnp.float8_e4m3fn)
    kv = quantize(jax.random.normal(k2, (s_kv, d), jnp.float32))
    w = jax.random.normal(k3, (s, h), jnp.float32)
    ks, ke = (jnp.asarray(x) for x in cp_ranges(s, s_kv, "cp" in flags))
    op = dg.fp4_mqa_logits if fp4 else dg.fp8_mqa_logits
    f = jax.jit(lambda q, kv, w: op(q, kv, w, ks, ke))
    args = (q, kv, w)
else:
    b, next_n, h, l_avg = dims
    op, q, cache, w, lens_d, table_d, meta, max_ctx = paged_problem(b, next_n, h, l_avg, fp4)
    dtype = jnp.bfloat16 if "bf16" in flags else jnp.float32
    f = jax.jit(lambda q, cache, w: op(q, cache, w, lens_d, table_d, meta, max_ctx, clean_logits=False,
                                       logits_dtype=dtype))
    args = (q, cache, w)
for _ in range(4):  # ncu: --launch-skip 2 profiles a call after compilation and warm-up
    jax.block_until_ready(f(*args))
