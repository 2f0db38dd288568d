#include "train/parallel.h"

#include "train/adamw.h"

namespace sluice {

std::unique_ptr<Optimizer> Parallel::make_optimizer(CausalLMImpl&,
                                                    const std::vector<std::pair<std::string, at::Tensor>>& params,
                                                    const Config& cfg) {
  return std::make_unique<AdamW>(params, cfg.optim);
}

}  // namespace sluice
