#!/usr/bin/env bash
# Writes each kernel variant benchmarks/variants/NAME.patch (a diff of ffi/ against main, committed so that it
# outlives the checkout it was written in) as variants/NAME/ffi/..., the folders scripts/ab_fp8_kernel.sh takes.
# Run here, before a device call: untracked files travel with the working tree (delete variants/ afterwards; it is
# not committed). A patch that no longer applies to the tree is refused: refresh it from its branch first.
#   bash scripts/extract_variants.sh paged-head-mma k-grouped-two-sets
# Save a variant written on a branch:  git diff main wip/NAME -- ffi > benchmarks/variants/NAME.patch
set -euo pipefail
cd "$(dirname "$0")/.."
for name in "$@"; do
  patch=$PWD/benchmarks/variants/$name.patch
  [[ -f $patch ]] || { echo "no $patch" >&2; exit 1; }
  git apply --check "$patch" || { echo "$name.patch does not apply to this tree" >&2; exit 1; }
  rm -rf "variants/$name"
  tmp=$(mktemp -d)
  files=$(git apply --numstat "$patch" | cut -f3)
  for f in $files; do
    mkdir -p "$tmp/$(dirname "$f")"
    [[ ! -f $f ]] || cp "$f" "$tmp/$f"
  done
  (cd "$tmp" && git apply "$patch")
  for f in $files; do
    mkdir -p "variants/$name/$(dirname "$f")"
    cp "$tmp/$f" "variants/$name/$f"
  done
  rm -rf "$tmp"
  echo "variants/$name: $(echo "$files" | wc -w) file(s)"
done
