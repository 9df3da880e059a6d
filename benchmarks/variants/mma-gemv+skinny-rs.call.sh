#!/usr/bin/env bash
# The one device call that measures `mma-gemv` and `skinny-rs` (RESULTS "Session 58", Next). Here first:
#   git apply benchmarks/variants/mma-gemv.patch benchmarks/variants/skinny-rs-on-mma-gemv.patch
#   PY=/tmp/venv0112/bin/python bash scripts/prebuild_variants.sh base       # this tree -> prebuilt/base.*
#   (a worktree of main: the same command there, its prebuilt/base.* copied here as prebuilt/old.*)
# then run, carry [".whl", "prebuilt"]:  bash benchmarks/variants/mma-gemv+skinny-rs.call.sh
# Every comparison is within the call (any card). Sections print as they finish (a timeout keeps what ran).
set -uo pipefail
cd "$(dirname "$0")/../.."
export JAX_DEEPGEMM_REQUIRE_GPU=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name --format=csv,noheader; date -u
source scripts/prebuilt.sh
PY=python3 use_prebuilt base || exit 5
shapes="128x2112x7168 64x2112x7168 128x4096x7168 64x4096x7168 128x7168x2048 128x576x7168 128x32768x512
128x24576x1536 128x7168x16384 32x2112x7168 8x2112x7168 1x2112x7168 8x576x7168 1x32768x512"
echo "== tests"
timeout 200 python3 -P -m pytest -q -p no:cacheprovider tests/test_fp8_gemm.py -k "gemv or skinny or accumulate" 2>&1 | tail -8
timeout 100 python3 -P -m pytest -q -p no:cacheprovider tests/test_bf16_gemm.py -k "gemv or split_k_heuristic or accumulate" 2>&1 | tail -5
echo "== sweep: heuristic (tile kernels; mma-gemv at M <= 8), XLA, skinny 64- / 128-column units"
SWEEP_XLA=1 SWEEP_TILES=-1x64x1x1x0,-1x128x1x1x0 timeout 260 python3 -P scripts/sweep_tiles.py $shapes 2>&1 | grep -v -i warn
echo "== main's heuristic (the CUDA-core GEMV at M <= 4, K >= 7168, M x N <= 4096)"
(PY=python3 use_prebuilt old any-tree && SWEEP_TILES=64x16x1x1 timeout 90 python3 -P scripts/sweep_tiles.py 1x2112x7168 8x2112x7168 \
  8x576x7168 1x32768x512 2>&1 | grep heuristic)
echo "== sanitizer"
SAN_TOOLS="memcheck racecheck" PER_CASE_S=90 timeout 200 bash scripts/sanitize.sh "test_fp8_gemm and sanitizer_small"
date -u
