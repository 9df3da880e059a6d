#!/usr/bin/env bash
# On the GPU machine: A/B of FP8 kernel variants in one call. A VARIANT is `base` (the checked-out sources), a
# replacement for ffi/kernels/sm90_fp8_gemm.cuh, a folder of replacements for files of ffi/kernels/ (same
# names), or a folder holding an `ffi/` tree of replacements anywhere under ffi/ (headers, heuristics). Write
# them from branches here with `bash scripts/extract_variants.sh NAME...` (untracked files travel to the device).
# Per variant: rebuild (STAGES=build scripts/gpu_check.sh), the probe, then optionally a pytest selection REPEAT
# times (a race shows as an intermittent failure). The probe is PROBE (default
# scripts/fp8_probe.py; scripts/mqa_probe.py for the indexer kernels). Only the files that differ from the tree
# before are rewritten (fresh mtimes), so the persistent build directory recompiles just the translation units that
# include them: ~100 s for the first build and for an FP8 kernel variant, and (expected, not yet timed) ~30 s for an
# indexer one. The sources are restored between variants and at the end (files only a variant has are deleted); the probe lines
# of all variants are appended to $OUT/probe.txt and printed last.
#
#   TESTS="tests/test_fp8_gemm.py -k accumulate_into_c" REPEAT=5 bash scripts/ab_fp8_kernel.sh base variants/x
#   PROBE=scripts/mqa_probe.py TESTS="tests/test_mqa_logits.py" TEST_TAGS=y bash scripts/ab_fp8_kernel.sh base variants/y
# TESTS may hold several '|'-separated pytest selections: they run as concurrent processes (compilation is most of a
# GPU test's time, and the GPU machine has 16 cores). TEST_TAGS: a regex of the variant tags that run TESTS (default:
# all); PROBE_ARGS: extra probe arguments, split as a shell splits them (quotes group, as in TESTS).
# TEST_TIMEOUT / PROBE_TIMEOUT (seconds, default 300 / 240): a variant whose kernel hangs (a barrier mismatch) is
# killed and reported instead of running the device call to its limit.
# A variant prebuilt on the CPU machine (scripts/prebuild_variants.sh; carry `prebuilt`) from the same ffi/ tree is
# not built here: its extension is unpacked and imported instead (scripts/prebuilt.sh).
set -uo pipefail
OUT=${OUT:-/tmp/out}
TESTS=${TESTS:-}
REPEAT=${REPEAT:-1}
PY=${PY:-python3}
PROBE=${PROBE:-scripts/fp8_probe.py}
PROBE_ARGS=${PROBE_ARGS:-}
TEST_TAGS=${TEST_TAGS:-.}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
PROBE_TIMEOUT=${PROBE_TIMEOUT:-240}
cd "$(dirname "$0")/.."
source scripts/prebuilt.sh
mkdir -p "$OUT"
outer_pythonpath=${PYTHONPATH:-}
kernels=ffi/kernels
saved=$(mktemp -d)
cp -rp ffi "$saved"/
# Copies each file of tree $1 over its namesake under $2 only where the contents differ: the copy gets a fresh
# mtime (make rebuilds what includes it), an unchanged file keeps its old one (nothing to rebuild).
sync_files() {
  local src=$1 dst=$2 f
  while IFS= read -r -d '' f; do
    f=${f#"$src"/}
    cmp -s "$src/$f" "$dst/$f" || { mkdir -p "$(dirname "$dst/$f")" && cp "$src/$f" "$dst/$f"; }
  done < <(find "$src" -type f -print0)
}
# Back to the tree as it was, including deleting the files only a variant added (a new header left behind would
# change the ffi/ tree hash, and a later `base` would miss its prebuilt extension: session 35 rebuilt it, 69 s).
restore_ffi() {
  sync_files "$saved"/ffi ffi
  local f
  while IFS= read -r -d '' f; do
    [[ -e $saved/$f ]] || rm -f "$f"
  done < <(find ffi -type f -print0)
}
trap restore_ffi EXIT
for variant in "$@"; do
  tag=$(basename "${variant%.cuh}")
  restore_ffi
  if [[ -d $variant/ffi ]]; then
    sync_files "$variant"/ffi ffi
  elif [[ -d $variant ]]; then
    sync_files "$variant" "$kernels"
  elif [[ $variant != base ]]; then
    cmp -s "$variant" "$kernels/sm90_fp8_gemm.cuh" || cp "$variant" "$kernels/sm90_fp8_gemm.cuh"
  fi
  # (gpu_check.sh's build stage touches what differs from the last build: a warm machine's stale objects.)
  t0=$SECONDS
  export PYTHONPATH=$outer_pythonpath
  if use_prebuilt "$tag"; then
    echo "$tag: prebuilt/$tag.so.xz loaded in $((SECONDS - t0)) s (built on the CPU machine from this ffi/ tree)"
  else
    if ! JDG_NO_PREBUILT=1 STAGES=build bash scripts/gpu_check.sh > "$OUT/build_$tag.log" 2>&1; then
      echo "$tag: build failed"; tail -n 20 "$OUT/build_$tag.log"; continue
    fi
    echo "$tag: built in $((SECONDS - t0)) s; $(grep -cE '[1-9][0-9]* bytes spill' "$OUT/ptxas.txt") ptxas lines with spills"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  # The probe before the tests: a call cut short by the device budget still has the variant's times (session 36
  # split its last call in two for that); a hang is caught by either timeout.
  eval "probe_args=($PROBE_ARGS)"
  timeout -k 10 "$PROBE_TIMEOUT" $PY -P -u "$PROBE" "$tag" --out "$OUT/probe.txt" "${probe_args[@]}" 2>&1 | grep -v Warning
  ((PIPESTATUS[0] == 124 || PIPESTATUS[0] == 137)) && echo "$tag: probe killed after ${PROBE_TIMEOUT} s (hang?)"
  if [[ -n $TESTS && $tag =~ $TEST_TAGS ]]; then
    IFS='|' read -r -a test_groups <<< "$TESTS"
    for ((i = 1; i <= REPEAT; i++)); do
      pids=()
      for g in "${!test_groups[@]}"; do
        eval "test_args=(${test_groups[g]})"
        log=$OUT/tests_${tag}_${i}_$g.log
        # Concurrent groups share the GPU: none may take 75 % of its memory up front.
        XLA_PYTHON_CLIENT_PREALLOCATE=$( ((${#test_groups[@]} > 1)) && echo false || echo true) \
          JAX_DEEPGEMM_REQUIRE_GPU=1 timeout -k 10 "$TEST_TIMEOUT" $PY -P -m pytest -q -m gpu -p no:cacheprovider \
          "${test_args[@]}" > "$log" 2>&1 &
        pids+=($!)
      done
      for g in "${!test_groups[@]}"; do
        wait "${pids[g]}"
        rc=$?
        log=$OUT/tests_${tag}_${i}_$g.log
        if ((rc == 124 || rc == 137)); then
          echo "$tag tests run $i group $g: killed after ${TEST_TIMEOUT} s (hang?); last lines:"; tail -n 5 "$log"
        else
          tail -n 1 "$log" | sed "s/^/$tag tests run $i group $g: /"
        fi
      done
    done
  fi
done
echo; cat "$OUT/probe.txt"
