#pragma once
#include <torch/nn/module.h>

#include "model/rms_norm.h"
#include "model/self_attention.h"
#include "model/swiglu.h"

namespace sluice {

// Pre-norm block: h = x + attn(norm(x)); out = h + mlp(norm(h)).
class DecoderBlockImpl : public torch::nn::Module {
 public:
  explicit DecoderBlockImpl(const ModelConfig& cfg, int64_t layer = 0);
  at::Tensor forward(const at::Tensor& x, const ForwardContext& ctx);

  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  SelfAttention self_attn{nullptr};
  SwiGLU mlp{nullptr};
};
TORCH_MODULE(DecoderBlock);

}  // namespace sluice
