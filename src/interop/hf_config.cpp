#include "interop/hf_config.h"

#include <fmt/format.h>

#include <cmath>

#include "sluice/errors.h"

namespace sluice {
namespace {

[[noreturn]] void refuse(const std::string& key, const std::string& value, const std::string& why) {
  throw InputError(fmt::format("{}: {} cannot be exported: {}; exporting it as a stock class would compute something "
                               "else (docs/interop.md lists what maps)",
                               key, value, why));
}

// Keys whose non-default values no stock class here computes.
void check_stock_architecture(const ModelConfig& m) {
  if (m.arch != "dense")
    refuse("model.arch", m.arch, "MoE export (Qwen3MoeForCausalLM / Qwen2MoeForCausalLM) is not implemented yet");
  if (m.position != "rope")
    refuse("model.position", m.position, "Llama and Qwen3 use RoPE on every layer (ALiBi, NoPE and CoCA need the "
                                         "remote-code model, not implemented yet)");
  if (m.attention.coca.mode != "off") refuse("model.attention.coca.mode", m.attention.coca.mode, "no stock class has CoCA");
  if (m.attention.gate.position != "none")
    refuse("model.attention.gate.position", m.attention.gate.position,
           "gated attention needs Qwen3NextForCausalLM (G1 with QK-norm) or the remote-code model; neither is "
           "implemented yet");
  if (m.attention.output_norm) refuse("model.attention.output_norm", "true", "no stock class normalises the SDPA output");
  if (m.attention.window != 0)
    refuse("model.attention.window", std::to_string(m.attention.window), "sliding windows are not exported yet");
  if (!m.attention.window_pattern.empty())
    refuse("model.attention.window_pattern", "a pattern", "per-layer windows are not exported yet");
}

}  // namespace

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

HfModelConfig hf_config_for(const Config& cfg, int64_t vocab_size, const SpecialTokens& specials,
                            const std::string& dtype) {
  const ModelConfig& m = cfg.model;
  check_stock_architecture(m);
  HfModelConfig out;
  const bool qwen3 = m.qk_norm;
  out.architecture = qwen3 ? "Qwen3ForCausalLM" : "LlamaForCausalLM";
  const int64_t train_len = cfg.data.seq_len;
  const int64_t original = m.rope.original_max_len > 0 ? m.rope.original_max_len : train_len;
  // The length the positions were trained for; dynamic NTK reads it as its original length.
  int64_t max_positions = train_len;
  if (m.rope.scaling == "dynamic_ntk") max_positions = original;
  if (m.rope.scaling == "yarn") max_positions = std::llround(static_cast<double>(original) * m.rope.factor);
  if (m.rope.scaling == "linear" || m.rope.scaling == "ntk")
    max_positions = std::llround(static_cast<double>(train_len) * std::max(1.0, m.rope.factor));

  nlohmann::json c = {
      {"architectures", {out.architecture}},
      {"model_type", qwen3 ? "qwen3" : "llama"},
      {"vocab_size", vocab_size},
      {"hidden_size", m.d_model},
      {"intermediate_size", m.resolved_ffn_hidden()},
      {"num_hidden_layers", m.n_layers},
      {"num_attention_heads", m.n_heads},
      {"num_key_value_heads", m.n_kv_heads},
      {"head_dim", m.resolved_head_dim()},
      {"hidden_act", "silu"},
      {"max_position_embeddings", max_positions},
      {"rms_norm_eps", m.norm_eps},
      {"initializer_range", m.init_std},
      {"tie_word_embeddings", m.tie_embeddings},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"rope_parameters", hf_rope_parameters(m, train_len)},
      {"use_cache", true},
      {"dtype", dtype},
  };
  if (qwen3) {
    c["use_sliding_window"] = false;
    c["sliding_window"] = nullptr;
    c["max_window_layers"] = m.n_layers;
    c["layer_types"] = std::vector<std::string>(static_cast<size_t>(m.n_layers), "full_attention");
  } else {
    c["mlp_bias"] = false;
    c["pretraining_tp"] = 1;
  }
  nlohmann::json gen = {{"do_sample", false}};
  if (specials.bos >= 0) c["bos_token_id"] = gen["bos_token_id"] = specials.bos;
  if (specials.eos >= 0) c["eos_token_id"] = gen["eos_token_id"] = specials.eos;
  if (specials.pad >= 0) c["pad_token_id"] = gen["pad_token_id"] = specials.pad;
  out.config = std::move(c);
  out.generation_config = std::move(gen);
  return out;
}

}  // namespace sluice
