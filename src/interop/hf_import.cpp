#include "interop/hf_import.h"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "sluice/errors.h"

namespace sluice {
namespace {

using nlohmann::json;

// Fields of Llama/Qwen3 configs that change nothing Sluice computes (bookkeeping, generation
// defaults, training-only settings).
const std::set<std::string> kIgnored = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "use_cache", "pretraining_tp",
    "output_attentions", "output_hidden_states", "return_dict", "id2label", "label2id", "torchscript",
    "tie_encoder_decoder", "is_encoder_decoder", "chunk_size_feed_forward", "problem_type", "auto_map",
    "sluice_tokenizer", "max_position_embeddings", "attention_dropout", "use_bfloat16", "tokenizer_class",
    "decoder_start_token_id", "sep_token_id", "prefix", "task_specific_params", "finetuning_task",
    "tf_legacy_loss", "pruned_heads", "cross_attention_hidden_size", "add_cross_attention"};

class Reader {
 public:
  Reader(const json& j, const std::string& path) : j_(j), path_(path) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw InputError(fmt::format("{}: {}: {}", path_, field, what));
  }
  const json* find(const std::string& field) {
    used_.insert(field);
    const auto it = j_.find(field);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  int64_t positive(const std::string& field, std::optional<int64_t> fallback = std::nullopt) {
    const json* v = find(field);
    if (v == nullptr) {
      if (fallback) return *fallback;
      fail(field, "is required (a positive integer)");
    }
    if (!v->is_number_integer() || v->get<int64_t>() <= 0 || v->get<int64_t>() > (int64_t{1} << 40))
      fail(field, "expected a positive integer, got " + v->dump());
    return v->get<int64_t>();
  }
  double number(const std::string& field, double fallback) {
    const json* v = find(field);
    if (v == nullptr) return fallback;
    if (!v->is_number() || !std::isfinite(v->get<double>())) fail(field, "expected a number, got " + v->dump());
    return v->get<double>();
  }
  bool boolean(const std::string& field, bool fallback) {
    const json* v = find(field);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) fail(field, "expected true or false, got " + v->dump());
    return v->get<bool>();
  }
  std::string string(const std::string& field, const std::string& fallback) {
    const json* v = find(field);
    if (v == nullptr) return fallback;
    if (!v->is_string()) fail(field, "expected a string, got " + v->dump());
    return v->get<std::string>();
  }
  // A field whose only value Sluice computes is `expected`.
  template <typename T>
  void require(const std::string& field, const T& expected, const std::string& why) {
    const json* v = find(field);
    if (v != nullptr && *v != json(expected)) fail(field, fmt::format("{} is not supported ({}); expected {}", v->dump(), why, json(expected).dump()));
  }
  void refuse_unknown() const {
    for (const auto& [key, value] : j_.items())
      if (!used_.count(key) && !kIgnored.count(key))
        fail(key, "is not a field Sluice understands; refusing rather than importing a model that may compute "
                  "something else (docs/interop.md)");
  }
  const std::string& path() const { return path_; }

 private:
  const json& j_;
  std::string path_;
  std::set<std::string> used_;
};

