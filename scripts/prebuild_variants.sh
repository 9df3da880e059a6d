#!/usr/bin/env bash
# Builds, on this (CPU) machine, the extension module of each named tree for the GPU machine: `base` (the tree as it
# is) or a variant NAME / NAME1+NAME2 of benchmarks/variants/ (patches applied in order, as
# scripts/extract_variants.sh does), into prebuilt/TAG.so.xz (stripped, xz: ~0.9 MB; the device call's carry holds
# 64 MiB) and prebuilt/TAG.ffi-hash. Carry `prebuilt` with `.whl`; scripts/ab_fp8_kernel.sh and scripts/gpu_check.sh
# then skip the build wherever the hash matches (scripts/prebuilt.sh). ~2 min per tree on 2 cores.
#   PY=/tmp/venv0112/bin/python bash scripts/prebuild_variants.sh base k-loop-head k-loop-head+hold-stages-d
# PY: a Python 3.12 with the GPU machine's jax (0.11.2: its FFI headers), nanobind 3.1.0, nvidia-cutlass, cmake and
# ninja, e.g.
#   python3.12 -m venv /tmp/venv0112 && /tmp/venv0112/bin/pip install jax==0.11.2 jaxlib==0.11.2 nanobind==3.1.0 \
#     cmake ninja .whl/nvidia_cutlass-*.whl
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/variant_patches.sh
source scripts/prebuilt.sh
PY=${PY:-/tmp/venv0112/bin/python}
py_bin=$(cd "$(dirname "$(command -v "$PY")")" && pwd)
PY=$py_bin/$(basename "$PY")
CMAKE=${CMAKE:-$([[ -x $py_bin/cmake ]] && echo "$py_bin/cmake" || echo cmake)}
if [[ $($PY -c 'import jax; print(jax.__version__)' 2> /dev/null) != 0.11.2 ]]; then
  echo "PY ($PY) must have jax 0.11.2, the GPU machine's (its FFI headers)" >&2
  exit 1
fi
mkdir -p prebuilt
status=0
for name in "$@"; do
  variant_tree "$name" || { status=1; continue; }  # NAME1+NAME2: applied in order
  tag=${name//+/_and_}
  t0=$SECONDS
  if "$CMAKE" -S "$tree" -B "$tree/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$PY" \
      -DJAX_DEEPGEMM_CUDA=ON -DCMAKE_CUDA_COMPILER="${CUDACXX:-/usr/local/cuda/bin/nvcc}" > "$tree/build.log" 2>&1 &&
      "$CMAKE" --build "$tree/build" -j "$(nproc)" >> "$tree/build.log" 2>&1; then
    so=$(ls "$tree"/build/_C*.so)
    strip --strip-unneeded "$so"
    xz -9 -c "$so" > "prebuilt/$tag.so.xz"
    ffi_tree_hash "$tree" > "prebuilt/$tag.ffi-hash"
    # (The device no longer builds it, so its ptxas report is read here, as scripts/check_variants.sh does.)
    echo "$name: prebuilt/$tag.so.xz ($(du -k "prebuilt/$tag.so.xz" | cut -f1) KB) in $((SECONDS - t0)) s;" \
      "$(grep -c "ptxas.*warning" "$tree/build.log") ptxas warning line(s)," \
      "$(grep -cE "[1-9][0-9]* bytes spill" "$tree/build.log") line(s) with spills"
  else
    echo "$name: build failed"; grep -E "error" "$tree/build.log" | head -10; status=1
  fi
  rm -rf "$tree"
done
exit $status
