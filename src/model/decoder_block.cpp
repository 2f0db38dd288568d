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
    mlp = register_module("mlp", SwiGLU(cfg.d_model, cfg.resolved_ffn_hidden(), cfg.fused_projections));
  }
}

void DecoderBlockImpl::set_activation_checkpointing(ActivationCheckpointing mode) {
  checkpointing_ = mode;
  const bool selective = mode == ActivationCheckpointing::Selective;
  self_attn->set_recompute_region(selective);
  if (mlp) mlp->set_recompute_product(selective);
  if (moe_mlp && moe_mlp->shared_expert) moe_mlp->shared_expert->set_recompute_product(selective);
}

at::Tensor DecoderBlockImpl::attention_half(const at::Tensor& x, const ForwardContext& ctx) {
  return x + self_attn->forward(input_layernorm->forward(x), ctx);
}

at::Tensor DecoderBlockImpl::feed_forward(const at::Tensor& n) { return mlp ? mlp->forward(n) : moe_mlp->forward(n); }

at::Tensor DecoderBlockImpl::forward(const at::Tensor& x, const ForwardContext& ctx) {
  if (ctx.observer) {
    const at::Tensor attn = self_attn->forward(input_layernorm->forward(x), ctx);
    const at::Tensor h = x + attn;
    const at::Tensor ffn = feed_forward(post_attention_layernorm->forward(h));
    const at::Tensor out = h + ffn;
    ctx.observer->on_block_output(layer_, attn, ffn, out);
    return out;
  }
  if (checkpointing_ == ActivationCheckpointing::Selective && !ctx.cache) {
    // The norms' outputs are read only by the GEMMs after them: recomputed, not kept.
    auto norm = [](const RMSNorm& n) {
      return [n](const std::vector<at::Tensor>& in) { return std::vector<at::Tensor>{n->forward(in[0])}; };
    };
    const at::Tensor h = x + with_recomputed_input(norm(input_layernorm), {x},
                                                   [&](const at::Tensor& n) { return self_attn->forward(n, ctx); });
    return h + with_recomputed_input(norm(post_attention_layernorm), {h},
                                     [&](const at::Tensor& n) { return feed_forward(n); });
  }
  if (checkpointing_ != ActivationCheckpointing::Full || ctx.cache) {
    const at::Tensor h = attention_half(x, ctx);
    return h + feed_forward(post_attention_layernorm->forward(h));
  }
  const ForwardContext region_ctx = ctx;
  if (mlp) {
    auto block = [this, region_ctx](const std::vector<at::Tensor>& in) {
      const at::Tensor h = attention_half(in[0], region_ctx);
      return std::vector<at::Tensor>{h + mlp->forward(post_attention_layernorm->forward(h))};
    };
    return checkpoint(block, {x})[0];
  }
  auto half = [this, region_ctx](const std::vector<at::Tensor>& in) {
    return std::vector<at::Tensor>{attention_half(in[0], region_ctx)};
  };
  const at::Tensor h = checkpoint(half, {x})[0];
  return h + moe_mlp->forward(post_attention_layernorm->forward(h));
}

}  // namespace sluice
