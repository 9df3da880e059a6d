"""JAX transformations of the dense FP8 GEMM ops on CPU: jit, vmap, shard_map, buffer aliasing, export.

Parametrised over the three ways ``fp8_gemm_nt`` binds its primitives:
  * ``1d2d``       : 128x128 block-scaled B, BF16 out (the ``fp8_gemm_nt_1d2d`` primitive);
  * ``1d1d``       : per-row (1x128) B scales, FP32 out (the ``1d1d`` primitive, no accumulator);
  * ``1d1d_acc``   : block-scaled B plus an FP32 accumulator ``c`` (``1d1d`` with accumulate=1).
Transforms must not change a single bit, so most checks are bitwise against the plain call; the
accumulator check compares with float64 NumPy math. ``jax.grad`` is not supported for FP8 inputs yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jax_deepgemm
from jax_deepgemm import fp8_gemm_nt
from jax_deepgemm.testing.numeric import assert_bitwise_equal

E4M3 = ml_dtypes.float8_e4m3fn
VARIANTS = ["1d2d", "1d1d", "1d1d_acc"]
TARGETS = {
    "1d2d": "jax_deepgemm_fp8_gemm_nt_1d2d_v4",
    "1d1d": "jax_deepgemm_fp8_gemm_nt_1d1d_v2",
    "1d1d_acc": "jax_deepgemm_fp8_gemm_nt_1d1d_v2",
}
# Custom calls of our own have no JAX compatibility guarantee, so export must be told to accept them.
DISABLED_CHECKS = [jax.export.DisabledSafetyCheck.custom_call(t) for t in sorted(set(TARGETS.values()))]
# Without the CUDA kernels built in, the cuda branch cannot lower at all (see
# test_cuda_lowering_without_kernels_raises_clearly): the export round trip then covers the CPU branch
# only, and the tests that inspect the CUDA lowering are skipped with NO_KERNELS as the reason.
EXPORT_PLATFORMS = ("cpu", "cuda") if jax_deepgemm.has_cuda_kernels() else ("cpu",)
NO_KERNELS = "jax_deepgemm was built without CUDA kernels: the CUDA lowering cannot be inspected"
# K <= 256 keeps every dot product to two K blocks; M=24 is not a multiple of the 64-row tile.
M, N, K = 24, 256, 256


pytestmark = pytest.mark.usefixtures("on_cpu")  # conftest.py: keep these on the host


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def gemm(variant: str):
    """The op as a function of arrays only (what jit/vmap/shard_map/export take)."""
    if variant == "1d1d_acc":
        return lambda a, sa, b, sb, c: fp8_gemm_nt((a, sa), (b, sb), c=c)
    return lambda a, sa, b, sb: fp8_gemm_nt((a, sa), (b, sb))


def np_operands(variant: str, m: int, n: int, k: int, *, a_batch=(), b_batch=(), seed: int = 0):
    """Random e4m3 codes and positive non-power-of-two scales (NumPy), ordered as ``gemm`` takes them."""
    rng = np.random.default_rng(seed)
    kb = ceil_div(k, 128)
    a = (rng.standard_normal((*a_batch, m, k)) * 40).clip(-448, 448).astype(E4M3)
    sa = (2.0 ** rng.uniform(-12, -2, (*a_batch, m, kb))).astype(np.float32)
    b = (rng.standard_normal((*b_batch, n, k)) * 40).clip(-448, 448).astype(E4M3)
    b_rows = n if variant == "1d1d" else ceil_div(n, 128)
    sb = (2.0 ** rng.uniform(-12, -2, (*b_batch, b_rows, kb))).astype(np.float32)
    args = [a, sa, b, sb]
    if variant == "1d1d_acc":
        args.append(rng.standard_normal((*a_batch, m, n)).astype(np.float32))
    return args


def operands(variant: str, m: int = M, n: int = N, k: int = K, **kw):
    return [jnp.asarray(x) for x in np_operands(variant, m, n, k, **kw)]


def out_dtype(variant: str):
    return jnp.bfloat16 if variant == "1d2d" else jnp.float32


def bitwise(x, y):
    assert_bitwise_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------------------------
# jit and vmap
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_jit_equals_eager(variant):
    f, args = gemm(variant), operands(variant)
    eager = f(*args)
    jitted = jax.jit(f)(*args)
    assert eager.shape == (M, N) and eager.dtype == out_dtype(variant)
    assert np.isfinite(np.asarray(eager, np.float64)).all() and np.any(np.asarray(eager) != 0)
    bitwise(jitted, eager)


def a_side_axes(variant: str, axis):
    """in_axes batching a, a_scale (and c) along ``axis``, B unbatched."""
    return (axis, axis, None, None) + ((axis,) if variant == "1d1d_acc" else ())


@pytest.mark.parametrize("variant", VARIANTS)
def test_vmap_a_side(variant):
    """vmap over a leading batch of a, a_scale (and c) == per-slice loop == a 3-D ``a`` directly."""
    f = gemm(variant)
    nbatch = 3
    args = operands(variant, a_batch=(nbatch,))
    out = jax.jit(jax.vmap(f, in_axes=a_side_axes(variant, 0)))(*args)
    assert out.shape == (nbatch, M, N) and out.dtype == out_dtype(variant)
    batched = {0, 1, 4}
    loop = [jax.jit(f)(*[x[i] if j in batched else x for j, x in enumerate(args)]) for i in range(nbatch)]
    bitwise(out, jnp.stack(loop))
    bitwise(out, jax.jit(f)(*args))  # leading batch dims are allowed directly
    # eager vmap too (the batching rule runs outside jit)
    bitwise(jax.vmap(f, in_axes=a_side_axes(variant, 0))(*args), out)


@pytest.mark.parametrize("variant", VARIANTS)
def test_vmap_nested(variant):
    """Two vmaps over the A side fold into M like a 4-D ``a``."""
    f = gemm(variant)
    args = operands(variant, m=8, a_batch=(2, 3))
    axes = a_side_axes(variant, 0)
    out = jax.jit(jax.vmap(jax.vmap(f, in_axes=axes), in_axes=axes))(*args)
    assert out.shape == (2, 3, 8, N)
    bitwise(out, jax.jit(f)(*args))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("a_batched", [True, False], ids=["a_and_b_batched", "only_b_batched"])
def test_vmap_b_batched(variant, a_batched):
    """A batched B (falls back to a loop inside the batching rule) equals the per-slice results."""
    f = gemm(variant)
    nbatch = 2
    a_args = operands(variant, a_batch=(nbatch,) if a_batched else (), seed=1)
    b_args = operands(variant, b_batch=(nbatch,), seed=2)
    args = [a_args[0], a_args[1], b_args[2], b_args[3], *a_args[4:]]
    a_axis = 0 if a_batched else None
    in_axes = (a_axis, a_axis, 0, 0) + ((a_axis,) if variant == "1d1d_acc" else ())
    out = jax.jit(jax.vmap(f, in_axes=in_axes))(*args)
    assert out.shape == (nbatch, M, N)
    loop = []
    for i in range(nbatch):
        sliced = [x if ax is None else x[i] for x, ax in zip(args, in_axes)]
        loop.append(jax.jit(f)(*sliced))
    bitwise(out, jnp.stack(loop))
    # The two B slices differ, so the slices of the result must differ too (no slice reused).
    assert not np.array_equal(np.asarray(loop[0]), np.asarray(loop[1]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_vmap_only_b_scale_batched(variant):
    """Only the B scales batched: still the loop path, equal to per-slice calls."""
    f = gemm(variant)
    args = operands(variant)
    sbs = jnp.stack([args[3], args[3] * 2.0])
    in_axes = (None, None, None, 0) + ((None,) if variant == "1d1d_acc" else ())
    out = jax.jit(jax.vmap(f, in_axes=in_axes))(args[0], args[1], args[2], sbs, *args[4:])
    bitwise(out[0], jax.jit(f)(*args))
    bitwise(out[1], jax.jit(f)(args[0], args[1], args[2], sbs[1], *args[4:]))
    # Doubled B scales must change the product (the batched scales really were used per slice).
    assert not np.array_equal(np.asarray(out[0]), np.asarray(out[1]))


@pytest.mark.parametrize("variant", VARIANTS)
def test_vmap_in_axes_1(variant):
    """The batch dim need not lead: a [M, batch, K], a_scale [M, batch, KB] (and c [M, batch, N])."""
    f = gemm(variant)
    nbatch = 3
    args = operands(variant, a_batch=(nbatch,), seed=3)
    moved = [jnp.moveaxis(x, 0, 1) if j in (0, 1, 4) else x for j, x in enumerate(args)]
    out = jax.jit(jax.vmap(f, in_axes=a_side_axes(variant, 1)))(*moved)
    assert out.shape == (nbatch, M, N)
    bitwise(out, jax.jit(f)(*args))
    # out_axes=1 puts the batch back in the middle
    out1 = jax.jit(jax.vmap(f, in_axes=a_side_axes(variant, 1), out_axes=1))(*moved)
    bitwise(out1, jnp.moveaxis(out, 0, 1))


# ---------------------------------------------------------------------------------------------
# shard_map on 8 host devices
# ---------------------------------------------------------------------------------------------


def mesh8() -> Mesh:
    devices = jax.devices("cpu")
    if len(devices) < 8:
        pytest.fail(f"conftest should give 8 host devices, found {len(devices)}")
    return Mesh(np.array(devices[:8]), ("x",))


def run_shard_map(f, mesh, args, in_specs, out_spec):
    placed = [jax.device_put(x, NamedSharding(mesh, spec)) for x, spec in zip(args, in_specs)]
    sharded = jax.shard_map(f, mesh=mesh, in_specs=tuple(in_specs), out_specs=out_spec)
    return jax.jit(sharded)(*placed)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shard_map_rows(variant):
    """a (and a_scale, c) sharded on M over 8 devices, B replicated."""
    f, mesh = gemm(variant), mesh8()
    args = operands(variant, m=64, seed=4)  # 8 rows per device
    in_specs = [P("x"), P("x"), P(), P()] + ([P("x")] if variant == "1d1d_acc" else [])
    out = run_shard_map(f, mesh, args, in_specs, P("x"))
    assert out.shape == (64, N)
    assert out.sharding.is_equivalent_to(NamedSharding(mesh, P("x")), 2)
    bitwise(out, jax.jit(f)(*args))


@pytest.mark.parametrize("variant", VARIANTS)
def test_shard_map_columns(variant):
    """b sharded on N (128 rows per device, so 128x128 block scales shard on their dim 0), a replicated."""
    f, mesh = gemm(variant), mesh8()
    n = 8 * 128
    args = operands(variant, n=n, seed=5)
    in_specs = [P(), P(), P("x"), P("x")] + ([P(None, "x")] if variant == "1d1d_acc" else [])
    out = run_shard_map(f, mesh, args, in_specs, P(None, "x"))
    assert out.shape == (M, n)
    bitwise(out, jax.jit(f)(*args))


# ---------------------------------------------------------------------------------------------
# The accumulator: D = C + A.B^T, C untouched unless donated
# ---------------------------------------------------------------------------------------------


def np_expected_acc(a, sa, b, sb, c):
    """c + dequant(a) @ dequant(b)^T in float64; sb is block ([N/128, KB]) or per-row ([N, KB])."""
    n, k = b.shape
    a64 = a.astype(np.float64) * np.repeat(sa.astype(np.float64), 128, axis=-1)[..., :k]
    rows = sb if sb.shape[0] == n else np.repeat(sb, 128, axis=0)[:n]
    b64 = b.astype(np.float64) * np.repeat(rows.astype(np.float64), 128, axis=-1)[..., :k]
    prod = a64 @ b64.T
    bound = (np.abs(a64) @ np.abs(b64).T + np.abs(c)) * (k + 4) * 2.0**-24
    return c.astype(np.float64) + prod, bound


@pytest.mark.parametrize("recipe", ["block", "channel"])
def test_accumulate_keeps_callers_c(recipe):
    variant = "1d1d_acc" if recipe == "block" else "1d1d"
    np_args = np_operands(variant, M, N, K, seed=6)
    if recipe == "channel":
        np_args.append(np.random.default_rng(7).standard_normal((M, N)).astype(np.float32))
    a, sa, b, sb, c_np = np_args
    c_host = c_np.copy()
    args = [jnp.asarray(x) for x in np_args]
    f = gemm("1d1d_acc")
    expected, bound = np_expected_acc(a, sa, b, sb, c_np)

    eager = f(*args)
    jitted = jax.jit(f)(*args)
    for out in (eager, jitted):
        assert out.dtype == jnp.float32
        err = np.abs(np.asarray(out, np.float64) - expected)
        assert (err <= bound).all(), f"max err/bound {np.max(err / bound)}"
    bitwise(eager, jitted)
    # Not donated: XLA copies c into the aliased output buffer; the caller's c is unchanged.
    bitwise(args[4], c_host)
    assert not args[4].is_deleted()
    # Donated: same result (c may be consumed).
    c_donated = jnp.asarray(c_host)
    donated = jax.jit(f, donate_argnums=4)(*args[:4], c_donated)
    bitwise(donated, jitted)
    # A second call with the same c gives the same result (c was not accumulated into).
    bitwise(jax.jit(f)(*args), jitted)


@pytest.mark.skipif(not jax_deepgemm.has_cuda_kernels(), reason=NO_KERNELS)
def test_cuda_lowering_aliases_c_to_output():
    """On CUDA the accumulator operand (index 4) is aliased to the kernel's output buffer."""
    f = gemm("1d1d_acc")
    structs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in np_operands("1d1d_acc", M, N, K)]
    exported = jax.export.export(jax.jit(f), platforms=["cuda"], disabled_checks=DISABLED_CHECKS)(*structs)
    text = exported.mlir_module()
    calls = [line for line in text.splitlines() if "stablehlo.custom_call @" + TARGETS["1d1d_acc"] in line]
    assert len(calls) == 1, text
    assert "output_operand_aliases" in calls[0] and "operand_index = 4" in calls[0], calls[0]
    assert "accumulate = 1" in calls[0]


