// The decoder-only language model. Parameter names follow HuggingFace Llama/Qwen:
// model.embed_tokens.weight, model.layers.{i}.self_attn.{q,k,v,o}_proj.weight, ...,
// model.norm.weight, lm_head.weight (untied only).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "sluice/config.h"

namespace sluice {

class RMSNormImpl;
class Rotary;
struct ForwardObserver;

class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const ModelConfig& cfg);
  // tokens [B, T] (int64) -> final normalised hidden states [B, T, d_model]. `observer`
  // (sluice/forward_observer.h) sees per-layer activations of this pass when given.
  at::Tensor forward(const at::Tensor& tokens, ForwardObserver* observer = nullptr);

  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::shared_ptr<RMSNormImpl> norm;

 private:
  ModelConfig cfg_;
  std::shared_ptr<Rotary> rotary_;
};
TORCH_MODULE(Decoder);

class CausalLMImpl : public torch::nn::Module {
 public:
  explicit CausalLMImpl(const ModelConfig& cfg);
  // tokens [B, T] -> logits [B, T, vocab_size]
  at::Tensor forward(const at::Tensor& tokens, ForwardObserver* observer = nullptr);
  // Mean next-token cross-entropy of `targets` [B, T] given `tokens` [B, T], in fp32.
  at::Tensor loss(const at::Tensor& tokens, const at::Tensor& targets);
  // Normal(0, init_std) for linear and embedding weights (the gate's g_proj included),
  // init_std/sqrt(2·n_layers) for the residual output projections (o_proj, down_proj), ones
  // for norms, zeros for biases. Uses the global RNG.
  void reset_parameters();
  const ModelConfig& config() const { return cfg_; }

  Decoder model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tie_embeddings

 private:
  ModelConfig cfg_;
};
TORCH_MODULE(CausalLM);

// Analytic sizes for logging and MFU. FLOPs per token follow PaLM (Chowdhery et al. 2022,
// App. B): 6·N_matmul + 12·n_layers·n_heads·head_dim·seq_len for forward+backward, where
// N_matmul counts every weight used in a matrix multiply (the output head included, the
// embedding lookup not). The attention term ignores causal masking, as PaLM does.
struct ModelStats {
  int64_t params_total = 0;      // all trainable parameters
  int64_t params_embedding = 0;  // token embedding (+ untied lm_head)
  int64_t params_matmul = 0;     // N_matmul above
  double train_flops_per_token = 0.0;
};
ModelStats model_stats(const ModelConfig& cfg, int64_t seq_len);

int64_t count_parameters(const torch::nn::Module& module);

}  // namespace sluice
