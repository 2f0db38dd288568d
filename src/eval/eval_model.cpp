#include "eval/eval_model.h"

#include <filesystem>

#include "sluice/errors.h"
#include "train/checkpoint.h"
#include "train/device.h"

namespace sluice {

namespace fs = std::filesystem;

EvalModel load_eval_model(const std::string& ckpt, const std::vector<std::string>& overrides) {
  EvalModel m;
  m.checkpoint = resolve_checkpoint(ckpt);
  const CheckpointInfo info = read_checkpoint_info(m.checkpoint);
  m.step = info.state.step;
  m.overrides = overrides;
  // Overrides are applied to the checkpoint's own config.yaml, validated like any config;
  // data files need not exist (evaluation reads its own inputs).
  m.config = load_config((fs::path(m.checkpoint) / "config.yaml").string(), overrides, /*check_paths=*/false).config;
  m.tokenizer = load_tokenizer(m.config.data.tokenizer,
                               "data.tokenizer (from the checkpoint; override with --set data.tokenizer=PATH)");
  m.device = resolve_device(m.config.train.device);
  m.bf16 = use_bf16(m.config.train.precision, m.device);
  m.model = CausalLM(m.config.model);
  load_checkpoint(m.checkpoint, *m.model, nullptr, /*restore_rng=*/false);
  m.model->to(m.device);
  m.model->eval();
  return m;
}

nlohmann::json eval_settings_json(const EvalModel& m) {
  return {{"checkpoint", fs::absolute(m.checkpoint).string()},
          {"step", m.step},
          {"overrides", m.overrides},
          {"device", device_name(m.device)},
          {"precision", m.bf16 ? "bf16" : "fp32"},
          {"tokenizer", m.config.data.tokenizer},
          {"attention_backend", m.config.model.attention.backend},
          {"position", m.config.model.position},
          {"rope_scaling", m.config.model.rope.scaling}};
}

}  // namespace sluice