# ---------------------------------------------------------------------------------------------
# jax.export round trip in a fresh process
# ---------------------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import ml_dtypes
    import jax
    import jax_deepgemm  # registers the CUDA targets; the CPU branch needs nothing
    from jax import export

    root = sys.argv[1]
    meta = json.load(open(f"{root}/meta.json"))
    for variant, arrays in meta.items():
        exported = export.deserialize(bytearray(open(f"{root}/{variant}.bin", "rb").read()))
        args = []
        for i, dtype in enumerate(arrays):
            x = np.load(f"{root}/{variant}_in{i}.npy")
            args.append(x.view(np.dtype(getattr(ml_dtypes, dtype, dtype))))
        out = np.asarray(exported.call(*args))
        np.save(f"{root}/{variant}_out.npy", out.view(np.uint8))
    print("ok", jax.default_backend())
    """
)


def _save_array(path, x: np.ndarray) -> str:
    """np.save float8/bfloat16 as raw bytes (np.load cannot restore ml_dtypes); returns the dtype name."""
    x = np.ascontiguousarray(x)
    np.save(path, x.view(np.uint8) if x.dtype.itemsize == 1 and x.dtype != np.uint8 else x)
    return x.dtype.name


def test_cuda_lowering_without_kernels_raises_clearly(monkeypatch):
    """A CPU-only install cannot lower for CUDA: it says so instead of emitting an unknown custom call."""
    from jax_deepgemm import _ffi

    monkeypatch.setattr(_ffi, "_REGISTERED", [])
    f = gemm("1d2d")
    structs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in np_operands("1d2d", M, N, K)]
    with pytest.raises(RuntimeError, match="cannot run on the GPU"):
        jax.export.export(jax.jit(f), platforms=["cuda"], disabled_checks=DISABLED_CHECKS)(*structs)


@pytest.mark.skipif(not jax_deepgemm.has_cuda_kernels(), reason=NO_KERNELS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_export_cuda_branch_calls_versioned_target(variant):
    """A (cpu, cuda) export holds exactly one custom call, to the op's versioned FFI target."""
    f = gemm(variant)
    structs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in np_operands(variant, M, N, K)]
    exported = jax.export.export(jax.jit(f), platforms=("cpu", "cuda"), disabled_checks=DISABLED_CHECKS)(*structs)
    text = exported.mlir_module()
    calls = [line for line in text.splitlines() if "stablehlo.custom_call @jax_deepgemm_" in line]
    assert len(calls) == 1, calls
    assert "stablehlo.custom_call @" + TARGETS[variant] + "(" in calls[0]


