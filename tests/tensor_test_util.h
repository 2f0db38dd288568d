// Tensor helpers shared by the LibTorch tests (test_util.h stays free of torch headers).
#pragma once
#include <ATen/ATen.h>

namespace sluice::testing {

// max |a - b| elementwise, computed in fp64.
inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace sluice::testing
