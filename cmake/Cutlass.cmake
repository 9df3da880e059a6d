# CUTLASS/CuTe headers come from the nvidia-cutlass wheel (a build requirement):
# <site-packages>/cutlass_library/source/include. CUTLASS_INCLUDE_DIR overrides the search.
if(NOT CUTLASS_INCLUDE_DIR)
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source', 'include'))"
    OUTPUT_VARIABLE CUTLASS_INCLUDE_DIR
    OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _cutlass_result
    ERROR_QUIET)
endif()
if(NOT EXISTS "${CUTLASS_INCLUDE_DIR}/cute/arch/mma_sm90_gmma.hpp")
  message(FATAL_ERROR
    "CUTLASS/CuTe headers not found (looked in '${CUTLASS_INCLUDE_DIR}'). "
    "Install the nvidia-cutlass wheel into the build environment (pip install nvidia-cutlass) "
    "or pass -DCUTLASS_INCLUDE_DIR=<cutlass>/include.")
endif()
message(STATUS "CUTLASS headers: ${CUTLASS_INCLUDE_DIR}")
add_library(cutlass_headers INTERFACE)
target_include_directories(cutlass_headers SYSTEM INTERFACE "${CUTLASS_INCLUDE_DIR}")
