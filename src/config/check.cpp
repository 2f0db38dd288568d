#include "config/check.h"

#include <filesystem>
#include <string>

#include "sluice/errors.h"
#include "sluice/tokenizer.h"

namespace sluice::config_detail {
namespace {

namespace fs = std::filesystem;

// A text file, or a folder prepared by `sluice data prepare` (it holds manifest.json).
void check_data_path(std::vector<Problem>& out, const std::string& key, const std::string& path, bool required) {
  if (path.empty()) {
    if (required) out.push_back({key, "is required: a text file or a folder made by `sluice data prepare`"});
    return;
  }
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    out.push_back({key, "'" + path + "' does not exist"});
  } else if (fs::is_directory(st)) {
    if (!fs::is_regular_file(fs::path(path) / "manifest.json", ec))
      out.push_back({key, "folder '" + path + "' has no manifest.json; make it with `sluice data prepare` or give a text file"});
  } else if (!fs::is_regular_file(st)) {
    out.push_back({key, "'" + path + "' is not a regular file"});
  }
}

void check_positions(std::vector<Problem>& out, const ModelConfig& m) {
  const RopeConfig& r = m.rope;
  if (r.scaling != "none" && m.position != "rope") {
    out.push_back({"model.rope.scaling", "'" + r.scaling + "' scales RoPE, but model.position is '" + m.position +
                                             "'; use scaling: none or position: rope"});
  }
  if ((r.scaling == "dynamic_ntk" || r.scaling == "yarn") && r.original_max_len <= 0) {
    out.push_back({"model.rope.original_max_len", "is required (> 0) by rope.scaling '" + r.scaling +
                                                      "': the training context length it extends from"});
  }
  if (m.attention.coca.mode != "off") {
    if (m.position != "rope") {
      out.push_back({"model.attention.coca.mode", "CoCA (" + m.attention.coca.mode +
                                                      ") builds on rotary positions; needs model.position: rope, got '" +
                                                      m.position + "'"});
    }
    if (m.qk_norm) {
      out.push_back({"model.attention.coca.mode", "CoCA with model.qk_norm is not defined by the paper (k_proj is "
                                                  "the magnitude projection t); set qk_norm: false"});
    }
  }
}

void check_gate(std::vector<Problem>& out, const ModelConfig& m) {
  const GateConfig& g = m.attention.gate;
  const GateConfig def;
  if (g.position == "none") {
    const std::pair<const char*, bool> changed[] = {
        {"granularity", g.granularity != def.granularity}, {"sharing", g.sharing != def.sharing},
        {"form", g.form != def.form},                      {"activation", g.activation != def.activation},
        {"input", g.input != def.input},                   {"bias", g.bias != def.bias},
        {"fuse_q_proj", g.fuse_q_proj != def.fuse_q_proj}};
    for (const auto& [key, is_set] : changed) {
      if (is_set) {
        out.push_back({std::string("model.attention.gate.") + key,
                       "has no effect without a gate; set model.attention.gate.position (G1..G5)"});
      }
    }
    return;
  }
  if (g.position == "G5" && (g.granularity != "elementwise" || g.sharing != "head_specific")) {
    out.push_back({"model.attention.gate.position", "G5 gates the dense o_proj output (n × d_model), which has no "
                                                    "heads: needs granularity elementwise and sharing head_specific"});
  }
  if (g.sharing == "head_shared" && g.granularity != "elementwise") {
    out.push_back({"model.attention.gate.sharing", "head_shared averages elementwise scores over the heads into "
                                                   "one head_dim vector; needs granularity: elementwise"});
  }
  if (g.activation == "identity" && g.form != "additive") {
    out.push_back({"model.attention.gate.activation", "identity is only defined for the additive form (paper "
                                                      "Table 3 row 7); a multiplicative identity gate is unbounded"});
  }
  if (g.input != "hidden" && (g.bias || g.fuse_q_proj)) {
    out.push_back({"model.attention.gate.input", "'" + g.input + "' has no projection of X: bias and fuse_q_proj "
                                                 "need input: hidden"});
  }
  if (g.input == "self" && (g.granularity != "elementwise" || g.sharing != "head_specific")) {
    out.push_back({"model.attention.gate.input", "self gates each element by itself: needs granularity "
                                                 "elementwise and sharing head_specific"});
  }
}

// model.moe.* against model.arch and each other.
void check_moe(std::vector<Problem>& out, const ModelConfig& m) {
  const MoEConfig& e = m.moe;
  if (!m.is_moe()) {
    // A non-default MoE key with a dense model is almost certainly a forgotten `arch: moe`.
    const MoEConfig d;
    const std::pair<const char*, bool> changed[] = {
        {"n_experts", e.n_experts != d.n_experts},
        {"ffn_hidden", e.ffn_hidden != d.ffn_hidden},
        {"top_k", e.top_k != d.top_k},
        {"every", e.every != d.every},
        {"norm_topk_prob", e.norm_topk_prob != d.norm_topk_prob},
        {"router", e.router != d.router},
        {"scoring", e.scoring != d.scoring},
        {"bias_update_rate", e.bias_update_rate != d.bias_update_rate},
        {"aux_loss_coef", e.aux_loss_coef != d.aux_loss_coef},
        {"aux_loss_scope", e.aux_loss_scope != d.aux_loss_scope},
        {"z_loss_coef", e.z_loss_coef != d.z_loss_coef},
        {"shared_experts", e.shared_experts != d.shared_experts},
        {"shared_ffn_hidden", e.shared_ffn_hidden != d.shared_ffn_hidden},
        {"shared_expert_gate", e.shared_expert_gate != d.shared_expert_gate},
        {"capacity_factor", e.capacity_factor != d.capacity_factor},
        {"gemm", e.gemm != d.gemm}};
    for (const auto& [key, set] : changed) {
      if (set) {
        out.push_back({std::string("model.moe.") + key,
                       "is set but model.arch is '" + m.arch + "'; MoE keys need model.arch: moe"});
      }
    }
    return;
  }
  if (e.top_k > e.n_experts) {
    out.push_back({"model.moe.top_k", "(" + std::to_string(e.top_k) + ") exceeds model.moe.n_experts (" +
                                          std::to_string(e.n_experts) + ")"});
  }
  if (e.every > m.n_layers) {
    out.push_back({"model.moe.every", "(" + std::to_string(e.every) + ") exceeds model.n_layers (" +
                                          std::to_string(m.n_layers) + "): no block would be an MoE layer"});
  }
  if (e.router == "topk_softmax" && e.scoring != "softmax") {
    out.push_back({"model.moe.router", "topk_softmax takes a softmax over the selected logits; it needs "
                                       "model.moe.scoring: softmax (got '" + e.scoring + "')"});
  }
  if (e.router == "topk_softmax" && !e.norm_topk_prob) {
    out.push_back({"model.moe.norm_topk_prob", "is false, but router topk_softmax always normalises over the "
                                               "selected experts; set it to true or use router: softmax_topk"});
  }
  if (e.shared_experts == 0 && e.shared_expert_gate) {
    out.push_back({"model.moe.shared_expert_gate", "needs model.moe.shared_experts > 0"});
  }
  if (e.shared_experts == 0 && e.shared_ffn_hidden > 0) {
    out.push_back({"model.moe.shared_ffn_hidden", "needs model.moe.shared_experts > 0"});
  }
  if (e.gemm == "grouped" && (m.d_model % 8 != 0 || m.resolved_expert_hidden() % 8 != 0)) {
    // at::_grouped_mm needs 16-byte aligned rows: multiples of 8 bf16 elements.
    out.push_back({"model.moe.gemm", "grouped needs model.d_model (" + std::to_string(m.d_model) +
                                         ") and the expert width (" + std::to_string(m.resolved_expert_hidden()) +
                                         ") to be multiples of 8; use auto or loop"});
  }
}

std::string strip_key(const std::string& msg, const std::string& key) {
  return msg.compare(0, key.size() + 2, key + ": ") == 0 ? msg.substr(key.size() + 2) : msg;
}

}  // namespace

