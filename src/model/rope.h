// Rotary position embedding, rotate-half layout (GPT-NeoX / Llama in HF): dimension j of the
// first half pairs with j + D/2, rotated by angle pos·θ_j, θ_j = base^(-2j/D).
#pragma once
#include <ATen/core/Tensor.h>

namespace sluice {

struct RotaryTables {
  at::Tensor cos, sin;  // [T, D/2], fp32
  bool defined() const { return cos.defined(); }
};

class Rotary {
 public:
  Rotary(int64_t head_dim, double base);
  // Tables for absolute positions start .. start+length-1.
  RotaryTables tables(int64_t start, int64_t length, const at::Device& device) const;
  const at::Tensor& inv_freq() const { return inv_freq_; }

 private:
  int64_t head_dim_;
  at::Tensor inv_freq_;  // [D/2], fp64 on CPU for exact tables
};

// The ATen reference: x [B, T, H, D] (positions on dim 1) rotated by the tables, computed in
// fp32 and returned in x's dtype. apply_rope (fused_ops.h) runs the CUDA kernel when it can.
at::Tensor rope_reference(const at::Tensor& x, const RotaryTables& t);

}  // namespace sluice
