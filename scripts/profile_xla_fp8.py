"""Runs XLA's per-tensor FP8 GEMM (cuBLASLt) once after a warm-up, for `ncu` next to profile_one.py:
python scripts/profile_xla_fp8.py M N K."""

import sys

import jax

from jax_deepgemm.testing.baselines import per_tensor_cast_to_fp8, xla_fp8_dot

m, n, k = (int(v) for v in sys.argv[1:4])
ka, kb = jax.random.split(jax.random.key(0))
a, sa = per_tensor_cast_to_fp8(jax.random.normal(ka, (m, k)))
b, sb = per_tensor_cast_to_fp8(jax.random.normal(kb, (n, k)))
f = jax.jit(xla_fp8_dot)
jax.block_until_ready(f(a, sa, b, sb))
jax.block_until_ready(f(a, sa, b, sb))
