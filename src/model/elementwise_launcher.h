// The seam between the fused elementwise autograd Functions (model/fused_rms_norm.h,
// model/fused_gate.h; model.elementwise_kernels: fused) and the kernels they launch. The default
// launcher is the CUDA kernels of kernels/rms_norm.h and kernels/gate_mul.h (none in a build
// without nvcc); a test installs one that runs the same kernel code on CPU tensors under cuda_sim
// (tests/test_fused_elementwise.cpp), so that the Functions and the model's wiring are checked
// without a GPU. Each entry has the at::Tensor signature of the kernel API it stands for.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <cstdint>
#include <string>

namespace sluice {

struct ElementwiseLauncher {
  const char* name;        // for log lines: "CUDA kernels", "cuda_sim"
  c10::DeviceType device;  // the tensors it takes
  void (*rms_norm_forward)(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, double eps,
                           at::Tensor& y, at::Tensor& residual_out, at::Tensor& rstd);
  void (*rms_norm_backward)(const at::Tensor& dy, const at::Tensor& s, const at::Tensor& weight,
                            const at::Tensor& rstd, const at::Tensor& d_residual_out, at::Tensor& ds, at::Tensor& dw);
  void (*gate_mul_forward)(const at::Tensor& y, const at::Tensor& z, int64_t width, at::Tensor& out);
  void (*gate_mul_backward)(const at::Tensor& dout, const at::Tensor& y, const at::Tensor& z, int64_t width,
                            at::Tensor& dy, at::Tensor& dz);
};

// The launcher in use (null when the build has no CUDA kernels and none was installed).
const ElementwiseLauncher* elementwise_launcher();
// Installs `launcher` (not owned; it must outlive every forward and backward that uses it);
// null restores the default. For tests. A Function's backward uses the launcher of its forward.
void set_elementwise_launcher(const ElementwiseLauncher* launcher);

// Why the launcher in use cannot take `t` (no launcher, device, dtype); "" when it can.
std::string elementwise_unsupported(const at::Tensor& t);
// One warning per distinct (op, reason) and process: a fallback is taken on every layer and step.
void warn_elementwise_fallback_once(const std::string& op, const std::string& reason);

}  // namespace sluice
