#include "model/swiglu.h"

#include <ATen/ATen.h>

#include "model/fused_ops.h"

namespace sluice {

namespace nn = torch::nn;

SwiGLUImpl::SwiGLUImpl(int64_t d_model, int64_t hidden) {
  gate_proj = register_module("gate_proj", nn::Linear(nn::LinearOptions(d_model, hidden).bias(false)));
  up_proj = register_module("up_proj", nn::Linear(nn::LinearOptions(d_model, hidden).bias(false)));
  down_proj = register_module("down_proj", nn::Linear(nn::LinearOptions(hidden, d_model).bias(false)));
}

at::Tensor SwiGLUImpl::forward(const at::Tensor& x) {
  return down_proj->forward(swiglu(gate_proj->forward(x), up_proj->forward(x)));
}

}  // namespace sluice
