#include "model/packed_linear.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

namespace sluice {

namespace {

int64_t total_rows(at::TensorList weights) {
  int64_t n = 0;
  for (const at::Tensor& w : weights) n += w.size(0);
  return n;
}

// The packed buffer as one [Σ out_i, in] matrix (no autograd: the Function below differentiates).
at::Tensor packed_matrix(at::TensorList weights) {
  const at::Tensor& w0 = weights[0];
  return w0.detach().as_strided({total_rows(weights), w0.size(1)}, {w0.size(1), 1}, w0.storage_offset());
}

at::ScalarType gemm_dtype(const at::Tensor& x) {
  const c10::DeviceType t = x.device().type();
  return at::autocast::is_autocast_enabled(t) ? at::autocast::get_autocast_dtype(t) : x.scalar_type();
}

class PackedLinearFunction : public torch::autograd::Function<PackedLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, at::TensorList weights) {
    // Explicit casts in place of autocast's, so backward knows the dtype the GEMMs ran in.
    const at::ScalarType dt = gemm_dtype(x);
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    const at::Tensor xc = x.to(dt);
    ctx->save_for_backward({xc});
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["weights"] = c10::List<at::Tensor>(weights.vec());  // parameters: no copy
    return at::linear(xc, packed_matrix(weights).to(dt));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const at::Tensor xc = ctx->get_saved_variables()[0];
    const std::vector<at::Tensor> weights = ctx->saved_data["weights"].toTensorVector();
    const auto x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    const at::Tensor w = packed_matrix(weights);
    const int64_t n = w.size(0), in = w.size(1);
    const at::Tensor g = grad_out[0].to(xc.scalar_type()).reshape({-1, n});
    const at::Tensor dx = g.mm(w.to(xc.scalar_type())).view(xc.sizes()).to(x_dtype);
    const at::Tensor dw = g.t().mm(xc.reshape({-1, in})).to(w.scalar_type());
    torch::autograd::variable_list out{dx};
    int64_t row = 0;
    for (const at::Tensor& wi : weights) {
      out.push_back(dw.narrow(0, row, wi.size(0)));
      row += wi.size(0);
    }
    return out;
  }
};

}  // namespace

void pack_weights(const std::vector<at::Tensor>& weights) {
  TORCH_CHECK(!weights.empty(), "pack_weights: no weights");
  if (weights_packed(weights)) return;
  at::NoGradGuard no_grad;
  const at::Tensor buffer = at::empty({total_rows(weights), weights[0].size(1)}, weights[0].options());
  int64_t row = 0;
  for (const at::Tensor& w : weights) {
    TORCH_CHECK(w.dim() == 2 && w.size(1) == buffer.size(1) && w.options().type_equal(buffer.options()) &&
                    w.device() == buffer.device(),
                "pack_weights: weights of one dtype and device, [out_i, ", buffer.size(1), "]; got ", w.sizes());
    buffer.narrow(0, row, w.size(0)).copy_(w);
    row += w.size(0);
  }
  row = 0;
  for (const at::Tensor& w : weights) {
    at::Tensor(w).set_data(buffer.narrow(0, row, w.size(0)));
    row += w.size(0);
  }
}

bool weights_packed(const std::vector<at::Tensor>& weights) {
  if (weights.empty()) return false;
  const at::Tensor& w0 = weights[0];
  int64_t offset = w0.storage_offset();
  for (const at::Tensor& w : weights) {
    if (!w.defined() || w.dim() != 2 || !w.is_contiguous() || w.size(1) != w0.size(1) ||
        w.scalar_type() != w0.scalar_type() || !w.storage().is_alias_of(w0.storage()) ||
        w.storage_offset() != offset) {
      return false;
    }
    offset += w.numel();
  }
  return true;
}

at::Tensor packed_linear(const at::Tensor& x, const std::vector<at::Tensor>& weights) {
  if (!weights_packed(weights)) return at::linear(x, at::cat(weights));
  bool needs_grad = x.requires_grad();
  for (const at::Tensor& w : weights) needs_grad = needs_grad || w.requires_grad();
  if (!at::GradMode::is_enabled() || !needs_grad) return at::linear(x, packed_matrix(weights));
  return PackedLinearFunction::apply(x, at::TensorList(weights));
}

}  // namespace sluice
