#include "config/schema.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <type_traits>

namespace sluice::config_detail {
namespace {

// --- per-type parsing and emitting -------------------------------------------------------

template <class T>
struct Traits;

template <>
struct Traits<int64_t> {
  static constexpr Kind kind = Kind::Int;
  static bool parse(const YAML::Node& n, int64_t& out) {
    if (!n.IsScalar()) return false;
    try {
      out = n.as<int64_t>();
      return true;
    } catch (const YAML::Exception&) {
      return false;
    }
  }
  static YAML::Node emit(int64_t v) { return YAML::Node(v); }
};

template <>
struct Traits<double> {
  static constexpr Kind kind = Kind::Float;
  static bool parse(const YAML::Node& n, double& out) {
    if (!n.IsScalar()) return false;
    try {
      out = n.as<double>();
    } catch (const YAML::Exception&) {
      return false;
    }
    return std::isfinite(out);
  }
  static YAML::Node emit(double v) { return YAML::Node(format_double(v)); }
};

template <>
struct Traits<bool> {
  static constexpr Kind kind = Kind::Bool;
  static bool parse(const YAML::Node& n, bool& out) {
    if (!n.IsScalar()) return false;
    try {
      out = n.as<bool>();
      return true;
    } catch (const YAML::Exception&) {
      return false;
    }
  }
  static YAML::Node emit(bool v) { return YAML::Node(v); }
};

template <>
struct Traits<std::string> {
  static constexpr Kind kind = Kind::String;
  static bool parse(const YAML::Node& n, std::string& out) {
    if (!n.IsScalar()) return false;
    out = n.Scalar();
    return true;
  }
  static YAML::Node emit(const std::string& v) { return YAML::Node(v); }
};

template <>
struct Traits<std::vector<std::string>> {
  static constexpr Kind kind = Kind::StringList;
  static bool parse(const YAML::Node& n, std::vector<std::string>& out) {
    if (!n.IsSequence()) return false;
    std::vector<std::string> v;
    for (const auto& e : n) {
      if (!e.IsScalar()) return false;
      v.push_back(e.Scalar());
    }
    out = std::move(v);
    return true;
  }
  static YAML::Node emit(const std::vector<std::string>& v) {
    YAML::Node n(YAML::NodeType::Sequence);
    for (const auto& s : v) n.push_back(s);
    n.SetStyle(YAML::EmitterStyle::Flow);
    return n;
  }
};

template <>
struct Traits<std::vector<int64_t>> {
  static constexpr Kind kind = Kind::IntList;
  static bool parse(const YAML::Node& n, std::vector<int64_t>& out) {
    if (!n.IsSequence()) return false;
    std::vector<int64_t> v;
    for (const auto& e : n) {
      int64_t x = 0;
      if (!Traits<int64_t>::parse(e, x)) return false;
      v.push_back(x);
    }
    out = std::move(v);
    return true;
  }
  static YAML::Node emit(const std::vector<int64_t>& v) {
    YAML::Node n(YAML::NodeType::Sequence);
    for (int64_t x : v) n.push_back(x);
    n.SetStyle(YAML::EmitterStyle::Flow);
    return n;
  }
};

const char* expected_for(Kind k) {
  switch (k) {
    case Kind::Int: return "an integer";
    case Kind::Float: return "a finite number";
    case Kind::Bool: return "true or false";
    case Kind::String: return "a string";
    case Kind::StringList: return "a list of strings";
    case Kind::IntList: return "a list of integers";
  }
  return "a value";
}

// Builder used by the table below: add(KEY(model.d_model), "doc").min(1)
class Builder {
 public:
  explicit Builder(std::vector<Field>& fields) : fields_(fields) {}