// transformers' rope_parameters (5.x) or rope_theta + rope_scaling (4.x) as model.rope.
void read_rope(Reader& r, const json& cfg, RopeConfig& rope, int64_t max_positions) {
  json params = json::object();
  if (const json* p = r.find("rope_parameters")) {
    if (!p->is_object()) r.fail("rope_parameters", "expected an object, got " + p->dump());
    params = *p;
  } else if (const json* s = r.find("rope_scaling")) {
    if (!s->is_object()) r.fail("rope_scaling", "expected an object or null, got " + s->dump());
    params = *s;
  }
  const std::string field = cfg.contains("rope_parameters") ? "rope_parameters" : "rope_scaling";
  Reader p(params, r.path() + ": " + field);
  // 4.x keeps rope_theta beside rope_scaling
  const double top_theta = r.number("rope_theta", 10000.0);
  rope.base = p.number("rope_theta", top_theta);
  if (rope.base <= 1.0) p.fail("rope_theta", "expected a base > 1");
  std::string type = p.string("rope_type", "");
  if (type.empty()) type = p.string("type", "default");
  p.require("partial_rotary_factor", 1.0, "Sluice rotates whole heads");
  if (type == "default") {
    rope.scaling = "none";
  } else if (type == "linear" || type == "dynamic" || type == "yarn") {
    rope.factor = p.number("factor", 0.0);
    if (rope.factor < 1.0) p.fail("factor", "expected a number >= 1");
    if (type == "linear") rope.scaling = "linear";
    if (type == "dynamic") {
      rope.scaling = "dynamic_ntk";
      rope.original_max_len = max_positions;  // transformers' dynamic NTK extends from max_position_embeddings
    }
    if (type == "yarn") {
      rope.scaling = "yarn";
      const double original = p.number("original_max_position_embeddings", static_cast<double>(max_positions));
      if (original < 1 || original != std::floor(original)) p.fail("original_max_position_embeddings", "expected a positive integer");
      rope.original_max_len = static_cast<int64_t>(original);
      p.require("beta_fast", 32.0, "Sluice's YaRN ramp uses 32");
      p.require("beta_slow", 1.0, "Sluice's YaRN ramp uses 1");
      p.require("truncate", true, "Sluice floors and ceils the correction range");
      p.require("mscale", 1.0, "Sluice's attention factor is 0.1 ln(s) + 1");
      p.require("mscale_all_dim", 0.0, "Sluice's attention factor is 0.1 ln(s) + 1");
      if (const json* af = p.find("attention_factor")) {
        const double want = rope.factor > 1.0 ? 0.1 * std::log(rope.factor) + 1.0 : 1.0;
        if (!af->is_number() || std::abs(af->get<double>() - want) > 1e-12)
          p.fail("attention_factor", fmt::format("{} is not supported; Sluice's YaRN uses 0.1 ln(factor) + 1 = {}", af->dump(), want));
      }
    }
  } else {
    p.fail("rope_type", "'" + type + "' is not supported; Sluice computes default, linear, dynamic and yarn");
  }
  p.refuse_unknown();
}

// Qwen3-MoE / Qwen2-MoE routing: softmax top-k (renormalised with norm_topk_prob), MoE in
// blocks with (i + 1) % decoder_sparse_step == 0 (Sluice's moe.every), Qwen2-MoE's one gated
// shared expert.
void read_moe(Reader& r, const std::string& type, ModelConfig& m) {
  MoEConfig& e = m.moe;
  // transformers 5 writes num_local_experts (num_experts is its alias); 4.x num_experts
  e.n_experts = r.find("num_local_experts") != nullptr ? r.positive("num_local_experts") : r.positive("num_experts");
  e.top_k = r.positive("num_experts_per_tok");
  if (e.top_k > e.n_experts) r.fail("num_experts_per_tok", "exceeds num_experts");
  e.ffn_hidden = r.positive("moe_intermediate_size");
  e.every = r.positive("decoder_sparse_step", 1);
  e.norm_topk_prob = r.boolean("norm_topk_prob", false);
  e.aux_loss_coef = r.number("router_aux_loss_coef", 0.001);
  if (e.aux_loss_coef < 0) e.aux_loss_coef = 0;
  e.router = "softmax_topk";
  e.scoring = "softmax";
  r.find("output_router_logits");
  if (const json* only = r.find("mlp_only_layers")) {
    if (!only->is_array() || !only->empty())
      r.fail("mlp_only_layers", only->dump() + " is not supported; Sluice places MoE layers by decoder_sparse_step only");
  }
  if (type == "qwen2_moe") {
    if (r.find("qkv_bias") == nullptr) r.fail("qkv_bias", "is absent, which means true in Qwen2-MoE; Sluice's projections have no bias");
    r.require("qkv_bias", false, "Sluice's projections have no bias");
    e.shared_experts = 1;
    e.shared_ffn_hidden = r.positive("shared_expert_intermediate_size");
    e.shared_expert_gate = true;
  }
}

