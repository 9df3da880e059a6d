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
# Every kernel of one call after warm-up (the scale multiply may be a separate fusion; the GEMM is the longest),
# bracketed by cuProfilerStart/Stop so that the autotuner's compile-time launches are left out.
OP=${OP:-xla_fp8_dot} PROFILE_RANGE=1 ncu --set full --import-source no --profile-from-start off -f \
  -o "$OUT/ncu_$tag" $PY -P scripts/profile_one.py "$M" "$N" "$K" > "$OUT/ncu_$tag.log" 2>&1 \
  || { tail -n 20 "$OUT/ncu_$tag.log"; exit 1; }
ncu --import "$OUT/ncu_$tag.ncu-rep" --page details > "$OUT/ncu_${tag}_details.txt"
grep -E '^  [^ ].*\(|Duration|DRAM Throughput|L2 Cache Throughput|Grid Size|Block Size|Cluster Size|Registers Per|Dynamic Shared|Waves Per SM|Compute \(SM\) Throughput' \
  "$OUT/ncu_${tag}_details.txt" | head -60
