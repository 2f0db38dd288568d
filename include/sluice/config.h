// The run configuration. Member names are the YAML keys: `model.rope.base` in a file is
// `Config::model.rope.base` here. Defaults live in the member initialisers and nowhere
// else; src/config/schema.cpp adds types, ranges, choices and documentation per key.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sluice {

struct RunConfig {
  std::string name = "run";
  std::string dir = "runs";
};

struct RopeConfig {
  double base = 10000.0;
  std::string scaling = "none";
  double factor = 1.0;
  int64_t original_max_len = 0;
};

// Gated attention (Qiu et al. 2025, arXiv 2505.06708): Y' = Y ⊙ act(X·W_g [+ b]) or Y + act(...).
struct GateConfig {
  std::string position = "none";  // none | G1 (SDPA output) | G2 (v) | G3 (k) | G4 (q) | G5 (o_proj output)
  std::string granularity = "elementwise";  // elementwise | headwise
  std::string sharing = "head_specific";    // head_specific | head_shared (scores averaged over heads)
  std::string form = "multiplicative";      // multiplicative | additive
  std::string activation = "sigmoid";       // sigmoid | silu | ns_sigmoid | identity
  std::string input = "hidden";             // hidden (X) | constant (input-independent) | self (Y itself)
  bool bias = false;
  bool fuse_q_proj = false;  // one GEMM for q_proj and g_proj (weights still stored separately)
};

// Collinear Constrained Attention (Zhu et al. 2023, arXiv 2309.08646).
struct CocaConfig {
  std::string mode = "off";  // off | strict (paper Eq. 9) | slack (official code, Eq. 10)
};

struct AttentionConfig {
  std::string backend = "sdpa";
  int64_t window = 0;
  std::vector<int64_t> window_pattern;  // per layer, repeated cyclically; 0 = full; empty: `window` everywhere
  bool output_norm = false;             // RMSNorm on each head's SDPA output ("SDPA GroupNorm")
  GateConfig gate;
  CocaConfig coca;
};

// Mixture-of-Experts feed-forward (model.arch: moe); see docs/moe.md.
struct MoEConfig {
  int64_t n_experts = 8;
  int64_t ffn_hidden = 0;  // expert SwiGLU width; 0: model.ffn_hidden (resolved)
  int64_t top_k = 2;
  int64_t every = 1;  // MoE in blocks i with (i + 1) % every == 0, dense SwiGLU elsewhere
  bool norm_topk_prob = true;
  std::string router = "softmax_topk";
  std::string scoring = "softmax";
  double bias_update_rate = 0.0;
  double aux_loss_coef = 0.01;
  std::string aux_loss_scope = "micro_batch";
  double z_loss_coef = 0.0;
  int64_t shared_experts = 0;
  int64_t shared_ffn_hidden = 0;  // width of each shared expert; 0: moe.ffn_hidden (resolved)
  bool shared_expert_gate = false;
  double capacity_factor = 0.0;  // 0: dropless
  std::string gemm = "auto";
};

struct ModelConfig {
  std::string arch = "dense";
  int64_t vocab_size = 0;  // 0: the tokenizer's, rounded up to a multiple of 64
  int64_t d_model = 128;
  int64_t n_layers = 4;
  int64_t n_heads = 4;
  int64_t n_kv_heads = 4;
  int64_t head_dim = 0;  // 0: d_model / n_heads
  int64_t ffn_hidden = 0;  // 0: SwiGLU rule round_up(8/3 * d_model, 64)
  std::string position = "rope";
  RopeConfig rope;
  AttentionConfig attention;
  bool qk_norm = false;
  bool fused_projections = false;  // q/k/v(/gate) and SwiGLU's gate/up as one GEMM each (weights packed)
  std::string elementwise_kernels = "aten";  // aten | fused: the decoder's RMSNorms and G1 gate (kernels/)
  bool tie_embeddings = true;
  double norm_eps = 1e-5;
  double init_std = 0.02;
  MoEConfig moe;

  // Derived shapes (valid after validation).
  int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : d_model / n_heads; }
  int64_t resolved_ffn_hidden() const {
    if (ffn_hidden > 0) return ffn_hidden;
    const int64_t h = (8 * d_model + 2) / 3;
    return (h + 63) / 64 * 64;
  }
  // Sliding window of layer `layer` (0 = full causal): window_pattern repeated over the layers, else window.
  int64_t window_for_layer(int64_t layer) const {
    if (attention.window_pattern.empty()) return attention.window;
    return attention.window_pattern[static_cast<size_t>(layer) % attention.window_pattern.size()];
  }
  bool is_moe() const { return arch == "moe"; }
  // Block i holds an MoE layer (Qwen-MoE's decoder_sparse_step convention).
  bool is_moe_layer(int64_t i) const { return is_moe() && (i + 1) % moe.every == 0; }
  int64_t resolved_expert_hidden() const { return moe.ffn_hidden > 0 ? moe.ffn_hidden : resolved_ffn_hidden(); }
  int64_t resolved_shared_hidden() const {
    return moe.shared_experts * (moe.shared_ffn_hidden > 0 ? moe.shared_ffn_hidden : resolved_expert_hidden());
  }
};

