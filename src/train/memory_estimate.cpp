#include "train/memory_estimate.h"

#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "model/gate.h"
#include "sluice/model.h"

namespace sluice {

namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// Elements autograd keeps per token for one block's attention half, as this code base saves
// them: the norm's input and output, the q/k/v projections' outputs, q and k again after RoPE
// or QK-norm, the core's output (o_proj's input), the gate's logits and activation.
int64_t attention_elements_per_token(const ModelConfig& m, int64_t seq_len, int64_t window, bool selective) {
  const int64_t d = m.d_model, q = m.n_heads * m.resolved_head_dim(), kv = m.n_kv_heads * m.resolved_head_dim();
  const bool gated = m.attention.gate.position != "none";
  const int64_t gate_logits = gated ? gate_projection_outputs(m) : 0;
  const int64_t positions = (m.position == "rope" ? q + kv : 0) + (m.attention.coca.mode != "off" ? q + kv : 0);
  const int64_t region = positions + (m.qk_norm ? q + kv : 0) + (m.attention.output_norm ? q : 0) + gate_logits;
  // The math backend keeps the [heads, T, T] probabilities (softmax's output, also the second
  // matmul's input); the flash-style kernels (sdpa, fused) only the output and a row statistic.
  const int64_t keys = window > 0 ? std::min(window, seq_len) : seq_len;
  const int64_t probs = m.attention.backend == "math" ? m.n_heads * keys : 0;
  const int64_t projections = q + 2 * kv + gate_logits;  // outputs of q/k/v (and gate) projections
  // selective: the norm's output and everything from the projections' outputs to o_proj's input
  // run again in backward; the norm's input and the projections' outputs are what is kept.
  if (selective) return d + projections;
  return 2 * d /* norm input, output */ + projections + region + probs + q /* core output */;
}

// The feed-forward half: norm input and output, SwiGLU's gate and up outputs, SiLU and the
// product; an MoE layer that for each of top_k routed copies of the token plus shared experts.
int64_t mlp_elements_per_token(const ModelConfig& m, bool moe, bool selective) {
  const int64_t d = m.d_model;
  // gate and up outputs, SiLU's output, the product; selective recomputes the last two
  auto swiglu = [&](int64_t f) { return selective ? 2 * f : 4 * f; };
  const int64_t norm = selective ? d : 2 * d;
  if (!moe) return norm + swiglu(m.resolved_ffn_hidden());
  const int64_t routed = m.moe.top_k * (d /* gathered input */ + swiglu(m.resolved_expert_hidden()) + d /* output */);
  const int64_t shared = m.moe.shared_experts > 0 ? swiglu(m.resolved_shared_hidden()) : 0;
  return norm + routed + shared + 2 * m.moe.n_experts /* router logits, probabilities */;
}

int64_t expert_parameters(const ModelConfig& m) {
  if (!m.is_moe()) return 0;
  int64_t layers = 0;
  for (int64_t i = 0; i < m.n_layers; ++i) layers += m.is_moe_layer(i) ? 1 : 0;
  return layers * m.moe.n_experts * 3 * m.d_model * m.resolved_expert_hidden();
}

}  // namespace

int64_t MemoryEstimate::total() const {
  int64_t t = 0;
  for (const Part& p : parts) t += p.bytes;
  return t;
}

int64_t MemoryEstimate::bytes_of(const std::string& name) const {
  for (const Part& p : parts)
    if (p.name == name) return p.bytes;
  return 0;
}

