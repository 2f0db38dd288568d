#include "model/coca.h"

#include <ATen/ATen.h>

#include "model/fused_ops.h"

namespace sluice {

namespace {

// RoPE of [a, 0] is [a·cos, a·sin]: the (cos, sin) direction of each pair scaled by a, in the
// rotate-half layout, through the same (fused when possible) RoPE as everything else.
at::Tensor rotate_magnitude(const at::Tensor& a, const RotaryTables& tables) {
  return apply_rope(at::cat({a, at::zeros_like(a)}, -1), tables);
}

}  // namespace

at::Tensor coca_magnitude(const at::Tensor& t_raw) {
  const int64_t half = t_raw.size(-1) / 2;
  return at::relu((t_raw.narrow(-1, 0, half) + t_raw.narrow(-1, half, half)) * 0.5);
}

at::Tensor coca_key_reference(const at::Tensor& t_raw, const RotaryTables& tables, CocaMode mode) {
  const at::Tensor t = coca_magnitude(t_raw);
  if (mode == CocaMode::Strict) return rotate_magnitude(t, tables);
  return apply_rope(at::cat({t, t}, -1), tables);
}

at::Tensor coca_query_reference(const at::Tensor& q, const RotaryTables& tables, CocaMode mode) {
  if (mode == CocaMode::Strict) {
    const int64_t half = q.size(-1) / 2;
    const at::Tensor q1 = q.narrow(-1, 0, half), q2 = q.narrow(-1, half, half);
    return rotate_magnitude(q1 * q1 + q2 * q2, tables);
  }
  return q * apply_rope(q, tables);
}

}  // namespace sluice
