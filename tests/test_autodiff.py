"""jax.grad through fp8_linear (DeepSeek-V3 FP8 recipe) vs jax.grad of the float32 matmul.

Threshold: each of y, dX and dW is one FP8 GEMM whose two operands are quantized (e4m3, 1x128 or
128x128 / 128-token scales), exactly like the forward GEMM DeepGEMM checks with calc_diff < 1e-3;
measured ~7e-4 for all three on these shapes (BF16 rounding of the outputs included), so 1.5e-3
leaves a 2x margin while a wrong transpose, scale or missing term gives calc_diff ~ 1.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_deepgemm as dg
from jax_deepgemm.testing.numeric import assert_bitwise_equal, calc_diff

GRAD_TOLERANCE = 1.5e-3
SHAPES = [(200, 384, 512), (7, 256, 256), ((3, 40), 128, 384)]


def _grads(m, n, k, seed=0):
    kx, kw, kg = jax.random.split(jax.random.key(seed), 3)
    batch = m if isinstance(m, tuple) else (m,)
    x = jax.random.normal(kx, (*batch, k), jnp.float32).astype(jnp.bfloat16)
    w = (jax.random.normal(kw, (n, k), jnp.float32) * 0.05).astype(jnp.bfloat16)
    g = jax.random.normal(kg, (*batch, n), jnp.float32)
    ours = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(dg.fp8_linear(x, w).astype(jnp.float32) * g), (0, 1)))
    ref = jax.value_and_grad(
        lambda x, w: jnp.sum(jnp.einsum("...k,nk->...n", x.astype(jnp.float32), w.astype(jnp.float32),
                                        precision=jax.lax.Precision.HIGHEST) * g), (0, 1))
    return ours(x, w), ref(x, w), (x, w)


def _check(m, n, k):
    (_, (dx, dw)), (_, (rx, rw)), (x, w) = _grads(m, n, k)
    assert dx.dtype == x.dtype and dw.dtype == w.dtype and dx.shape == x.shape and dw.shape == w.shape
    for name, got, want in (("dX", dx, rx), ("dW", dw, rw)):
        got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
        rel = np.linalg.norm(got64 - want64) / np.linalg.norm(want64)
        diff = calc_diff(got64, want64)
        assert diff < GRAD_TOLERANCE, f"{name}: calc_diff {diff:.3g} (relative error {rel:.3g})"


@pytest.mark.usefixtures("on_cpu")
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_grad_matches_float_reference_cpu(m, n, k):
    _check(m, n, k)


@pytest.mark.gpu
@pytest.mark.parametrize("m,n,k", SHAPES + [(4096, 7168, 2048)])
def test_grad_matches_float_reference_gpu(m, n, k):
    _check(m, n, k)


@pytest.mark.usefixtures("on_cpu")
def test_bad_inputs():
    x = jnp.ones((4, 256), jnp.bfloat16)
    with pytest.raises(TypeError, match="x"):
        dg.fp8_linear(x.astype(jnp.float8_e4m3fn), jnp.ones((128, 256), jnp.bfloat16))
    with pytest.raises(ValueError, match="share K"):
        dg.fp8_linear(x, jnp.ones((128, 128), jnp.bfloat16))


# --------------------------------------------------------------------------- MoE (ragged) linear


def _grouped_grads(sizes, m, n, k, seed=0, layer=dg.fp8_grouped_linear):
    kx, kw, kg = jax.random.split(jax.random.key(seed), 3)
    g = len(sizes)
    x = jax.random.normal(kx, (m, k), jnp.float32).astype(jnp.bfloat16)
    w = (jax.random.normal(kw, (g, n, k), jnp.float32) * 0.05).astype(jnp.bfloat16)
    cot = jax.random.normal(kg, (m, n), jnp.float32)
    sizes = jnp.asarray(sizes, jnp.int32)
    ours = jax.jit(jax.grad(
        lambda x, w: jnp.sum(layer(x, w, sizes).astype(jnp.float32) * cot), (0, 1)))
    ref = jax.grad(
        lambda x, w: jnp.sum(jax.lax.ragged_dot(x.astype(jnp.float32), jnp.swapaxes(w, 1, 2).astype(jnp.float32),
                                                sizes, precision=jax.lax.Precision.HIGHEST) * cot), (0, 1))
    return ours(x, w), ref(x, w), (x, w)


def _check_grouped(sizes, m, n, k, layer=dg.fp8_grouped_linear, tolerance=GRAD_TOLERANCE):
    (dx, dw), (rx, rw), (x, w) = _grouped_grads(sizes, m, n, k, layer=layer)
    assert dx.dtype == x.dtype and dw.dtype == w.dtype and dx.shape == x.shape and dw.shape == w.shape
    total = min(sum(sizes), m)
    assert (np.asarray(dx[total:], np.float32) == 0).all(), "rows past the groups must get a zero gradient"
    for name, got, want in (("dX", dx[:total], rx[:total]), ("dW", dw, rw)):
        got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
        for g, size in enumerate(sizes if name == "dW" else []):
            if size == 0:
                assert (got64[g] == 0).all(), f"dW[{g}] of an empty expert must be 0"
        rel = np.linalg.norm(got64 - want64) / np.linalg.norm(want64)
        diff = calc_diff(got64, want64)
        assert diff < tolerance, f"{name}: calc_diff {diff:.3g} (relative error {rel:.3g})"


GROUPED_SHAPES = [([100, 0, 37, 200], 400, 256, 384), ([1, 0, 0], 5, 128, 256), ([300], 300, 128, 128)]


@pytest.mark.usefixtures("on_cpu")
@pytest.mark.parametrize("sizes,m,n,k", GROUPED_SHAPES)
def test_grouped_grad_matches_ragged_dot_cpu(sizes, m, n, k):
    _check_grouped(sizes, m, n, k)


@pytest.mark.gpu
@pytest.mark.parametrize("sizes,m,n,k", GROUPED_SHAPES + [([3000, 0, 5, 0, 2100, 1, 0, 90], 5300, 2048, 7168)])
def test_grouped_grad_matches_ragged_dot_gpu(sizes, m, n, k):
    _check_grouped(sizes, m, n, k)


@pytest.mark.usefixtures("on_cpu")
def test_grouped_bad_inputs():
    x = jnp.ones((8, 256), jnp.bfloat16)
    with pytest.raises(ValueError, match="N = w.shape\\[1\\] = 72 must be a multiple of 16"):
        dg.fp8_grouped_linear(x, jnp.ones((2, 72, 256), jnp.bfloat16), np.array([4, 4]))
    with pytest.raises(ValueError, match="group_sizes must sum to at most M = 8"):
        dg.fp8_grouped_linear(x, jnp.ones((2, 128, 256), jnp.bfloat16), np.array([4, 5]))
    with pytest.raises(ValueError, match="w must have rank 3"):
        dg.fp8_grouped_linear(x, jnp.ones((128, 256), jnp.bfloat16), np.array([4, 4]))


@pytest.mark.usefixtures("on_cpu")
@pytest.mark.parametrize("layer", [dg.fp8_grouped_linear, dg.bf16_grouped_linear], ids=["fp8", "bf16"])
def test_grouped_grad_inside_shard_map_stays_local(layer):
    """Expert parallelism: 8 devices, 2 experts each, every device differentiates its own tokens against
    its local experts. The backward (ragged dgrad, K-grouped wgrad) must emit no collective, and each
    device's gradients must equal those of the same layer run alone on that device's data."""
    from jax.sharding import Mesh, PartitionSpec as P

    devices = jax.devices("cpu")[:8]
    if len(devices) < 8:
        pytest.skip("needs 8 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    mesh = Mesh(np.array(devices), ("ep",))
    tokens, n, k = 96, 128, 256
    kx, kw, kg = jax.random.split(jax.random.key(7), 3)
    x = jax.random.normal(kx, (8 * tokens, k), jnp.float32).astype(jnp.bfloat16)
    w = (jax.random.normal(kw, (16, n, k), jnp.float32) * 0.05).astype(jnp.bfloat16)
    cot = jax.random.normal(kg, (8 * tokens, n), jnp.float32)
    sizes = jnp.asarray(np.tile([60, 30], 8), jnp.int32)  # per device: 60 + 30 of its 96 tokens routed

    def local_loss(x, w, s, c):
        return jnp.sum(layer(x, w, s).astype(jnp.float32) * c)

    grads = jax.jit(jax.shard_map(jax.grad(local_loss, (0, 1)), mesh=mesh,
                                  in_specs=(P("ep"), P("ep"), P("ep"), P("ep")), out_specs=(P("ep"), P("ep"))))
    hlo = grads.lower(x, w, sizes, cot).compile().as_text()
    for collective in ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter"):
        assert collective not in hlo, f"expert-parallel grouped linear backward emitted a {collective}"
    dx, dw = grads(x, w, sizes, cot)
    one = jax.jit(jax.grad(local_loss, (0, 1)))
    for d in (0, 5):
        rows, experts = slice(d * tokens, (d + 1) * tokens), slice(2 * d, 2 * d + 2)
        want_dx, want_dw = one(x[rows], w[experts], sizes[experts], cot[rows])
        assert_bitwise_equal(dx[rows], want_dx)
        assert_bitwise_equal(dw[experts], want_dw)


# --------------------------------------------------------------------------- MoE linear in BF16

# bf16_grouped_linear: no quantization, so the only errors are the bf16 roundings of dY (the
# cotangent enters as bf16) and of the outputs, and FP32 summation order: calc_diff 3-4e-6 measured
# on CPU for dX and dW; 2e-5 leaves a 5x margin and still fails any wrong transpose, expert or
# segment (calc_diff ~1) by orders of magnitude.
BF16_GRAD_TOLERANCE = 2e-5


@pytest.mark.usefixtures("on_cpu")
@pytest.mark.parametrize("sizes,m,n,k", GROUPED_SHAPES)
def test_bf16_grouped_grad_matches_ragged_dot_cpu(sizes, m, n, k):
    _check_grouped(sizes, m, n, k, layer=dg.bf16_grouped_linear, tolerance=BF16_GRAD_TOLERANCE)


@pytest.mark.gpu
@pytest.mark.parametrize("sizes,m,n,k", GROUPED_SHAPES + [([3000, 0, 5, 0, 2100, 1, 0, 90], 5300, 2048, 7168),
                                                          ([70, 0, 130], 256, 208, 144)])
def test_bf16_grouped_grad_matches_ragged_dot_gpu(sizes, m, n, k):
    # (208, 144): K = 144 is not a multiple of 64, so dX runs the NT kernel on transposed weights.
    _check_grouped(sizes, m, n, k, layer=dg.bf16_grouped_linear, tolerance=BF16_GRAD_TOLERANCE)


@pytest.mark.usefixtures("on_cpu")
def test_bf16_grouped_bad_inputs():
    x = jnp.ones((8, 256), jnp.bfloat16)
    with pytest.raises(ValueError, match="N = w.shape\\[1\\] = 72 must be a multiple of 16"):
        dg.bf16_grouped_linear(x, jnp.ones((2, 72, 256), jnp.bfloat16), np.array([4, 4]))
    with pytest.raises(ValueError, match="group_sizes must sum to at most M = 8"):
        dg.bf16_grouped_linear(x, jnp.ones((2, 128, 256), jnp.bfloat16), np.array([4, 5]))
    with pytest.raises(TypeError, match="x must be bfloat16, float16 or float32"):
        dg.bf16_grouped_linear(x.astype(jnp.int32), jnp.ones((2, 128, 256), jnp.bfloat16), np.array([4, 4]))
