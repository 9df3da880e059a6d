#!/usr/bin/env bash
# On the GPU machine: an ncu profile of XLA's per-tensor FP8 GEMM (cuBLASLt, the benchmark's baseline) at one
# shape, to set beside ours (scripts/profile_fp8.sh): its kernel, grid, cluster, shared memory and DRAM throughput.
#
#   OUT=/tmp/out bash scripts/profile_xla_fp8.sh 64 2112 7168
#
# Writes ncu_xla_<M>x<N>x<K>.ncu-rep and _details.txt into $OUT and prints the headline metrics.
set -euo pipefail
OUT=${OUT:-/tmp/out}
PY=${PY:-python3}
M=$1 N=$2 K=$3
tag="xla_${M}x${N}x${K}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
# Every kernel of the call (the scale multiply may be a separate fusion); the GEMM is the longest.
OP=${OP:-xla_fp8_dot} ncu --set full --import-source no --launch-skip 4 --launch-count 4 -f -o "$OUT/ncu_$tag" \
  $PY -P scripts/profile_one.py "$M" "$N" "$K" > "$OUT/ncu_$tag.log" 2>&1 || { tail -n 20 "$OUT/ncu_$tag.log"; exit 1; }
ncu --import "$OUT/ncu_$tag.ncu-rep" --page details > "$OUT/ncu_${tag}_details.txt"
grep -E '^  [^ ].*\(|Duration|DRAM Throughput|L2 Cache Throughput|Grid Size|Block Size|Cluster Size|Registers Per|Dynamic Shared|Waves Per SM|Compute \(SM\) Throughput' \
  "$OUT/ncu_${tag}_details.txt" | head -60
