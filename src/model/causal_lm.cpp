#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/init.h>

#include <cmath>

#include "model/alibi.h"
#include "model/chunked_loss.h"
#include "model/decoder_block.h"
#include "model/kv_cache.h"
#include "model/moe.h"
#include "model/rms_norm.h"
#include "model/rope.h"
#include "sluice/model.h"

namespace sluice {

namespace nn = torch::nn;

DecoderImpl::DecoderImpl(const ModelConfig& cfg) : cfg_(cfg) {
  embed_tokens = register_module("embed_tokens", nn::Embedding(cfg.vocab_size, cfg.d_model));
  layers = register_module("layers", nn::ModuleList());
  for (int64_t i = 0; i < cfg.n_layers; ++i) layers->push_back(DecoderBlock(cfg, i));
  norm = register_module("norm", std::make_shared<RMSNormImpl>(cfg.d_model, cfg.norm_eps,
                                                                cfg.elementwise_kernels == "fused"));
  if (cfg.position == "rope") rotary_ = std::make_shared<Rotary>(cfg.resolved_head_dim(), cfg.rope);
}

at::Tensor DecoderImpl::forward(const at::Tensor& tokens, ForwardObserver* observer, KVCache* cache,
                                const at::Tensor& segments) {
  ForwardContext ctx;
  ctx.observer = observer;
  ctx.cache = cache;
  if (segments.defined()) {
    TORCH_CHECK(!cache, "document segments cannot be combined with a KV cache");
    TORCH_CHECK(segments.sizes() == tokens.sizes(), "segments ", segments.sizes(), " do not match tokens ",
                tokens.sizes());
    ctx.mask.segments = segments;  // RoPE positions stay global: within a document only differences matter
  }
  const int64_t start = cache ? cache->length() : 0;
  if (rotary_) ctx.rope = rotary_->tables(start, tokens.size(1), tokens.device());
  if (cfg_.position == "alibi") ctx.mask.alibi_slopes = alibi_slopes_tensor(cfg_.n_heads, tokens.device());
  ctx.mask.cache = std::make_shared<MaskCache>();  // the layers share what the cores derive from the mask
  at::Tensor h = embed_tokens->forward(tokens);
  for (const auto& layer : *layers) h = layer->as<DecoderBlockImpl>()->forward(h, ctx);
  if (cache) cache->advance(tokens.size(1));
  return norm->forward(h);
}

CausalLMImpl::CausalLMImpl(const ModelConfig& cfg) : cfg_(cfg) {
  model = register_module("model", Decoder(cfg));
  if (!cfg.tie_embeddings) {
    lm_head = register_module("lm_head", nn::Linear(nn::LinearOptions(cfg.d_model, cfg.vocab_size).bias(false)));
  }
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    if (auto moe = model->layers[i]->as<DecoderBlockImpl>()->moe_mlp) moe_layers_.emplace_back(i, moe.ptr());
  }
  reset_parameters();
}

at::Tensor CausalLMImpl::output_head(const at::Tensor& h) {
  return lm_head ? lm_head->forward(h) : at::linear(h, model->embed_tokens->weight);
}

at::Tensor CausalLMImpl::logits(const at::Tensor& tokens, ForwardObserver* observer, const at::Tensor& segments) {
  return output_head(model->forward(tokens, observer, nullptr, segments));
}

at::Tensor CausalLMImpl::hidden(const at::Tensor& tokens, ForwardObserver* observer, const at::Tensor& segments) {
  at::Tensor h = model->forward(tokens, observer, nullptr, segments);
  for (auto& [i, moe] : moe_layers_) moe->take_losses();  // not wanted here; drop their graphs
  return h;
}

at::Tensor CausalLMImpl::forward(const at::Tensor& tokens, ForwardObserver* observer, const at::Tensor& segments) {
  return output_head(hidden(tokens, observer, segments));
}

at::Tensor CausalLMImpl::forward_cached(const at::Tensor& tokens, KVCache& cache, ForwardObserver* observer) {
  TORCH_CHECK(cache.n_layers() == cfg_.n_layers, "forward_cached: the cache was made for another model");
  at::NoGradGuard no_grad;  // the cache is written in place
  const at::Tensor h = model->forward(tokens, observer, &cache);
  for (auto& [i, moe] : moe_layers_) moe->take_losses();
  return output_head(h);
}

