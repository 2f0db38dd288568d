#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace sluice {

// Global L2 norm of the gradients (fp32 scalar tensor on their device). When max_norm > 0,
// scales the gradients by min(1, max_norm / (norm + 1e-6)). No host synchronisation.
at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace sluice
