#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

namespace sluice {

// SwiGLU feed-forward (Shazeer 2020): down(silu(gate(x)) ⊙ up(x)).
class SwiGLUImpl : public torch::nn::Module {
 public:
  // `fused`: gate and up as one GEMM over their packed weights (model.fused_projections).
  SwiGLUImpl(int64_t d_model, int64_t hidden, bool fused = false);
  // Packs gate_proj and up_proj's weights into one buffer (after moving the module).
  void pack_projections();
  at::Tensor forward(const at::Tensor& x);
  // Selective activation checkpointing: silu(gate) ⊙ up is not kept for down_proj's backward
  // but recomputed from the two projections' outputs (with_recomputed_input).
  void set_recompute_product(bool on) { recompute_product_ = on; }
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  bool recompute_product_ = false;
  bool fused_ = false;
  int64_t hidden_;
};
TORCH_MODULE(SwiGLU);

}  // namespace sluice
