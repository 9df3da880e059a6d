"""Runs one ranged FP8 MQA-logits call (after a warm-up) for `ncu`:
python scripts/profile_mqa_one.py S S_KV H D [cp]  (cp: DeepGEMM's context-parallel ks/ke pattern)."""

import sys

import jax
import jax.numpy as jnp

import jax_deepgemm as dg
from jax_deepgemm import fp4 as F
from jax_deepgemm.bench_mqa import cp_ranges

s, s_kv, h, d = (int(v) for v in sys.argv[1:5])
cp = len(sys.argv) > 5 and sys.argv[5] == "cp"
k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
q = jax.random.normal(k1, (s, h, d), jnp.float32).astype(jnp.float8_e4m3fn)
kv, sc = F.per_token_cast_to_fp8_e4m3(jax.random.normal(k2, (s_kv, d), jnp.float32))
w = jax.random.normal(k3, (s, h), jnp.float32)
ks, ke = (jnp.asarray(x) for x in cp_ranges(s, s_kv, cp))
f = jax.jit(lambda q, kv, sc, w: dg.fp8_mqa_logits(q, (kv, sc), w, ks, ke))
for _ in range(4):  # ncu: --launch-skip 2 profiles a call after compilation and warm-up
    jax.block_until_ready(f(q, kv, sc, w))
