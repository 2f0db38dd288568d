// Fused elementwise CUDA kernels for the decoder's hot path. Each has an ATen reference
// (src/model/fused_ops.cpp: rope_reference, swiglu_reference) and GPU tests comparing
// forward and backward against it (tests/test_gpu.cpp).
#pragma once
#include <ATen/core/Tensor.h>

namespace sluice::kernels {

// x, out: contiguous [B, T, H, D]; cos, sin: contiguous fp32 [T, D/2].
// Rotate-half RoPE; `inverse` rotates by the negative angle (the backward pass).
void rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out, bool inverse);

// out = silu(gate) * up, all contiguous and of one dtype.
void swiglu_forward(const at::Tensor& gate, const at::Tensor& up, at::Tensor& out);
// d_gate = dy * up * silu'(gate), d_up = dy * silu(gate).
void swiglu_backward(const at::Tensor& dy, const at::Tensor& gate, const at::Tensor& up, at::Tensor& d_gate,
                     at::Tensor& d_up);

}  // namespace sluice::kernels
