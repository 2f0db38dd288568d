// config.json -> Sluice model config (src/interop/hf_import.h), torch-free: what each field
// becomes, both RoPE formats (transformers 5's rope_parameters, 4's rope_theta + rope_scaling),
// and every refusal naming the file and the field. The weights side is in test_interop.cpp.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "interop/hf_import.h"
#include "sluice/errors.h"

namespace sluice {
namespace {

using nlohmann::json;

json llama() {
  return {{"model_type", "llama"},       {"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 320},
          {"hidden_size", 64},           {"intermediate_size", 128},             {"num_hidden_layers", 3},
          {"num_attention_heads", 4},    {"num_key_value_heads", 2},             {"rms_norm_eps", 1e-5},
          {"max_position_embeddings", 128}, {"tie_word_embeddings", true},       {"hidden_act", "silu"},
          {"transformers_version", "5.24.0"}, {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 5e5}}}};
}

std::string error_of(const json& j) {
  try {
    plan_hf_import(j.dump(), "m/config.json");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(HfImport, LlamaFieldsBecomeModelKeys) {
  const HfImportPlan p = plan_hf_import(llama().dump(), "m/config.json");
  EXPECT_EQ(p.architecture, "LlamaForCausalLM");
  const ModelConfig& m = p.config.model;
  EXPECT_EQ(m.vocab_size, 320);
  EXPECT_EQ(m.d_model, 64);
  EXPECT_EQ(m.ffn_hidden, 128);
  EXPECT_EQ(m.n_layers, 3);
  EXPECT_EQ(m.n_heads, 4);
  EXPECT_EQ(m.n_kv_heads, 2);
  EXPECT_EQ(m.head_dim, 0);  // d_model / n_heads
  EXPECT_FALSE(m.qk_norm);
  EXPECT_TRUE(m.tie_embeddings);
  EXPECT_EQ(m.norm_eps, 1e-5);
  EXPECT_EQ(m.rope.scaling, "none");
  EXPECT_EQ(m.rope.base, 5e5);
  EXPECT_EQ(p.config.data.seq_len, 128);
  EXPECT_FALSE(p.byte_tokenizer);
}

TEST(HfImport, Qwen3HasQkNormAndItsHeadDim) {
  json j = llama();
  j["model_type"] = "qwen3";
  j["head_dim"] = 32;
  j["use_sliding_window"] = false;
  j["sliding_window"] = nullptr;
  j["layer_types"] = {"full_attention", "full_attention", "full_attention"};
  j["sluice_tokenizer"] = "byte";
  const HfImportPlan p = plan_hf_import(j.dump(), "m/config.json");
  EXPECT_EQ(p.architecture, "Qwen3ForCausalLM");
  EXPECT_TRUE(p.config.model.qk_norm);
  EXPECT_EQ(p.config.model.head_dim, 32);
  EXPECT_TRUE(p.byte_tokenizer);
  j["layer_types"][1] = "sliding_attention";
  EXPECT_NE(error_of(j).find("layer_types"), std::string::npos);
  j.erase("layer_types");
  j["use_sliding_window"] = true;
  EXPECT_NE(error_of(j).find("use_sliding_window"), std::string::npos);
}

TEST(HfImport, BothRopeFormats) {
  json j = llama();
  j.erase("rope_parameters");
  j["rope_theta"] = 20000.0;
  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};  // transformers 4.x
  HfImportPlan p = plan_hf_import(j.dump(), "m/config.json");
  EXPECT_EQ(p.config.model.rope.scaling, "dynamic_ntk");
  EXPECT_EQ(p.config.model.rope.base, 20000.0);
  EXPECT_EQ(p.config.model.rope.factor, 2.0);
  EXPECT_EQ(p.config.model.rope.original_max_len, 128);  // transformers' dynamic extends from max_position_embeddings
  j = llama();
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e4}, {"factor", 4.0},
                          {"original_max_position_embeddings", 32}, {"beta_fast", 32}, {"beta_slow", 1}};
  p = plan_hf_import(j.dump(), "m/config.json");
  EXPECT_EQ(p.config.model.rope.scaling, "yarn");
  EXPECT_EQ(p.config.model.rope.original_max_len, 32);
  EXPECT_EQ(p.config.data.seq_len, 32);
  j["rope_parameters"]["beta_fast"] = 16;
  EXPECT_NE(error_of(j).find("beta_fast"), std::string::npos) << error_of(j);
  j = llama();
  j["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 1e4}, {"factor", 0.5}};
  EXPECT_NE(error_of(j).find("factor"), std::string::npos);
  j["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 1e4}};
  EXPECT_NE(error_of(j).find("'longrope' is not supported"), std::string::npos) << error_of(j);
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e4}, {"partial_rotary_factor", 0.5}};
  EXPECT_NE(error_of(j).find("partial_rotary_factor"), std::string::npos);
}

TEST(HfImport, RefusalsNameTheFileAndTheField) {
  struct Case {
    std::string field;
    json value;
    std::string expect;  // in the message, beside "m/config.json" and the field
  };
  for (const Case& c : std::vector<Case>{{"model_type", "gpt2", "supported are llama"},
                                          {"hidden_act", "gelu", "SwiGLU"},
                                          {"attention_bias", true, "no bias"},
                                          {"mlp_bias", true, "no bias"},
                                          {"hidden_size", -4, "positive integer"},
                                          {"hidden_size", "64", "positive integer"},
                                          {"num_key_value_heads", 3, "n_kv_heads"},  // Sluice's own validation
                                          {"quantization_config", json::object(), "not a field Sluice understands"},
                                          {"rms_norm_eps", "x", "a number"}}) {
    json j = llama();
    j[c.field] = c.value;
    const std::string e = error_of(j);
    EXPECT_NE(e.find("m/config.json"), std::string::npos) << e;
    EXPECT_NE(e.find(c.field == "num_key_value_heads" ? "model.n_kv_heads" : c.field), std::string::npos) << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << e;
  }
  json j = llama();
  j.erase("hidden_size");
  EXPECT_NE(error_of(j).find("hidden_size: is required"), std::string::npos);
  EXPECT_NE(error_of(json::array()).find("expected a JSON object"), std::string::npos);
  try {
    plan_hf_import("{\"model_type\": ", "m/config.json");
    ADD_FAILURE();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos);
  }
}

