#include "model/router.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace sluice {

RouterImpl::RouterImpl(int64_t d_model, const MoEConfig& cfg) : cfg_(cfg) {
  weight = register_parameter("weight", at::empty({cfg.n_experts, d_model}));
  if (cfg.bias_update_rate > 0) {
    e_score_correction_bias = register_buffer("e_score_correction_bias", at::zeros({cfg.n_experts}));
  }
}

Routing RouterImpl::forward(const at::Tensor& x) const {
  // Routing decisions and their weights in fp32 even under bf16 autocast: a bf16 logit has
  // ~3 significant digits, enough to flip near-tied top-k choices between runs.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  Routing r;
  r.logits = at::linear(x.to(at::kFloat), weight.to(at::kFloat));
  const bool sigmoid = cfg_.scoring == "sigmoid";
  const at::Tensor scores = sigmoid ? at::sigmoid(r.logits) : at::softmax(r.logits, -1);
  r.probs = sigmoid ? scores / scores.sum(-1, true) : scores;
  const bool mixtral = cfg_.router == "topk_softmax";
  {
    at::NoGradGuard no_grad;
    at::Tensor select = (mixtral ? r.logits : scores).detach();
    if (e_score_correction_bias.defined()) select = select + e_score_correction_bias;  // selection only
    r.expert = std::get<1>(at::topk(select, cfg_.top_k, -1, /*largest=*/true, /*sorted=*/true));
  }
  if (mixtral) {
    r.weight = at::softmax(r.logits.gather(-1, r.expert), -1);
  } else {
    r.weight = scores.gather(-1, r.expert);
    // Sigmoid scores can all underflow to 0; the epsilon is DeepSeek-V3's.
    if (cfg_.norm_topk_prob) r.weight = r.weight / (sigmoid ? r.weight.sum(-1, true) + 1e-20 : r.weight.sum(-1, true));
  }
  return r;
}

void RouterImpl::update_bias(const at::Tensor& expert_load, const at::Tensor& skipped) {
  if (!e_score_correction_bias.defined()) return;
  at::NoGradGuard no_grad;
  const at::Tensor load = expert_load.to(at::kFloat);
  at::Tensor step = at::sign(load.mean() - load);
  if (skipped.defined()) step = step * (1 - skipped.to(at::kFloat));  // on the device: no sync
  e_score_correction_bias.add_(step, cfg_.bias_update_rate);
}

}  // namespace sluice
