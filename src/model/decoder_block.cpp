#include "model/decoder_block.h"

#include "sluice/forward_observer.h"

namespace sluice {

DecoderBlockImpl::DecoderBlockImpl(const ModelConfig& cfg, int64_t layer) : layer_(layer) {
  input_layernorm = register_module("input_layernorm", RMSNorm(cfg.d_model, cfg.norm_eps));
  self_attn = register_module("self_attn", SelfAttention(cfg, layer));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(cfg.d_model, cfg.norm_eps));
  if (cfg.is_moe_layer(layer)) {
    moe_mlp = register_module("mlp", MoE(cfg));
  } else {
    mlp = register_module("mlp", SwiGLU(cfg.d_model, cfg.resolved_ffn_hidden()));
  }
}

at::Tensor DecoderBlockImpl::forward(const at::Tensor& x, const ForwardContext& ctx) {
  const at::Tensor attn = self_attn->forward(input_layernorm->forward(x), ctx);
  const at::Tensor h = x + attn;
  const at::Tensor n = post_attention_layernorm->forward(h);
  const at::Tensor ffn = mlp ? mlp->forward(n) : moe_mlp->forward(n);
  const at::Tensor out = h + ffn;
  if (ctx.observer) ctx.observer->on_block_output(layer_, attn, ffn, out);
  return out;
}

}  // namespace sluice
