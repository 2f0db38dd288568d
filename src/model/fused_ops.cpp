#include "model/fused_ops.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#ifdef SLUICE_HAVE_CUDA_KERNELS
#include "elementwise.h"
#endif

namespace sluice {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up) { return at::silu(gate) * up; }

#ifdef SLUICE_HAVE_CUDA_KERNELS
namespace {

struct RopeFunction : public torch::autograd::Function<RopeFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    const at::Tensor xc = x.contiguous();
    at::Tensor out = at::empty_like(xc);
    kernels::rope(xc, cos, sin, out, /*inverse=*/false);
    ctx->save_for_backward({cos, sin});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor dy = grads[0].contiguous();
    at::Tensor dx = at::empty_like(dy);
    kernels::rope(dy, saved[0], saved[1], dx, /*inverse=*/true);  // rotation is orthogonal
    return {dx, at::Tensor(), at::Tensor()};
  }
};

struct SwiGLUFunction : public torch::autograd::Function<SwiGLUFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    const at::Tensor g = gate.contiguous(), u = up.contiguous();
    at::Tensor out = at::empty_like(g);
    kernels::swiglu_forward(g, u, out);
    ctx->save_for_backward({g, u});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor dy = grads[0].contiguous();
    at::Tensor dg = at::empty_like(saved[0]), du = at::empty_like(saved[1]);
    kernels::swiglu_backward(dy, saved[0], saved[1], dg, du);
    return {dg, du};
  }
};

}  // namespace

bool fused_kernels_built() { return true; }

at::Tensor apply_rope(const at::Tensor& x, const RotaryTables& t) {
  if (!x.is_cuda()) return rope_reference(x, t);
  return RopeFunction::apply(x, t.cos, t.sin);
}

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
  if (!gate.is_cuda() || gate.scalar_type() != up.scalar_type()) return swiglu_reference(gate, up);
  return SwiGLUFunction::apply(gate, up);
}

#else

bool fused_kernels_built() { return false; }
at::Tensor apply_rope(const at::Tensor& x, const RotaryTables& t) { return rope_reference(x, t); }
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) { return swiglu_reference(gate, up); }

#endif

}  // namespace sluice
