// RMSNorm through the fused kernels (kernels/rms_norm.h), as autograd Functions launched
// through elementwise_launcher() (model/elementwise_launcher.h). RMSNormImpl takes this path
// with model.elementwise_kernels: fused and keeps ATen's for inputs the kernels do not take.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>

namespace sluice {

// "" when the launcher takes x (any shape, last dim d), weight [d] (x's dtype or fp32) and, when
// defined, residual (x's dtype, device and shape); else why not.
std::string fused_rms_norm_unsupported(const at::Tensor& x, const at::Tensor& weight,
                                       const at::Tensor& residual = at::Tensor());

// rms_norm(x) · weight over the last dim, in x's dtype. Saves x and the per-row rstd.
at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// {h, y} with h = residual + x (rounded to their dtype, bitwise ATen's add) and
// y = rms_norm(h) · weight, one kernel each way. Saves h and rstd; the backward adds h's own
// gradient into the one returned to both x and residual.
std::pair<at::Tensor, at::Tensor> fused_add_rms_norm(const at::Tensor& residual, const at::Tensor& x,
                                                     const at::Tensor& weight, double eps);

}  // namespace sluice
