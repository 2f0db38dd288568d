#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <string>

#include "sluice/config.h"

namespace sluice {

// "auto" -> CUDA when available else CPU. Throws InputError when "cuda" is asked for but absent.
c10::Device resolve_device(const std::string& want);
// bf16 autocast for `precision` on `device` ("auto": bf16 on CUDA, fp32 on CPU).
bool use_bf16(const std::string& precision, const c10::Device& device);
// Peak dense bf16 FLOP/s of the device for MFU: `override_tflops` when > 0, else a known
// value for the GPU's name, else 0 (MFU not reported).
double peak_flops(const c10::Device& device, double override_tflops);
std::string device_name(const c10::Device& device);

// bf16 autocast for the scope (no-op when disabled).
class AutocastScope {
 public:
  AutocastScope(const c10::Device& device, bool enabled);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType type_;
  bool enabled_;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

// train.deterministic: PyTorch's deterministic algorithms (not warn-only) for the scope, the
// previous setting restored after. Sets CUBLAS_WORKSPACE_CONFIG=:4096:8 first when unset
// (cuBLAS refuses deterministic mode without it; read when PyTorch creates its handles, after
// this). No-op when disabled.
class DeterministicAlgorithmsScope {
 public:
  explicit DeterministicAlgorithmsScope(bool enabled);
  ~DeterministicAlgorithmsScope();
  DeterministicAlgorithmsScope(const DeterministicAlgorithmsScope&) = delete;
  DeterministicAlgorithmsScope& operator=(const DeterministicAlgorithmsScope&) = delete;

 private:
  bool enabled_;
  bool prev_ = false, prev_warn_only_ = false;
};

// Peak bytes allocated on a CUDA device since the last reset (0 on CPU).
int64_t peak_device_memory(const c10::Device& device);
void reset_peak_device_memory(const c10::Device& device);
void synchronize(const c10::Device& device);
// Bytes free on a CUDA device for this process (cudaMemGetInfo plus what its caching allocator
// holds unused); -1 on CPU or when the query fails.
int64_t free_device_memory(const c10::Device& device);

}  // namespace sluice
