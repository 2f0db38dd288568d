#include "model/elementwise_launcher.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <atomic>
#include <mutex>
#include <set>
#include <utility>

#include "sluice/log.h"

#ifdef SLUICE_HAVE_CUDA_KERNELS
// kernels/ (angle brackets: "rms_norm.h" would be model/rms_norm.h, beside this file)
#include <flash/flash_api.h>  // flash_device_supported: the same architectures
#include <gate_mul.h>
#include <rms_norm.h>
#endif

namespace sluice {
namespace {

#ifdef SLUICE_HAVE_CUDA_KERNELS
const ElementwiseLauncher kCudaKernels{"CUDA kernels",           c10::DeviceType::CUDA,
                                       &kernels::rms_norm_forward, &kernels::rms_norm_backward,
                                       &kernels::gate_mul_forward, &kernels::gate_mul_backward};
const ElementwiseLauncher* const kDefault = &kCudaKernels;
#else
const ElementwiseLauncher* const kDefault = nullptr;
#endif

std::atomic<const ElementwiseLauncher*> g_launcher{kDefault};

}  // namespace

const ElementwiseLauncher* elementwise_launcher() { return g_launcher.load(); }

void set_elementwise_launcher(const ElementwiseLauncher* launcher) {
  g_launcher.store(launcher ? launcher : kDefault);
}

std::string elementwise_unsupported(const at::Tensor& t) {
  const ElementwiseLauncher* l = elementwise_launcher();
  if (!l) return "built without CUDA kernels (no nvcc)";
  if (t.device().type() != l->device)
    return fmt::format("tensors on {}, the {} take {} tensors", t.device().str(), l->name, c10::DeviceTypeName(l->device, true));
  const at::ScalarType s = t.scalar_type();
  if (s != at::kFloat && s != at::kHalf && s != at::kBFloat16)
    return fmt::format("dtype {} (the kernels take fp32, fp16 or bf16)", c10::toString(s));
  if (t.numel() == 0) return "an empty tensor";
#ifdef SLUICE_HAVE_CUDA_KERNELS
  // kernels/ is built for compute capability 8.0 and newer (TORCH_CUDA_ARCH_LIST).
  if (l == &kCudaKernels && !kernels::flash_device_supported(t.device())) return "compute capability below 8.0";
#endif
  return "";
}

void warn_elementwise_fallback_once(const std::string& op, const std::string& reason) {
  static std::mutex mu;
  static std::set<std::pair<std::string, std::string>> seen;
  const std::lock_guard<std::mutex> lock(mu);
  if (seen.emplace(op, reason).second) {
    log::warn(fmt::format("model.elementwise_kernels 'fused': {}: {}; using ATen for these inputs", op, reason));
  }
}

}  // namespace sluice