MemoryEstimate estimate_step_memory(const Config& cfg, const StepMemoryLayout& layout) {
  const ModelConfig& m = cfg.model;
  const int64_t experts = expert_parameters(m);
  const int64_t ep = std::max<int64_t>(1, layout.expert_parallel);
  const int64_t params = model_stats(m, cfg.data.seq_len).params_total - experts + experts / ep;  // this rank's
  const int64_t act_bytes = layout.bf16 ? 2 : 4;
  const int64_t tokens = cfg.train.micro_batch * cfg.data.seq_len;
  const std::string& ckpt = cfg.train.activation_checkpointing;

  MemoryEstimate e;
  const std::string count = params >= 1'000'000'000 ? fmt::format("{:.2f}B", params / 1e9) : fmt::format("{:.1f}M", params / 1e6);
  e.parts.push_back({"parameters", 4 * params, count + " fp32 parameters on this rank"});
  if (layout.bf16)
    e.parts.push_back({"bf16 weight copies", 2 * params, "autocast's bf16 casts of the weights, kept for the step"});
  e.parts.push_back({"gradients", 4 * params, "fp32, one per parameter"});
  if (layout.world_size > 1)
    e.parts.push_back({"gradient buckets", 4 * params,
                       fmt::format("data parallelism's all-reduce buckets ({} ranks)", layout.world_size)});
  const bool zero = cfg.parallel.zero == 1 && layout.world_size > 1;
  e.parts.push_back({"optimizer state", 8 * params / (zero ? layout.world_size : 1),
                     zero ? fmt::format("AdamW exp_avg + exp_avg_sq, ZeRO-1 over {} ranks", layout.world_size)
                          : std::string("AdamW exp_avg + exp_avg_sq (parallel.zero 0)")});

  // Activations: what each block keeps until its backward, for one micro-batch (accumulation
  // runs the micro-batches one after another).
  int64_t kept = 0, largest_block = 0;
  for (int64_t i = 0; i < m.n_layers; ++i) {
    const bool moe = m.is_moe_layer(i);
    const int64_t window = m.window_for_layer(i);
    const int64_t attn = attention_elements_per_token(m, cfg.data.seq_len, window, ckpt == "selective");
    const int64_t mlp = mlp_elements_per_token(m, moe, ckpt == "selective");
    if (ckpt == "full") {
      // the block's input; MoE blocks recompute only their attention half
      kept += m.d_model + (moe ? mlp : 0);
      largest_block = std::max(largest_block, attention_elements_per_token(m, cfg.data.seq_len, window, false) +
                                                  (moe ? 0 : mlp_elements_per_token(m, moe, false)));
    } else {
      kept += attn + mlp;
    }
  }
  kept += 2 * m.d_model;  // the final norm's input and output
  e.parts.push_back({"activations", kept * tokens * act_bytes,
                     fmt::format("train.micro_batch {} x data.seq_len {} tokens, {} layers, "
                                 "train.activation_checkpointing {}",
                                 cfg.train.micro_batch, cfg.data.seq_len, m.n_layers, ckpt)});

  // The output head: logits (autocast's precision), their fp32 log-softmax, and its gradient.
  const int64_t rows = cfg.train.loss_chunk_tokens > 0 ? std::min(cfg.train.loss_chunk_tokens, tokens) : tokens;
  const int64_t logits = rows * m.vocab_size * (act_bytes + 8);
  e.parts.push_back({"logits", logits,
                     cfg.train.loss_chunk_tokens > 0
                         ? fmt::format("{} tokens at a time x vocabulary {} (train.loss_chunk_tokens)", rows, m.vocab_size)
                         : fmt::format("{} tokens x vocabulary {} at once (train.loss_chunk_tokens 0)", rows, m.vocab_size)});
  // full: a block's activations exist again while backward recomputes it, by when the logits'
  // memory is free: the peak holds the larger of the two.
  const int64_t recomputed = largest_block * tokens * act_bytes;
  if (ckpt == "full" && recomputed > logits)
    e.parts.push_back({"recomputed block", recomputed - logits,
                       "one block's activations during its recompute, beyond the logits' memory freed by then"});
  e.parts.push_back({"runtime", layout.cuda ? 1024 * kMiB : 512 * kMiB,
                     layout.cuda ? "CUDA context, cuBLAS/cuDNN workspaces, allocator slack"
                                 : "libraries, data loader, allocator slack"});
  return e;
}