LossParts CausalLMImpl::loss_parts(const at::Tensor& tokens, const at::Tensor& targets, const at::Tensor& segments) {
  LossParts p;
  if (loss_chunk_tokens_ > 0) {
    const at::Tensor h = model->forward(tokens, nullptr, nullptr, segments);
    const at::Tensor& w = lm_head ? lm_head->weight : model->embed_tokens->weight;
    p.lm = chunked_linear_cross_entropy(h.reshape({-1, h.size(-1)}), w, targets.reshape({-1}), loss_chunk_tokens_);
  } else {
    const at::Tensor y = logits(tokens, nullptr, segments);
    p.lm = at::cross_entropy_loss(y.reshape({-1, y.size(-1)}).to(at::kFloat), targets.reshape({-1}));
  }
  p.total = p.lm;
  if (moe_layers_.empty()) return p;
  p.aux = at::zeros({}, p.lm.options());
  p.z = at::zeros({}, p.lm.options());
  for (auto& [i, moe] : moe_layers_) {
    auto [aux, z] = moe->take_losses();
    if (aux.defined()) p.aux = p.aux + aux;
    if (z.defined()) p.z = p.z + z;
  }
  // Mean over MoE layers: a balanced router gives aux == α whatever the depth.
  const double inv = 1.0 / static_cast<double>(moe_layers_.size());
  p.aux = p.aux * inv;
  p.z = p.z * inv;
  p.total = p.lm + p.aux + p.z;
  return p;
}

at::Tensor CausalLMImpl::loss(const at::Tensor& tokens, const at::Tensor& targets, const at::Tensor& segments) {
  return loss_parts(tokens, targets, segments).total;
}

void CausalLMImpl::after_optimizer_step(const at::Tensor& skipped) {
  for (auto& [i, moe] : moe_layers_) moe->after_optimizer_step(skipped);
}

std::vector<MoELayerStats> CausalLMImpl::routing_stats() { return take_routing_stats(moe_layers_); }

void CausalLMImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, dtype, non_blocking);
  pack_projections();
}
void CausalLMImpl::to(torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(dtype, non_blocking);
  pack_projections();
}
void CausalLMImpl::to(torch::Device device, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  pack_projections();
}

void CausalLMImpl::pack_projections() {
  for (const auto& layer : *model->layers) {
    auto* block = layer->as<DecoderBlockImpl>();
    block->self_attn->pack_projections();
    if (block->mlp) block->mlp->pack_projections();
    if (block->moe_mlp && block->moe_mlp->shared_expert) block->moe_mlp->shared_expert->pack_projections();
  }
}

void CausalLMImpl::set_activation_checkpointing(const std::string& mode) {
  const ActivationCheckpointing m = parse_activation_checkpointing(mode);
  for (const auto& layer : *model->layers) layer->as<DecoderBlockImpl>()->set_activation_checkpointing(m);
}

void CausalLMImpl::set_token_dispatcher(std::shared_ptr<TokenDispatcher> dispatcher) {
  for (auto& [i, moe] : moe_layers_) moe->set_dispatcher(dispatcher);
}

void CausalLMImpl::keep_experts(int64_t first, int64_t count) {
  for (auto& [i, moe] : moe_layers_) moe->experts->keep(first, count);
}

void CausalLMImpl::set_routing_count_reducer(std::shared_ptr<RoutingCountReducer> reducer) {
  for (auto& [i, moe] : moe_layers_) moe->set_count_reducer(reducer);
}

void CausalLMImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const double out_std = cfg_.init_std / std::sqrt(2.0 * static_cast<double>(cfg_.n_layers));
  for (auto& item : named_parameters()) {
    const std::string& name = item.key();
    at::Tensor& p = item.value();
    if (name.find("norm") != std::string::npos) {
      p.fill_(1.0);
    } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      p.zero_();  // gate biases (and the logits of an input-independent gate) start at 0
    } else if (name.find("o_proj") != std::string::npos || name.find("down_proj") != std::string::npos) {
      p.normal_(0.0, out_std);
    } else {
      p.normal_(0.0, cfg_.init_std);
    }
  }
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace sluice
