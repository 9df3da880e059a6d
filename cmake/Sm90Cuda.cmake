# Decide whether to build the CUDA kernels and how to compile them for Hopper (sm_90a).
include(CheckLanguage)
set(JAX_DEEPGEMM_WITH_CUDA OFF)
if(NOT JAX_DEEPGEMM_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS "/usr/local/cuda/bin/nvcc")
    set(CMAKE_CUDA_COMPILER "/usr/local/cuda/bin/nvcc")
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(JAX_DEEPGEMM_WITH_CUDA ON)
  elseif(JAX_DEEPGEMM_CUDA STREQUAL "ON")
    message(FATAL_ERROR "JAX_DEEPGEMM_CUDA=ON but no CUDA compiler was found: set CUDACXX or put nvcc on PATH.")
  else()
    message(WARNING "No CUDA compiler found: building jax_deepgemm without GPU kernels (CPU reference only).")
  endif()
endif()

if(JAX_DEEPGEMM_WITH_CUDA)
  # Architecture flags are given explicitly below (wgmma/setmaxnreg need the arch-specific sm_90a target).
  set(CMAKE_CUDA_ARCHITECTURES OFF)
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  set(CMAKE_CUDA_RUNTIME_LIBRARY Static)  # no libcudart.so dependency at run time
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  include(Cutlass)
  # Extra ptxas options, comma-separated (e.g. CMAKE_ARGS="-DJAX_DEEPGEMM_PTXAS_OPTIONS=--register-usage-level=10"
  # for a kernel A/B on the GPU machine).
  set(JAX_DEEPGEMM_PTXAS_OPTIONS "" CACHE STRING "extra ptxas options, comma-separated")
  set(_jdg_ptxas_options "--verbose,--warn-on-local-memory-usage,--warn-on-spills")
  if(JAX_DEEPGEMM_PTXAS_OPTIONS)
    string(APPEND _jdg_ptxas_options ",${JAX_DEEPGEMM_PTXAS_OPTIONS}")
  endif()

  function(jax_deepgemm_configure_sm90 target)
    target_link_libraries(${target} PRIVATE cutlass_headers CUDA::cudart_static)
    target_include_directories(${target} PRIVATE "${PROJECT_SOURCE_DIR}/ffi")
    target_compile_options(${target} PRIVATE
      $<$<COMPILE_LANGUAGE:CUDA>:
        -gencode=arch=compute_90a,code=sm_90a
        --expt-relaxed-constexpr
        -O3
        --ptxas-options=${_jdg_ptxas_options}
        -Xcompiler=-fvisibility=hidden
      >)
  endfunction()
endif()
