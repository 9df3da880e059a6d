// Shared XLA-FFI plumbing for every handler: error propagation and buffer checks.
// Handlers validate cheaply again what Python already validated at trace time, and return
// ffi::Error instead of throwing, so a hand-written ffi_call can never fault the GPU.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <string_view>

#include "common/device_info.h"
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

// The optional trailing operand is the output buffer itself (XLA aliases it to `d`): it lets a
// caller accumulate in place (e.g. the FP8 GEMM's 1D1D accumulate=1: D += A.B^T, DeepGEMM's `c is d`) or hand in a
// pre-filled buffer (tests poison it so that an element the kernel never writes is caught).
inline ffi::Error CheckAliasedOutput(std::string_view op, const ffi::RemainingArgs& extra, const ffi::AnyBuffer& d,
                                     bool required) {
  if (extra.size() > 1) return ffi::Error::InvalidArgument(std::string(op) + ": at most one aliased output operand");
  if (required && extra.size() == 0)
    return ffi::Error::InvalidArgument(std::string(op) + ": accumulate=1 needs the accumulator operand");
  if (extra.size() == 1) {
    ffi::ErrorOr<ffi::AnyBuffer> out = extra.get<ffi::AnyBuffer>(0);
    if (out.has_error()) return out.error();
    if (out.value().untyped_data() != d.untyped_data())
      return ffi::Error::InvalidArgument(std::string(op) + ": the trailing operand must alias the output");
  }
  return ffi::Error::Success();
}

// The facts of `device` (DeviceInfo), after checking that it is an sm_90 (Hopper) GPU.
inline ffi::Error Sm90DeviceInfo(std::string_view op, int device, const DeviceInfo*& info) {
  info = &GetDeviceInfo(device);
  if (info->cc_major != 9)
    return ffi::Error(ffi::ErrorCode::kFailedPrecondition, std::string(op) + ": the kernels need an sm_90 (Hopper) GPU");
  return ffi::Error::Success();
}

// The SMs a kernel launch may use on `device`, after checking that it is an sm_90 (Hopper) GPU: all
// of them, or at most the op's `num_sms` attribute when that is positive.
inline ffi::Error UsableSm90Sms(std::string_view op, int device, int num_sms_attr, int& sms) {
  const DeviceInfo* info = nullptr;
  JDG_RETURN_IF_ERROR(Sm90DeviceInfo(op, device, info));
  sms = num_sms_attr > 0 ? std::min(num_sms_attr, info->num_sms) : info->num_sms;
  return ffi::Error::Success();
}

// Whether the environment variable `name` is set to "1" (handlers read such switches once, into a static).
inline bool EnvFlagIsOne(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && std::strcmp(value, "1") == 0;
}

// A persistent grid over `units` work units of `cluster` CTAs each (unit counts that depend on device
// data are passed as their bound): one CTA per usable SM at most, a whole number of clusters.
inline int PersistentGrid(int64_t units, int sms, int cluster) {
  return int(std::clamp<int64_t>(units, 1, std::max(sms / cluster, 1))) * cluster;
}

// The leading part of every GEMM target's binding: stream, device, then a, a_scale, b, b_scale (the FP8 GEMM
// handlers add their own operands, result and attributes after it).
inline auto ScaledGemmOperandsBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::PlatformStream<cudaStream_t>>()
      .Ctx<ffi::DeviceOrdinal>()
      .Arg<ffi::AnyBuffer>()   // a
      .Arg<ffi::AnyBuffer>()   // a_scale
      .Arg<ffi::AnyBuffer>()   // b
      .Arg<ffi::AnyBuffer>();  // b_scale
}

}  // namespace jdg
