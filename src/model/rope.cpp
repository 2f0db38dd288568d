#include "model/rope.h"

#include <ATen/ATen.h>

namespace sluice {

Rotary::Rotary(int64_t head_dim, double base) : head_dim_(head_dim) {
  const at::Tensor j = at::arange(0, head_dim / 2, at::kDouble);
  inv_freq_ = at::pow(base, -2.0 * j / static_cast<double>(head_dim));
}

RotaryTables Rotary::tables(int64_t start, int64_t length, const at::Device& device) const {
  const at::Tensor pos = at::arange(start, start + length, at::kDouble);
  const at::Tensor angles = at::outer(pos, inv_freq_);  // fp64 so long positions stay exact
  return {angles.cos().to(at::TensorOptions().dtype(at::kFloat).device(device)),
          angles.sin().to(at::TensorOptions().dtype(at::kFloat).device(device))};
}

at::Tensor rope_reference(const at::Tensor& x, const RotaryTables& t) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor cos = t.cos.unsqueeze(1), sin = t.sin.unsqueeze(1);  // [T, 1, D/2] over heads
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor x1 = xf.narrow(-1, 0, half), x2 = xf.narrow(-1, half, half);
  return at::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1).to(x.scalar_type());
}

}  // namespace sluice
