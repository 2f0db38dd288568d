#include "model/gate.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

#include "model/elementwise_launcher.h"
#include "model/fused_gate.h"

namespace sluice {

GateSite parse_gate_site(const std::string& p) {
  if (p == "none") return GateSite::None;
  if (p == "G1") return GateSite::G1;
  if (p == "G2") return GateSite::G2;
  if (p == "G3") return GateSite::G3;
  if (p == "G4") return GateSite::G4;
  if (p == "G5") return GateSite::G5;
  throw std::invalid_argument("unknown gate position '" + p + "'");
}

namespace {

// Heads of the tensor gated at `site`: query heads after SDPA and q_proj, KV heads after k/v_proj.
int64_t heads_at(GateSite site, const ModelConfig& cfg) {
  return site == GateSite::G2 || site == GateSite::G3 ? cfg.n_kv_heads : cfg.n_heads;
}

}  // namespace

int64_t gate_projection_outputs(const ModelConfig& cfg) {
  const GateConfig& g = cfg.attention.gate;
  const GateSite site = parse_gate_site(g.position);
  if (site == GateSite::None || g.input == "self") return 0;
  if (site == GateSite::G5) return cfg.d_model;
  // head_shared keeps the head-specific projection and averages its scores over the heads
  // (paper Table 1 rows 12-13: same added parameters as elementwise).
  const int64_t heads = heads_at(site, cfg);
  return g.granularity == "headwise" ? heads : heads * cfg.resolved_head_dim();
}

GateImpl::GateImpl(const ModelConfig& cfg, int64_t layer)
    : site_(parse_gate_site(cfg.attention.gate.position)),
      cfg_(cfg.attention.gate),
      layer_(layer),
      fused_(cfg.elementwise_kernels == "fused") {
  if (site_ == GateSite::None) return;
  groups_ = heads_at(site_, cfg);
  head_dim_ = cfg.resolved_head_dim();
  n_out_ = gate_projection_outputs(cfg);
  if (cfg_.input == "hidden") {
    // nn::Linear's default until CausalLM::reset_parameters (a standalone layer stays usable)
    const double bound = 1.0 / std::sqrt(static_cast<double>(cfg.d_model));
    weight = register_parameter("weight", at::empty({n_out_, cfg.d_model}).uniform_(-bound, bound));
    if (cfg_.bias) bias = register_parameter("bias", at::zeros({n_out_}));
  } else if (cfg_.input == "constant") {
    bias = register_parameter("bias", at::zeros({n_out_}));  // zero init: scores start at act(0)
  } else if (cfg_.input != "self") {
    throw std::invalid_argument("unknown gate input '" + cfg_.input + "'");
  }
}

at::Tensor GateImpl::activate(const at::Tensor& z) const {
  const std::string& a = cfg_.activation;
  if (a == "sigmoid") return at::sigmoid(z);
  if (a == "silu") return at::silu(z);
  if (a == "ns_sigmoid") return 0.5 + 0.5 * at::sigmoid(z);  // scores in [0.5, 1]: the paper's non-sparse control
  if (a == "identity") return z;
  throw std::invalid_argument("unknown gate activation '" + a + "'");
}

at::Tensor GateImpl::logits(const at::Tensor& x) const {
  if (!weight.defined()) return bias;  // input constant: the same logits for every token
  return at::linear(x, weight, bias.defined() ? bias : at::Tensor());
}

at::Tensor GateImpl::scores(const at::Tensor& logits) const {
  const at::Tensor s = activate(logits);
  if (site_ == GateSite::G5) return s;
  std::vector<int64_t> shape(logits.sizes().begin(), logits.sizes().end() - 1);
  shape.push_back(groups_);
  shape.push_back(cfg_.granularity == "headwise" ? 1 : head_dim_);
  const at::Tensor per_head = s.reshape(shape);
  if (cfg_.sharing == "head_shared") return per_head.mean(-2, /*keepdim=*/true);  // averaged scores, not logits
  return per_head;
}

bool GateImpl::fusable_output_gate() const {
  return site_ == GateSite::G1 && cfg_.form == "multiplicative" && cfg_.activation == "sigmoid" &&
         cfg_.sharing == "head_specific" && cfg_.input != "self";
}

at::Tensor GateImpl::output_gate_logits(const GateInput& in) const {
  const at::Tensor l = in.logits.defined() ? in.logits : logits(in.x);
  const int64_t width = cfg_.granularity == "headwise" ? 1 : head_dim_;
  if (l.dim() == 1) return l.view({1, groups_, 1, width});  // input constant: the same for every token
  return l.reshape({l.size(0), l.size(1), groups_, width}).transpose(1, 2);
}

at::Tensor GateImpl::apply_fused(const at::Tensor& y, const GateInput& in) const {
  const std::string why = fused_gate_unsupported(y);
  if (!why.empty()) {
    warn_elementwise_fallback_once("G1 gate", why);
    return {};
  }
  // One logit per element of y [B, T, H, D] (elementwise) or per head (headwise: width D), in
  // the projection's [B, T, H·W] order; input constant: the same [H·W] logits for every token.
  at::Tensor z = in.logits.defined() ? in.logits : logits(in.x);
  if (z.dim() == 1) z = z.expand({y.size(0), y.size(1), z.size(0)});
  return fused_gate_mul(y, z, cfg_.granularity == "headwise" ? head_dim_ : 1);
}

at::Tensor GateImpl::apply(GateSite site, const at::Tensor& y, const GateInput& in, ForwardObserver* observer) const {
  if (site != site_) return y;
  if (fused_ && site == GateSite::G1 && !observer && fusable_output_gate()) {
    at::Tensor out = apply_fused(y, in);
    if (out.defined()) return out;
  }
  at::Tensor s;
  if (cfg_.input == "self") {
    s = activate(y);
  } else {
    s = scores(in.logits.defined() ? in.logits : logits(in.x));
  }
  s = s.to(y.scalar_type());  // constant logits stay fp32 under autocast; keep y's dtype
  if (observer) observer->on_gate_scores(layer_, s);
  return cfg_.form == "additive" ? y + s : y * s;
}

}  // namespace sluice
