#include "data/batch.h"

#include <ATen/ATen.h>

namespace sluice {

Batch to_device(const Batch& b, const c10::Device& device) {
  auto move = [&](const at::Tensor& t) { return t.defined() ? t.to(device, /*non_blocking=*/true) : t; };
  return {move(b.inputs), move(b.targets), move(b.segments)};
}

}  // namespace sluice
