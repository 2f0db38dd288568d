// A trained model ready for evaluation tools: the checkpoint's config with command-line
// overrides (e.g. --set model.rope.scaling=dynamic_ntk), its tokenizer, and its weights on
// the configured device, in eval mode.
#pragma once
#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

#include "sluice/config.h"
#include "sluice/model.h"
#include "sluice/tokenizer.h"
#include <nlohmann/json.hpp>

namespace sluice {

struct EvalModel {
  std::string checkpoint;  // the checkpoint directory used
  Config config;           // checkpoint config + overrides
  std::vector<std::string> overrides;
  int64_t step = 0;
  std::unique_ptr<Tokenizer> tokenizer;
  CausalLM model{nullptr};
  c10::Device device{c10::kCPU};
  bool bf16 = false;
};

// `ckpt` is a checkpoint directory or a run directory (its latest checkpoint). Overrides are
// meant for evaluation settings (RoPE scaling, attention backend, window, device, precision,
// tokenizer path); an override that changes a parameter shape fails when the weights load,
// naming the tensor.
// Throws InputError naming the argument on bad input.
EvalModel load_eval_model(const std::string& ckpt, const std::vector<std::string>& overrides);

// Settings block every result JSON carries, so a result file says how it was produced.
nlohmann::json eval_settings_json(const EvalModel& m);

}  // namespace sluice
