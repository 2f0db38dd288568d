// Rotary position embedding, rotate-half layout (GPT-NeoX / Llama in HF): dimension j of the
// first half pairs with j + D/2, rotated by angle pos·θ_j, θ_j = base^(-2j/D), optionally
// rescaled for context extension (model.rope.scaling; formulas in docs/attention.md).
#pragma once
#include <ATen/core/Tensor.h>

#include "sluice/config.h"

namespace sluice {

struct RotaryTables {
  at::Tensor cos, sin;  // [T, D/2], fp32; YaRN's attention factor is folded into both
  bool defined() const { return cos.defined(); }
};

class Rotary {
 public:
  Rotary(int64_t head_dim, double base);  // unscaled
  Rotary(int64_t head_dim, const RopeConfig& cfg);
  // Tables for absolute positions start .. start+length-1. Dynamic NTK reads the total length
  // start+length of this call only: nothing carries over between calls.
  RotaryTables tables(int64_t start, int64_t length, const at::Device& device) const;
  // θ_j [D/2] (fp64, CPU) used for a context of `total_length` tokens.
  at::Tensor inv_freq(int64_t total_length) const;
  // Factor multiplying cos and sin (YaRN: 0.1·ln(s) + 1; else 1). q·k scales by its square.
  double attention_factor() const { return attention_factor_; }

 private:
  int64_t head_dim_;
  RopeConfig cfg_;
  at::Tensor inv_freq_;  // [D/2], fp64 on CPU for exact tables; every scaling but dynamic_ntk
  double attention_factor_ = 1.0;
};

// The ATen reference: x [B, T, H, D] (positions on dim 1) rotated by the tables, computed in
// fp32 and returned in x's dtype. apply_rope (fused_ops.h) runs the CUDA kernel when it can.
at::Tensor rope_reference(const at::Tensor& x, const RotaryTables& t);

}  // namespace sluice
