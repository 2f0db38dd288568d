// Causal self-attention: projections, optional QK-norm, positions, and an AttentionCore.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <memory>

#include "model/rms_norm.h"
#include "model/rope.h"
#include "sluice/attention.h"
#include "sluice/config.h"

namespace sluice {

// Per-forward state shared by all layers (computed once per forward, not per layer).
struct ForwardContext {
  RotaryTables rope;  // undefined when model.position != rope
  AttentionMask mask;
};

class SelfAttentionImpl : public torch::nn::Module {
 public:
  explicit SelfAttentionImpl(const ModelConfig& cfg);
  // x [B, T, d_model] -> [B, T, d_model]
  at::Tensor forward(const at::Tensor& x, const ForwardContext& ctx);

  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};

 private:
  int64_t n_heads_, n_kv_heads_, head_dim_;
  std::shared_ptr<AttentionCore> core_;
};
TORCH_MODULE(SelfAttention);

}  // namespace sluice
