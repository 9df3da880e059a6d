#!/usr/bin/env bash
# On the GPU machine, after `STAGES=build bash scripts/gpu_check.sh`: the SASS of one FP8 GEMM
# instance and an ncu profile (per-instruction stall samples) of it on one problem, into $OUT, so the
# hot loop can be read offline (the CPU machines have no cuobjdump/ncu).
#
#   OUT=/tmp/out bash scripts/profile_fp8.sh 4096 4096 7168 256 128 1 2
#   OUT=/tmp/out bash scripts/profile_fp8.sh 64 2112 7168 64 64 1 1 4   (8th: split-K)
#   B_RECIPE=channel OUT=/tmp/out bash scripts/profile_fp8.sh 7168 2048 2048 256 128 1 2   (1D1D, FP32 out)
#
# Writes: sass_<tile>.txt (the instance's SASS), ncu_<tile>.ncu-rep, ncu_<tile>_source.csv.gz,
# ncu_<tile>_details.txt, and prints the top stalled instructions (scripts/ncu_summary.sh).
set -euo pipefail
OUT=${OUT:-/tmp/out}
PY=${PY:-python3}
M=$1 N=$2 K=$3 BM=$4 BN=$5 CM=$6 CN=$7 SPLIT=${8:-0}
SCALE=0; [[ "${B_RECIPE:-block}" == channel ]] && SCALE=1  # BScale::kBlock128 / kPerChannel
export B_RECIPE=${B_RECIPE:-block}
tag="${BM}x${BN}x${CM}x${CN}x${SPLIT}_${B_RECIPE}"
cd "$(dirname "$0")/.."
source scripts/ncu_sections.sh
mkdir -p "$OUT"

pkgdir=$($PY -P -c 'import os, jax_deepgemm as m; print(os.path.dirname(m.__file__))')
so=$(find "$pkgdir" -name '*.so' | head -1)
# Itanium mangling of Sm90Fp8GemmKernel<BM, BN, BScale, CM, CN>.
fn="Sm90Fp8GemmKernelILi${BM}ELi${BN}ELNS_6BScaleE${SCALE}ELi${CM}ELi${CN}E"
cuobjdump -sass "$so" | awk -v fn="$fn" '/Function :/ {keep = index($0, fn) > 0} keep' > "$OUT/sass_$tag.txt"
echo "sass_$tag.txt: $(wc -l < "$OUT/sass_$tag.txt") lines, QGMMA $(grep -c QGMMA "$OUT/sass_$tag.txt" || true)"

ncu $NCU_SECTIONS --import-source no -k "regex:Sm90Fp8GemmKernel" --launch-skip 2 --launch-count 1 -f \
  -o "$OUT/ncu_$tag" $PY -P scripts/profile_one.py "$M" "$N" "$K" "$BM" "$BN" "$CM" "$CN" "$SPLIT" > "$OUT/ncu_$tag.log" 2>&1 \
  || { tail -n 20 "$OUT/ncu_$tag.log"; exit 1; }
bash scripts/ncu_summary.sh "$OUT/ncu_$tag"
