#!/usr/bin/env bash
# On the GPU machine, after `STAGES=build bash scripts/gpu_check.sh`: the SASS of one ranged FP8
# MQA-logits instance and an ncu profile (per-instruction stall samples) of it on one problem, into
# $OUT (gzipped), to be read offline (the CPU machines have no cuobjdump/ncu).
#
#   OUT=/tmp/out bash scripts/profile_mqa.sh 2048 8192 64 32 [cp]
set -euo pipefail
OUT=${OUT:-/tmp/out}
PY=${PY:-python3}
S=$1 SKV=$2 H=$3 D=$4 CP=${5:-}
tag="mqa_${S}x${SKV}_h${H}_d${D}${CP:+_cp}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
pkgdir=$($PY -P -c 'import os, jax_deepgemm as m; print(os.path.dirname(m.__file__))')
so=$(find "$pkgdir" -name '*.so' | head -1)
fn="MqaLogitsWgmmaKernelILi${D}ELi${H}E"  # Itanium mangling of MqaLogitsWgmmaKernel<D, H>
cuobjdump -sass "$so" | awk -v fn="$fn" '/Function :/ {keep = index($0, fn) > 0 && index($0, "Paged") == 0} keep' \
  | gzip > "$OUT/sass_$tag.txt.gz"
ncu --set full --import-source no -k "regex:^.*MqaLogitsWgmmaKernel" --launch-skip 2 --launch-count 1 -f \
  -o "$OUT/ncu_$tag" $PY -P scripts/profile_mqa_one.py "$S" "$SKV" "$H" "$D" $CP > "$OUT/ncu_$tag.log" 2>&1 \
  || { tail -n 20 "$OUT/ncu_$tag.log"; exit 1; }
ncu --import "$OUT/ncu_$tag.ncu-rep" --page source --csv --print-source sass | gzip > "$OUT/ncu_${tag}_source.csv.gz"
ncu --import "$OUT/ncu_$tag.ncu-rep" --page details > "$OUT/ncu_${tag}_details.txt"
grep -E "Duration|SM Frequency|Tensor|Issue Slots Busy|Executed Ipc|L2 Cache Throughput|Registers Per|Achieved Occupancy" \
  "$OUT/ncu_${tag}_details.txt" | head -n 20 || true
zcat "$OUT/ncu_${tag}_source.csv.gz" > /tmp/src.csv
$PY scripts/ncu_top_stalls.py /tmp/src.csv 30
