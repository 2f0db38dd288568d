#include "interop/hf_config.h"

#include <fmt/format.h>

#include <cmath>

#include "config/schema.h"
#include "sluice/errors.h"

namespace sluice {
namespace {

[[noreturn]] void refuse(const std::string& key, const std::string& value, const std::string& why) {
  throw InputError(fmt::format("{}: {} cannot be exported: {}; exporting it as a stock class would compute something "
                               "else (docs/interop.md lists what maps)",
                               key, value, why));
}

// The first key whose value the stock classes (Llama, Qwen3) do not compute, with the reason;
// empty when they do.
std::pair<std::string, std::string> not_stock(const ModelConfig& m) {
  if (m.position != "rope") return {"model.position", "Llama and Qwen3 use RoPE on every layer"};
  if (m.attention.coca.mode != "off") return {"model.attention.coca.mode", "no stock class has CoCA"};
  if (m.attention.gate.position != "none") return {"model.attention.gate.position", "no stock class here has gates"};
  if (m.attention.output_norm) return {"model.attention.output_norm", "no stock class normalises the SDPA output"};
  if (m.attention.window != 0) return {"model.attention.window", "sliding windows"};
  if (!m.attention.window_pattern.empty()) return {"model.attention.window_pattern", "per-layer windows"};
  return {};
}

// Sluice's MoE layers as Qwen3-MoE's (softmax top-k, optionally renormalised, no shared
// experts, QK-norm) or Qwen2-MoE's (the same router, one gated shared expert, no QK-norm).
void check_stock_moe(const ModelConfig& m) {
  const MoEConfig& e = m.moe;
  if (e.router != "softmax_topk") refuse("model.moe.router", e.router, "Qwen-MoE routes by softmax top-k");
  if (e.scoring != "softmax") refuse("model.moe.scoring", e.scoring, "Qwen-MoE scores experts by softmax");
  if (e.bias_update_rate != 0.0)
    refuse("model.moe.bias_update_rate", std::to_string(e.bias_update_rate), "Qwen-MoE has no routing bias");
  if (e.capacity_factor != 0.0)
    refuse("model.moe.capacity_factor", std::to_string(e.capacity_factor), "Qwen-MoE is dropless");
  if (m.qk_norm && e.shared_experts > 0)
    refuse("model.moe.shared_experts", std::to_string(e.shared_experts),
           "with QK-norm the class is Qwen3MoeForCausalLM, which has no shared experts (Qwen2MoeForCausalLM has "
           "them but no QK-norm)");
  if (!m.qk_norm && e.shared_experts == 0)
    refuse("model.qk_norm", "false",
           "an MoE model without shared experts maps to Qwen3MoeForCausalLM, which has QK-norm (Qwen2MoeForCausalLM "
           "always has a gated shared expert)");
  if (!m.qk_norm && !e.shared_expert_gate)
    refuse("model.moe.shared_expert_gate", "false", "Qwen2MoeForCausalLM gates its shared expert");
}

// max_position_embeddings: the length the positions were trained for; dynamic NTK reads it as
// its original length.
int64_t max_positions_for(const Config& cfg) {
  const ModelConfig& m = cfg.model;
  const int64_t train_len = cfg.data.seq_len;
  const int64_t original = m.rope.original_max_len > 0 ? m.rope.original_max_len : train_len;
  if (m.rope.scaling == "dynamic_ntk") return original;
  if (m.rope.scaling == "yarn") return std::llround(static_cast<double>(original) * m.rope.factor);
  if (m.rope.scaling == "linear" || m.rope.scaling == "ntk")
    return std::llround(static_cast<double>(train_len) * std::max(1.0, m.rope.factor));
  return train_len;
}

// The fields of every export (sizes, dtype, token ids) and generation_config.json.
HfModelConfig base_config(const ModelConfig& m, const std::string& architecture, const std::string& model_type,
                          int64_t vocab_size, const SpecialTokens& specials, const std::string& dtype) {
  HfModelConfig out;
  out.architecture = architecture;
  out.config = {{"architectures", {architecture}},
                {"model_type", model_type},
                {"vocab_size", vocab_size},
                {"hidden_size", m.d_model},
                {"intermediate_size", m.resolved_ffn_hidden()},
                {"num_hidden_layers", m.n_layers},
                {"num_attention_heads", m.n_heads},
                {"num_key_value_heads", m.n_kv_heads},
                {"head_dim", m.resolved_head_dim()},
                {"rms_norm_eps", m.norm_eps},
                {"tie_word_embeddings", m.tie_embeddings},
                {"use_cache", true},
                {"dtype", dtype}};
  out.generation_config = {{"do_sample", false}};
  for (const auto& [field, id] : {std::pair<const char*, int32_t>{"bos_token_id", specials.bos},
                                  {"eos_token_id", specials.eos},
                                  {"pad_token_id", specials.pad}})
    if (id >= 0) out.config[field] = out.generation_config[field] = id;
  return out;
}

// What the Llama family of stock classes reads besides the sizes.
void add_stock_fields(nlohmann::json& c, const Config& cfg) {
  const ModelConfig& m = cfg.model;
  c["hidden_act"] = "silu";
  c["max_position_embeddings"] = max_positions_for(cfg);
  c["initializer_range"] = m.init_std;
  c["attention_bias"] = false;
  c["attention_dropout"] = 0.0;
  c["rope_parameters"] = hf_rope_parameters(m, cfg.data.seq_len);
}

nlohmann::json yaml_to_json(const YAML::Node& n, config_detail::Kind kind) {
  using config_detail::Kind;
  switch (kind) {
    case Kind::Int: return n.as<int64_t>();
    case Kind::Float: return n.as<double>();
    case Kind::Bool: return n.as<bool>();
    case Kind::String: return n.as<std::string>();
    case Kind::StringList: return n.as<std::vector<std::string>>();
    case Kind::IntList: return n.as<std::vector<int64_t>>();
  }
  return nullptr;
}

HfModelConfig remote_code_config(const Config& cfg, int64_t vocab_size, const SpecialTokens& specials,
                                 const std::string& dtype);
HfModelConfig qwen3_next_config(const Config& cfg, int64_t vocab_size, const SpecialTokens& specials,
                                const std::string& dtype);

}  // namespace

bool is_qwen3_next_gate(const ModelConfig& m) {
  const GateConfig& g = m.attention.gate;
  return m.arch == "dense" && m.qk_norm && m.position == "rope" && m.attention.coca.mode == "off" &&
         !m.attention.output_norm && m.attention.window == 0 && m.attention.window_pattern.empty() && g.position == "G1" &&
         (g.granularity == "elementwise" || g.granularity == "headwise") && g.sharing == "head_specific" &&
         g.form == "multiplicative" && g.activation == "sigmoid" && g.input == "hidden" && !g.bias;
}

nlohmann::json hf_rope_parameters(const ModelConfig& m, int64_t train_len) {
  const RopeConfig& r = m.rope;
  const int64_t d = m.resolved_head_dim();
  const int64_t original = r.original_max_len > 0 ? r.original_max_len : train_len;
  if (r.scaling == "none") return {{"rope_type", "default"}, {"rope_theta", r.base}};
  if (r.scaling == "linear") return {{"rope_type", "linear"}, {"rope_theta", r.base}, {"factor", r.factor}};
  if (r.scaling == "ntk") {  // static NTK-aware: only the base changes (src/model/rope.cpp)
    const double theta = r.base * std::pow(r.factor, static_cast<double>(d) / static_cast<double>(d - 2));
    return {{"rope_type", "default"}, {"rope_theta", theta}};
  }
  if (r.scaling == "dynamic_ntk") {
    // transformers' dynamic NTK takes max_position_embeddings as the original length.
    return {{"rope_type", "dynamic"}, {"rope_theta", r.base}, {"factor", r.factor}};
  }
  if (r.scaling == "yarn") {
    return {{"rope_type", "yarn"},       {"rope_theta", r.base},  {"factor", r.factor},
            {"original_max_position_embeddings", original},       {"beta_fast", 32.0},
            {"beta_slow", 1.0},          {"truncate", true}};
  }
  refuse("model.rope.scaling", r.scaling, "no transformers rope type matches");
}

nlohmann::json config_section_json(const Config& cfg, const std::string& section) {
  nlohmann::json out = nlohmann::json::object();
  const std::string prefix = section + ".";
  for (const config_detail::Field& f : config_detail::schema()) {
    if (f.path.rfind(prefix, 0) != 0) continue;
    std::string p = "/" + f.path.substr(prefix.size());  // "rope.base" -> "/rope/base"
    for (char& c : p) c = c == '.' ? '/' : c;
    out[nlohmann::json::json_pointer(p)] = yaml_to_json(f.emit(cfg), f.kind);
  }
  return out;
}

HfModelConfig hf_config_for(const Config& cfg, int64_t vocab_size, const SpecialTokens& specials,
                            const std::string& dtype) {
  const ModelConfig& m = cfg.model;
  const bool moe = m.arch == "moe";
  if (!moe && is_qwen3_next_gate(m)) return qwen3_next_config(cfg, vocab_size, specials, dtype);
  const auto [key, why] = not_stock(m);
  if (!key.empty()) {
    if (moe) refuse(key, "this value in an MoE model", why + "; the remote-code model has no MoE layers");
    return remote_code_config(cfg, vocab_size, specials, dtype);
  }
  if (moe) check_stock_moe(m);
  HfModelConfig out;
  const bool qwen3 = m.qk_norm;
  std::string model_type = qwen3 ? "qwen3" : "llama";
  out.architecture = qwen3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM";
  if (moe) {
    model_type = qwen3 ? "qwen3_moe" : "qwen2_moe";
    out.architecture = qwen3 ? "Qwen3MoeForCausalLM" : "Qwen2MoeForCausalLM";
  }
  out = base_config(m, out.architecture, model_type, vocab_size, specials, dtype);
  nlohmann::json& c = out.config;
  add_stock_fields(c, cfg);
  if (moe) {
    c["num_experts"] = m.moe.n_experts;
    c["num_experts_per_tok"] = m.moe.top_k;
    c["moe_intermediate_size"] = m.resolved_expert_hidden();
    c["decoder_sparse_step"] = m.moe.every;  // Sluice's is_moe_layer is transformers' rule
    c["mlp_only_layers"] = nlohmann::json::array();
    c["norm_topk_prob"] = m.moe.norm_topk_prob;
    c["router_aux_loss_coef"] = m.moe.aux_loss_coef;
    c["output_router_logits"] = false;
    if (!qwen3) {
      c["shared_expert_intermediate_size"] = m.resolved_shared_hidden();
      c["qkv_bias"] = false;
    }
  }
  if (qwen3 || moe) {
    c["use_sliding_window"] = false;
    c["sliding_window"] = nullptr;
    c["max_window_layers"] = m.n_layers;
    c["layer_types"] = std::vector<std::string>(static_cast<size_t>(m.n_layers), "full_attention");
  } else {
    c["mlp_bias"] = false;
    c["pretraining_tp"] = 1;
  }
  return out;
}

namespace {

// SluiceForCausalLM: the usual transformers fields (so that generic tools find the sizes) and
// the whole `model:` section, which is what modeling_sluice.py reads.
HfModelConfig remote_code_config(const Config& cfg, int64_t vocab_size, const SpecialTokens& specials,
                                 const std::string& dtype) {
  const ModelConfig& m = cfg.model;
  HfModelConfig out;
  nlohmann::json model = config_section_json(cfg, "model");
  model["vocab_size"] = vocab_size;
  model["head_dim"] = m.resolved_head_dim();
  model["ffn_hidden"] = m.resolved_ffn_hidden();
  out = base_config(m, "SluiceForCausalLM", "sluice", vocab_size, specials, dtype);
  out.remote_code = true;
  out.config["auto_map"] = {{"AutoConfig", "configuration_sluice.SluiceConfig"},
                            {"AutoModelForCausalLM", "modeling_sluice.SluiceForCausalLM"}};
  out.config["max_position_embeddings"] = cfg.data.seq_len;
  out.config["sluice"] = model;
  return out;
}

}  // namespace

namespace {

// Qwen3NextForCausalLM with every layer full attention and a dense MLP: its attention is G1
// (elementwise sigmoid gate from the hidden state, head-specific) with QK-norm.
HfModelConfig qwen3_next_config(const Config& cfg, int64_t vocab_size, const SpecialTokens& specials,
                                const std::string& dtype) {
  const ModelConfig& m = cfg.model;
  HfModelConfig out;
  out.architecture = "Qwen3NextForCausalLM";
  std::vector<int64_t> all_layers;
  for (int64_t i = 0; i < m.n_layers; ++i) all_layers.push_back(i);
  out = base_config(m, out.architecture, "qwen3_next", vocab_size, specials, dtype);
  nlohmann::json& c = out.config;
  add_stock_fields(c, cfg);
  c["rope_parameters"]["partial_rotary_factor"] = 1.0;  // Qwen3-Next's default rotates a quarter of each head
  c["partial_rotary_factor"] = 1.0;
  c["layer_types"] = std::vector<std::string>(static_cast<size_t>(m.n_layers), "full_attention");
  c["mlp_only_layers"] = all_layers;  // dense MLPs everywhere
  c["num_experts"] = 0;
  return out;
}

}  // namespace

}  // namespace sluice
