// Hot-path elementwise ops: a fused CUDA kernel (kernels/) with autograd when the tensor is
// on a GPU and the kernels were built, else the ATen reference. Both paths are tested
// against each other (forward and backward) in tests/test_gpu.cpp.
#pragma once
#include <ATen/core/Tensor.h>

#include "model/coca.h"
#include "model/rope.h"

namespace sluice {

bool fused_kernels_built();

// x [B, T, H, D] -> rotated, same shape and dtype.
at::Tensor apply_rope(const at::Tensor& x, const RotaryTables& t);

// silu(gate) * up
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);
at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up);
// coca_key and coca_query (declared in model/coca.h) choose kernel or reference here too.

}  // namespace sluice