def test_export_round_trip(tmp_path):
    """Export for (cpu, cuda), serialize, then deserialize and run in a fresh CPU-only process.

    Without the CUDA kernels built in, only the CPU branch is exported (``EXPORT_PLATFORMS``).
    """
    meta, expected = {}, {}
    for variant in VARIANTS:
        f = gemm(variant)
        np_args = np_operands(variant, M, N, K, seed=8)
        structs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in np_args]
        exported = jax.export.export(jax.jit(f), platforms=EXPORT_PLATFORMS, disabled_checks=DISABLED_CHECKS)(*structs)
        assert exported.platforms == EXPORT_PLATFORMS
        assert exported.out_avals[0].shape == (M, N)
        assert exported.out_avals[0].dtype == out_dtype(variant)
        (tmp_path / f"{variant}.bin").write_bytes(exported.serialize())
        meta[variant] = [_save_array(tmp_path / f"{variant}_in{i}.npy", x) for i, x in enumerate(np_args)]
        in_process = jax.jit(f)(*[jnp.asarray(x) for x in np_args])
        bitwise(exported.call(*np_args), in_process)
        expected[variant] = np.asarray(in_process)
    (tmp_path / "meta.json").write_text(json.dumps(meta))

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one device, as a plain user process
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("ok cpu"), proc.stdout
    for variant in VARIANTS:
        raw = np.load(tmp_path / f"{variant}_out.npy")
        got = raw.view(expected[variant].dtype).reshape(expected[variant].shape)
        bitwise(got, expected[variant])
