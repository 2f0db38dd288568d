#include "model/chunked_loss.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

namespace sluice {

namespace {

at::ScalarType gemm_dtype(const at::Tensor& h) {
  const c10::DeviceType t = h.device().type();
  return at::autocast::is_autocast_enabled(t) ? at::autocast::get_autocast_dtype(t) : h.scalar_type();
}

// The loss sum over all chunks and, when `grads`, d(mean loss)/dh and /dW.
struct ChunkedResult {
  at::Tensor loss;             // fp32 scalar: the mean
  at::Tensor grad_h, grad_w;   // h's and weight's dtypes
};

ChunkedResult run_chunks(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& targets, int64_t chunk,
                         bool grads) {
  at::NoGradGuard no_grad;
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // explicit casts below
  const at::ScalarType dt = gemm_dtype(h);
  const int64_t M = h.size(0);
  const at::Tensor w = weight.to(dt);
  const double inv = 1.0 / static_cast<double>(M);
  at::Tensor total = at::zeros({}, h.options().dtype(at::kFloat));
  ChunkedResult r;
  at::Tensor grad_w32;
  if (grads) {
    r.grad_h = at::empty(h.sizes(), h.options());  // contiguous: its row blocks take mm_out
    grad_w32 = at::zeros(weight.sizes(), weight.options().dtype(at::kFloat));
  }
  for (int64_t start = 0; start < M; start += chunk) {
    const int64_t n = std::min(chunk, M - start);
    const at::Tensor hc = h.narrow(0, start, n).to(dt);
    const at::Tensor t = targets.narrow(0, start, n).unsqueeze(1);
    const at::Tensor z = at::linear(hc, w).to(at::kFloat);  // [n, V]
    const at::Tensor lse = at::logsumexp(z, 1, /*keepdim=*/true);
    total.add_((lse - z.gather(1, t)).sum());
    if (!grads) continue;
    at::Tensor dz = (z - lse).exp_();  // softmax, then minus the one-hot target, over M
    dz.scatter_add_(1, t, at::full({n, 1}, -1.0, dz.options()));
    dz.mul_(inv);
    const at::Tensor dzc = dz.to(dt);
    at::Tensor gh = r.grad_h.narrow(0, start, n);  // rows of a contiguous buffer: mm writes in place
    if (gh.scalar_type() == dt) {
      at::mm_out(gh, dzc, w);
    } else {
      gh.copy_(at::mm(dzc, w));
    }
    if (dt == at::kFloat) {
      grad_w32.addmm_(dzc.t(), hc);  // no [V, d] temporary per chunk
    } else {
      grad_w32.add_(at::mm(dzc.t(), hc));  // the product in dt, summed in fp32
    }
  }
  r.loss = total * inv;
  if (grads) r.grad_w = grad_w32.to(weight.scalar_type());
  return r;
}

class ChunkedLinearCrossEntropy : public torch::autograd::Function<ChunkedLinearCrossEntropy> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& h, const at::Tensor& weight,
                            const at::Tensor& targets, int64_t chunk) {
    ChunkedResult r = run_chunks(h, weight, targets, chunk, /*grads=*/true);
    ctx->save_for_backward({r.grad_h, r.grad_w});
    return r.loss;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& g = grad_out[0];
    return {saved[0] * g.to(saved[0].scalar_type()), saved[1] * g.to(saved[1].scalar_type()), at::Tensor(),
            at::Tensor()};
  }
};

}  // namespace

at::Tensor chunked_linear_cross_entropy(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& targets,
                                        int64_t chunk) {
  TORCH_CHECK(chunk > 0, "chunked_linear_cross_entropy: chunk must be positive, got ", chunk);
  TORCH_CHECK(h.dim() == 2 && weight.dim() == 2 && targets.dim() == 1 && targets.size(0) == h.size(0),
              "chunked_linear_cross_entropy: h [M, d], weight [V, d], targets [M]");
  const bool needs_grad = at::GradMode::is_enabled() && (h.requires_grad() || weight.requires_grad());
  if (!needs_grad) return run_chunks(h, weight, targets, chunk, /*grads=*/false).loss;
  return ChunkedLinearCrossEntropy::apply(h, weight, targets, chunk);
}

}  // namespace sluice
