#!/usr/bin/env bash
# Summarises an ncu report made by scripts/profile_*.sh: writes <base>_source.csv.gz (per-SASS-instruction
# metrics) and <base>_details.txt next to <base>.ncu-rep, prints the key metrics and the top stalled
# instructions (scripts/ncu_top_stalls.py).
#
#   bash scripts/ncu_summary.sh /tmp/out/ncu_256x128x1x2
set -euo pipefail
base=$1
PY=${PY:-python3}
ncu --import "$base.ncu-rep" --page source --csv --print-source sass | gzip > "${base}_source.csv.gz"
ncu --import "$base.ncu-rep" --page details > "${base}_details.txt"
grep -E "Duration|SM Frequency|DRAM Throughput|Tensor|Issue Slots Busy|Executed Ipc A|L2 Cache Throughput|Registers Per|No Eligible|Active Warps Per|Achieved Occupancy|dram__bytes|lts__t_bytes" \
  "${base}_details.txt" | head -n 24 || true
zcat "${base}_source.csv.gz" > /tmp/ncu_source.csv
$PY "$(dirname "$0")/ncu_top_stalls.py" /tmp/ncu_source.csv 25
