#pragma once
#include <torch/nn/module.h>

#include "model/activation_checkpoint.h"
#include "model/moe.h"
#include "model/rms_norm.h"
#include "model/self_attention.h"
#include "model/swiglu.h"

namespace sluice {

// Pre-norm block: h = x + attn(norm(x)); out = h + mlp(norm(h)). The feed-forward ("mlp")
// is a dense SwiGLU, or an MoE layer in block `layer` when cfg.is_moe_layer(layer). With
// model.elementwise_kernels: fused the norms run the fused RMSNorm kernels, and h and norm(h)
// come from one kernel (the residual form) except under selective checkpointing, which
// recomputes norm(h) from h. The aten path is the ATen ops of before, bitwise.
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
  at::Tensor attention_output(const at::Tensor& x, const ForwardContext& ctx);  // attn(norm(x))
  // {h, norm(h)} with h = x + attn: one kernel call with fused elementwise kernels.
  std::pair<at::Tensor, at::Tensor> residual_and_norm(const at::Tensor& x, const at::Tensor& attn);
  at::Tensor feed_forward(const at::Tensor& n);

  int64_t layer_;
  bool fused_elementwise_;
  ActivationCheckpointing checkpointing_ = ActivationCheckpointing::None;
};
TORCH_MODULE(DecoderBlock);

}  // namespace sluice