// Qwen3-Next with full attention in every layer and dense MLPs: G1 (an elementwise sigmoid gate
// from the hidden state, per head) with QK-norm; its whole heads rotate only with
// partial_rotary_factor 1 (its default is 0.25).
void read_qwen3_next(Reader& r, const json& cfg, ModelConfig& m) {
  GateConfig& g = m.attention.gate;
  g.position = "G1";
  g.granularity = "elementwise";
  g.sharing = "head_specific";
  g.form = "multiplicative";
  g.activation = "sigmoid";
  g.input = "hidden";
  g.bias = false;
  const json* layer_types = r.find("layer_types");
  if (layer_types == nullptr || !layer_types->is_array() || static_cast<int64_t>(layer_types->size()) != m.n_layers)
    r.fail("layer_types", "must list every layer as full_attention (Sluice has no linear-attention layers)");
  for (const json& t : *layer_types)
    if (t != "full_attention") r.fail("layer_types", t.dump() + " is not supported; every layer must be full_attention");
  const json* only = r.find("mlp_only_layers");
  const json* experts = r.find("num_experts");  // absent: Qwen3-Next's default, 512
  const bool no_experts = experts != nullptr && *experts == json(0);
  const bool all_dense = no_experts || (only != nullptr && only->is_array() && static_cast<int64_t>(only->size()) == m.n_layers);
  if (!all_dense) r.fail("mlp_only_layers", "must name every layer (or num_experts be 0): Qwen3-Next's MoE layers are not imported");
  bool rotates_all = false;
  if (const json* f = r.find("partial_rotary_factor")) rotates_all = *f == json(1.0);
  const auto rope = cfg.find("rope_parameters");
  if (rope != cfg.end() && rope->is_object() && rope->contains("partial_rotary_factor"))
    rotates_all = (*rope)["partial_rotary_factor"] == json(1.0);
  if (!rotates_all) r.fail("partial_rotary_factor", "must be 1.0 (Qwen3-Next's default 0.25 rotates a quarter of each head; Sluice rotates whole heads)");
  for (const char* f : {"linear_conv_kernel_dim", "linear_key_head_dim", "linear_value_head_dim", "linear_num_key_heads",
                        "linear_num_value_heads", "decoder_sparse_step", "moe_intermediate_size",
                        "shared_expert_intermediate_size", "num_experts_per_tok", "norm_topk_prob", "output_router_logits",
                        "router_aux_loss_coef", "full_attention_interval"})
    r.find(f);  // only used by linear-attention or MoE layers, which are not there
}

}  // namespace

