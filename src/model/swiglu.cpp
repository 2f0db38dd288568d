#include "model/swiglu.h"

#include <ATen/ATen.h>

#include "model/activation_checkpoint.h"
#include "model/fused_ops.h"

namespace sluice {

namespace nn = torch::nn;

SwiGLUImpl::SwiGLUImpl(int64_t d_model, int64_t hidden) {
  gate_proj = register_module("gate_proj", nn::Linear(nn::LinearOptions(d_model, hidden).bias(false)));
  up_proj = register_module("up_proj", nn::Linear(nn::LinearOptions(d_model, hidden).bias(false)));
  down_proj = register_module("down_proj", nn::Linear(nn::LinearOptions(hidden, d_model).bias(false)));
}

at::Tensor SwiGLUImpl::forward(const at::Tensor& x) {
  if (!recompute_product_) return down_proj->forward(swiglu(gate_proj->forward(x), up_proj->forward(x)));
  const at::Tensor g = gate_proj->forward(x), u = up_proj->forward(x);
  auto product = [](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{swiglu(in[0], in[1])}; };
  return with_recomputed_input(product, {g, u}, [this](const at::Tensor& a) { return down_proj->forward(a); });
}

}  // namespace sluice
