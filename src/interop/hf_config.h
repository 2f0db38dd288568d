// Sluice model configs as Hugging Face transformers `config.json` files (docs/interop.md).
// Torch-free: the mapping is a function of the config alone; the weights need no transform for
// the classes here, because Sluice's tensor names and layouts are theirs.
//
//   baseline, no QK-norm       -> LlamaForCausalLM   (model_type llama)
//   baseline with QK-norm      -> Qwen3ForCausalLM   (model_type qwen3, head_dim explicit)
//   G1 gate with QK-norm       -> Qwen3NextForCausalLM (every layer full attention, dense MLPs)
//   MoE                        -> Qwen3MoeForCausalLM / Qwen2MoeForCausalLM
//   every other dense variant  -> SluiceForCausalLM, the remote-code model written beside the
//                                 weights (modeling_sluice.py, configuration_sluice.py; loaded
//                                 with trust_remote_code=True); config.json carries the
//                                 checkpoint's whole `model:` section under "sluice"
//
// What none of them computes is refused with its config key.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sluice/config.h"
#include "sluice/tokenizer.h"

namespace sluice {

struct HfModelConfig {
  std::string architecture;  // "LlamaForCausalLM"
  bool remote_code = false;  // SluiceForCausalLM: write remote_code_files() beside config.json
  nlohmann::json config;     // config.json
  nlohmann::json generation_config;
};

// `vocab_size`: rows of the embedding (the config's, resolved); `dtype`: "float32" or "bfloat16".
// Throws InputError naming the key (e.g. "model.attention.gate.position: G2 ...") when no stock
// transformers class computes what this config does.
HfModelConfig hf_config_for(const Config& cfg, int64_t vocab_size, const SpecialTokens& specials,
                            const std::string& dtype);

// The Python files of the remote-code model: {file name, contents} (embedded at build time
// from src/interop/remote_code/).
std::vector<std::pair<std::string, std::string>> remote_code_files();

// A section of `cfg` ("model") as nested JSON with the YAML keys and types.
nlohmann::json config_section_json(const Config& cfg, const std::string& section);

// G1 (elementwise or headwise sigmoid gate from the hidden state, head-specific, no bias) with
// QK-norm and nothing else: what Qwen3NextForCausalLM's full-attention layers compute.
bool is_qwen3_next_gate(const ModelConfig& m);

// transformers' `rope_parameters` for Sluice's model.rope (static `ntk` as an adjusted theta).
nlohmann::json hf_rope_parameters(const ModelConfig& m, int64_t train_len);

}  // namespace sluice
