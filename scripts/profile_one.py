"""Runs one fp8_gemm_nt call (after a warm-up) for `ncu`: python scripts/profile_one.py M N K [BM BN CLUSTER_M CLUSTER_N
[SPLIT_K]]. B_RECIPE=channel: per-channel B scales (the 1D1D kernel, FP32 out, as the K-grouped GEMM runs it).
OP=xla_fp8_dot (or xla_fp8_dq_pattern): XLA's per-tensor FP8 GEMM (cuBLASLt) at the same shape instead, the
benchmark's baseline (scripts/profile_xla_fp8.sh)."""

import os
import sys

import jax

import jax_deepgemm as dg
from jax_deepgemm.testing import baselines
from jax_deepgemm.testing.generators import fp8_gemm_operands

m, n, k = (int(v) for v in sys.argv[1:4])
op = os.environ.get("OP", "ours")
if op == "ours":
    tile = tuple(int(v) for v in sys.argv[4:9]) or None
    a, b, _, _ = fp8_gemm_operands(seed=0, m=m, n=n, k=k, b_recipe=os.environ.get("B_RECIPE", "block"))
    f = jax.jit(lambda a, b: dg.fp8_gemm_nt(a, b, tile=tile))
    args = (a, b)
else:
    ka, kb = jax.random.split(jax.random.key(0))
    a_fp8, a_s = baselines.per_tensor_cast_to_fp8(jax.random.normal(ka, (m, k), jax.numpy.bfloat16))
    b_fp8, b_s = baselines.per_tensor_cast_to_fp8(jax.random.normal(kb, (n, k), jax.numpy.bfloat16))
    f = jax.jit(baselines.XLA_FP8_VARIANTS[op])
    args = (a_fp8, a_s, b_fp8, b_s)
for _ in range(4):  # ncu: --launch-skip 2 profiles a call after compilation and warm-up
    jax.block_until_ready(f(*args))
if os.environ.get("PROFILE_RANGE"):
    # For `ncu --profile-from-start off`: one more call between cuProfilerStart/Stop (driver API), so that the
    # kernels XLA's autotuner launched while compiling are not counted.
    import ctypes

    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuProfilerStart()
    jax.block_until_ready(f(*args))
    cuda.cuProfilerStop()
