// The Hugging Face config.json reader of `sluice import hf` (src/interop/hf_import.*).
// Properties: only InputError escapes; an accepted config names one of the supported classes,
// is an MoE model exactly when that class is, and is a valid Sluice config (plan_hf_import
// validates it with the config loader, whose own errors are InputError too), which to_yaml
// prints and loads back unchanged.
#include <cstdint>
#include <set>
#include <string>

#include "fuzz_util.h"
#include "interop/hf_import.h"
#include "sluice/config.h"
#include "sluice/errors.h"

using namespace sluice;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(fuzz::as_text(data, size));
  HfImportPlan plan;
  try {
    plan = plan_hf_import(text, "config.json");
  } catch (const InputError&) {
    return 0;
  }
  static const std::set<std::string> supported = {"LlamaForCausalLM",    "Qwen3ForCausalLM",    "Qwen3NextForCausalLM",
                                                  "Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "SluiceForCausalLM"};
  fuzz::check(supported.count(plan.architecture) == 1, "unexpected architecture " + plan.architecture);
  if (plan.architecture != "SluiceForCausalLM")  // its model section may say anything valid
    fuzz::check((plan.config.model.arch == "moe") == (plan.architecture.find("Moe") != std::string::npos),
                plan.architecture + " imported as model.arch " + plan.config.model.arch);
  const std::string yaml = to_yaml(plan.config);
  const LoadedConfig again = load_config_text(yaml, "round trip", {}, /*check_paths=*/false);
  fuzz::check(to_yaml(again.config) == yaml, "an accepted config does not load back to itself");
  return 0;
}
