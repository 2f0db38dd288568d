#include "model/rms_norm.h"

#include <ATen/ATen.h>

#include "model/elementwise_launcher.h"
#include "model/fused_rms_norm.h"

namespace sluice {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, bool fused) : dim_(dim), eps_(eps), fused_(fused) {
  weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) const {
  if (fused_) {
    const std::string why = fused_rms_norm_unsupported(x, weight);
    if (why.empty()) return fused_rms_norm(x, weight, eps_);
    warn_elementwise_fallback_once("RMSNorm", why);
  }
  return at::rms_norm(x, {dim_}, weight, eps_);
}

std::pair<at::Tensor, at::Tensor> RMSNormImpl::forward_with_residual(const at::Tensor& residual,
                                                                     const at::Tensor& x) const {
  if (fused_) {
    // The kernel adds operands of one dtype: promoted first, as ATen's add does (under autocast
    // the residual stream is fp32 and a block's output bf16).
    const at::ScalarType t = at::result_type(residual, x);
    const at::Tensor r = residual.to(t), a = x.to(t);
    const std::string why = fused_rms_norm_unsupported(a, weight, r);
    if (why.empty()) return fused_add_rms_norm(r, a, weight, eps_);
    warn_elementwise_fallback_once("RMSNorm with the residual add", why);
  }
  const at::Tensor h = residual + x;
  return {h, forward(h)};
}

}  // namespace sluice
