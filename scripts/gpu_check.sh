#!/usr/bin/env bash
# The one command run on the GPU machine (H100, no network): build, test, benchmark, summarise.
#
#   bash scripts/gpu_check.sh                      # all stages
#   STAGES="build bench" bash scripts/gpu_check.sh # quick rebuild + benchmark
#   STAGES="build sanitize" bash scripts/gpu_check.sh  # compute-sanitizer memcheck + racecheck (scripts/sanitize.sh)
#   BENCH_ARGS="--filter ^4096x" bash scripts/gpu_check.sh
#   TEST_ARGS="tests/test_bf16_gemm.py -k 'tn or nt'" bash scripts/gpu_check.sh  # a subset of the GPU tests
#
# The device tool allows 10 minutes per command: build + GPU tests take ~3 min, and the benchmark
# ~40 s per shape with its baselines, so run the 18 shapes in two calls (--filter '^4096x', then
# '^(64|128)x') with STAGES="build bench".
#   STAGES="build bench" BENCH_ARGS="--ops ours --baselines-from results/bench_h100.json" \
#     bash scripts/gpu_check.sh                    # kernel iteration: time ours only, reuse baselines
#
# Budget: the device tool allows 600 s per call and the machine is bare each time (so every call
# rebuilds). The full bench (18 shapes x ours + 3 baselines, loop and profiler timing) takes
# several minutes on its own (XLA autotunes each baseline GEMM); time the baselines once, keep
# that JSON in the repo, and use --ops ours --baselines-from for kernel iterations.
#
# Run from the repository root. Needs the nvidia-cutlass wheel in .whl/ (carried along: the
# machine has no registry). Logs and results go to $OUT (default /tmp/out); the summary table is
# printed last. Stages: build test sanitize bench (sanitize runs only with SANITIZE=1).
# See /work/shared/device.md for why the system compilers and --no-build-isolation are used.
set -euo pipefail

OUT=${OUT:-/tmp/out}
STAGES=${STAGES:-"build test bench"}
SANITIZE=${SANITIZE:-0}
BENCH_ARGS=${BENCH_ARGS:-}
TEST_ARGS=${TEST_ARGS:-tests}  # pytest arguments of the test stage, shell-quoted (all GPU tests by default)
TEST_TIMEOUT=${TEST_TIMEOUT:-}  # seconds: cut the test stage short (the bench still runs)
PY=${PY:-python3}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

has_stage() { [[ " $STAGES " == *" $1 "* ]]; }
log() { printf '\n=== %s  [%s]\n' "$*" "$(date -u +%H:%M:%S)"; }
SUMMARY=()
add_summary() { SUMMARY+=("$*"); }

log "device"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,memory.used \
  --format=csv,noheader 2>&1 | tee "$OUT/device.txt" || true
$PY -c 'import jax; print("jax", jax.__version__, jax.devices())' 2>&1 | tee -a "$OUT/device.txt" || true

