# Sourced by scripts/prebuild_variants.sh (CPU machine) and by scripts/ab_fp8_kernel.sh and scripts/gpu_check.sh
# (GPU machine): extension modules built here, carried to the device call, so that it spends no device time on
# builds. A build of the kernel library takes ~40 s on the GPU machine's 16 cores from scratch and ~100 s for an FP8
# variant (its largest translation unit); six variant builds were a third of a session's 1800 device-s.
#
# prebuilt/TAG.so.xz is the `_C` extension of one ffi/ tree (TAG: `base` for the tree as it is, else the
# scripts/extract_variants.sh folder name), built against the device's jax (0.11.2) FFI headers for its Python
# (3.12); prebuilt/TAG.ffi-hash names the ffi/ tree it was built from. The device uses it only if the hash matches
# the ffi/ tree it has at that moment, and only if it loads and reports CUDA kernels; anything else falls back to
# building from source as before.

# Hash of every file under ffi/ of the tree at $1 (default: here), paths and contents: the same on both machines.
ffi_tree_hash() {
  (cd "${1:-.}" && find ffi -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

# use_prebuilt TAG: if prebuilt/TAG.so.xz was built from the ffi/ tree here, unpack it beside a copy of
# jax_deepgemm/ in $PREBUILT_PKG/TAG (default /tmp/prebuilt_pkg) and put that first on PYTHONPATH (exported); tests
# and probes run with `python3 -P`, so they import it instead of any installed build. Returns 1, changing nothing,
# otherwise. `use_prebuilt TAG any-tree` skips the tree check: another tree's kernels (e.g. `main`'s, to time the
# heuristic a variant would replace in the same call) under this tree's Python package, which must still work with
# them.
use_prebuilt() {
  local tag=$1 py=${PY:-python3}
  local archive=prebuilt/$tag.so.xz dest=${PREBUILT_PKG:-/tmp/prebuilt_pkg}/$tag
  [[ -f $archive && -f prebuilt/$tag.ffi-hash ]] || return 1
  if [[ ${2:-} != any-tree && $(cat "prebuilt/$tag.ffi-hash") != "$(ffi_tree_hash)" ]]; then
    echo "prebuilt/$tag: built from another ffi/ tree; building from source"
    return 1
  fi
  local so
  so=$dest/jax_deepgemm/_C$($py -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  rm -rf "$dest" && mkdir -p "$dest" && cp -r jax_deepgemm "$dest"/ && find "$dest" -name '*.so' -delete
  $py -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$archive" "$so" || return 1
  # (It must also be the one imported: an editable install's import hook would shadow PYTHONPATH.)
  local check='import sys, jax_deepgemm as m
sys.exit(not (m.__file__.startswith(sys.argv[1]) and m.has_cuda_kernels()))'
  if ! PYTHONPATH=$dest${PYTHONPATH:+:$PYTHONPATH} $py -P -c "$check" "$dest/" > /dev/null 2>&1; then
    echo "prebuilt/$tag: does not load here, has no CUDA kernels or is shadowed by an installed build;" \
      "building from source"
    return 1
  fi
  export PYTHONPATH=$dest${PYTHONPATH:+:$PYTHONPATH}
}
