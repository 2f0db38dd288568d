#include "model/rope.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace sluice {

namespace {

constexpr double kPi = 3.14159265358979323846;

at::Tensor base_inv_freq(int64_t head_dim, double base) {
  const at::Tensor j = at::arange(0, head_dim / 2, at::kDouble);
  return at::pow(base, -2.0 * j / static_cast<double>(head_dim));
}

// NTK-aware exponent d/(d-2): scales the base so the lowest frequency stretches by s while the
// highest stays (bloc97's derivation, as in HF transformers).
double ntk_exponent(int64_t d) { return static_cast<double>(d) / static_cast<double>(d - 2); }

// YaRN (Peng et al. 2023), as in HF transformers' _compute_yarn_parameters: dimensions whose
// wavelength fits more than β_fast times into L0 keep their frequency, those fitting fewer than
// β_slow times are interpolated by s, with a linear ramp between.
at::Tensor yarn_inv_freq(int64_t d, double base, double s, int64_t original_max_len) {
  const double beta_fast = 32.0, beta_slow = 1.0;
  auto correction_dim = [&](double rotations) {
    return static_cast<double>(d) * std::log(static_cast<double>(original_max_len) / (rotations * 2.0 * kPi)) /
           (2.0 * std::log(base));
  };
  const double low = std::max(std::floor(correction_dim(beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(beta_slow)), static_cast<double>(d - 1));
  if (low == high) high += 0.001;  // as the reference: avoids a zero-width ramp
  const at::Tensor j = at::arange(0, d / 2, at::kDouble);
  const at::Tensor ramp = ((j - low) / (high - low)).clamp(0.0, 1.0);  // 0: keep, 1: interpolate
  const at::Tensor extrapolated = base_inv_freq(d, base);
  return extrapolated / s * ramp + extrapolated * (1.0 - ramp);
}

}  // namespace

Rotary::Rotary(int64_t head_dim, double base) : Rotary(head_dim, [base] {
  RopeConfig c;
  c.base = base;
  return c;
}()) {}

Rotary::Rotary(int64_t head_dim, const RopeConfig& cfg) : head_dim_(head_dim), cfg_(cfg) {
  const double s = cfg.factor;
  if (cfg.scaling == "none" || cfg.scaling == "dynamic_ntk") {
    inv_freq_ = base_inv_freq(head_dim, cfg.base);
  } else if (cfg.scaling == "linear") {
    inv_freq_ = base_inv_freq(head_dim, cfg.base) / s;  // θ_j·(pos/s) = (θ_j/s)·pos
  } else if (cfg.scaling == "ntk") {
    inv_freq_ = base_inv_freq(head_dim, cfg.base * std::pow(s, ntk_exponent(head_dim)));
  } else if (cfg.scaling == "yarn") {
    inv_freq_ = yarn_inv_freq(head_dim, cfg.base, s, cfg.original_max_len);
    attention_factor_ = s > 1.0 ? 0.1 * std::log(s) + 1.0 : 1.0;
  } else {
    throw std::invalid_argument("unknown rope scaling '" + cfg.scaling + "'");
  }
}

at::Tensor Rotary::inv_freq(int64_t total_length) const {
  if (cfg_.scaling == "dynamic_ntk" && total_length > cfg_.original_max_len) {
    const double s = cfg_.factor;
    const double ratio = s * static_cast<double>(total_length) / static_cast<double>(cfg_.original_max_len) - (s - 1.0);
    return base_inv_freq(head_dim_, cfg_.base * std::pow(ratio, ntk_exponent(head_dim_)));
  }
  return inv_freq_;
}

RotaryTables Rotary::tables(int64_t start, int64_t length, const at::Device& device) const {
  const at::Tensor pos = at::arange(start, start + length, at::kDouble);
  const at::Tensor angles = at::outer(pos, inv_freq(start + length));  // fp64 so long positions stay exact
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  if (attention_factor_ == 1.0) return {angles.cos().to(opts), angles.sin().to(opts)};
  return {(angles.cos() * attention_factor_).to(opts), (angles.sin() * attention_factor_).to(opts)};
}

at::Tensor rope_reference(const at::Tensor& x, const RotaryTables& t) {
  const int64_t half = x.size(-1) / 2;
  const at::Tensor cos = t.cos.unsqueeze(1), sin = t.sin.unsqueeze(1);  // [T, 1, D/2] over heads
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor x1 = xf.narrow(-1, 0, half), x2 = xf.narrow(-1, half, half);
  return at::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1).to(x.scalar_type());
}

}  // namespace sluice
