#!/usr/bin/env bash
# SASS of one translation unit on a machine without a GPU (the CPU machines have nvcc but no cuobjdump):
# compiles the TU to an sm_90a cubin and disassembles it with nvdisasm from the nvidia-cuda-nvdisasm wheel
# (downloaded into /tmp once: not into .whl/, which travels to the GPU machine). Optionally keeps one kernel (a substring of its mangled name) and prints
# its instruction histogram, for counting what a loop costs before a GPU run.
#
#   bash scripts/sass_local.sh ffi/paged_mqa_logits.cu PagedMqaLogitsWgmmaKernelILi128ELi64ELi64ELb1E > /tmp/k.sass
# An FP8 GEMM instance list of ffi/instances/fp8_gemm_instances.h (the translation unit CMake generates for it) instead
# of a TU: `fp8:LIST[:SCALE]` (SCALE kBlock128 by default, kPerChannel for the 1D1D lists), e.g. with the K-loop
# statistics of scripts/sass_kloop.py:
#   bash scripts/sass_local.sh fp8:JDG_FP8_1D2D_BM256 > /tmp/k.sass && python3 scripts/sass_kloop.py /tmp/k.sass
set -euo pipefail
cd "$(dirname "$0")/.."
TU=$1
FN=${2:-}
if [[ $TU == fp8:* ]]; then
  IFS=: read -r _ list scale <<< "$TU"
  TU=/tmp/jdg_$(echo "$list" | tr '[:upper:]' '[:lower:]').cu
  sed -e "s/@JDG_LIST@/$list/" -e "s/@JDG_SCALE@/${scale:-kBlock128}/" ffi/instances/fp8_gemm_instance.cu.in > "$TU"
fi
PY=${PY:-python3}
tools=/tmp/jdg_nvdisasm
if [[ ! -x $tools/nvidia/cu13/bin/nvdisasm ]]; then
  ls /tmp/nvidia_cuda_nvdisasm-*.whl > /dev/null 2>&1 \
    || $PY -m pip download -q --no-deps nvidia-cuda-nvdisasm -d /tmp >&2
  $PY -m zipfile -e /tmp/nvidia_cuda_nvdisasm-*.whl $tools
  chmod +x $tools/nvidia/cu13/bin/nvdisasm
fi
# CUTLASS headers: the installed nvidia-cutlass package, else the wheel in .whl/ (as scripts/gpu_check.sh)
if ! cutlass=$($PY -c 'import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), "source", "include"))' 2> /dev/null); then
  [[ -d /tmp/jdg_cutlass/cutlass_library ]] || $PY -m zipfile -e .whl/nvidia_cutlass-*.whl /tmp/jdg_cutlass
  cutlass=/tmp/jdg_cutlass/cutlass_library/source/include
fi
ffi_include=$($PY -c 'import jax.ffi; print(jax.ffi.include_dir())')
cubin=/tmp/jdg_$(basename "$TU" .cu).cubin
${NVCC:-/usr/local/cuda/bin/nvcc} -O3 -std=c++20 -arch=sm_90a --expt-relaxed-constexpr -cubin -I ffi \
  -isystem "$cutlass" -isystem "$ffi_include" "$TU" -o "$cubin"
$tools/nvidia/cu13/bin/nvdisasm -c "$cubin" > "${cubin%.cubin}.sass"
if [[ -z $FN ]]; then
  cat "${cubin%.cubin}.sass"
  exit 0
fi
awk -v fn="$FN" '/^\.text\./ {keep = index($0, fn) > 0; next} keep' "${cubin%.cubin}.sass" \
  | grep -E '^\s+/\*[0-9a-f]+\*/' | sed -E 's/^\s+\/\*[0-9a-f]+\*\/\s+//; s/\s*\/\*.*//; s/ ;$//'
awk -v fn="$FN" '/^\.text\./ {keep = index($0, fn) > 0; next} keep' "${cubin%.cubin}.sass" \
  | grep -oE '^\s+/\*[0-9a-f]+\*/\s+(@!?U?P[0-9T]+\s+)?[A-Z0-9_]+' | awk '{print $NF}' | sort | uniq -c | sort -rn \
  | head -25 | awk '{printf "%s %s; ", $2, $1} END {print ""}' >&2
