// Fused RMSNorm (+ residual add) CUDA kernels, forward and backward (kernels/rms_norm.cuh has the
// formulas and the layout). The model launches them with model.elementwise_kernels: fused
// (src/model/fused_rms_norm.cpp, through src/model/elementwise_launcher.h). Tested against
// an ATen/autograd reference on the GPU (tests/test_rms_norm_gpu.cpp) and, running the same
// kernel code on the CPU under cuda_sim, without one (tests/test_rms_norm_sim.cpp).
//
// Shapes: x and the tensors "like x" are contiguous CUDA tensors of one dtype (fp32, fp16 or
// bf16) with last dim d, taken as rows = numel / d rows of d; weight is contiguous [d] of x's
// dtype or fp32; rstd is contiguous fp32 with `rows` elements. Outputs are written in place
// (allocate them first). Math in fp32, each output rounded once.
#pragma once
#include <ATen/core/Tensor.h>

namespace sluice::kernels {

// s = x + residual (written to residual_out) when residual is defined, else s = x;
// rstd = 1 / sqrt(mean(s^2) + eps) per row; y = s · rstd · weight.
// residual and residual_out: both undefined, or both defined and like x.
void rms_norm_forward(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, double eps,
                      at::Tensor& y, at::Tensor& residual_out, at::Tensor& rstd);

// s: the normalised input (the forward's residual_out, or x); rstd: the forward's.
// ds = rstd · (g - xhat · mean(g · xhat)) (+ d_residual_out when defined), g = dy · weight,
// xhat = s · rstd: the gradient of x (and of the residual, in the residual form);
// dw = Σ_rows dy · xhat, like weight. dw is deterministic on a given device (fixed grid, no
// atomics); its summation order depends on the device's SM count.
void rms_norm_backward(const at::Tensor& dy, const at::Tensor& s, const at::Tensor& weight, const at::Tensor& rstd,
                       const at::Tensor& d_residual_out, at::Tensor& ds, at::Tensor& dw);

}  // namespace sluice::kernels