  template <class Ref>
  Builder& add(const char* path, Ref ref, const char* doc) {
    using T = std::decay_t<decltype(ref(std::declval<Config&>()))>;
    Field f;
    f.path = path;
    f.kind = Traits<T>::kind;
    f.doc = doc;
    f.assign = [ref](Config& c, const YAML::Node& n) -> std::string {
      T v{};
      if (!Traits<T>::parse(n, v)) return expected_for(Traits<T>::kind);
      ref(c) = std::move(v);
      return "";
    };
    f.emit = [ref](const Config& c) { return Traits<T>::emit(ref(const_cast<Config&>(c))); };
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      f.number = [ref](const Config& c) { return static_cast<double>(ref(const_cast<Config&>(c))); };
    }
    if constexpr (std::is_same_v<T, std::string>) {
      f.strings = [ref](const Config& c) { return std::vector<std::string>{ref(const_cast<Config&>(c))}; };
    }
    if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      f.strings = [ref](const Config& c) { return ref(const_cast<Config&>(c)); };
    }
    if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
      f.numbers = [ref](const Config& c) {
        const auto& v = ref(const_cast<Config&>(c));
        return std::vector<double>(v.begin(), v.end());
      };
    }
    fields_.push_back(std::move(f));
    return *this;
  }
  Builder& min(double v, bool exclusive = false) {
    fields_.back().min = v;
    fields_.back().min_exclusive = exclusive;
    return *this;
  }
  Builder& max(double v) {
    fields_.back().max = v;
    return *this;
  }
  Builder& choices(std::vector<std::string> c) {
    fields_.back().choices = std::move(c);
    return *this;
  }
  Builder& path() {
    fields_.back().is_path = true;
    return *this;
  }

 private:
  std::vector<Field>& fields_;
};

// The key path is the member expression: one spelling, no drift between YAML and C++.
#define KEY(p) #p, [](Config& c) -> auto& { return c.p; }

