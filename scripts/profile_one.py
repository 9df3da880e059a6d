"""Runs one fp8_gemm_nt call (after a warm-up) for `ncu`: python scripts/profile_one.py M N K [BM BN CLUSTER_M CLUSTER_N
[SPLIT_K]]. B_RECIPE=channel: per-channel B scales (the 1D1D kernel, FP32 out, as the K-grouped GEMM runs it)."""

import os
import sys

import jax

import jax_deepgemm as dg
from jax_deepgemm.testing.generators import fp8_gemm_operands

m, n, k = (int(v) for v in sys.argv[1:4])
tile = tuple(int(v) for v in sys.argv[4:9]) or None
a, b, _, _ = fp8_gemm_operands(seed=0, m=m, n=n, k=k, b_recipe=os.environ.get("B_RECIPE", "block"))
f = jax.jit(lambda a, b: dg.fp8_gemm_nt(a, b, tile=tile))
for _ in range(4):  # ncu: --launch-skip 2 profiles a call after compilation and warm-up
    jax.block_until_ready(f(a, b))
