# XLA FFI headers come with jaxlib: jax.ffi.include_dir().
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c "import jax.ffi; print(jax.ffi.include_dir())"
  OUTPUT_VARIABLE JAX_FFI_INCLUDE_DIR
  OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _jax_ffi_result
  ERROR_VARIABLE _jax_ffi_error)
if(NOT _jax_ffi_result EQUAL 0 OR NOT EXISTS "${JAX_FFI_INCLUDE_DIR}/xla/ffi/api/ffi.h")
  message(FATAL_ERROR
    "jax_deepgemm needs the XLA FFI headers from jaxlib >= 0.11.2, but "
    "`${Python_EXECUTABLE} -c 'import jax.ffi; print(jax.ffi.include_dir())'` failed or "
    "gave a folder without xla/ffi/api/ffi.h:\n${_jax_ffi_error}\n"
    "Install jax into the build environment (it is a build requirement in pyproject.toml).")
endif()
message(STATUS "XLA FFI headers: ${JAX_FFI_INCLUDE_DIR}")
add_library(jax_ffi_headers INTERFACE)
target_include_directories(jax_ffi_headers SYSTEM INTERFACE "${JAX_FFI_INCLUDE_DIR}")
