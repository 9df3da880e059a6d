#!/usr/bin/env bash
# One device call for the small-M producer experiment of session 47 (RESULTS "Session 47"), in priority order:
# (1) A/B of base against warp-producers (and two-producers when BUDGET >= 560) with scripts/fp8_probe.py --small-m;
# the faster variant on the two 2112-wide rows, if it beats base by > 0.2 us, runs the FP8 GEMM and M-grouped GPU
# files while (2) base runs the K-grouped and autodiff GPU files and both examples on the GPU; (3) the
# debug-fp8-stamps diagnostic on five small-M shapes (scripts/fp8_stamps.py); (4) the rest of the small-M bench (H100
# only). Prints a summary last. BUDGET: the seconds the command may take (default 585).
# Before the call, on the CPU machine: `bash scripts/extract_variants.sh two-producers warp-producers
# debug-fp8-stamps` and `PY=... bash scripts/prebuild_variants.sh base two-producers warp-producers debug-fp8-stamps`;
# carry [".whl", "prebuilt"] (variants/ is untracked and travels).
#   BUDGET=585 bash scripts/producer_ab_call.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$SECONDS
left() { echo $((${BUDGET:-585} - (SECONDS - T0))); }
source scripts/prebuilt.sh
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader | tee "$OUT/device.txt"
outer=${PYTHONPATH:-}
saved=$(mktemp -d); cp -rp ffi "$saved"/
echo "=== A/B [$((SECONDS - T0)) s]"
ab_variants="variants/two-producers variants/warp-producers"
(( ${BUDGET:-585} < 560 )) && ab_variants=variants/warp-producers  # less device time: the leaner form only
ab_t=$(( $(left) - 200 )); (( ab_t > 330 )) && ab_t=330; (( ab_t < 90 )) && ab_t=90
PROBE_ARGS="--small-m" PROBE_TIMEOUT=100 timeout $ab_t \
  bash scripts/ab_fp8_kernel.sh base $ab_variants 2>&1 | tee "$OUT/ab.txt" | tail -3
rm -rf ffi && cp -rp "$saved/ffi" ffi  # (in case the timeout cut the script before its own restore)
# The faster variant on the two 2112-wide rows is tested (the FP8 GEMM and M-grouped GPU files) if it beats base.
sums=$(awk '$3 ~ /^(64|128)x2112x7168$/ {s[$1] += $6} END {for (t in s) print t, s[t]}' "$OUT/probe.txt" | sort -k2 -n)
echo "2112-row sums: $(echo $sums)"
best=$(echo "$sums" | grep -v "^base " | head -1 | cut -d' ' -f1)
base_sum=$(echo "$sums" | awk '$1 == "base" {print $2}')
best_sum=$(echo "$sums" | awk -v b="$best" '$1 == b {print $2}')
export PYTHONPATH=$outer
echo "=== base tests (background) [$((SECONDS - T0)) s]"
T=$(( $(left) - 15 )); (( T > 230 )) && T=230
(
  use_prebuilt base > /dev/null || exit 1
  for f in quickstart moe_ffn; do
    ( XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_PLATFORMS=cuda timeout -k 5 $T python3 -P examples/$f.py > "$OUT/ex_$f.txt" 2>&1; \
      echo "rc $?" >> "$OUT/ex_$f.txt" ) &
  done
  for f in k_grouped_gemm autodiff; do
    ( XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_DEEPGEMM_REQUIRE_GPU=1 timeout -k 5 $T python3 -P -m pytest -q -m gpu \
        -p no:cacheprovider tests/test_$f.py -k "not sanitizer" > "$OUT/t_$f.txt" 2>&1; echo "rc $?" >> "$OUT/t_$f.txt" ) &
  done
  wait
) &
base_tests=$!
if [[ -n $best && -n $base_sum ]] && awk -v a="$best_sum" -v b="$base_sum" 'BEGIN {exit !(a < b - 0.2)}'; then
  echo "=== tests of $best [$((SECONDS - T0)) s]"
  PROBE=/dev/null TEST_TIMEOUT=$((T - 10)) TEST_TAGS="$best" \
    TESTS="tests/test_fp8_gemm.py -k 'not sanitizer'|tests/test_m_grouped_gemm.py -k 'not sanitizer'" \
    timeout $T bash scripts/ab_fp8_kernel.sh variants/$best 2>&1 | grep "tests run" | tee -a "$OUT/ab.txt"
fi
wait $base_tests
export PYTHONPATH=$outer
use_prebuilt base || exit 1
grep -h "^FAILED\|Error" "$OUT"/t_*.txt | head -20
if (( $(left) > 50 )); then
echo "=== stamps [$((SECONDS - T0)) s]"
cp variants/debug-fp8-stamps/ffi/kernels/sm90_fp8_gemm.cuh ffi/kernels/
if use_prebuilt debug-fp8-stamps; then
  timeout $(( $(left) - 5 )) python3 -P scripts/fp8_stamps.py 64x2112x7168 128x2112x7168 64x4096x7168 64x7168x2048 128x4096x7168 2>&1 \
    | grep -v "^WARNING\|^I0000\|^E0000" | tee "$OUT/stamps.txt"
fi
rm -rf ffi && cp -rp "$saved/ffi" ffi
export PYTHONPATH=$outer
fi
echo "=== bench [$((SECONDS - T0)) s]"
if grep -q H100 "$OUT/device.txt" && (( $(left) > 60 )); then
  timeout $(( $(left) - 5 )) python3 -P -m jax_deepgemm.bench --json "$OUT/bench_small_m_rest.json" \
    --filter '^128x2112x' '^128x4096x' '^64x7168x2048' '^128x7168x' > "$OUT/bench.txt" 2>&1
  grep -v "^WARNING\|^I0000\|^E0000" "$OUT/bench.txt" | tail -12
fi
echo "=== summary [$((SECONDS - T0)) s]"
cat "$OUT/stamps.txt" 2>/dev/null | head -60
cat "$OUT/probe.txt" 2>/dev/null
echo "2112-row sums: $(echo $sums)"; grep "tests run" "$OUT/ab.txt"
for f in quickstart moe_ffn; do echo "example $f: $(grep -i "calc_diff" "$OUT/ex_$f.txt" | tail -2 | tr '\n' ' ') $(tail -1 "$OUT/ex_$f.txt")"; done
for f in k_grouped_gemm autodiff; do echo "$f: $(grep -E "passed|failed|error" "$OUT/t_$f.txt" | tail -1) $(tail -1 "$OUT/t_$f.txt")"; done
