// The decoder-only language model. Parameter names follow HuggingFace Llama/Qwen:
// model.embed_tokens.weight, model.layers.{i}.self_attn.{q,k,v,o}_proj.weight, ...,
// model.norm.weight, lm_head.weight (untied only). MoE blocks (docs/moe.md) hold
// model.layers.{i}.mlp.gate.weight, mlp.experts.{gate,up,down}_proj ([E, ...] stacked) and
// optionally mlp.shared_expert.*, mlp.shared_expert_gate.weight.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <string>
#include <utility>
#include <vector>

#include "sluice/config.h"

namespace sluice {

class RMSNormImpl;
class Rotary;
struct ForwardObserver;
class MoEImpl;
class KVCache;
class TokenDispatcher;

// The training objective and its parts (fp32 scalars on the model's device, no sync).
// For dense models aux and z are undefined and total is lm (no extra work).
struct LossParts {
  at::Tensor total;  // lm + aux + z: what backward() is called on
  at::Tensor lm;     // mean next-token cross-entropy
  at::Tensor aux;    // MoE load-balancing loss, α·E·Σ f_i·P_i averaged over MoE layers
  at::Tensor z;      // MoE router z-loss, β·mean(logsumexp(logits)²) averaged over MoE layers
};

// Routing statistics of one MoE layer, accumulated over training forwards since the last read.
struct MoELayerStats {
  int64_t layer = 0;                  // block index
  int64_t tokens = 0;                 // tokens routed
  std::vector<int64_t> expert_tokens; // assignments per expert (top_k per token, dropped included)
  int64_t load_min = 0, load_max = 0; // min / max of expert_tokens
  double load_cv = 0.0;               // coefficient of variation of expert_tokens (std / mean; 0 = balanced)
  int64_t dropped = 0;                // assignments dropped by moe.capacity_factor
  double router_entropy = 0.0;        // mean entropy of the router distribution per token, nats (max ln E)
  std::string gemm;                   // expert GEMM path of the last forward: grouped | loop
};

// Sums MoE routing counts over the processes that share one global batch (data parallelism
// plugs one in from src/dist), so that the load-balancing loss and the aux-loss-free bias
// see the counts one process holding the whole batch would see. Without one, a process
// counts its own tokens. Every process routes the same number of tokens per micro-batch.
struct RoutingCountReducer {
  virtual ~RoutingCountReducer() = default;
  virtual at::Tensor sum(const at::Tensor& counts) = 0;  // int64; returns the sum over the processes
  virtual int64_t processes() const = 0;
};

class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(const ModelConfig& cfg);
  // tokens [B, T] (int64) -> final normalised hidden states [B, T, d_model]. `observer`
  // (sluice/forward_observer.h) sees per-layer activations of this pass when given. With a
  // `cache` (model/kv_cache.h) the tokens follow the cache.length() already processed: positions
  // start there, every layer attends its cached keys too and appends this pass's. `segments`
  // [B, T] (data.respect_documents; AttentionMask::segments): positions attend only within their
  // document; not with a cache. Positions (RoPE) stay those of the whole row.
  at::Tensor forward(const at::Tensor& tokens, ForwardObserver* observer = nullptr, KVCache* cache = nullptr,
                     const at::Tensor& segments = {});

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
  // tokens [B, T] -> logits [B, T, vocab_size]. `segments` [B, T] int64, nondecreasing along T
  // (optional): document index per position; attention stays within a document
  // (data.respect_documents, AttentionMask::segments).
  at::Tensor forward(const at::Tensor& tokens, ForwardObserver* observer = nullptr, const at::Tensor& segments = {});
  // The two halves of forward, for evaluation code that wants logits only for some positions
  // (memory linear in length): tokens -> final normalised hidden states [B, T, d_model]
  // (MoE router losses of this forward are dropped), and hidden states -> logits.
  at::Tensor hidden(const at::Tensor& tokens, ForwardObserver* observer = nullptr, const at::Tensor& segments = {});
  at::Tensor output_head(const at::Tensor& h);
  // Incremental decoding (inference only, no autograd): logits [B, T, vocab_size] of `tokens`
  // [B, T] that follow the cache.length() tokens already in `cache`, whose keys and values are
  // appended. Prefilling a prompt and then feeding one token at a time gives the logits of a
  // full forward over the whole sequence (docs/attention.md: KV cache, for the exceptions).
  at::Tensor forward_cached(const at::Tensor& tokens, KVCache& cache, ForwardObserver* observer = nullptr);
  // The objective for `targets` [B, T] given `tokens` [B, T]: cross-entropy in fp32 plus, for
  // MoE models, the router losses of this forward. `segments` as in forward (Batch::segments).
  LossParts loss_parts(const at::Tensor& tokens, const at::Tensor& targets, const at::Tensor& segments = {});
  // loss_parts(...).total
  at::Tensor loss(const at::Tensor& tokens, const at::Tensor& targets, const at::Tensor& segments = {});
  // MoE bookkeeping after each optimizer step (aux-loss-free bias update, per-step counts);
  // `skipped` (optional device scalar, 1 = the update was dropped) also drops the bias
  // update. No-op for dense models. TrainStep calls it.
  void after_optimizer_step(const at::Tensor& skipped = {});
  // Per-MoE-layer routing statistics since the previous call (one device sync for all layers,
  // then the accumulators restart). Empty for dense models. Call it at log time.
  std::vector<MoELayerStats> routing_stats();
  // Installs (or, with null, removes) the reducer every MoE layer counts through in training.
  void set_routing_count_reducer(std::shared_ptr<RoutingCountReducer> reducer);
  // loss_parts computes the output head and cross-entropy `tokens` rows at a time (0: all at
  // once), so the whole [tokens, vocab] logits never exist (train.loss_chunk_tokens).
  void set_loss_chunk_tokens(int64_t tokens) { loss_chunk_tokens_ = tokens; }
  // train.activation_checkpointing: `none`, `selective` (each attention's region between the
  // projections and o_proj recomputed in backward) or `full` (each block recomputed; MoE
  // blocks their attention half). Training forwards only; same results (bitwise on the CPU).
  void set_activation_checkpointing(const std::string& mode);
  // Routes every MoE layer's token copies through `dispatcher` (null: the local one, all
  // experts here). Expert parallelism plugs its all-to-all in (src/dist/).
  void set_token_dispatcher(std::shared_ptr<TokenDispatcher> dispatcher);
  // Keeps experts [first, first + count) of every MoE layer's stacks (expert parallelism: this
  // process holds those; the dispatcher sends it their tokens). Call before training.
  void keep_experts(int64_t first, int64_t count);
  // Normal(0, init_std) for linear and embedding weights (the gate's g_proj included),
  // init_std/sqrt(2·n_layers) for the residual output projections (o_proj, down_proj), ones
  // for norms, zeros for biases. Uses the global RNG.
  void reset_parameters();
  const ModelConfig& config() const { return cfg_; }
  // Module::to, then the weights that share a GEMM packed again (model.fused_projections):
  // moving gives each parameter its own buffer.
  using torch::nn::Module::to;
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Dtype dtype, bool non_blocking = false) override;
  void to(torch::Device device, bool non_blocking = false) override;
  void pack_projections();

  Decoder model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tie_embeddings

 private:
  at::Tensor logits(const at::Tensor& tokens, ForwardObserver* observer = nullptr, const at::Tensor& segments = {});
  ModelConfig cfg_;
  int64_t loss_chunk_tokens_ = 0;
  std::vector<std::pair<int64_t, std::shared_ptr<MoEImpl>>> moe_layers_;  // (block index, layer)
};
TORCH_MODULE(CausalLM);

// Analytic sizes for logging and MFU. FLOPs per token follow PaLM (Chowdhery et al. 2022,
// App. B): 6·N_matmul + 12·n_layers·n_heads·head_dim·seq_len for forward+backward, where
// N_matmul counts every weight used in a matrix multiply for one token (the output head
// included, the embedding lookup not; for MoE the router, the top_k routed and the shared
// experts, not the other experts). The attention term ignores causal masking, as PaLM does.
struct ModelStats {
  int64_t params_total = 0;      // all trainable parameters
  int64_t params_active = 0;     // used per token: total minus the E - top_k unselected experts per MoE layer
  int64_t params_embedding = 0;  // token embedding (+ untied lm_head)
  int64_t params_matmul = 0;     // N_matmul above
  double train_flops_per_token = 0.0;
};
ModelStats model_stats(const ModelConfig& cfg, int64_t seq_len);

int64_t count_parameters(const torch::nn::Module& module);

}  // namespace sluice
