#include "train/device.h"

#include <ATen/autocast_mode.h>
#include <ATen/Context.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#include <torch/cuda.h>

#include <cstdlib>

#include "sluice/errors.h"

namespace sluice {

c10::Device resolve_device(const std::string& want) {
  const bool have_cuda = torch::cuda::is_available();
  if (want == "cuda") {
    if (!have_cuda) throw InputError("train.device: 'cuda' requested but no CUDA device is available");
    return c10::Device(c10::kCUDA, 0);
  }
  if (want == "auto" && have_cuda) return c10::Device(c10::kCUDA, 0);
  return c10::Device(c10::kCPU);
}

bool use_bf16(const std::string& precision, const c10::Device& device) {
  if (precision == "bf16") return true;
  if (precision == "fp32") return false;
  return device.is_cuda();
}

std::string device_name(const c10::Device& device) {
  if (!device.is_cuda()) return "cpu";
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device.index()) != cudaSuccess) return "cuda";
  return prop.name;
}

double peak_flops(const c10::Device& device, double override_tflops) {
  if (override_tflops > 0) return override_tflops * 1e12;
  if (!device.is_cuda()) return 0.0;
  const std::string name = device_name(device);
  if (name.find("H100") != std::string::npos || name.find("H200") != std::string::npos) return 989e12;
  if (name.find("A100") != std::string::npos) return 312e12;
  return 0.0;
}

AutocastScope::AutocastScope(const c10::Device& device, bool enabled) : type_(device.type()), enabled_(enabled) {
  if (!enabled_) return;
  prev_enabled_ = at::autocast::is_autocast_enabled(type_);
  prev_dtype_ = at::autocast::get_autocast_dtype(type_);
  at::autocast::set_autocast_enabled(type_, true);
  at::autocast::set_autocast_dtype(type_, at::kBFloat16);
}

AutocastScope::~AutocastScope() {
  if (!enabled_) return;
  at::autocast::set_autocast_enabled(type_, prev_enabled_);
  at::autocast::set_autocast_dtype(type_, prev_dtype_);
  if (!prev_enabled_) at::autocast::clear_cache();
}

DeterministicAlgorithmsScope::DeterministicAlgorithmsScope(bool enabled) : enabled_(enabled) {
  if (!enabled_) return;
  at::Context& ctx = at::globalContext();
  prev_ = ctx.deterministicAlgorithms();
  prev_warn_only_ = ctx.deterministicAlgorithmsWarnOnly();
  setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
  ctx.setDeterministicAlgorithms(true, /*warn_only=*/false);
}

DeterministicAlgorithmsScope::~DeterministicAlgorithmsScope() {
  if (enabled_) at::globalContext().setDeterministicAlgorithms(prev_, prev_warn_only_);
}

int64_t peak_device_memory(const c10::Device& device) {
  if (!device.is_cuda()) return 0;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  return stats.allocated_bytes[0].peak;  // index 0: StatType::AGGREGATE
}

void reset_peak_device_memory(const c10::Device& device) {
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
}

int64_t free_device_memory(const c10::Device& device) {
  if (!device.is_cuda()) return -1;
  c10::cuda::CUDAGuard guard(device);
  size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: the check is skipped, not the run
    return -1;
  }
  // What this process's caching allocator holds but does not use is free for it too.
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  return static_cast<int64_t>(free) + stats.reserved_bytes[0].current - stats.allocated_bytes[0].current;
}

void synchronize(const c10::Device& device) {
  if (device.is_cuda()) c10::cuda::device_synchronize();
}

}  // namespace sluice
