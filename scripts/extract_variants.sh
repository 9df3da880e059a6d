#!/usr/bin/env bash
# Writes the ffi/ files in which each branch wip/NAME differs from BASE (default main) to variants/NAME/ffi/..., the
# variant folders scripts/ab_fp8_kernel.sh takes. Run here, before a device call: untracked files travel with the
# working tree (delete variants/ afterwards; it is not committed).
#   bash scripts/extract_variants.sh stagger-first-tile-all fp4-paged-lean
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-main}
for name in "$@"; do
  rm -rf "variants/$name"
  # ffi/ files BASE changed since the branch left it would be reverted by the variant: merge BASE into it first.
  stale=$(git diff --name-only "wip/$name...$BASE" -- ffi)
  [[ -z $stale ]] || { echo "wip/$name lacks $BASE's changes to: $stale (merge $BASE into it)" >&2; exit 1; }
  files=$(git diff --name-only "$BASE" "wip/$name" -- ffi)
  [[ -n $files ]] || { echo "wip/$name: no ffi/ change against $BASE" >&2; exit 1; }
  for f in $files; do
    mkdir -p "variants/$name/$(dirname "$f")"
    git show "wip/$name:$f" > "variants/$name/$f"
  done
  echo "variants/$name: $(echo "$files" | wc -l) file(s)"
done