# ---------------------------------------------------------------------------------------------
# CUTLASS headers from the carried wheel (pure Python; the headers sit in cutlass_library)
# ---------------------------------------------------------------------------------------------
shopt -s nullglob
wheels=(.whl/nvidia_cutlass-*.whl)
shopt -u nullglob
if ((${#wheels[@]})); then
  $PY -m pip install -q --no-deps --target /tmp/site "${wheels[@]}" > "$OUT/pip_cutlass.log" 2>&1 \
    || { tail -n 20 "$OUT/pip_cutlass.log"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
  echo "WARNING: no .whl/nvidia_cutlass-*.whl (carry .whl); CUTLASS headers may be missing"
fi

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
built_ffi=build/last_built_ffi  # the ffi/ tree the build directory was last built from (kept between calls)
source scripts/prebuilt.sh
# (JDG_NO_PREBUILT=1: scripts/ab_fp8_kernel.sh, which has decided already and needs the installed build.)
if has_stage build && [[ -z ${JDG_NO_PREBUILT:-} ]] && use_prebuilt base; then
  # Built on the CPU machine from this very ffi/ tree (scripts/prebuild_variants.sh base; carry `prebuilt`).
  add_summary "build: prebuilt/base.so.xz (built on the CPU machine from this ffi/ tree; no ptxas log here)"
elif has_stage build; then
  log "build (pip install --no-build-isolation --no-deps -v .)"
  # The device tool re-copies the tree on every call with the sources' old mtimes, so a warm machine's build
  # directory (built from another tree, e.g. an A/B variant of the previous call) looks newer than them: touch
  # every file that differs from the tree of the last build, or ninja keeps the stale objects (session 24's
  # `base` ran the previous call's last variant, "built" in 4 s; session 29's `--mqa` timed a paged variant).
  if [[ -d $built_ffi ]]; then
    while IFS= read -r -d '' f; do
      cmp -s "$f" "$built_ffi/${f#ffi/}" || touch "$f"
    done < <(find ffi -type f -print0)
  fi
  t0=$SECONDS
  if CC=/usr/bin/gcc CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++ CMAKE_BUILD_PARALLEL_LEVEL=16 \
      $PY -m pip install --no-build-isolation --no-deps -v . > "$OUT/build.log" 2>&1; then
    add_summary "build: OK in $((SECONDS - t0)) s"
    rm -rf "$built_ffi" && mkdir -p build && cp -r ffi "$built_ffi"
  else
    echo "BUILD FAILED; last 60 lines of $OUT/build.log:"
    tail -n 60 "$OUT/build.log"
    exit 1
  fi
  # ptxas resource usage (present when the build passes -Xptxas -v)
  grep -E "registers|spill|Compiling entry|bytes stack frame" "$OUT/build.log" > "$OUT/ptxas.txt" || true
  if [[ -s "$OUT/ptxas.txt" ]]; then
    n_spill=$(grep -cE "[1-9][0-9]* bytes spill (stores|loads)" "$OUT/ptxas.txt" || true)
    max_regs=$(grep -oE "Used [0-9]+ registers" "$OUT/ptxas.txt" | awk '{print $2}' | sort -n | tail -1)
    add_summary "ptxas: max ${max_regs:-?} registers, ${n_spill:-0} lines with non-zero spills ($OUT/ptxas.txt)"
  else
    add_summary "ptxas: no -Xptxas -v output in the build log"
  fi
  # SASS summary of the installed extension(s)
  if command -v cuobjdump > /dev/null; then
    pkgdir=$($PY -P -c 'import os, jax_deepgemm as m; print(os.path.dirname(m.__file__))' 2>/dev/null || true)
    if [[ -n "$pkgdir" ]]; then
      count() { grep -cE "$1" <<< "$sass" || true; }
      while IFS= read -r so; do
        sass=$(cuobjdump -sass "$so" 2>/dev/null || true)
        [[ -z "$sass" ]] && continue
        add_summary "sass $(basename "$so"): QGMMA $(count '\bQGMMA'), HGMMA $(count '\bHGMMA'), LDL $(count '\bLDL'), STL $(count '\bSTL'), functions $(count '^\s+Function :')"
      done < <(find "$pkgdir" -name '*.so' 2>/dev/null)
    fi
  fi
fi

# Tests and bench run with `python3 -P` (no cwd on sys.path): the installed package, with its
# built extension, is imported, not the source folder next to it (which has no extension).
pkg_info=$($PY -P -c 'import jax_deepgemm as m; print(m.__file__, "has_cuda_kernels:", m.has_cuda_kernels())' 2>&1 | tail -1 || true)
echo "jax_deepgemm: $pkg_info"
add_summary "package: $pkg_info"

# ---------------------------------------------------------------------------------------------
# test
# ---------------------------------------------------------------------------------------------
if has_stage test; then
  log "tests (gpu marker)"
  t_stage=$SECONDS
  set +e
  markers=$($PY -P -m pytest tests --markers -p no:cacheprovider 2>/dev/null || true)
  if grep -q '@pytest.mark.gpu' <<< "$markers"; then
    eval "test_args=($TEST_ARGS)"  # shell words, so a quoted -k expression stays one argument
    JAX_DEEPGEMM_REQUIRE_GPU=1 ${TEST_TIMEOUT:+timeout $TEST_TIMEOUT} $PY -P -m pytest "${test_args[@]}" -q -m gpu \
      -p no:cacheprovider --durations=12 2>&1 | tee "$OUT/gpu_tests.log"
  else
    echo "(no 'gpu' marker registered: running the whole suite)"
    JAX_DEEPGEMM_REQUIRE_GPU=1 $PY -P -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log"
  fi
  rc=${PIPESTATUS[0]}
  set -e
  add_summary "tests (rc $rc, $((SECONDS - t_stage)) s): $(grep -E '[0-9]+ (passed|failed|error|skipped|deselected)' "$OUT/gpu_tests.log" | tail -1)"
fi

# ---------------------------------------------------------------------------------------------
# compute-sanitizer (opt-in)
# ---------------------------------------------------------------------------------------------
if [[ "$SANITIZE" == 1 ]] || has_stage sanitize; then
  # memcheck: out-of-bounds/misaligned accesses; racecheck: shared-memory races (TMA/WGMMA ring, epilogue staging).
  # One process per test and tool (scripts/sanitize.sh): a crash of the tool in one case hides no other.
  log "compute-sanitizer memcheck + racecheck (-k sanitizer_small)"
  set +e
  PY=$PY bash scripts/sanitize.sh 2>&1 | tee "$OUT/sanitizer.txt"
  rc=${PIPESTATUS[0]}
  set -e
  add_summary "compute-sanitizer (rc $rc): $(grep -c ' rc 0 ' "$OUT/sanitizer.txt") of $(grep -cE '^(memcheck|racecheck) ' "$OUT/sanitizer.txt") clean"
fi

# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------
if has_stage bench; then
  log "bench"
  t_stage=$SECONDS
  set +e
  # SM clock, power and temperature every 100 ms while the bench runs: the loop timings run at
  # sustained (power-capped) clocks, the profiler timings at burst clocks, and kernels differ in how
  # far the cap pulls them down.
  smi_pid=
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,utilization.gpu --format=csv,noheader,nounits \
      -lms 100 > "$OUT/bench_smi.csv" 2> /dev/null &
    smi_pid=$!
  fi
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  $PY -P -m jax_deepgemm.bench --json "$OUT/bench.json" $BENCH_ARGS 2>&1 | tee "$OUT/bench.log"
  rc=${PIPESTATUS[0]}
  [[ -n "$smi_pid" ]] && kill "$smi_pid" 2> /dev/null
  set -e
  add_summary "bench (rc $rc, $((SECONDS - t_stage)) s): $OUT/bench.json"
  if [[ -s "$OUT/bench_smi.csv" ]]; then
    # percentiles p10/p50/p90 over the samples under load: power >= half the run's peak (nvidia-smi's
    # utilization stays high through compile and host phases, so it does not tell load apart)
    peak_w=$(awk -F', *' '$3 > m {m = $3} END {print m + 0}' "$OUT/bench_smi.csv")
    busy() { awk -F', *' -v col="$1" -v peak="$peak_w" '$3 >= peak / 2 {print $col}' "$OUT/bench_smi.csv"; }
    pct() { sort -n | awk '{v[NR] = $1} END {if (NR == 0) {print "-"; exit}
                           printf "%d/%d/%d", v[int(NR * 0.1) + 1], v[int(NR * 0.5) + 1], v[int(NR * 0.9) + 1]}'; }
    add_summary "bench under load ($(busy 2 | wc -l) samples >= half of peak ${peak_w} W in $OUT/bench_smi.csv): SM MHz p10/p50/p90" \
      "$(busy 2 | pct), power W $(busy 3 | pct)"
  fi
fi

# ---------------------------------------------------------------------------------------------
# summary (last: the device tool returns the tail of the output)
# ---------------------------------------------------------------------------------------------
log "summary"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
if [[ -s "$OUT/gpu_tests.log" ]] && has_stage test; then
  grep -E '^(FAILED|ERROR) ' "$OUT/gpu_tests.log" | head -n 10 || true
fi
if [[ -s "$OUT/bench.log" ]] && has_stage bench; then
  grep -E '^# device|^ *M +N +K|^ *[0-9]+ +[0-9]+ +[0-9]+ \||WARNING|errors' "$OUT/bench.log" || true
fi
