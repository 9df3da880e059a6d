# Sourced by scripts/extract_variants.sh and scripts/check_variants.sh: the patch files of a variant name.
# NAME1+NAME2 names the patches of benchmarks/variants/ applied one after the other (a patch may be written on top of
# another); `base` parts name none. Sets the array `patches`; returns 1 (after saying which) if a patch is missing.
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
