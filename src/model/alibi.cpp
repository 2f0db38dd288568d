#include "model/alibi.h"

#include <ATen/ATen.h>

#include <cmath>

namespace sluice {

namespace {

std::vector<double> power_of_two_slopes(int64_t n) {
  std::vector<double> s;
  for (int64_t h = 1; h <= n; ++h) s.push_back(std::pow(2.0, -8.0 * static_cast<double>(h) / static_cast<double>(n)));
  return s;
}

}  // namespace

std::vector<double> alibi_slopes(int64_t n_heads) {
  int64_t p = 1;
  while (p * 2 <= n_heads) p *= 2;
  std::vector<double> s = power_of_two_slopes(p);
  if (p == n_heads) return s;
  const std::vector<double> finer = alibi_slopes(2 * p);
  for (size_t i = 0; s.size() < static_cast<size_t>(n_heads); i += 2) s.push_back(finer[i]);
  return s;
}

at::Tensor alibi_slopes_tensor(int64_t n_heads, const at::Device& device) {
  const std::vector<double> s = alibi_slopes(n_heads);
  return at::tensor(s, at::kDouble).to(at::TensorOptions().dtype(at::kFloat).device(device));
}

}  // namespace sluice
