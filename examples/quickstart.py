"""Quantize like DeepSeek (1x128 activations, 128x128 weights) and run the FP8 GEMM under jax.jit.

Runs on CPU (jnp reference) and on Hopper GPUs (the sm_90a kernel): python examples/quickstart.py
"""

import jax
import jax.numpy as jnp

import jax_deepgemm as dg
from jax_deepgemm.testing.numeric import calc_diff

x = jax.random.normal(jax.random.key(0), (256, 7168), jnp.bfloat16)  # activations [M, K]
w = jax.random.normal(jax.random.key(1), (2112, 7168), jnp.bfloat16)  # weights [N, K]


@jax.jit
def linear(x, w):
    a = dg.per_token_cast_to_fp8(x)  # (e4m3 [M, K], f32 scales [M, K/128])
    b = dg.per_block_cast_to_fp8(w)  # (e4m3 [N, K], f32 scales [N/128, K/128])
    return dg.fp8_gemm_nt(a, b)  # bf16 [M, N] = x @ w.T


y = linear(x, w)
ref = jnp.dot(x.astype(jnp.float32), w.astype(jnp.float32).T)
print(y.shape, y.dtype, "calc_diff vs f32 product:", calc_diff(y, ref))
