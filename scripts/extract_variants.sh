#!/usr/bin/env bash
# Writes each kernel variant benchmarks/variants/NAME.patch (a diff of ffi/ against main, committed so that it
# outlives the checkout it was written in) as variants/NAME/ffi/..., the folders scripts/ab_fp8_kernel.sh takes.
# Run here, before a device call: untracked files travel with the working tree (delete variants/ afterwards; it is
# not committed). A patch that no longer applies to the tree (after the patches before it in NAME1+NAME2) is refused:
# refresh it from its branch first.
#   bash scripts/extract_variants.sh paged-head-mma k-grouped-two-sets fp4-quad-exponent+paged-fp4-store-hoist
# Save a variant written on a branch:  git diff main wip/NAME -- ffi > benchmarks/variants/NAME.patch
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/variant_patches.sh
for name in "$@"; do
  # NAME1+NAME2: the patches applied one after the other (an A/B of their combination), written as
  # variants/NAME1_and_NAME2 (no '+' in the tags and file names the A/B script makes)
  variant_patches "$name" || exit 1
  name=${name//+/_and_}
  rm -rf "variants/$name"
  tmp=$(mktemp -d)
  files=$(for patch in "${patches[@]}"; do git apply --numstat "$patch" | cut -f3; done | sort -u)
  for f in $files; do
    mkdir -p "$tmp/$(dirname "$f")"
    [[ ! -f $f ]] || cp "$f" "$tmp/$f"
  done
  # Applied in order, each on the ones before it: a patch may be written on top of another (NAME1+NAME2).
  for patch in "${patches[@]}"; do
    (cd "$tmp" && git apply "$patch") || { echo "$(basename "$patch") does not apply to this tree${patches[1]+ after the ones before it}" >&2; rm -rf "$tmp"; exit 1; }
  done
  for f in $files; do
    mkdir -p "variants/$name/$(dirname "$f")"
    cp "$tmp/$f" "variants/$name/$f"
  done
  rm -rf "$tmp"
  echo "variants/$name: $(echo "$files" | wc -w) file(s)"
done
