#include "model/swiglu.h"

#include <ATen/ATen.h>

#include "model/activation_checkpoint.h"
#include "model/fused_ops.h"
#include "model/packed_linear.h"

namespace sluice {

namespace nn = torch::nn;

SwiGLUImpl::SwiGLUImpl(int64_t d_model, int64_t hidden, bool fused) : fused_(fused), hidden_(hidden) {
  gate_proj = register_module("gate_proj", nn::Linear(nn::LinearOptions(d_model, hidden).bias(false)));
  up_proj = register_module("up_proj", nn::Linear(nn::LinearOptions(d_model, hidden).bias(false)));
  down_proj = register_module("down_proj", nn::Linear(nn::LinearOptions(hidden, d_model).bias(false)));
  pack_projections();
}

void SwiGLUImpl::pack_projections() {
  if (fused_) pack_weights({gate_proj->weight, up_proj->weight});
}

at::Tensor SwiGLUImpl::forward(const at::Tensor& x) {
  at::Tensor g, u;
  if (fused_) {
    const at::Tensor gu = packed_linear(x, {gate_proj->weight, up_proj->weight});
    g = gu.narrow(-1, 0, hidden_);
    u = gu.narrow(-1, hidden_, hidden_);
  } else if (!recompute_product_) {
    return down_proj->forward(swiglu(gate_proj->forward(x), up_proj->forward(x)));
  } else {
    g = gate_proj->forward(x);
    u = up_proj->forward(x);
  }
  if (!recompute_product_) return down_proj->forward(swiglu(g, u));
  auto product = [](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{swiglu(in[0], in[1])}; };
  return with_recomputed_input(product, {g, u}, [this](const at::Tensor& a) { return down_proj->forward(a); });
}

}  // namespace sluice
