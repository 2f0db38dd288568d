// Hugging Face transformers `config.json` files as Sluice model configs: what
// `sluice import hf` reads (docs/interop.md). Torch-free (fuzzed: fuzz/fuzz_hf_config.cpp).
//
//   model_type llama  (LlamaForCausalLM)   -> the baseline
//   model_type qwen3  (Qwen3ForCausalLM)   -> the baseline with QK-norm
//   model_type sluice (SluiceForCausalLM)  -> the `model:` section it carries
//
// A field that changes what the model computes and that Sluice cannot compute (a bias, another
// activation, an unsupported RoPE type, sliding windows, ...) is refused by name; fields known
// to change nothing are ignored; any other field is refused too, so that nothing is imported
// wrong silently.
#pragma once
#include <cstdint>
#include <string>

#include "sluice/config.h"

namespace sluice {

struct HfImportPlan {
  std::string architecture;  // what config.json describes, e.g. "LlamaForCausalLM"
  Config config;             // the model section (and data.seq_len, data.tokenizer) to train or evaluate with
  bool byte_tokenizer = false;  // a Sluice export of a byte-tokenizer model ("sluice_tokenizer": "byte")
};

// `text`: the contents of config.json at `path` (named in every error). Throws InputError
// naming the file and the field.
HfImportPlan plan_hf_import(const std::string& text, const std::string& path);

}  // namespace sluice
