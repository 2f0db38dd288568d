#include "train/parallel.h"

#include "train/adamw.h"

namespace sluice {

NamedTensors Parallel::whole_model_tensors(CausalLMImpl& model) {
  NamedTensors out;
  for (const auto& p : model.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

int64_t Parallel::parameter_count(const CausalLMImpl& model) const { return count_parameters(model); }

std::unique_ptr<Optimizer> Parallel::make_optimizer(CausalLMImpl&,
                                                    const std::vector<std::pair<std::string, at::Tensor>>& params,
                                                    const Config& cfg) {
  return std::make_unique<AdamW>(params, cfg.optim);
}

}  // namespace sluice
