// The sigmoid output gate through the fused kernels (kernels/gate_mul.h), as an autograd
// Function launched through elementwise_launcher() (model/elementwise_launcher.h). GateImpl
// takes this path at G1 with model.elementwise_kernels: fused when the attention core did not
// apply the gate itself, and keeps ATen's for inputs the kernels do not take.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace sluice {

// "" when the launcher takes y; else why not.
std::string fused_gate_unsupported(const at::Tensor& y);

// y · sigmoid(z) with one logit per `width` consecutive elements of y in row-major order
// (width 1: elementwise, width = head dim: headwise). z: y.numel() / width elements, any shape,
// cast to y's dtype. The result is contiguous, y's shape and dtype. Saves y and z.
at::Tensor fused_gate_mul(const at::Tensor& y, const at::Tensor& z, int64_t width);

}  // namespace sluice
