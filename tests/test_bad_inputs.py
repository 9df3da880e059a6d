"""Bad inputs to the dense FP8 GEMMs raise at trace time, naming the argument; defined edge cases work.

Each row of ``BAD_CASES`` is: a call taking only arrays, the operand shapes/dtypes it gets, and the
exception type plus a message fragment that names the offending argument. Every row is checked three
ways: called eagerly on concrete arrays, lowered with ``jax.jit(f).lower`` and traced with
``jax.eval_shape`` on ``jax.ShapeDtypeStruct`` inputs (so the check happens at trace time, never
inside a kernel). The second half documents the edge cases the API defines (M = 0, N = 0, K = 0,
N not a multiple of 128), checked against float64 NumPy math.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jax_deepgemm import fp8_gemm_nn, fp8_gemm_nt, fp8_gemm_tn, fp8_gemm_tt
from jax_deepgemm.testing.numeric import FP8_TOLERANCE, assert_bitwise_equal, calc_diff

E4M3 = jnp.float8_e4m3fn
F32 = jnp.float32
BF16 = jnp.bfloat16

# A valid problem: M=4, N=256, K=256 -> 2 K blocks, 2 N blocks.
M, N, K = 4, 256, 256
KB = K // 128
NB = N // 128


pytestmark = pytest.mark.usefixtures("on_cpu")  # conftest.py: keep these on the host


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bad:
    id: str
    call: Callable[..., Any]  # takes only arrays
    specs: tuple[tuple[tuple[int, ...], Any], ...]  # (shape, dtype) per positional array
    exc: type[Exception]
    fragment: str  # must appear in the message; names the argument
    op: str = "fp8_gemm_nt"  # the op name the message starts with


def nt(a, sa, b, sb, **kw):
    return fp8_gemm_nt((a, sa), (b, sb), **kw)


def nt_c(a, sa, b, sb, c):
    return fp8_gemm_nt((a, sa), (b, sb), c=c)


def nn(a, sa, b, sb):
    return fp8_gemm_nn((a, sa), (b, sb))


def tn(a, sa, b, sb):
    return fp8_gemm_tn((a, sa), (b, sb))


def tt(a, sa, b, sb):
    return fp8_gemm_tt((a, sa), (b, sb))


A = ((M, K), E4M3)
SA = ((M, KB), F32)
B = ((N, K), E4M3)
SB_BLOCK = ((NB, KB), F32)
SB_CHANNEL = ((N, KB), F32)
C = ((M, N), F32)

BAD_CASES = [
    # --- the (data, scale) pairs
    Bad("a_not_a_pair", lambda a, b, sb: fp8_gemm_nt(a, (b, sb)), (A, B, SB_BLOCK), TypeError, "a must be a pair"),
    Bad(
        "b_triple",
        lambda a, sa, b, sb: fp8_gemm_nt((a, sa), (b, sb, sb)),
        (A, SA, B, SB_BLOCK),
        TypeError,
        "b must be a pair",
    ),
    Bad(
        "a_python_scalar",
        lambda sa, b, sb: fp8_gemm_nt((1.0, sa), (b, sb)),
        (SA, B, SB_BLOCK),
        TypeError,
        "a must be an array",
    ),
    # --- dtypes
    Bad("a_bf16", nt, (((M, K), BF16), SA, B, SB_BLOCK), TypeError, "a must have dtype float8_e4m3fn, got bfloat16"),
    Bad("b_bf16", nt, (A, SA, ((N, K), BF16), SB_BLOCK), TypeError, "b must have dtype float8_e4m3fn, got bfloat16"),
    Bad("a_scale_bf16", nt, (A, ((M, KB), BF16), B, SB_BLOCK), TypeError, "a_scale must have dtype float32"),
    Bad("b_scale_bf16", nt, (A, SA, B, ((NB, KB), BF16)), TypeError, "b_scale must have dtype float32"),
    Bad("c_bf16", nt_c, (A, SA, B, SB_CHANNEL, ((M, N), BF16)), TypeError, "c must have dtype float32, got bfloat16"),
    Bad(
        "out_dtype_f16",
        lambda a, sa, b, sb: nt(a, sa, b, sb, out_dtype=jnp.float16),
        (A, SA, B, SB_BLOCK),
        TypeError,
        "out_dtype must be bfloat16 or float32, got float16",
    ),
    # --- ranks
    Bad("b_rank3", nt, (A, SA, ((2, N, K), E4M3), SB_BLOCK), ValueError, "b must have rank 2"),
    Bad("a_rank1", nt, (((K,), E4M3), ((KB,), F32), B, SB_BLOCK), ValueError, "a must have rank >= 2"),
    # --- K
    Bad("k_mismatch", nt, (A, SA, ((N, 384), E4M3), ((NB, 3), F32)), ValueError, "a and b must share K"),
    Bad(
        "k_not_multiple_of_16",
        nt,
        (((M, 100), E4M3), ((M, 1), F32), ((N, 100), E4M3), ((NB, 1), F32)),
        ValueError,
        "K=100 must be a multiple of 16",
    ),
    # --- scale shapes
    Bad("a_scale_shape", nt, (A, ((M, KB + 1), F32), B, SB_BLOCK), ValueError, "a_scale must have shape (4, 2)"),
    Bad("a_scale_transposed", nt, (A, ((KB, M), F32), B, SB_BLOCK), ValueError, "a_scale must have shape (4, 2)"),
    Bad("b_scale_shape", nt, (A, SA, B, ((NB + 1, KB), F32)), ValueError, "b_scale must have shape (2, 2)"),
    Bad("b_scale_per_n_only", nt, (A, SA, B, ((N, 1), F32)), ValueError, "b_scale must have shape"),
    Bad(
        "batch_mismatch_a_scale",
        nt,
        (((2, M, K), E4M3), ((3, M, KB), F32), B, SB_BLOCK),
        ValueError,
        "a_scale must have shape (2, 4, 2)",
    ),
    Bad(
        "a_scale_missing_batch",
        nt,
        (((2, M, K), E4M3), SA, B, SB_BLOCK),
        ValueError,
        "a_scale must have shape (2, 4, 2)",
    ),
    # --- the accumulator
    Bad("c_shape", nt_c, (A, SA, B, SB_CHANNEL, ((M, N + 1), F32)), ValueError, "c must have shape (4, 256)"),
    Bad("c_transposed", nt_c, (A, SA, B, SB_CHANNEL, ((N, M), F32)), ValueError, "c must have shape (4, 256)"),
    Bad(
        "c_missing_batch",
        nt_c,
        (((2, M, K), E4M3), ((2, M, KB), F32), B, SB_CHANNEL, C),
        ValueError,
        "c must have shape (2, 4, 256)",
    ),
    # --- nn / tn / tt: a wrong-rank operand is caught before the transpose
    Bad("nn_b_rank1", nn, (A, SA, ((K,), E4M3), SB_BLOCK), ValueError, "b must have rank >= 2", op="fp8_gemm_nn"),
    Bad(
        "nn_b_scale_rank1", nn, (A, SA, ((K, N), E4M3), ((KB,), F32)), ValueError, "b_scale must have rank >= 2", op="fp8_gemm_nn"
    ),
    Bad("tn_a_rank1", tn, (((K,), E4M3), SA, ((K, N), E4M3), SB_BLOCK), ValueError, "a must have rank >= 2", op="fp8_gemm_tn"),
    Bad("tn_b_rank1", tn, (((K, M), E4M3), ((KB, M), F32), ((K,), E4M3), SB_BLOCK), ValueError, "b must have rank >= 2", op="fp8_gemm_tn"),
    Bad("tt_a_rank1", tt, (((K,), E4M3), SA, B, SB_BLOCK), ValueError, "a must have rank >= 2", op="fp8_gemm_tt"),
    Bad("tt_b_rank3", tt, (((K, M), E4M3), ((KB, M), F32), ((2, N, K), E4M3), SB_BLOCK), ValueError, "b must have rank 2",
        op="fp8_gemm_tt"),
]


def concrete(shape, dtype) -> jax.Array:
    return jax.device_put(np.zeros(shape, dtype=np.dtype(dtype)))


def expect(case: Bad):
    return pytest.raises(case.exc, match=re.escape(f"{case.op}: ") + ".*" + re.escape(case.fragment))


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda c: c.id)
def test_bad_input_eager(case: Bad):
    args = [concrete(shape, dtype) for shape, dtype in case.specs]
    with expect(case) as raised:
        case.call(*args)
    assert case.fragment in str(raised.value)


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda c: c.id)
def test_bad_input_jit_lower(case: Bad):
    structs = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in case.specs]
    with expect(case) as raised:
        jax.jit(case.call).lower(*structs)
    assert case.fragment in str(raised.value)


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda c: c.id)
def test_bad_input_eval_shape(case: Bad):
    structs = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in case.specs]
    with expect(case) as raised:
        jax.eval_shape(case.call, *structs)
    assert case.fragment in str(raised.value)


def test_every_bad_case_is_valid_once_fixed():
    """Guards the table itself: the valid baselines it mutates do trace (so each row tests one thing)."""
    for fn, specs in [
        (nt, (A, SA, B, SB_BLOCK)),
        (nt, (A, SA, B, SB_CHANNEL)),
        (nt_c, (A, SA, B, SB_CHANNEL, C)),
        (nt_c, (((2, M, K), E4M3), ((2, M, KB), F32), B, SB_CHANNEL, ((2, M, N), F32))),
        (nn, (A, SA, ((K, N), E4M3), ((KB, NB), F32))),
        (tn, (((K, M), E4M3), ((KB, M), F32), ((K, N), E4M3), ((KB, NB), F32))),
        (tt, (((K, M), E4M3), ((KB, M), F32), B, SB_BLOCK)),
    ]:
        out = jax.eval_shape(fn, *[jax.ShapeDtypeStruct(s, d) for s, d in specs])
        assert out.shape[-2:] == (M, N)


# ---------------------------------------------------------------------------------------------
# Defined edge cases
# ---------------------------------------------------------------------------------------------


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def np_dequant_rows(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """x[..., r, k] * scale[..., r, k // 128] in float64 (per-token / per-row scales)."""
    k = codes.shape[-1]
    return codes.astype(np.float64) * np.repeat(scale.astype(np.float64), 128, axis=-1)[..., :k]


def np_dequant_block(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    n, k = codes.shape
    s = np.repeat(np.repeat(scale.astype(np.float64), 128, axis=0), 128, axis=1)[:n, :k]
    return codes.astype(np.float64) * s


def np_quantize_rows(x: np.ndarray):
    """1x128 per-row quantization in NumPy (amax / 448, reciprocal multiply)."""
    *lead, r, k = x.shape
    kb = ceil_div(k, 128)
    pad = np.zeros((*lead, r, kb * 128), np.float32)
    pad[..., :k] = x.astype(np.float32)
    amax = np.abs(pad.reshape(*lead, r, kb, 128)).max(-1)
    scale = (np.maximum(amax, np.float32(1e-4)) / np.float32(448)).astype(np.float32)
    codes = (pad.reshape(*lead, r, kb, 128) * (np.float32(1) / scale)[..., None]).astype(ml_dtypes.float8_e4m3fn)
    return codes.reshape(*lead, r, kb * 128)[..., :k], scale


def np_quantize_blocks(w: np.ndarray):
    """128x128 block quantization in NumPy."""
    n, k = w.shape
    nb, kb = ceil_div(n, 128), ceil_div(k, 128)
    pad = np.zeros((nb * 128, kb * 128), np.float32)
    pad[:n, :k] = w.astype(np.float32)
    tiles = pad.reshape(nb, 128, kb, 128)
    scale = (np.maximum(np.abs(tiles).max(axis=(1, 3)), np.float32(1e-4)) / np.float32(448)).astype(np.float32)
    codes = (tiles * (np.float32(1) / scale)[:, None, :, None]).astype(ml_dtypes.float8_e4m3fn)
    return codes.reshape(nb * 128, kb * 128)[:n, :k], scale


def test_m_zero_gives_empty_bf16():
    a = concrete((0, K), E4M3)
    sa = concrete((0, KB), F32)
    b, sb = concrete((N, K), E4M3), concrete((NB, KB), F32)
    for out in (fp8_gemm_nt((a, sa), (b, sb)), jax.jit(nt)(a, sa, b, sb)):
        assert out.shape == (0, N)
        assert out.dtype == jnp.bfloat16


def test_m_zero_batched_with_c():
    a = concrete((3, 0, K), E4M3)
    sa = concrete((3, 0, KB), F32)
    c = concrete((3, 0, N), F32)
    out = fp8_gemm_nt((a, sa), (concrete((N, K), E4M3), concrete((N, KB), F32)), c=c)
    assert out.shape == (3, 0, N)
    assert out.dtype == jnp.float32


def test_n_zero_gives_empty():
    out = fp8_gemm_nt((concrete((M, K), E4M3), concrete((M, KB), F32)), (concrete((0, K), E4M3), concrete((0, KB), F32)))
    assert out.shape == (M, 0)
    assert out.dtype == jnp.bfloat16


def test_k_zero_gives_zeros():
    a, sa = concrete((M, 0), E4M3), concrete((M, 0), F32)
    b, sb = concrete((N, 0), E4M3), concrete((NB, 0), F32)
    for out in (fp8_gemm_nt((a, sa), (b, sb)), jax.jit(nt)(a, sa, b, sb)):
        assert out.shape == (M, N)
        assert out.dtype == jnp.bfloat16
        assert_bitwise_equal(np.asarray(out), np.zeros((M, N), ml_dtypes.bfloat16))
    out32 = fp8_gemm_nt((a, sa), (b, sb), out_dtype=jnp.float32)
    assert out32.dtype == jnp.float32
    assert_bitwise_equal(np.asarray(out32), np.zeros((M, N), np.float32))


def test_k_zero_returns_c():
    rng = np.random.default_rng(0)
    c_np = rng.standard_normal((2, M, N)).astype(np.float32)
    a, sa = concrete((2, M, 0), E4M3), concrete((2, M, 0), F32)
    b, sb = concrete((N, 0), E4M3), concrete((N, 0), F32)
    c = jax.device_put(c_np)
    out = fp8_gemm_nt((a, sa), (b, sb), c=c)
    assert out.dtype == jnp.float32
    assert_bitwise_equal(np.asarray(out), c_np)
    out_jit = jax.jit(nt_c)(a, sa, b, sb, c)
    assert_bitwise_equal(np.asarray(out_jit), c_np)
    # bf16 output of C: its rounding, nothing added.
    out_bf16 = fp8_gemm_nt((a, sa), (b, sb), c=c, out_dtype=jnp.bfloat16)
    assert_bitwise_equal(np.asarray(out_bf16), c_np.astype(ml_dtypes.bfloat16))


@pytest.mark.parametrize("recipe", ["block", "channel"])
def test_n_not_multiple_of_128(recipe):
    """N=200 (a partial last 128-block of B) matches NumPy within the FP8 metric."""
    m, n, k = 33, 200, 384
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((m, k)) * np.exp(rng.standard_normal((m, 1)))).astype(ml_dtypes.bfloat16)
    w = rng.standard_normal((n, k)).astype(ml_dtypes.bfloat16)
    a_codes, a_scale = np_quantize_rows(x)
    if recipe == "block":
        b_codes, b_scale = np_quantize_blocks(w)
        assert b_scale.shape == (2, 3)
        w_deq = np_dequant_block(b_codes, b_scale)
    else:
        b_codes, b_scale = np_quantize_rows(w)
        assert b_scale.shape == (n, 3)
        w_deq = np_dequant_rows(b_codes, b_scale)
    out = fp8_gemm_nt((jnp.asarray(a_codes), jnp.asarray(a_scale)), (jnp.asarray(b_codes), jnp.asarray(b_scale)))
    assert out.shape == (m, n)
    assert out.dtype == (jnp.bfloat16 if recipe == "block" else jnp.float32)
    got = np.asarray(out).astype(np.float64)
    unquantized = x.astype(np.float64) @ w.astype(np.float64).T
    dequantized = np_dequant_rows(a_codes, a_scale) @ w_deq.T
    assert calc_diff(got, unquantized) < FP8_TOLERANCE
    # Against the exact product of the operands it was given, only the output rounding remains:
    # bf16 (8 significant bits) gives ~1e-6, float32 accumulation far less.
    assert calc_diff(got, dequantized) < (1e-5 if recipe == "block" else 1e-10)
    # The partial last block (columns 128..199) is computed too, not left at zero.
    assert calc_diff(got[:, 128:], dequantized[:, 128:]) < 1e-5
