#pragma once
#include <torch/nn/module.h>

#include "model/moe.h"
#include "model/rms_norm.h"
#include "model/self_attention.h"
#include "model/swiglu.h"

namespace sluice {

// Pre-norm block: h = x + attn(norm(x)); out = h + mlp(norm(h)). The feed-forward ("mlp")
// is a dense SwiGLU, or an MoE layer in block `layer` when cfg.is_moe_layer(layer).
class DecoderBlockImpl : public torch::nn::Module {
 public:
  DecoderBlockImpl(const ModelConfig& cfg, int64_t layer);
  at::Tensor forward(const at::Tensor& x, const ForwardContext& ctx);

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  SelfAttention self_attn{nullptr};
  SwiGLU mlp{nullptr};   // dense blocks
  MoE moe_mlp{nullptr};  // MoE blocks (registered as "mlp" too)
 private:
  int64_t layer_;
};
TORCH_MODULE(DecoderBlock);

}  // namespace sluice
