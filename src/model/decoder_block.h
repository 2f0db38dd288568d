#pragma once
#include <torch/nn/module.h>

#include "model/activation_checkpoint.h"
#include "model/moe.h"
#include "model/rms_norm.h"
#include "model/self_attention.h"
#include "model/swiglu.h"

namespace sluice {

// Pre-norm block: h = x + attn(norm(x)); out = h + mlp(norm(h)). The feed-forward ("mlp")
// is a dense SwiGLU, or an MoE layer in block `layer` when cfg.is_moe_layer(layer).
// Full activation checkpointing recomputes a dense block whole; an MoE block only up to h:
// the MoE layer's forward has effects a second run would repeat (routing statistics, the
// step's expert counts, router losses, the token exchange of expert parallelism).
class DecoderBlockImpl : public torch::nn::Module {
 public:
  DecoderBlockImpl(const ModelConfig& cfg, int64_t layer);
  at::Tensor forward(const at::Tensor& x, const ForwardContext& ctx);
  // train.activation_checkpointing; applies to training forwards (no observer, no cache).
  void set_activation_checkpointing(ActivationCheckpointing mode);

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  SelfAttention self_attn{nullptr};
  SwiGLU mlp{nullptr};   // dense blocks
  MoE moe_mlp{nullptr};  // MoE blocks (registered as "mlp" too)
 private:
  at::Tensor attention_half(const at::Tensor& x, const ForwardContext& ctx);  // x + attn(norm(x))
  at::Tensor feed_forward(const at::Tensor& n);

  int64_t layer_;
  ActivationCheckpointing checkpointing_ = ActivationCheckpointing::None;
};
TORCH_MODULE(DecoderBlock);

}  // namespace sluice
