// Shared XLA-FFI plumbing for every handler: error propagation and buffer checks.
// Handlers validate cheaply again what Python already validated at trace time, and return
// ffi::Error instead of throwing, so a hand-written ffi_call can never fault the GPU.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "xla/ffi/api/ffi.h"

namespace jdg {

namespace ffi = xla::ffi;

#define JDG_RETURN_IF_ERROR(expr)              \
  do {                                         \
    if (::xla::ffi::Error e_ = (expr); e_.failure()) return e_; \
  } while (0)

inline std::string ShapeString(ffi::Span<const int64_t> dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// Checks dtype and exact shape of a buffer; the message names the argument.
inline ffi::Error ExpectBuffer(const ffi::AnyBuffer& buf, std::string_view name, ffi::DataType dtype,
                               std::initializer_list<int64_t> shape) {
  if (buf.element_type() != dtype)
    return ffi::Error::InvalidArgument(std::string(name) + ": unexpected element type");
  auto dims = buf.dimensions();
  bool ok = dims.size() == shape.size();
  size_t i = 0;
  for (int64_t d : shape) ok = ok && dims[i++] == d;
  if (!ok) return ffi::Error::InvalidArgument(std::string(name) + ": unexpected shape " + ShapeString(dims));
  return ffi::Error::Success();
}

inline ffi::Error CudaStatus(int err, std::string_view what) {
  if (err == 0) return ffi::Error::Success();
  return ffi::Error::Internal(std::string(what) + " failed with CUDA error " + std::to_string(err));
}

constexpr int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace jdg