std::vector<Problem> check_consistency(const Config& c, bool check_paths) {
  std::vector<Problem> out;
  const ModelConfig& m = c.model;

  if (m.head_dim == 0 && m.d_model % m.n_heads != 0) {
    out.push_back({"model.n_heads", "model.d_model (" + std::to_string(m.d_model) + ") is not divisible by n_heads (" +
                                        std::to_string(m.n_heads) +
                                        "); change the sizes or set model.head_dim explicitly"});
  }
  if (m.n_heads % m.n_kv_heads != 0) {
    out.push_back({"model.n_kv_heads", "n_heads (" + std::to_string(m.n_heads) + ") must be a multiple of n_kv_heads (" +
                                           std::to_string(m.n_kv_heads) + ")"});
  }
  if (m.position == "rope" && m.n_heads > 0 && (m.head_dim > 0 || m.d_model % m.n_heads == 0) &&
      m.resolved_head_dim() % 2 != 0) {
    out.push_back({m.head_dim > 0 ? "model.head_dim" : "model.d_model",
                   "RoPE needs an even head dimension, got " + std::to_string(m.resolved_head_dim())});
  }
  int64_t tok_vocab = 0;
  if (check_paths) {
    try {
      tok_vocab = load_tokenizer(c.data.tokenizer, "data.tokenizer")->vocab_size();
    } catch (const InputError& e) {
      out.push_back({"data.tokenizer", strip_key(e.what(), "data.tokenizer")});
    }
  }
  if (tok_vocab > 0 && m.vocab_size > 0 && m.vocab_size < tok_vocab) {
    out.push_back({"model.vocab_size", "is " + std::to_string(m.vocab_size) + " but tokenizer '" + c.data.tokenizer +
                                           "' has " + std::to_string(tok_vocab) + " tokens; need at least that many"});
  }
  if (c.schedule.warmup_steps > c.train.steps) {
    out.push_back({"schedule.warmup_steps", "(" + std::to_string(c.schedule.warmup_steps) + ") exceeds train.steps (" +
                                                std::to_string(c.train.steps) + ")"});
  }
  const bool text_file = !c.data.train.empty() && fs::is_regular_file(c.data.train);
  if (text_file && c.data.val.empty() && c.data.val_fraction == 0.0 && c.train.eval_every > 0) {
    out.push_back({"train.eval_every", "validation needs data.val or data.val_fraction > 0; set eval_every: 0 to "
                                       "train without validation"});
  }
  if (m.attention.window > 0 && m.attention.window >= c.data.seq_len) {
    // Not an error in principle, but a window that never binds is almost always a typo.
    out.push_back({"model.attention.window", "(" + std::to_string(m.attention.window) +
                                                 ") must be smaller than data.seq_len (" +
                                                 std::to_string(c.data.seq_len) + "); use 0 for full attention"});
  }
  for (const int64_t w : m.attention.window_pattern) {
    if (w > 0 && w >= c.data.seq_len) {
      out.push_back({"model.attention.window_pattern", "entry " + std::to_string(w) +
                                                          " must be smaller than data.seq_len (" +
                                                          std::to_string(c.data.seq_len) + "); use 0 for a full layer"});
      break;
    }
  }
  if (!m.attention.window_pattern.empty() && m.attention.window != 0) {
    out.push_back({"model.attention.window_pattern", "is set together with model.attention.window (" +
                                                        std::to_string(m.attention.window) +
                                                        "); set one of them (the pattern gives every layer's window)"});
  }
  check_positions(out, m);
  check_gate(out, m);
  check_moe(out, m);
  if (c.parallel.expert_parallel > 1) {
    const int64_t ep = c.parallel.expert_parallel;
    if (!m.is_moe()) {
      out.push_back({"parallel.expert_parallel", "(" + std::to_string(ep) +
                                                    ") splits MoE experts over ranks, but model.arch is not moe; "
                                                    "use 1"});
    } else if (m.moe.n_experts % ep != 0) {
      out.push_back({"parallel.expert_parallel", "(" + std::to_string(ep) + ") must divide model.moe.n_experts (" +
                                                    std::to_string(m.moe.n_experts) + ")"});
    }
    if (c.parallel.data_parallel > 0 && c.parallel.data_parallel % ep != 0) {
      out.push_back({"parallel.expert_parallel", "(" + std::to_string(ep) +
                                                    ") must divide the world size parallel.data_parallel (" +
                                                    std::to_string(c.parallel.data_parallel) + ")"});
    }
  }
  if (c.parallel.backend == "nccl" && c.train.device == "cpu") {
    out.push_back({"parallel.backend", "nccl runs on CUDA devices, but train.device is cpu; use gloo or auto"});
  }
  if (check_paths) {
    check_data_path(out, "data.train", c.data.train, /*required=*/true);
    check_data_path(out, "data.val", c.data.val, /*required=*/false);
  }
  return out;
}

}  // namespace sluice::config_detail
