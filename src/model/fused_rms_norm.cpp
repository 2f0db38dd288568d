#include "model/fused_rms_norm.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/custom_function.h>

#include "model/elementwise_launcher.h"

namespace sluice {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A Function's backward runs the launcher its forward ran (kept as an integer in saved_data).
void save_launcher(AutogradContext* ctx, const ElementwiseLauncher* l) {
  ctx->saved_data["launcher"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(l));
}
const ElementwiseLauncher& saved_launcher(AutogradContext* ctx) {
  return *reinterpret_cast<const ElementwiseLauncher*>(static_cast<intptr_t>(ctx->saved_data["launcher"].toInt()));
}

// y (and residual_out) like x, rstd fp32 per row.
struct Forward {
  at::Tensor y, residual_out, rstd;
};
Forward launch_forward(const ElementwiseLauncher& l, const at::Tensor& x, const at::Tensor& residual,
                       const at::Tensor& weight, double eps) {
  Forward f;
  f.y = at::empty_like(x);
  if (residual.defined()) f.residual_out = at::empty_like(x);
  f.rstd = at::empty({x.numel() / x.size(-1)}, x.options().dtype(at::kFloat));
  l.rms_norm_forward(x, residual, weight, eps, f.y, f.residual_out, f.rstd);
  return f;
}

// saved: s, weight, rstd. {ds, dw}.
std::pair<at::Tensor, at::Tensor> launch_backward(AutogradContext* ctx, const at::Tensor& dy,
                                                  const at::Tensor& d_residual_out) {
  const auto saved = ctx->get_saved_variables();
  const at::Tensor& s = saved[0];
  at::Tensor ds = at::empty_like(s), dw = at::empty_like(saved[1]);
  saved_launcher(ctx).rms_norm_backward(dy.to(s.scalar_type()).contiguous(), s, saved[1], saved[2],
                                        d_residual_out.defined() ? d_residual_out.to(s.scalar_type()).contiguous()
                                                                 : at::Tensor(),
                                        ds, dw);
  return {ds, dw};
}

struct RMSNormFunction : public torch::autograd::Function<RMSNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, double eps) {
    const ElementwiseLauncher* l = elementwise_launcher();
    const at::Tensor xc = x.contiguous(), w = weight.contiguous();
    Forward f = launch_forward(*l, xc, at::Tensor(), w, eps);
    ctx->save_for_backward({xc, w, f.rstd});
    save_launcher(ctx, l);
    return f.y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto [ds, dw] = launch_backward(ctx, grads[0], at::Tensor());
    return {ds, dw, at::Tensor()};
  }
};

// Outputs {y, h}: h's gradient (d_residual_out) is added to ds in the same kernel.
struct AddRMSNormFunction : public torch::autograd::Function<AddRMSNormFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& residual, const at::Tensor& x,
                               const at::Tensor& weight, double eps) {
    const ElementwiseLauncher* l = elementwise_launcher();
    const at::Tensor w = weight.contiguous();
    Forward f = launch_forward(*l, x.contiguous(), residual.contiguous(), w, eps);
    ctx->save_for_backward({f.residual_out, w, f.rstd});
    save_launcher(ctx, l);
    return {f.y, f.residual_out};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto [ds, dw] = launch_backward(ctx, grads[0], grads[1]);
    return {ds, ds, dw, at::Tensor()};  // h = residual + x: the same gradient for both
  }
};

}  // namespace

std::string fused_rms_norm_unsupported(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& residual) {
  std::string why = elementwise_unsupported(x);
  if (!why.empty()) return why;
  if (x.dim() < 1 || x.size(-1) > (int64_t{1} << 30)) return fmt::format("last dim {}", x.dim() ? x.size(-1) : 0);
  if (!weight.defined() || weight.dim() != 1 || weight.size(0) != x.size(-1) || weight.device() != x.device())
    return "a weight that is not one per channel of the last dim";
  if (weight.scalar_type() != x.scalar_type() && weight.scalar_type() != at::kFloat)
    return fmt::format("weight dtype {} beside {} (the kernels take x's dtype or fp32)",
                       c10::toString(weight.scalar_type()), c10::toString(x.scalar_type()));
  if (residual.defined() && (residual.scalar_type() != x.scalar_type() || residual.sizes() != x.sizes() ||
                             residual.device() != x.device()))
    return "a residual of another dtype, shape or device";
  return "";
}

at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return RMSNormFunction::apply(x, weight, eps);
}

std::pair<at::Tensor, at::Tensor> fused_add_rms_norm(const at::Tensor& residual, const at::Tensor& x,
                                                     const at::Tensor& weight, double eps) {
  const variable_list out = AddRMSNormFunction::apply(residual, x, weight, eps);
  return {out[1], out[0]};
}

}  // namespace sluice
