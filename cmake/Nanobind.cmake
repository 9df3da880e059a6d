# nanobind ships its CMake package inside the Python package.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -m nanobind --cmake_dir
  OUTPUT_VARIABLE nanobind_ROOT
  OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _nb_result)
if(NOT _nb_result EQUAL 0)
  message(FATAL_ERROR "nanobind is not importable by ${Python_EXECUTABLE}; it is a build requirement.")
endif()
find_package(nanobind CONFIG REQUIRED)
