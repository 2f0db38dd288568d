#include "model/rms_norm.h"

#include <ATen/ATen.h>

namespace sluice {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : dim_(dim), eps_(eps) {
  weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) const { return at::rms_norm(x, {dim_}, weight, eps_); }

}  // namespace sluice
