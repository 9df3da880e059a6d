"""scripts/sanitize.sh, the GPU machine's compute-sanitizer stage, run here with a stand-in compute-sanitizer: one
process per (tool, test), a crash of the tool rerun once and reported on its line, an error report failing the
stage. (The real tool runs on the device: benchmarks/RESULTS.md, "Session 30".)"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "sanitize.sh"

# Prints what the tool prints; STUB_MODE=crash dies (SIGSEGV) on its first ragged case, STUB_MODE=errors reports a
# racecheck hazard (exit 99, the script's --error-exitcode) on the indexer case.
STUB = """#!/usr/bin/env bash
echo "========= COMPUTE-SANITIZER"
if [[ "$STUB_MODE" == crash && "$*" == *test_sanitizer_small_ragged* && ! -e "$STUB_DIR/crashed" ]]; then
  touch "$STUB_DIR/crashed"
  kill -SEGV $$
fi
if [[ "$STUB_MODE" == errors && "$*" == *racecheck*test_sanitizer_small_mqa* ]]; then
  echo "1 passed in 0.1s"
  echo "========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)"
  exit 99
fi
echo "1 passed in 0.1s"
echo "========= ERROR SUMMARY: 0 errors"
"""


def _run(tmp_path, mode):
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    stub = stub_dir / "compute-sanitizer"
    stub.write_text(STUB)
    stub.chmod(0o755)
    env = dict(os.environ, PATH=f"{stub_dir}:{os.environ['PATH']}", PY=sys.executable, STUB_MODE=mode,
               STUB_DIR=str(stub_dir), SAN_LOGS=str(tmp_path / "logs"), PER_CASE_S="60")
    res = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(("memcheck ", "racecheck "))]
    return res, lines


@pytest.mark.skipif(not pathlib.Path("/bin/bash").exists(), reason="needs bash")
def test_a_tool_crash_is_rerun_and_reported(tmp_path):
    res, lines = _run(tmp_path, "crash")
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(lines) == 14, res.stdout  # the seven sanitizer_small cases under each tool
    assert all(" rc 0 " in ln for ln in lines), res.stdout
    crashed = [ln for ln in lines if "first run died, rc 139" in ln]
    assert len(crashed) == 1 and crashed[0].startswith("memcheck") and "test_sanitizer_small_ragged" in crashed[0]


@pytest.mark.skipif(not pathlib.Path("/bin/bash").exists(), reason="needs bash")
def test_a_reported_hazard_fails_the_stage(tmp_path):
    res, lines = _run(tmp_path, "errors")
    assert res.returncode == 1, res.stdout + res.stderr
    bad = [ln for ln in lines if " rc 99 " in ln]
    assert len(bad) == 1 and bad[0].startswith("racecheck") and "1 hazard displayed" in bad[0], res.stdout
