"""scripts/prebuilt.sh, which lets a device call import an extension built on the CPU machine instead of building:
it must take one only when it was built from the very ffi/ tree the device has, and must refuse (changing nothing)
anything it cannot load, so that the call falls back to a source build."""

import lzma
import os
import pathlib
import shutil
import site
import subprocess
import sys

import pytest

import jax_deepgemm

REPO = pathlib.Path(__file__).resolve().parents[1]


def _bash(script: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    # As on the GPU machine, where the package is installed for good: `python -S` with the site-packages on PYTHONPATH
    # runs no .pth file, so an editable install's import hook (CI's) cannot shadow what use_prebuilt puts first.
    env = {"PATH": "/usr/bin:/bin", "PY": f"{sys.executable} -S", "PYTHONPATH": os.pathsep.join(site.getsitepackages()),
           "PREBUILT_PKG": str(cwd / "unpacked")}
    return subprocess.run(["bash", "-c", f"source {REPO / 'scripts' / 'prebuilt.sh'}; {script}"], cwd=cwd,
                          capture_output=True, text=True, env=env)


def _tree(tmp_path: pathlib.Path) -> pathlib.Path:
    """A working tree with the repository's ffi/ and jax_deepgemm/ (no extension in it)."""
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "ffi", tree / "ffi")
    shutil.copytree(REPO / "jax_deepgemm", tree / "jax_deepgemm", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return tree


def test_ffi_tree_hash_follows_contents(tmp_path):
    tree = _tree(tmp_path)
    here = _bash("ffi_tree_hash", REPO).stdout.strip()
    assert len(here) == 16 and _bash("ffi_tree_hash", tree).stdout.strip() == here
    header = tree / "ffi" / "kernels" / "tile_scheduler.cuh"
    header.write_text(header.read_text() + "// one more line\n")
    assert _bash("ffi_tree_hash", tree).stdout.strip() != here
    assert _bash(f"ffi_tree_hash {tree}", REPO).stdout.strip() == _bash("ffi_tree_hash", tree).stdout.strip()


def test_refuses_an_archive_of_another_tree(tmp_path):
    tree = _tree(tmp_path)
    (tree / "prebuilt").mkdir()
    (tree / "prebuilt" / "x.so.xz").write_bytes(lzma.compress(b"not a library"))
    (tree / "prebuilt" / "x.ffi-hash").write_text("0123456789abcdef\n")
    out = _bash('PYTHONPATH=/before:$PYTHONPATH; use_prebuilt x; echo "rc=$? PYTHONPATH=$PYTHONPATH"', tree)
    assert "built from another ffi/ tree" in out.stdout
    assert "rc=1 PYTHONPATH=/before:" in out.stdout


def test_refuses_an_archive_that_does_not_load(tmp_path):
    tree = _tree(tmp_path)
    (tree / "prebuilt").mkdir()
    (tree / "prebuilt" / "x.so.xz").write_bytes(lzma.compress(b"not a library"))
    (tree / "prebuilt" / "x.ffi-hash").write_text(_bash("ffi_tree_hash", tree).stdout)
    out = _bash('PYTHONPATH=/before:$PYTHONPATH; use_prebuilt x; echo "rc=$? PYTHONPATH=$PYTHONPATH"', tree)
    assert "does not load here, has no CUDA kernels" in out.stdout
    assert "rc=1 PYTHONPATH=/before:" in out.stdout


def test_no_archive_is_a_quiet_refusal(tmp_path):
    out = _bash('use_prebuilt nothing; echo "rc=$?"', _tree(tmp_path))
    assert out.stdout.strip() == "rc=1"


def test_takes_an_archive_of_this_tree(tmp_path):
    """The positive path, with this environment's own extension standing in for one built on the CPU machine."""
    if not jax_deepgemm.has_cuda_kernels():
        pytest.skip("this build has no CUDA kernels to archive")
    from jax_deepgemm import _ffi
    tree = _tree(tmp_path)
    (tree / "prebuilt").mkdir()
    (tree / "prebuilt" / "x.so.xz").write_bytes(lzma.compress(pathlib.Path(_ffi._C.__file__).read_bytes()))
    (tree / "prebuilt" / "x.ffi-hash").write_text(_bash("ffi_tree_hash", tree).stdout)
    out = _bash('use_prebuilt x; echo "rc=$? PYTHONPATH=$PYTHONPATH"; '
                '$PY -P -c "import jax_deepgemm as m; print(m.__file__, m.has_cuda_kernels())"', tree)
    unpacked = tree / "unpacked" / "x"
    assert f"rc=0 PYTHONPATH={unpacked}{os.pathsep}" in out.stdout, out.stdout + out.stderr
    assert f"{unpacked / 'jax_deepgemm' / '__init__.py'} True" in out.stdout, out.stdout + out.stderr
