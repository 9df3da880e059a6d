#!/usr/bin/env bash
# On the GPU machine, after `STAGES=build bash scripts/gpu_check.sh`: an ncu profile (per-instruction
# stall samples) of one WGMMA MQA-logits kernel on one problem, and the SASS of the profiled kernel
# family, into $OUT (gzipped), to be read offline (the CPU machines have no cuobjdump/ncu).
#
#   OUT=/tmp/out bash scripts/profile_mqa.sh ranged 2048 8192 64 32 [cp] [fp4]
#   OUT=/tmp/out bash scripts/profile_mqa.sh paged 256 1 64 8192 [fp4] [bf16]
set -euo pipefail
OUT=${OUT:-/tmp/out}
PY=${PY:-python3}
MODE=$1
shift
tag="mqa_${MODE}_$(IFS=_; echo "$*")"
kernel=$([[ $MODE == paged ]] && echo PagedMqaLogitsWgmmaKernel || echo MqaLogitsWgmmaKernel)
cd "$(dirname "$0")/.."
source scripts/ncu_sections.sh
mkdir -p "$OUT"
pkgdir=$($PY -P -c 'import os, jax_deepgemm as m; print(os.path.dirname(m.__file__))')
so=$(find "$pkgdir" -name '*.so' | head -1)
cuobjdump -sass "$so" | awk -v fn="$kernel" -v mode="$MODE" \
  '/Function :/ {keep = index($0, fn) > 0 && (mode == "paged" || index($0, "Paged") == 0)} keep' \
  | gzip > "$OUT/sass_$tag.txt.gz"
ncu $NCU_SECTIONS --import-source no -k "regex:^.*${kernel}" --launch-skip 2 --launch-count 1 -f \
  -o "$OUT/ncu_$tag" $PY -P scripts/profile_mqa_one.py "$MODE" "$@" > "$OUT/ncu_$tag.log" 2>&1 \
  || { tail -n 20 "$OUT/ncu_$tag.log"; exit 1; }
echo "== $tag"
bash scripts/ncu_summary.sh "$OUT/ncu_$tag"
rm -f "$OUT/ncu_$tag.ncu-rep"
