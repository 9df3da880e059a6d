#!/usr/bin/env bash
# Compile-checks kernel variants on this machine (no GPU needed): each benchmarks/variants/NAME.patch is applied to
# a copy of the tree and built with the project's own CMake (the same flags, ptxas --warn-on-spills), then its
# ptxas warnings and spill lines are reported. Run it after main's ffi/ changed and before a device call, so that a
# stale patch costs CPU minutes here instead of a build on the GPU machine. ~2-4 min per variant on 2 cores.
#   PY=.venv/bin/python bash scripts/check_variants.sh base paged-head-mma k-grouped-two-sets k-loop-head+hold-stages-d
# `base` builds the tree as it is: main's own warnings (if any) are then told apart from a variant's.
# PY: a Python 3.12 with jax, nanobind, nvidia-cutlass and cmake >= 3.26 installed (pip); CMAKE: that cmake (default:
# the one next to PY, else the one on PATH).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/variant_patches.sh
PY=${PY:-python3}
py_bin=$(cd "$(dirname "$(command -v "$PY")")" && pwd)
PY=$py_bin/$(basename "$PY")  # absolute, not resolved: a virtualenv's python must stay the venv's
CMAKE=${CMAKE:-$([[ -x $py_bin/cmake ]] && echo "$py_bin/cmake" || echo cmake)}
JOBS=${JOBS:-$(nproc)}
status=0
for name in "$@"; do
  variant_tree "$name" || { status=1; continue; }  # NAME1+NAME2: applied in order
  log=$tree/build.log
  t0=$SECONDS
  if "$CMAKE" -S "$tree" -B "$tree/build" -DPython_EXECUTABLE="$PY" -DJAX_DEEPGEMM_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="${CUDACXX:-/usr/local/cuda/bin/nvcc}" > "$log" 2>&1 &&
    "$CMAKE" --build "$tree/build" -j "$JOBS" >> "$log" 2>&1; then
    warnings=$(grep -c "ptxas.*warning" "$log")
    spills=$(grep -cE "[1-9][0-9]* bytes spill" "$log")
    echo "$name: built in $((SECONDS - t0)) s; $warnings ptxas warning line(s), $spills line(s) with spills"
    ((warnings + spills == 0)) || { grep -E "ptxas.*warning|[1-9][0-9]* bytes spill" "$log" | head -5; status=1; }
  else
    echo "$name: build failed"; grep -E "error" "$log" | head -10; status=1
  fi
  rm -rf "$tree"
done
exit $status
