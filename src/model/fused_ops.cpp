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

// CoCA's Q_eff (kQuery) or K_eff from x = q or t_raw; the backward needs x itself (the maps
// are not linear), the tables and the mode.
template <bool kQuery>
struct CocaFunction : public torch::autograd::Function<CocaFunction<kQuery>> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                            bool strict) {
    const at::Tensor xc = x.contiguous();
    at::Tensor out = at::empty_like(xc);
    if (kQuery)
      kernels::coca_query_forward(xc, cos, sin, out, strict);
    else
      kernels::coca_key_forward(xc, cos, sin, out, strict);
    ctx->save_for_backward({xc, cos, sin});
    ctx->saved_data["strict"] = strict;
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool strict = ctx->saved_data["strict"].toBool();
    const at::Tensor dy = grads[0].to(saved[0].scalar_type()).contiguous();
    at::Tensor dx = at::empty_like(saved[0]);
    if (kQuery)
      kernels::coca_query_backward(dy, saved[0], saved[1], saved[2], dx, strict);
    else
      kernels::coca_key_backward(dy, saved[0], saved[1], saved[2], dx, strict);
    return {dx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool fused_kernels_built() { return true; }

at::Tensor coca_key(const at::Tensor& t_raw, const RotaryTables& t, CocaMode mode) {
  if (!t_raw.is_cuda()) return coca_key_reference(t_raw, t, mode);
  return CocaFunction<false>::apply(t_raw, t.cos, t.sin, mode == CocaMode::Strict);
}

at::Tensor coca_query(const at::Tensor& q, const RotaryTables& t, CocaMode mode) {
  if (!q.is_cuda()) return coca_query_reference(q, t, mode);
  return CocaFunction<true>::apply(q, t.cos, t.sin, mode == CocaMode::Strict);
}

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
at::Tensor coca_key(const at::Tensor& t_raw, const RotaryTables& t, CocaMode mode) {
  return coca_key_reference(t_raw, t, mode);
}
at::Tensor coca_query(const at::Tensor& q, const RotaryTables& t, CocaMode mode) { return coca_query_reference(q, t, mode); }

#endif

}  // namespace sluice
