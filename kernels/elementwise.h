// Fused elementwise CUDA kernels for the decoder's hot path. Each has an ATen reference
// (rope_reference, swiglu_reference, coca_query_reference, coca_key_reference in src/model/)
// and GPU tests comparing forward and backward against it (tests/test_gpu.cpp).
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

// CoCA (src/model/coca.h), per rotary pair of contiguous [B, T, H, D] tensors with fp32 [T, D/2]
// tables; `strict` picks the paper's form, else slack. Q_eff from q and its gradient dq; K_eff
// from the k_proj output t_raw and its gradient dt_raw.
void coca_query_forward(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out,
                        bool strict);
void coca_query_backward(const at::Tensor& dy, const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin,
                         at::Tensor& dq, bool strict);
void coca_key_forward(const at::Tensor& t_raw, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out,
                      bool strict);
void coca_key_backward(const at::Tensor& dy, const at::Tensor& t_raw, const at::Tensor& cos, const at::Tensor& sin,
                       at::Tensor& dt_raw, bool strict);

}  // namespace sluice::kernels