namespace {

int64_t read_meminfo_kb(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string k;
  int64_t v = 0;
  std::string unit;
  while (in >> k >> v) {
    std::getline(in, unit);
    if (k == key + ":") return v;
  }
  return -1;
}

int64_t read_number(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  if (!(in >> s) || s == "max") return -1;
  try {
    return std::stoll(s);
  } catch (...) {
    return -1;
  }
}

int64_t own_rss_bytes() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace

AvailableMemory available_host_memory(int64_t local_ranks) {
  AvailableMemory a;
  const int64_t avail_kb = read_meminfo_kb("MemAvailable");
  if (avail_kb >= 0) {
    a.bytes = avail_kb * 1024;
    a.source = "MemAvailable in /proc/meminfo";
  }
  // cgroup v2, then v1: a container's limit is often far below the machine's memory.
  for (const auto& [limit_path, usage_path] :
       {std::pair<std::string, std::string>{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
        {"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"}}) {
    const int64_t limit = read_number(limit_path), usage = read_number(usage_path);
    if (limit <= 0 || usage < 0 || limit >= (int64_t{1} << 60)) continue;
    const int64_t left = std::max<int64_t>(0, limit - usage);
    if (a.bytes < 0 || left < a.bytes) {
      a.bytes = left;
      a.source = "the cgroup's limit " + limit_path;
    }
    break;
  }
  if (a.bytes < 0) return a;
  if (local_ranks > 1) {
    a.bytes /= local_ranks;
    a.source += fmt::format(", shared by {} ranks on this node", local_ranks);
  }
  a.bytes += own_rss_bytes();
  return a;
}

std::string format_bytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * kMiB) return fmt::format("{:.2f} GiB", b / (1024.0 * kMiB));
  return fmt::format("{:.0f} MiB", b / kMiB);
}

std::string explain_memory_shortfall(const Config& cfg, const StepMemoryLayout& layout, const MemoryEstimate& est,
                                     const AvailableMemory& avail, const std::string& device) {
  std::ostringstream out;
  out << fmt::format("train.memory_check: a training step needs about {} on {}, but {} is available ({}). "
                     "Estimate:\n",
                     format_bytes(est.total()), device, format_bytes(avail.bytes), avail.source);
  for (const auto& p : est.parts) out << fmt::format("  {:<19} {:>10}  {}\n", p.name, format_bytes(p.bytes), p.detail);
  // What each single change would bring, from the same model.
  auto with = [&](auto change) {
    Config c = cfg;
    change(c);
    return format_bytes(estimate_step_memory(c, layout).total());
  };
  const int64_t fixed = est.bytes_of("parameters") + est.bytes_of("bf16 weight copies") + est.bytes_of("gradients") +
                        est.bytes_of("gradient buckets") + est.bytes_of("optimizer state");
  if (fixed > avail.bytes)
    out << fmt::format("Parameters, gradients and optimizer state alone need {}: whatever the batch, this model needs "
                       "more ranks with its state sharded, or fewer parameters.\n",
                       format_bytes(fixed));
  out << "To fit, change one or more of:\n";
  if (cfg.train.micro_batch > 1)
    out << fmt::format("  train.micro_batch: 1 (raise train.grad_accum to keep the global batch) -> {}\n",
                       with([](Config& c) { c.train.micro_batch = 1; }));
  if (cfg.train.activation_checkpointing != "full")
    out << fmt::format("  train.activation_checkpointing: full -> {}\n",
                       with([](Config& c) { c.train.activation_checkpointing = "full"; }));
  if (cfg.train.loss_chunk_tokens == 0)
    out << fmt::format("  train.loss_chunk_tokens: 1024 -> {}\n", with([](Config& c) { c.train.loss_chunk_tokens = 1024; }));
  if (cfg.parallel.zero == 0 || layout.world_size == 1) {
    StepMemoryLayout eight = layout;
    eight.world_size = std::max<int64_t>(8, layout.world_size);
    Config c = cfg;
    c.parallel.zero = 1;
    out << fmt::format("  parallel.zero: 1 on {} ranks (optimizer state sharded) -> {}\n", eight.world_size,
                       format_bytes(estimate_step_memory(c, eight).total()));
  }
  out << "  or a smaller model (model.d_model, model.n_layers, model.vocab_size). "
         "`train.memory_check: warn` runs anyway (docs/memory.md).";
  return out.str();
}

}  // namespace sluice
