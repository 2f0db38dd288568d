// The MoE router: a bias-free linear map from the block's normalised input to one logit per
// expert, scores, top-k selection and the combine weights (formulas in docs/moe.md).
#pragma once
#include <torch/nn/module.h>

#include "sluice/config.h"

namespace sluice {

struct Routing {
  at::Tensor logits;  // [N, E] fp32
  at::Tensor probs;   // [N, E] fp32: the router's distribution over experts (P_i of the aux loss, entropy)
  at::Tensor expert;  // [N, k] int64, slot 0 = highest selection score
  at::Tensor weight;  // [N, k] fp32 combine weights (differentiable)
};

class RouterImpl : public torch::nn::Module {
 public:
  RouterImpl(int64_t d_model, const MoEConfig& cfg);
  // x [N, d_model] (any float dtype; routing runs in fp32 even under autocast).
  Routing forward(const at::Tensor& x) const;
  // The aux-loss-free update: bias_e += rate·sign(mean load - load_e), not applied where
  // `skipped` (a device scalar, optional) is 1. No-op without the bias.
  void update_bias(const at::Tensor& expert_load, const at::Tensor& skipped);

  at::Tensor weight;                   // [E, d_model]: `mlp.gate.weight` (HF Qwen-MoE)
  at::Tensor e_score_correction_bias;  // [E] fp32 buffer (DeepSeek-V3 name); undefined when rate == 0

 private:
  MoEConfig cfg_;
};
TORCH_MODULE(Router);

}  // namespace sluice