TEST(HfImport, QwenMoeRoutingAndSharedExperts) {
  json j = llama();
  j["model_type"] = "qwen3_moe";
  j["num_local_experts"] = 8;  // what transformers 5 writes
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 48;
  j["decoder_sparse_step"] = 2;
  j["norm_topk_prob"] = true;
  j["mlp_only_layers"] = json::array();
  HfImportPlan p = plan_hf_import(j.dump(), "m/config.json");
  EXPECT_EQ(p.architecture, "Qwen3MoeForCausalLM");
  const ModelConfig& m = p.config.model;
  EXPECT_EQ(m.arch, "moe");
  EXPECT_TRUE(m.qk_norm);
  EXPECT_EQ(m.moe.n_experts, 8);
  EXPECT_EQ(m.moe.top_k, 2);
  EXPECT_EQ(m.moe.ffn_hidden, 48);
  EXPECT_EQ(m.moe.every, 2);
  EXPECT_TRUE(m.moe.norm_topk_prob);
  EXPECT_EQ(m.moe.shared_experts, 0);
  j["mlp_only_layers"] = {0};
  EXPECT_NE(error_of(j).find("mlp_only_layers"), std::string::npos);
  j["mlp_only_layers"] = json::array();
  j["num_experts_per_tok"] = 9;
  EXPECT_NE(error_of(j).find("num_experts_per_tok"), std::string::npos);

  j = llama();
  j["model_type"] = "qwen2_moe";
  j["num_experts"] = 4;
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 32;
  j["shared_expert_intermediate_size"] = 96;
  j["qkv_bias"] = false;
  p = plan_hf_import(j.dump(), "m/config.json");
  EXPECT_EQ(p.architecture, "Qwen2MoeForCausalLM");
  EXPECT_FALSE(p.config.model.qk_norm);
  EXPECT_EQ(p.config.model.moe.shared_experts, 1);
  EXPECT_EQ(p.config.model.moe.shared_ffn_hidden, 96);
  EXPECT_TRUE(p.config.model.moe.shared_expert_gate);
  EXPECT_FALSE(p.config.model.moe.norm_topk_prob);  // Qwen2-MoE's default
  j.erase("qkv_bias");  // its default is true
  EXPECT_NE(error_of(j).find("qkv_bias"), std::string::npos) << error_of(j);
}

TEST(HfImport, Qwen3NextIsG1WithQkNormWhenEveryLayerIsFullAttention) {
  json j = llama();
  j["model_type"] = "qwen3_next";
  j["head_dim"] = 16;
  j["layer_types"] = {"full_attention", "full_attention", "full_attention"};
  j["mlp_only_layers"] = {0, 1, 2};
  j["partial_rotary_factor"] = 1.0;
  j["linear_num_value_heads"] = 32;  // used by linear-attention layers only
  const HfImportPlan p = plan_hf_import(j.dump(), "m/config.json");
  EXPECT_EQ(p.architecture, "Qwen3NextForCausalLM");
  EXPECT_TRUE(p.config.model.qk_norm);
  EXPECT_EQ(p.config.model.attention.gate.position, "G1");
  EXPECT_EQ(p.config.model.attention.gate.granularity, "elementwise");
  EXPECT_EQ(p.config.model.attention.gate.activation, "sigmoid");
  json bad = j;
  bad.erase("partial_rotary_factor");  // Qwen3-Next's default is 0.25
  EXPECT_NE(error_of(bad).find("partial_rotary_factor"), std::string::npos) << error_of(bad);
  bad = j;
  bad["layer_types"][2] = "linear_attention";
  EXPECT_NE(error_of(bad).find("layer_types"), std::string::npos);
  bad = j;
  bad["mlp_only_layers"] = {0};
  EXPECT_NE(error_of(bad).find("mlp_only_layers"), std::string::npos);
}

TEST(HfImport, SluiceRemoteCodeConfigsCarryTheModelSection) {
  const json j = {{"model_type", "sluice"},
                  {"max_position_embeddings", 64},
                  {"hidden_size", 32},
                  {"sluice", {{"d_model", 32}, {"n_heads", 4}, {"n_kv_heads", 2}, {"head_dim", 8}, {"vocab_size", 320},
                              {"attention", {{"gate", {{"position", "G1"}, {"granularity", "headwise"}}}}}}}};
  const HfImportPlan p = plan_hf_import(j.dump(), "m/config.json");
  EXPECT_EQ(p.architecture, "SluiceForCausalLM");
  EXPECT_EQ(p.config.model.attention.gate.position, "G1");
  EXPECT_EQ(p.config.model.attention.gate.granularity, "headwise");
  EXPECT_EQ(p.config.model.head_dim, 0);
  EXPECT_EQ(p.config.data.seq_len, 64);
  json bad = j;
  bad["sluice"]["attention"]["gate"]["position"] = "G9";
  EXPECT_NE(error_of(bad).find("model.attention.gate.position"), std::string::npos) << error_of(bad);
}

}  // namespace
}  // namespace sluice
