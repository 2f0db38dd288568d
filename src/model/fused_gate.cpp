#include "model/fused_gate.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "model/elementwise_launcher.h"

namespace sluice {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct GateMulFunction : public torch::autograd::Function<GateMulFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& y, const at::Tensor& z, int64_t width) {
    const ElementwiseLauncher* l = elementwise_launcher();
    const at::Tensor yc = y.contiguous(), zc = z.contiguous();
    at::Tensor out = at::empty_like(yc);
    l->gate_mul_forward(yc, zc, width, out);
    ctx->save_for_backward({yc, zc});
    ctx->saved_data["width"] = width;
    // The backward runs the launcher of the forward.
    ctx->saved_data["launcher"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(l));
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto* l = reinterpret_cast<const ElementwiseLauncher*>(
        static_cast<intptr_t>(ctx->saved_data["launcher"].toInt()));
    at::Tensor dy = at::empty_like(saved[0]), dz = at::empty_like(saved[1]);
    l->gate_mul_backward(grads[0].to(saved[0].scalar_type()).contiguous(), saved[0], saved[1],
                         ctx->saved_data["width"].toInt(), dy, dz);
    return {dy, dz, at::Tensor()};
  }
};

}  // namespace

std::string fused_gate_unsupported(const at::Tensor& y) { return elementwise_unsupported(y); }

at::Tensor fused_gate_mul(const at::Tensor& y, const at::Tensor& z, int64_t width) {
  return GateMulFunction::apply(y, z.to(y.scalar_type()), width);
}

}  // namespace sluice
