"""Test setup: 8 host devices for multi-device logic on CPU, and the `gpu` marker.

GPU tests (marked `gpu`) run only where an sm_90 GPU and the CUDA kernels are present; elsewhere they
are skipped, unless JAX_DEEPGEMM_REQUIRE_GPU=1, which turns the skip into a failure (the device run
uses it so that a skipped GPU test can never pass for a run one).
"""

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# The GPU tests compile XLA dots (references) at many shapes: autotuning each would cost seconds
# per shape and decides nothing about correctness.
if "xla_gpu_autotune_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] += " --xla_gpu_autotune_level=0"

import functools

import jax
import pytest

import jax_deepgemm


@functools.cache
def hopper_gpu_reason() -> str | None:
    """None when the GPU tests can run here, else why not."""
    if not jax_deepgemm.has_cuda_kernels():
        return "jax_deepgemm was built without CUDA kernels"
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        return "no GPU visible to JAX"
    cc = getattr(gpus[0], "compute_capability", "")
    if not str(cc).startswith("9."):
        return f"needs an sm_90 GPU, found compute capability {cc!r}"
    return None


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is None:
        return
    reason = hopper_gpu_reason()
    if reason is None:
        return
    if os.environ.get("JAX_DEEPGEMM_REQUIRE_GPU") == "1":
        pytest.fail(f"GPU test required (JAX_DEEPGEMM_REQUIRE_GPU=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture
def on_cpu():
    """CPU tests exercise the jnp reference path: keep them on the host even where a GPU is the
    default backend (the device run executes the whole suite there)."""
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError as e:  # JAX_PLATFORMS without cpu
        pytest.skip(f"no CPU backend: {e}")
    with jax.default_device(cpu):
        yield
