#!/usr/bin/env bash
# compute-sanitizer memcheck and racecheck over the GPU tests named *sanitizer_small*, one process per test and
# tool, so that a crash of the tool in one case neither hides the others nor reads as a pass. Prints one line per
# (tool, test): the tool's summary line and exit status. The tool itself sometimes dies (segfault, no report) in
# a case that runs clean the next time: on the H100 of 2026-12-05 in 3 of 4 runs over the seven cases, in a different case
# each time (RESULTS, "Session 30"). Such a case is run once more, with XLA's command buffers (CUDA graphs) off,
# and its line shows the retry's result and that the first run died.
#   bash scripts/sanitize.sh [pytest -k expression]       (after `STAGES=build bash scripts/gpu_check.sh`)
#   SAN_TOOLS=racecheck bash scripts/sanitize.sh "test_fp8_gemm and sanitizer_small"   (one tool, one case)
# Logs go to $SAN_LOGS (default /tmp/sanitizer_logs, not $OUT: the device tool returns only a few files).
set -uo pipefail
PY=${PY:-python3}
SAN_LOGS=${SAN_LOGS:-/tmp/sanitizer_logs}
PER_CASE_S=${PER_CASE_S:-150}
SAN_TOOLS=${SAN_TOOLS:-"memcheck racecheck"}
expr=${1:-sanitizer_small}
cd "$(dirname "$0")/.."
mkdir -p "$SAN_LOGS"
mapfile -t cases < <($PY -P -m pytest tests -q -m gpu -k "$expr" --collect-only -p no:cacheprovider 2>/dev/null \
  | grep '::')
((${#cases[@]})) || { echo "sanitize: no test matches -k '$expr'"; exit 1; }
failed=0
run_case() {  # tool case log [extra XLA flags]
  JAX_DEEPGEMM_REQUIRE_GPU=1 XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_FLAGS="${4:-}" \
    timeout "$PER_CASE_S" compute-sanitizer --tool "$1" --error-exitcode 99 \
    $PY -P -m pytest "$2" -q -p no:cacheprovider > "$3" 2>&1
}
for tool in $SAN_TOOLS; do
  for case in "${cases[@]}"; do
    log="$SAN_LOGS/${tool}_${case//[^A-Za-z0-9_]/_}.log"
    t0=$SECONDS
    run_case "$tool" "$case" "$log"
    rc=$?
    note=""
    if ((rc > 128 && rc != 137)); then  # killed by a signal (139: segfault), not by the timeout
      echo "--- $tool $case died (rc $rc); its log ends:"
      tail -n 8 "$log"
      note=" (retried without command buffers: the first run died, rc $rc)"
      run_case "$tool" "$case" "$log" "--xla_gpu_enable_command_buffer="
      rc=$?
    fi
    summary=$(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1)
    result=$(grep -hE '[0-9]+ (passed|failed)' "$log" | tail -1)
    printf '%-9s rc %-3s %4ss  %-55s %s | %s%s\n' "$tool" "$rc" "$((SECONDS - t0))" "${case#tests/}" \
      "${summary:-no summary}" "${result:-no pytest result}" "$note"
    ((rc == 0)) || failed=1
  done
done
exit $failed
