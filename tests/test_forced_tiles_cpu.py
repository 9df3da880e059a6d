"""A forced kernel shape (``tile=`` / ``block_m`` / ``block_n``) that the library did not compile is refused at trace
time with a ValueError naming what exists, on every platform (the lists come from the built extension), instead of
an InvalidArgument when the op runs on the GPU. Compiled shapes pass. Skipped where no CUDA kernels were built."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import jax_deepgemm as dg
from jax_deepgemm import _ffi
from jax_deepgemm.bf16_gemm import bf16_gemm_tiles

pytestmark = pytest.mark.skipif(not _ffi.fp8_gemm_tiles()["1d2d"], reason="no compiled CUDA kernels to choose from")

E4M3, F32, BF16, I32 = jnp.float8_e4m3fn, jnp.float32, jnp.bfloat16, jnp.int32
G, M, N, K = 2, 256, 256, 256
S = jax.ShapeDtypeStruct


def _dense(tile, kind="block"):
    b_scale = S((N // 128, K // 128), F32) if kind == "block" else S((N, K // 128), F32)
    return lambda: jax.eval_shape(lambda a, b: dg.fp8_gemm_nt(a, b, tile=tile),
                                  (S((M, K), E4M3), S((M, K // 128), F32)), (S((N, K), E4M3), b_scale))


def _grouped_b():
    return S((G, N, K), E4M3), S((G, N // 128, K // 128), F32)


def _masked(tile):
    a = (S((G, 128, K), E4M3), S((G, 128, K // 128), F32))
    return lambda: jax.eval_shape(lambda a, b, mm: dg.m_grouped_fp8_gemm_nt_masked(a, b, mm, tile=tile), a,
                                  _grouped_b(), S((G,), I32))


def _ragged(tile):
    a = (S((M, K), E4M3), S((M, K // 128), F32))
    return lambda: jax.eval_shape(lambda a, b, sizes: dg.m_grouped_fp8_gemm_nt_ragged(a, b, sizes, tile=tile), a,
                                  _grouped_b(), S((G,), I32))


def _contiguous(block_m, block_n):
    a = (S((M, K), E4M3), S((M, K // 128), F32))
    return lambda: jax.eval_shape(
        lambda a, b, ids: dg.m_grouped_fp8_gemm_nt_contiguous(a, b, ids, block_m=block_m, block_n=block_n), a,
        _grouped_b(), S((M,), I32))


def _k_grouped(tile):
    a = (S((M, K), E4M3), S((M, K // 128), F32))
    b = (S((N, K), E4M3), S((N, K // 128), F32))
    return lambda: jax.eval_shape(lambda a, b, ks: dg.k_grouped_fp8_gemm_nt_contiguous(a, b, ks, tile=tile), a, b,
                                  S((G,), I32))


def _bf16(tile):
    return lambda: jax.eval_shape(lambda a, b: dg.bf16_gemm_nt(a, b, tile=tile), S((M, K), BF16), S((N, K), BF16))


@pytest.mark.parametrize("call", [
    pytest.param(_dense((128, 96)), id="dense-1d2d-width"),
    pytest.param(_dense((128, 128, 1, 4)), id="dense-1d2d-cluster"),
    pytest.param(_dense((128, 64), kind="channel"), id="dense-1d1d"),
    pytest.param(_masked((256, 128)), id="masked-256-rows"),
    pytest.param(_ragged((128, 192)), id="ragged-too-wide"),
    pytest.param(_contiguous(128, 96), id="contiguous-width"),
    pytest.param(_k_grouped((128, 64)), id="k-grouped"),
    pytest.param(_bf16((128, 96)), id="bf16"),
])
def test_uncompiled_forced_tile_raises_at_trace_time(call):
    with pytest.raises(ValueError, match=r"no compiled kernel has .* compiled: "):
        call()


@pytest.mark.parametrize("call,shape,dtype", [
    pytest.param(_dense((128, 176, 2, 1)), (M, N), BF16, id="dense-wide-pair"),
    pytest.param(_dense((0, 128)), (M, N), BF16, id="dense-width-only"),
    pytest.param(_dense((128, 128), kind="channel"), (M, N), F32, id="dense-1d1d"),
    pytest.param(_masked((128, 192)), (G, 128, N), BF16, id="masked-wide"),
    pytest.param(_ragged((256, 128)), (M, N), BF16, id="ragged-tall"),
    pytest.param(_contiguous(256, 128), (M, N), BF16, id="contiguous-tall"),
    pytest.param(_k_grouped((128, 128, 2)), (G, M, N), F32, id="k-grouped-pair"),
    pytest.param(_bf16(tuple(bf16_gemm_tiles()[0][:2]) if bf16_gemm_tiles() else None), (M, N), BF16, id="bf16"),
])
def test_compiled_forced_tile_traces(call, shape, dtype):
    out = call()
    assert (out.shape, out.dtype) == (shape, jnp.dtype(dtype))