HfImportPlan plan_hf_import(const std::string& text, const std::string& path) {
  const json cfg = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (cfg.is_discarded()) throw InputError(path + ": not valid JSON");
  if (!cfg.is_object()) throw InputError(path + ": expected a JSON object");
  Reader r(cfg, path);
  const std::string type = r.string("model_type", "");
  HfImportPlan plan;
  Config& c = plan.config;
  ModelConfig& m = c.model;
  const bool moe = type == "qwen3_moe" || type == "qwen2_moe";
  const bool next = type == "qwen3_next";
  if (type == "llama" || type == "qwen3" || moe || next) {
    plan.architecture = type == "llama"       ? "LlamaForCausalLM"
                        : type == "qwen3"     ? "Qwen3ForCausalLM"
                        : type == "qwen3_moe" ? "Qwen3MoeForCausalLM"
                        : next                ? "Qwen3NextForCausalLM"
                                              : "Qwen2MoeForCausalLM";
    m.arch = moe ? "moe" : "dense";
    m.vocab_size = r.positive("vocab_size");
    m.d_model = r.positive("hidden_size");
    m.ffn_hidden = r.positive("intermediate_size");
    m.n_layers = r.positive("num_hidden_layers");
    m.n_heads = r.positive("num_attention_heads");
    m.n_kv_heads = r.positive("num_key_value_heads", m.n_heads);
    m.head_dim = r.positive("head_dim", m.d_model / m.n_heads);
    if (m.head_dim * m.n_heads == m.d_model) m.head_dim = 0;  // Sluice's "d_model / n_heads"
    m.norm_eps = r.number("rms_norm_eps", 1e-6);
    if (!(m.norm_eps > 0)) r.fail("rms_norm_eps", "expected a positive number");
    m.tie_embeddings = r.boolean("tie_word_embeddings", false);
    m.init_std = r.number("initializer_range", 0.02);
    if (!(m.init_std > 0)) m.init_std = 0.02;
    m.qk_norm = type == "qwen3" || type == "qwen3_moe" || next;
    r.require("hidden_act", "silu", "Sluice's MLP is SwiGLU");
    r.require("attention_bias", false, "Sluice's projections have no bias");
    r.require("attention_dropout", 0.0, "dropout changes evaluation");
    if (moe) read_moe(r, type, m);
    if (next) read_qwen3_next(r, cfg, m);
    if (type == "llama") {
      r.require("mlp_bias", false, "Sluice's MLP has no bias");
    } else {
      r.require("use_sliding_window", false, "sliding windows are not imported");
      r.find("sliding_window");  // only read when use_sliding_window
      r.find("max_window_layers");
      if (const json* lt = r.find("layer_types")) {
        if (!lt->is_array()) r.fail("layer_types", "expected a list");
        for (const json& t : *lt)
          if (t != "full_attention") r.fail("layer_types", t.dump() + " is not supported; every layer must be full_attention");
      }
    }
    const int64_t max_positions = r.positive("max_position_embeddings", 2048);
    read_rope(r, cfg, m.rope, max_positions);
    c.data.seq_len = std::min<int64_t>(m.rope.original_max_len > 0 ? m.rope.original_max_len : max_positions, 8192);
  } else if (type == "sluice") {
    plan.architecture = "SluiceForCausalLM";
    const json* section = r.find("sluice");
    if (section == nullptr || !section->is_object()) r.fail("sluice", "expected the model section (an object)");
    // the usual transformers fields are a copy of the section's sizes
    for (const char* f : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "head_dim", "rms_norm_eps", "tie_word_embeddings"})
      r.find(f);
    const int64_t seq_len = r.positive("max_position_embeddings", 256);
    // JSON is YAML: the section goes through the config loader, which checks every key
    c = load_config_text(json{{"model", *section}, {"data", {{"seq_len", seq_len}}}}.dump(), path + " (\"sluice\")", {},
                         /*check_paths=*/false)
            .config;
    // the export writes the resolved head_dim; Sluice's "d_model / n_heads" is 0
    if (c.model.head_dim * c.model.n_heads == c.model.d_model) c.model.head_dim = 0;
  } else {
    r.fail("model_type", (type.empty() ? std::string("missing") : "'" + type + "'") +
                             ": supported are llama (LlamaForCausalLM), qwen3 (Qwen3ForCausalLM), qwen3_next "
                             "(Qwen3NextForCausalLM, full attention only), qwen3_moe "
                             "(Qwen3MoeForCausalLM), qwen2_moe (Qwen2MoeForCausalLM) and sluice (SluiceForCausalLM, a "
                             "`sluice export hf` remote-code model)");
  }
  const std::string tok = r.string("sluice_tokenizer", "");
  if (!tok.empty() && tok != "byte") r.fail("sluice_tokenizer", "expected \"byte\"");
  plan.byte_tokenizer = tok == "byte";
  r.refuse_unknown();
  // the combination must be a valid Sluice model too (n_heads a multiple of n_kv_heads, ...)
  plan.config = load_config_text(to_yaml(c), path + " (as a Sluice config)", {}, /*check_paths=*/false).config;
  return plan;
}

}  // namespace sluice
