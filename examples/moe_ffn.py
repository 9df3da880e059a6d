"""A DeepSeek-V3-style MoE FFN in plain JAX on the grouped GEMMs, forward and backward, FP8 and BF16.

router top-k -> sort token copies by expert -> grouped L1 (gate|up) -> SwiGLU -> grouped L2 ->
weighted combine, under jax.jit. Each grouped linear is `fp8_grouped_linear` (FP8 1x128 activations
and 128x128 weights on the ragged M-grouped GEMM forward and for dX, the K-grouped GEMM over each
expert's tokens for dW: DeepSeek-V3's FP8 training recipe) or `bf16_grouped_linear` (the same
GEMMs in BF16, no quantization). Loss, dX, dW1, dW2 and the router gradient are checked against the
same layer in float32. Runs on CPU (references) and Hopper GPUs (kernels): python examples/moe_ffn.py
"""

import jax
import jax.numpy as jnp

import jax_deepgemm as dg
from jax_deepgemm.testing.numeric import calc_diff

TOKENS, HIDDEN, INTER, EXPERTS, TOP_K = 512, 1024, 512, 8, 2

keys = jax.random.split(jax.random.key(0), 5)
x = jax.random.normal(keys[0], (TOKENS, HIDDEN), jnp.bfloat16)
router = jax.random.normal(keys[1], (HIDDEN, EXPERTS), jnp.float32) * HIDDEN**-0.5
w1 = (jax.random.normal(keys[2], (EXPERTS, 2 * INTER, HIDDEN), jnp.float32) * HIDDEN**-0.5).astype(jnp.bfloat16)
w2 = (jax.random.normal(keys[3], (EXPERTS, HIDDEN, INTER), jnp.float32) * INTER**-0.5).astype(jnp.bfloat16)
cotangent = jax.random.normal(keys[4], (TOKENS, HIDDEN), jnp.float32)


def route(x, router):
    """Top-k experts per token; token copies sorted by expert (the ragged layout)."""
    scores = jax.nn.softmax(x.astype(jnp.float32) @ router, axis=-1)
    weights, experts = jax.lax.top_k(scores, TOP_K)  # [T, k]
    flat_experts = experts.reshape(-1)
    order = jnp.argsort(flat_experts, stable=True)  # token copies grouped by expert
    group_sizes = jnp.bincount(flat_experts, length=EXPERTS).astype(jnp.int32)
    return order, group_sizes, weights


def swiglu(h):
    gate, up = jnp.split(h.astype(jnp.float32), 2, axis=-1)
    return jax.nn.silu(gate) * up


def combine(y_sorted, order, weights):
    y_tokens = jnp.zeros((TOKENS * TOP_K, HIDDEN), jnp.float32).at[order].set(y_sorted.astype(jnp.float32))
    return jnp.einsum("tkh,tk->th", y_tokens.reshape(TOKENS, TOP_K, HIDDEN), weights)


def moe_on(grouped_linear):
    """The MoE FFN with `grouped_linear` (fp8_grouped_linear or bf16_grouped_linear) for L1 and L2."""

    def moe(x, router, w1, w2):
        order, group_sizes, weights = route(x, router)
        rows = x[order // TOP_K]  # [T*k, H], sorted by expert
        h = grouped_linear(rows, w1, group_sizes)  # [T*k, 2I]
        y = grouped_linear(swiglu(h).astype(jnp.bfloat16), w2, group_sizes)  # [T*k, H]
        return combine(y, order, weights)

    return moe


def moe_float32(x, router, w1, w2):
    order, group_sizes, weights = route(x, router)
    rows = x[order // TOP_K].astype(jnp.float32)
    dot = lambda a, w: jax.lax.ragged_dot(a, jnp.swapaxes(w.astype(jnp.float32), 1, 2), group_sizes,  # noqa: E731
                                          precision=jax.lax.Precision.HIGHEST)
    return combine(dot(swiglu(dot(rows, w1)), w2), order, weights)


def loss_and_grads(layer):
    loss = lambda *args: jnp.sum(layer(*args) * cotangent)  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(x, router, w1, w2)


# Error budgets (a wrong expert, transpose or scale gives calc_diff ~ 1 in either):
# * FP8: one FP8 GEMM gives calc_diff ~7e-4; SwiGLU multiplies two such outputs (their errors add) and
#   L2 adds its own, so ~2e-3 is expected for the output; each gradient chains the same GEMM errors
#   (measured 2.0e-3 to 2.1e-3 for all five on CPU). 3e-3 keeps a 1.4x margin.
# * BF16: only bf16 roundings (of h, SwiGLU's output, y and the cotangent entering each backward GEMM):
#   measured 6e-6 to 1.2e-5 on CPU; 1e-4 keeps an 8x margin.
ref_out = jax.jit(moe_float32)(x, router, w1, w2)
ref_loss, ref_grads = loss_and_grads(moe_float32)
for name, layer, budget in (("FP8", dg.fp8_grouped_linear, 3e-3), ("BF16", dg.bf16_grouped_linear, 1e-4)):
    moe = moe_on(layer)
    loss, grads = loss_and_grads(moe)
    diffs = {"output": float(calc_diff(jax.jit(moe)(x, router, w1, w2), ref_out))}
    diffs.update({k: float(calc_diff(g, r)) for k, g, r in zip(("dX", "dRouter", "dW1", "dW2"), grads, ref_grads)})
    print(f"{name} MoE FFN ({TOKENS} tokens, {EXPERTS} experts, top-{TOP_K}) on {jax.devices()[0].platform}: "
          "calc_diff vs float32: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    for key, diff in diffs.items():
        assert diff < budget, (name, key, diff)
