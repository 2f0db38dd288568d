#pragma once
#include <torch/nn/module.h>

#include <utility>

namespace sluice {

// y = x / sqrt(mean(x²) + eps) · weight, over the last dimension. `fused`
// (model.elementwise_kernels: fused): through the kernels of model/fused_rms_norm.h where they
// take the input, else (CPU tensors, fp64, ...) at::rms_norm, logging why once.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, bool fused = false);
  at::Tensor forward(const at::Tensor& x) const;
  // {h, forward(h)} with h = residual + x; fused: one kernel for both.
  std::pair<at::Tensor, at::Tensor> forward_with_residual(const at::Tensor& residual, const at::Tensor& x) const;
  at::Tensor weight;

 private:
  int64_t dim_;
  double eps_;
  bool fused_;
};
TORCH_MODULE(RMSNorm);

}  // namespace sluice
