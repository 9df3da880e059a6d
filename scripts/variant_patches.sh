# Sourced by scripts/extract_variants.sh, check_variants.sh and prebuild_variants.sh: the patch files of a variant
# name. NAME1+NAME2 names the patches of benchmarks/variants/ applied one after the other (a patch may be written on
# top of another); `base` parts name none. Sets the array `patches`; returns 1 (after saying which) if a patch is
# missing.
variant_patches() {
  local part
  patches=()
  IFS=+ read -r -a _parts <<< "$1"
  for part in "${_parts[@]}"; do
    [[ $part == base ]] && continue
    [[ -f $PWD/benchmarks/variants/$part.patch ]] || { echo "$1: no benchmarks/variants/$part.patch" >&2; return 1; }
    patches+=("$PWD/benchmarks/variants/$part.patch")
  done
}

# variant_tree NAME: a copy of the tracked tree in a new temporary folder with NAME's patches applied in order; sets
# `tree` to it. Returns 1 (after saying which, and removing the copy) if a patch is missing or does not apply.
variant_tree() {
  local patch
  variant_patches "$1" || return 1
  tree=$(mktemp -d)
  git ls-files -z | xargs -0 -I{} cp --parents {} "$tree"
  for patch in "${patches[@]}"; do
    (cd "$tree" && git apply "$patch") || { echo "$1: $(basename "$patch") does not apply"; rm -rf "$tree"; return 1; }
  done
}