std::vector<Field> build_schema() {
  std::vector<Field> f;
  Builder b(f);
  // run
  b.add(KEY(run.name), "Run name; the run directory is `run.dir/<name>-<timestamp>` unless `--run-dir` is given.");
  b.add(KEY(run.dir), "Parent folder of run directories.");
  // model
  b.add(KEY(model.arch), "Architecture: `dense` decoder (Llama-style) or `moe` (Mixture-of-Experts feed-forward, "
                         "`model.moe.*`; docs/moe.md).")
      .choices({"dense", "moe"});
  b.add(KEY(model.vocab_size), "Embedding rows; at least the tokenizer's vocabulary size. 0: the tokenizer's "
                               "size rounded up to a multiple of 64 (resolved when the config is loaded).")
      .min(0);
  b.add(KEY(model.d_model), "Width of the residual stream.").min(1);
  b.add(KEY(model.n_layers), "Number of decoder blocks.").min(1);
  b.add(KEY(model.n_heads), "Query heads.").min(1);
  b.add(KEY(model.n_kv_heads), "Key/value heads (GQA); must divide `n_heads`. Equal to `n_heads` is MHA, 1 is MQA.").min(1);
  b.add(KEY(model.head_dim), "Per-head width; 0 means `d_model / n_heads` (then `n_heads` must divide `d_model`). "
                             "May differ from `d_model / n_heads` when set (Qwen3 style).").min(0);
  b.add(KEY(model.ffn_hidden), "SwiGLU hidden width; 0 means 8/3·d_model rounded up to a multiple of 64.").min(0);
  b.add(KEY(model.position), "Position encoding: `rope` (rotary, rotate-half layout), `alibi` (linear bias "
                             "-m_h·(i-j) on the scores, Press et al. 2022) or `none` (NoPE).")
      .choices({"rope", "alibi", "none"});
  b.add(KEY(model.rope.base), "RoPE base θ: frequencies θ_j = base^(-2j/head_dim).").min(1.0, true);
  b.add(KEY(model.rope.scaling), "RoPE scaling for context extension (may be set at evaluation time on a trained "
                                 "model): `none`, `linear` (positions / factor), `ntk` (base·factor^(d/(d-2))), "
                                 "`dynamic_ntk` (NTK base from the current length L once L > original_max_len), "
                                 "`yarn` (per-frequency ramp, β_fast 32, β_slow 1, attention factor 0.1·ln(factor)+1). "
                                 "See docs/attention.md.")
      .choices({"none", "linear", "ntk", "dynamic_ntk", "yarn"});
  b.add(KEY(model.rope.factor), "RoPE scaling factor s (context extension ratio); 1 = no change.").min(1.0);
  b.add(KEY(model.rope.original_max_len), "Training context length L0 that `dynamic_ntk` and `yarn` extend from; "
                                          "0 = unset.")
      .min(0);
  b.add(KEY(model.attention.backend), "Attention kernel: `math` (explicit softmax, the reference), `sdpa` "
                                      "(at::scaled_dot_product_attention: flash/cuDNN on GPU) or `fused` (Sluice's "
                                      "flash-attention CUDA kernels: bf16/fp16, head dim 64 or 128, causal with "
                                      "optional window, GQA, documents, ALiBi; falls back to `sdpa` otherwise, e.g. on "
                                      "CPU, in fp32 or at other head dims, logging why once). See docs/attention.md.")
      .choices({"math", "sdpa", "fused"});
  b.add(KEY(model.attention.window), "Sliding-window size in tokens (query i sees keys i-window+1..i); 0 = full causal.")
      .min(0);
  b.add(KEY(model.attention.window_pattern), "Sliding window per layer, repeated cyclically over the layers (0 = full "
                                             "causal); e.g. `[512, 512, 512, 0]` makes every 4th layer full. Empty: "
                                             "`window` for every layer.")
      .min(0);
  b.add(KEY(model.attention.output_norm), "RMSNorm on each head's SDPA output before o_proj (the paper's \"SDPA "
                                          "GroupNorm\" non-linearity, Qiu et al. 2025 Table 3); weight "
                                          "`self_attn.o_norm.weight` [n_heads·head_dim].");
  b.add(KEY(model.attention.gate.position), "Gated attention (Qiu et al. 2025): `none`, `G1` (SDPA output, before "
                                            "o_proj), `G2` (after v_proj), `G3` (after k_proj), `G4` (after q_proj), "
                                            "`G5` (after o_proj). G3/G4 act before QK-norm and RoPE.")
      .choices({"none", "G1", "G2", "G3", "G4", "G5"});
  b.add(KEY(model.attention.gate.granularity), "`elementwise` (one score per element) or `headwise` (one score per "
                                               "head: n×H for G1/G4, n×n_kv_heads for G2/G3).")
      .choices({"elementwise", "headwise"});
  b.add(KEY(model.attention.gate.sharing), "`head_specific`, or `head_shared`: the elementwise scores are averaged "
                                           "over the heads into one head_dim vector per token (paper Table 1 rows "
                                           "12-13).")
      .choices({"head_specific", "head_shared"});
  b.add(KEY(model.attention.gate.form), "`multiplicative` (Y ⊙ act(X·W_g)) or `additive` (Y + act(X·W_g)).")
      .choices({"multiplicative", "additive"});
  b.add(KEY(model.attention.gate.activation), "`sigmoid`, `silu`, `ns_sigmoid` (0.5 + 0.5·sigmoid, non-sparse) or "
                                              "`identity` (additive form only).")
      .choices({"sigmoid", "silu", "ns_sigmoid", "identity"});
  b.add(KEY(model.attention.gate.input), "What the gate scores are computed from: `hidden` (X, the block's "
                                         "normalised input; weight `self_attn.g_proj.weight`), `constant` "
                                         "(input-independent learnable logits `self_attn.g_proj.bias`, zero-initialised, "
                                         "paper Table 4 row 6) or `self` (the gated tensor Y itself, no parameters: "
                                         "multiplicative sigmoid gives SiLU(Y), Table 3 row 6).")
      .choices({"hidden", "constant", "self"});
  b.add(KEY(model.attention.gate.bias), "Learnable bias on the gate projection (`self_attn.g_proj.bias`).");
  b.add(KEY(model.attention.gate.fuse_q_proj), "Compute q_proj and g_proj in one GEMM on the concatenated weights "
                                               "(same math; weights stay separate tensors).");
  b.add(KEY(model.attention.coca.mode), "Collinear Constrained Attention (Zhu et al. 2023): `off`, `strict` (score "
                                        "Σ_j t_nj·‖q_mj‖²·cos((m-n)θ_j), paper Eq. 9) or `slack` (official code: "
                                        "q ⊙ RoPE(q) against RoPE(T)). k_proj becomes the magnitude projection t = "
                                        "ReLU(W_T x), tied within each rotary pair. Needs `model.position: rope`.")
      .choices({"off", "strict", "slack"});
  b.add(KEY(model.fused_projections),
        "q, k, v (and the gate's logits) from one GEMM over X, and SwiGLU's gate and up from one GEMM "
        "(shared experts too; routed experts are unchanged). The weights stay separate "
        "parameters (checkpoints, optimizer state and HF names per tensor) stored back to back in one buffer, "
        "so no step concatenates them. Same math; sums of other GEMM shapes, so equal to `false` up to fp32 "
        "rounding. Its speed is measured by scripts/gpu_perf.sh (not yet on a GPU).");
  b.add(KEY(model.qk_norm), "RMSNorm on each query and key head before RoPE (Qwen3 / OLMo-2 style).");
  b.add(KEY(model.elementwise_kernels),
        "Kernels of the decoder's RMSNorms and of the G1 output gate: `aten` (ATen ops) or `fused` (Sluice's "
        "CUDA kernels, kernels/rms_norm.h and kernels/gate_mul.h: every RMSNorm of a block, QK-norm and the "
        "final norm, with the residual add before a block's second norm in the same kernel, and the G1 "
        "sigmoid gate, elementwise or headwise, when the attention core does not apply it itself). "
        "`fused` falls back to `aten` for inputs the kernels do not take (CPU tensors, fp64), logging why "
        "once. Same math up to fp32 rounding. `aten` is the default because the fused path's speed has not "
        "been measured on a GPU yet (scripts/gpu_perf.sh). May change on resume. See docs/performance.md.")
      .choices({"aten", "fused"});
  b.add(KEY(model.tie_embeddings), "Share the token embedding with the output head (no `lm_head.weight`).");
  b.add(KEY(model.norm_eps), "RMSNorm epsilon.").min(0.0, true).max(1.0);
  b.add(KEY(model.init_std), "Std of the normal init of linear and embedding weights; output projections "
                             "(o_proj, down_proj) use init_std / sqrt(2·n_layers).")
      .min(0.0, true);
  // model.moe (docs/moe.md)
  b.add(KEY(model.moe.n_experts), "Routed experts per MoE layer.").min(1);
  b.add(KEY(model.moe.ffn_hidden), "SwiGLU width of each routed expert; 0 means the resolved `model.ffn_hidden`.")
      .min(0);
  b.add(KEY(model.moe.top_k), "Experts each token is routed to; at most `n_experts`.").min(1);
  b.add(KEY(model.moe.every), "MoE in blocks i with (i+1) % every == 0 (1: every block); the others use a dense "
                              "SwiGLU of width `model.ffn_hidden`.")
      .min(1);
  b.add(KEY(model.moe.norm_topk_prob), "Renormalise the selected experts' scores to sum to 1 (Qwen3-MoE, "
                                       "DeepSeek-V3). `topk_softmax` is normalised by construction.");
  b.add(KEY(model.moe.router), "`softmax_topk`: scores over all experts, then top-k (Qwen-MoE, Switch); "
                               "`topk_softmax`: top-k of the logits, then softmax over the selected (Mixtral).")
      .choices({"softmax_topk", "topk_softmax"});
  b.add(KEY(model.moe.scoring), "Expert scores: `softmax` over experts or `sigmoid` per expert (DeepSeek-V3).")
      .choices({"softmax", "sigmoid"});
  b.add(KEY(model.moe.bias_update_rate), "Aux-loss-free balancing (DeepSeek-V3): a per-expert bias added to the "
                                         "scores for selection only, moved by ±rate against the load imbalance "
                                         "after each optimizer step; 0 disables.")
      .min(0.0);
  b.add(KEY(model.moe.aux_loss_coef), "α of the load-balancing loss α·E·Σ_i f_i·P_i (mean over MoE layers; equals "
                                      "α when balanced); 0 disables.")
      .min(0.0);
  b.add(KEY(model.moe.aux_loss_scope), "Where f_i (share of routed tokens) is counted: `micro_batch`, or "
                                       "`global_batch` (running count over the micro-batches of the optimizer "
                                       "step). Under data parallelism both count every rank's tokens (the "
                                       "micro-batch of all ranks together), as one process would.")
      .choices({"micro_batch", "global_batch"});
  b.add(KEY(model.moe.z_loss_coef), "β of the router z-loss β·mean(logsumexp(logits)²) (ST-MoE; 1e-3 there); "
                                    "0 disables.")
      .min(0.0);
  b.add(KEY(model.moe.shared_experts), "Always-active shared experts per MoE layer (Qwen-MoE, DeepSeek), stored "
                                       "as one SwiGLU of width shared_experts·shared_ffn_hidden.")
      .min(0);
  b.add(KEY(model.moe.shared_ffn_hidden), "Width of each shared expert; 0 means the resolved `moe.ffn_hidden`.")
      .min(0);
  b.add(KEY(model.moe.shared_expert_gate), "Scale the shared experts' output by sigmoid(x·w) (Qwen-MoE).");
  b.add(KEY(model.moe.capacity_factor), "0: dropless. > 0: each expert takes at most ceil(factor·tokens·top_k / "
                                        "n_experts) assignments per micro-batch; first choices before second "
                                        "choices, then token order; the rest are dropped.")
      .min(0.0);
  b.add(KEY(model.moe.gemm), "Expert matmuls: `auto` (grouped GEMM for bf16 on sm90/sm100, else the loop), `grouped` "
                             "(at::_grouped_mm), `loop` (one matmul per expert on its contiguous slice).")
      .choices({"auto", "grouped", "loop"});
  // data
  b.add(KEY(data.train), "Training data: a dataset folder from `sluice data prepare` (its train split), or a UTF-8 "
                         "text file tokenized in memory (small data). Relative paths are relative to the working "
                         "directory.")
      .path();
  b.add(KEY(data.val), "Validation data. Empty: the dataset folder's val split, or for a text file its last "
                       "`val_fraction`. A dataset folder here gives its val split (its train split if it has no "
                       "val split); a text file is used whole.")
      .path();
  b.add(KEY(data.val_fraction), "Share of a `data.train` text file held out for validation when `data.val` is empty.")
      .min(0.0)
      .max(0.5);
  b.add(KEY(data.seq_len), "Tokens per training sequence (context length).").min(1);
  b.add(KEY(data.respect_documents), "Attention stays within each document packed into a window: position t sees "
                                    "the earlier positions of its target's document (a document's EOS opens the "
                                    "next one, as a BOS would; every target is still trained). Applies to training "
                                    "and validation loss, not to `sluice eval` or decoding. Costs `sdpa` its causal "
                                    "fast path (explicit mask); `fused` masks documents in its kernels (per-position "
                                    "bounds, tiles outside a document skipped). Cannot change on "
                                    "resume. See docs/data.md.");
  b.add(KEY(data.tokenizer), "`byte` (UTF-8 bytes, ids 0-255, then BOS 256, EOS 257, PAD 258), a folder holding "
                             "`tokenizer.model` (`sluice data train-tokenizer`), or a SentencePiece `.model` file. "
                             "Must be the tokenizer a dataset folder was prepared with.");
  b.add(KEY(data.prefetch), "Batches prepared ahead on a background thread; 0 builds each batch when needed.").min(0);
  b.add(KEY(data.verify_checksums), "Check every shard's checksum when a run starts (reads all data once).");
  // train
  b.add(KEY(train.steps), "Optimizer steps.").min(1);
  b.add(KEY(train.micro_batch), "Sequences per forward/backward pass on each rank; the global batch is "
                                   "micro_batch x grad_accum x world size.")
      .min(1);
  b.add(KEY(train.grad_accum), "Micro-batches accumulated per optimizer step.").min(1);
  b.add(KEY(train.device), "`auto` (CUDA when available), `cpu` or `cuda`.").choices({"auto", "cpu", "cuda"});
  b.add(KEY(train.precision), "`auto` (bf16 autocast on CUDA, fp32 on CPU), `fp32` or `bf16` (autocast; "
                              "weights and optimizer state stay fp32).")
      .choices({"auto", "fp32", "bf16"});
  b.add(KEY(train.grad_clip), "Clip gradients to this global L2 norm; 0 disables clipping.").min(0.0);
  b.add(KEY(train.log_every), "Steps between progress lines and metrics records.").min(1);
  b.add(KEY(train.eval_every), "Steps between validation passes; 0 = only at the end.").min(0);
  b.add(KEY(train.eval_batches), "Micro-batches per validation pass.").min(1);
  b.add(KEY(train.seed),
        "Seed for initialisation and data order; same seed and config give the same CPU loss curve, bitwise on "
        "one instruction set (ATen picks its vector kernels by it: ATEN_CPU_CAPABILITY, README).")
      .min(0);
  b.add(KEY(train.threads), "CPU threads for LibTorch per process; 0 = OMP_NUM_THREADS when set, else the "
                              "machine's cores divided by the ranks on this node.")
      .min(0);
  b.add(KEY(train.malloc_mmap_threshold_mb),
        "Host allocations of at least this many MiB are mapped and unmapped directly by glibc (mallopt "
        "M_MMAP_THRESHOLD), so memory freed during a step goes back to the system and peak RSS follows the live "
        "tensors; 0 keeps glibc's adaptive default, under which freed activations of up to 32 MiB stay in the "
        "heap. For CPU runs short of memory: on the 125M config (fp32, 2048 tokens) 1 lowers peak RSS from 4.4 to "
        "4.0 GB and lets activation checkpointing's savings show (full + chunked loss: 3.1 -> 2.3 GB), but costs "
        "about 30% of tokens/s on 2 cores (benchmarks/activation_checkpoint_memory.sh, docs/performance.md). "
        "The environment's MALLOC_MMAP_THRESHOLD_ wins. May change on resume.")
      .min(0.0);
  b.add(KEY(train.on_nonfinite), "A step whose gradients are not finite is never applied. `abort`: at the next log "
                                 "line, write RUN_DIR/nonfinite.json and exit 1 (checkpoints stay as they were); "
                                 "`skip`: drop the update, count it (`skipped_steps` in metrics) and go on.")
      .choices({"abort", "skip"});
  b.add(KEY(train.deterministic), "PyTorch's deterministic algorithms for the run "
                                  "(`torch.use_deterministic_algorithms(True)`), so that on a GPU too the same seed "
                                  "and config give the same loss curve: the `fused` attention backward computes dQ "
                                  "with its deterministic kernel (slower backward, docs/attention.md), "
                                  "CUBLAS_WORKSPACE_CONFIG is set to `:4096:8` unless already set, and an operation "
                                  "without a deterministic implementation stops the run with PyTorch's error naming "
                                  "it. The CPU path is deterministic either way. May change on resume.");
  b.add(KEY(train.activation_checkpointing),
        "Recompute activations in backward instead of keeping them (less memory, more compute). `none`; "
        "`selective`: in each attention, the region between the q/k/v (and gate) projections and o_proj "
        "(gates, QK-norm, RoPE/CoCA, the attention core, output_norm) keeps only its inputs and runs again in "
        "backward: the attention core's forward once more, a few percent of a step's FLOPs at 512 tokens and more "
        "at long sequences (Megatron-Core's selective recompute); `full`: each block keeps only its "
        "input and runs again in backward (the blocks' forward once more: about a third more FLOPs), MoE blocks only their attention half, since a "
        "second MoE forward would repeat its routing statistics and token exchange. The RNG and autocast "
        "state are restored for the recompute: on the CPU the losses and gradients are bitwise those of "
        "`none`. Peak memory: benchmarks/activation_checkpoint_memory.sh. May change on resume.")
      .choices({"none", "selective", "full"});
  b.add(KEY(train.loss_chunk_tokens), "Compute the output head and the cross-entropy this many tokens at a time, "
                                      "forward and backward, so the [tokens, vocab] fp32 logits and their gradient "
                                      "never exist whole (a large vocabulary's biggest activation); 0 = all at once. "
                                      "Same loss and gradients up to fp32 summation order. Evaluation that needs "
                                      "logits keeps them. May change on resume.")
      .min(0);
  b.add(KEY(train.memory_check),
        "Before the model is built, estimate a step's memory from the config (parameters, gradients, optimizer "
        "state, activations per micro-batch, logits; docs/memory.md) and compare it with what this device has free "
        "(CUDA: cudaMemGetInfo; CPU: MemAvailable or the cgroup's limit, shared by the ranks on the node). "
        "`error`: a run that does not fit stops with the breakdown and what to change (exit 2); `warn`: log it and "
        "run; `off`: no check. May change on resume.")
      .choices({"error", "warn", "off"});
  // optim
  b.add(KEY(optim.name), "Optimizer: `adamw` (decoupled weight decay).").choices({"adamw"});
  b.add(KEY(optim.lr), "Peak learning rate.").min(0.0, true);
  b.add(KEY(optim.weight_decay), "Decoupled weight decay.").min(0.0);
  b.add(KEY(optim.beta1), "Adam β1.").min(0.0).max(0.999999);
  b.add(KEY(optim.beta2), "Adam β2.").min(0.0).max(0.999999);
  b.add(KEY(optim.eps), "Adam ε.").min(0.0, true);
  b.add(KEY(optim.no_decay), "Parameter kinds exempt from weight decay: any of `norm`, `bias`, `embedding`.")
      .choices({"norm", "bias", "embedding"});
  // schedule
  b.add(KEY(schedule.kind), "`cosine` (warmup, cosine to min_lr), `wsd` (warmup, stable, linear decay over the "
                            "last decay_fraction), `linear` (warmup, linear to min_lr), `constant` (warmup, flat).")
      .choices({"cosine", "wsd", "linear", "constant"});
  b.add(KEY(schedule.warmup_steps), "Linear warmup steps from 0 to `optim.lr`.").min(0);
  b.add(KEY(schedule.min_lr_ratio), "Final learning rate as a fraction of `optim.lr` (cosine, wsd, linear).")
      .min(0.0)
      .max(1.0);
  b.add(KEY(schedule.decay_fraction), "wsd: share of all steps spent in the final decay.").min(0.0, true).max(1.0);
  // checkpoint
  b.add(KEY(checkpoint.every), "Steps between checkpoints; 0 = only the final one (and one on SIGTERM/SIGINT).")
      .min(0);
  b.add(KEY(checkpoint.keep_last), "Checkpoints kept in the run directory (older ones are deleted once a newer one "
                                   "is complete).")
      .min(1);
  b.add(KEY(checkpoint.max_shard_mb), "model.safetensors is split into shards of at most this many MiB (HuggingFace "
                                      "index layout) above it.")
      .min(1);
  // parallel
  b.add(KEY(parallel.data_parallel), "World size this config expects (ranks started by `sluice launch`, torchrun or "
                                     "srun); 0 = whatever the launcher says. A mismatch stops every rank before "
                                     "training (exit 2). docs/distributed.md.")
      .min(0);
  b.add(KEY(parallel.backend), "Collectives: `auto` (NCCL on CUDA, Gloo on CPU), `gloo` or `nccl` (CUDA only).")
      .choices({"auto", "gloo", "nccl"});
  b.add(KEY(parallel.zero), "0: every rank holds the whole AdamW state; 1: ZeRO-1, the state is sharded over the "
                            "ranks (gradients reduce-scattered, each rank updates its shard, parameters "
                            "all-gathered). Checkpoints are the same either way; may change on resume.")
      .min(0)
      .max(1);
  b.add(KEY(parallel.bucket_mb), "Gradients are averaged in buckets of about this many MiB, each sent while "
                                 "backward goes on (PyTorch DDP's bucket_cap_mb).")
      .min(0.0, true);
  b.add(KEY(parallel.timeout_s), "Seconds any rank waits for the others (rendezvous, every collective, the "
                                 "barrier after a checkpoint) before it stops with an error naming what it "
                                 "waited for; must exceed the time rank 0 needs to write a checkpoint.")
      .min(0.0, true);
  b.add(KEY(parallel.check_every), "Steps between checks that every rank holds bitwise the same parameters (a "
                                   "checksum compared across ranks; a mismatch stops the run naming the rank); "
                                   "0 = off.")
      .min(0);
  b.add(KEY(parallel.expert_parallel), "Ranks that each MoE layer's routed experts are split over (expert "
                                       "parallelism); the world size must be a multiple of it and model.moe.n_experts "
                                       "divisible by it. Tokens reach their experts through an all-to-all; "
                                       "everything else is replicated. 1 = every rank holds every expert. May change "
                                       "on resume. docs/distributed.md.")
      .min(1);
  // log
  b.add(KEY(log.level), "Console log level: `debug`, `info`, `warn`, `error`.")
      .choices({"debug", "info", "warn", "error"});
  b.add(KEY(log.file), "Also write the log to `RUN_DIR/train.log`.");
  b.add(KEY(log.tensorboard), "Also write every metrics record's scalars as TensorBoard event files in "
                              "`RUN_DIR/tb/` (rank 0; a resumed run continues them without repeating steps). "
                              "docs/tensorboard.md.");
  b.add(KEY(log.peak_tflops), "Peak bf16 dense TFLOP/s of one device for MFU; 0 = known value for the "
                              "detected GPU (H100/H200: 989, A100: 312).")
      .min(0.0);
  return f;
}
#undef KEY