struct DataConfig {
  std::string train;
  std::string val;
  double val_fraction = 0.05;
  int64_t seq_len = 256;
  bool respect_documents = false;  // attention stays within each document of a packed window
  std::string tokenizer = "byte";
  int64_t prefetch = 2;
  bool verify_checksums = true;
};

struct TrainConfig {
  int64_t steps = 1000;
  int64_t micro_batch = 8;
  int64_t grad_accum = 1;
  std::string device = "auto";
  std::string precision = "auto";
  double grad_clip = 1.0;
  int64_t log_every = 10;
  int64_t eval_every = 100;
  int64_t eval_batches = 8;
  int64_t seed = 1234;
  int64_t threads = 0;
  double malloc_mmap_threshold_mb = 0.0;  // glibc: host allocations from this size mapped/unmapped directly; 0 = glibc's adaptive default
  std::string on_nonfinite = "abort";
  bool deterministic = false;  // torch.use_deterministic_algorithms for the run (reproducible GPU kernels)
  std::string activation_checkpointing = "none";  // none | selective | full: recompute in backward
  int64_t loss_chunk_tokens = 0;  // output head + cross-entropy this many tokens at a time; 0 = all at once
  std::string memory_check = "error";  // error | warn | off: the pre-flight memory estimate against what is free
};

struct OptimConfig {
  std::string name = "adamw";
  double lr = 3e-4;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  std::vector<std::string> no_decay = {"norm", "bias", "embedding"};
};

struct ScheduleConfig {
  std::string kind = "cosine";
  int64_t warmup_steps = 100;
  double min_lr_ratio = 0.1;
  double decay_fraction = 0.2;
};

struct CheckpointConfig {
  int64_t every = 0;
  int64_t keep_last = 3;
  int64_t max_shard_mb = 2048;
};

struct ParallelConfig {
  int64_t data_parallel = 0;       // world size this config expects; 0 = whatever the launcher says
  std::string backend = "auto";    // auto (nccl on CUDA, gloo on CPU) | gloo | nccl
  int64_t zero = 0;                // 1: AdamW state sharded over the ranks (ZeRO-1)
  double bucket_mb = 25.0;         // gradient all-reduce bucket size
  double timeout_s = 600.0;        // rendezvous and every collective
  int64_t check_every = 0;         // steps between cross-rank parameter checksums; 0 = off
  int64_t expert_parallel = 1;     // ranks each MoE layer's experts are split over
};

struct LogConfig {
  std::string level = "info";
  bool file = true;
  bool tensorboard = true;
  double peak_tflops = 0.0;
};

struct Config {
  RunConfig run;
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  OptimConfig optim;
  ScheduleConfig schedule;
  CheckpointConfig checkpoint;
  ParallelConfig parallel;
  LogConfig log;
};

// Where a value came from, for error messages: "configs/tiny.yaml:12:5" or "--set".
struct SourceLocation {
  std::string file;
  int line = 0;  // 1-based; 0 when unknown (a default or a --set)
  int column = 0;
  std::string str() const;
};

// A fully loaded, validated configuration plus where each explicitly set key came from.
struct LoadedConfig {
  Config config;
  std::string source_file;
  std::map<std::string, SourceLocation> origin;  // key path -> location (explicit keys only)
};

// Loads `path`, applies `overrides` ("a.b=value", parsed as YAML like the file) and
// validates everything. Throws sluice::InputError listing every problem, each naming the
// file, line and key path. Creates nothing on disk.
// With check_paths false, data files and the tokenizer need not exist (a checkpoint's config
// read on another machine); everything else is still validated.
LoadedConfig load_config(const std::string& path, const std::vector<std::string>& overrides, bool check_paths = true);
// Same for a YAML document already in memory; `name` is used in messages.
LoadedConfig load_config_text(const std::string& yaml_text, const std::string& name,
                              const std::vector<std::string>& overrides, bool check_paths = true);

// The fully resolved configuration (every key, defaults included) as YAML.
std::string to_yaml(const Config& config);
// Markdown reference of every key (docs/config.md is this text).
std::string config_reference_markdown();
// Every leaf key path in schema order.
std::vector<std::string> config_keys();
// Every key's value as YAML text ("0.0003", "[norm, bias]"), for comparing configurations.
std::map<std::string, std::string> config_values(const Config& config);

}  // namespace sluice
