// Fused sigmoid gate kernels, forward and backward (kernels/gate_mul.cuh has the formulas and the
// layout): the G1 gate after a non-fused attention core in one elementwise kernel each way. The
// model launches them with model.elementwise_kernels: fused (src/model/fused_gate.cpp, through
// src/model/elementwise_launcher.h). Tested against an ATen/autograd reference on
// the GPU (tests/test_gate_mul_gpu.cpp) and, running the same kernel code on the CPU under
// cuda_sim, without one (tests/test_gate_mul_sim.cpp).
//
// Shapes: y and the tensors "like y" (out, dout, dy) are contiguous CUDA tensors of one dtype
// (fp32, fp16 or bf16) with n elements; z and dz are contiguous, of y's dtype, with n / width
// elements in any shape (one gate logit per `width` consecutive elements of y: width 1 is the
// elementwise gate, width = head dim the headwise one, z [..., H] or [..., H, 1] beside
// y [..., H, D]). width >= 1 divides n. Outputs are written in place (allocate them first).
// Math in fp32, each output rounded once.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace sluice::kernels {

// out[i] = y[i] · sigmoid(z[i / width]).
void gate_mul_forward(const at::Tensor& y, const at::Tensor& z, int64_t width, at::Tensor& out);

// With s = sigmoid(z[i / width]): dy[i] = dout[i] · s, dz[g] = Σ_{i / width = g} dout[i] · y[i] · s · (1 - s)
// (summed in fp32 in a fixed order, no atomics: bitwise reproducible).
void gate_mul_backward(const at::Tensor& dout, const at::Tensor& y, const at::Tensor& z, int64_t width, at::Tensor& dy,
                       at::Tensor& dz);

}  // namespace sluice::kernels