std::string number_text(double v) { return format_double(v); }

}  // namespace

std::string format_double(double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {  // 10000.0 rather than 1e+04
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
  }
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  // Keep floats recognisable as floats in YAML ("1" -> "1.0").
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string Field::type_name() const {
  std::string t;
  switch (kind) {
    case Kind::Int: t = "integer"; break;
    case Kind::Float: t = "float"; break;
    case Kind::Bool: t = "bool"; break;
    case Kind::String: t = is_path ? "path" : "string"; break;
    case Kind::StringList: t = "list"; break;
    case Kind::IntList: t = "list of integers"; break;
  }
  if (min && max) {
    t += std::string(min_exclusive ? " in (" : " in [") + number_text(*min) + ", " + number_text(*max) + "]";
  } else if (min) {
    t += std::string(min_exclusive ? " > " : " >= ") + number_text(*min);
  } else if (max) {
    t += " <= " + number_text(*max);
  }
  if (!choices.empty()) {
    t += kind == Kind::StringList ? " of: " : ": ";
    for (size_t i = 0; i < choices.size(); ++i) t += (i ? ", " : "") + choices[i];
  }
  if (kind == Kind::Int || kind == Kind::IntList) {
    // "integer >= 1" reads better than "integer >= 1.0"
    size_t p;
    while ((p = t.find(".0")) != std::string::npos) t.erase(p, 2);
  }
  return t;
}

std::string Field::check(const Config& c) const {
  if (number) {
    const double v = number(c);
    const bool low = min && (min_exclusive ? v <= *min : v < *min);
    const bool high = max && v > *max;
    if (low || high) {
      std::string got = kind == Kind::Int ? std::to_string(static_cast<int64_t>(v)) : format_double(v);
      return "expected " + type_name() + ", got " + got;
    }
  }
  if (numbers) {
    for (const double v : numbers(c)) {
      const bool low = min && (min_exclusive ? v <= *min : v < *min);
      const bool high = max && v > *max;
      if (low || high) return "expected " + type_name() + ", got " + std::to_string(static_cast<int64_t>(v));
    }
  }
  if (strings && !choices.empty()) {
    std::set<std::string> seen;
    for (const auto& s : strings(c)) {
      bool ok = false;
      for (const auto& ch : choices) ok = ok || ch == s;
      if (!ok) return "expected " + type_name() + ", got '" + s + "'";
      if (kind == Kind::StringList && !seen.insert(s).second) return "'" + s + "' is listed twice";
    }
  }
  return "";
}

const std::vector<Field>& schema() {
  static const std::vector<Field> fields = build_schema();
  return fields;
}

const Field* find_field(const std::string& path) {
  for (const auto& f : schema())
    if (f.path == path) return &f;
  return nullptr;
}

bool is_section(const std::string& path) {
  const std::string prefix = path + ".";
  for (const auto& f : schema())
    if (f.path.compare(0, prefix.size(), prefix) == 0) return true;
  return false;
}

std::vector<std::string> section_names() {
  std::vector<std::string> out;
  for (const auto& f : schema()) {
    std::string s = f.path.substr(0, f.path.find('.'));
    if (out.empty() || out.back() != s) out.push_back(s);
  }
  return out;
}

}  // namespace sluice::config_detail
