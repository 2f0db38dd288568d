// How queries and keys carry positions into the attention core, chosen once per model from
// model.position and model.attention.coca: RoPE rotates q and k, CoCA builds Q_eff and K_eff,
// ALiBi (a bias inside the core) and NoPE leave them alone.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <utility>

#include "model/rope.h"
#include "sluice/config.h"

namespace sluice {

class QKPositions {
 public:
  virtual ~QKPositions() = default;
  // q [B, T, H, D], k [B, T, KV, D] (projected, gated, normalised) -> what the core multiplies.
  virtual std::pair<at::Tensor, at::Tensor> apply(const at::Tensor& q, const at::Tensor& k,
                                                  const RotaryTables& tables) const = 0;
};

std::unique_ptr<QKPositions> make_qk_positions(const ModelConfig& cfg);

}  // namespace sluice
