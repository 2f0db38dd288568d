#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

namespace sluice {

// SwiGLU feed-forward (Shazeer 2020): down(silu(gate(x)) ⊙ up(x)).
class SwiGLUImpl : public torch::nn::Module {
 public:
  SwiGLUImpl(int64_t d_model, int64_t hidden);
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(SwiGLU);

}  // namespace sluice
