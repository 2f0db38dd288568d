// Gated attention (Qiu et al. 2025, "Gated Attention for Large Language Models", arXiv
// 2505.06708): Y' = Y ⊙ act(X·W_g [+ b]) (multiplicative) or Y + act(X·W_g [+ b]) (additive),
// X the block's normalised input. SelfAttention calls apply() once at each insertion point; the
// gate acts only at its own position and returns its input untouched everywhere else.
#pragma once
#include <torch/nn/module.h>

#include <memory>

#include "sluice/config.h"
#include "sluice/forward_observer.h"

namespace sluice {

// Insertion points in SelfAttention (paper Fig. 1). G2/G3/G4 act on the projections before
// QK-norm and RoPE, per KV head for G2/G3 and per query head for G4.
enum class GateSite { None, G1, G2, G3, G4, G5 };

// What the gate scores are computed from, for one forward pass.
struct GateInput {
  at::Tensor x;       // [B, T, d_model]: the block's normalised input
  at::Tensor logits;  // X·W_g [+ b] when already computed (fused with q_proj); else undefined
};

// Registered by SelfAttention as `g_proj` when it has parameters: `weight` [n_out, d_model]
// (input hidden) and `bias` [n_out] (bias: true, or the logits of input: constant).
class GateImpl : public torch::nn::Module {
 public:
  GateImpl(const ModelConfig& cfg, int64_t layer);

  // `y` gated when `site` is this gate's position, else `y` itself. Layouts: [B, T, heads, D]
  // at G1-G4 (heads: n_heads at G1/G4, n_kv_heads at G2/G3), [B, T, d_model] at G5. With
  // model.elementwise_kernels: fused, a fusable G1 gate (fusable_output_gate) runs the fused
  // kernel when there is no observer (it reads the scores) and the kernels take y.
  at::Tensor apply(GateSite site, const at::Tensor& y, const GateInput& in, ForwardObserver* observer) const;

  // act(logits) shaped for broadcasting against the gated tensor (see ForwardObserver).
  at::Tensor scores(const at::Tensor& logits) const;
  // X·W_g [+ b], [B, T, n_out] (input hidden), or the constant logits [n_out].
  at::Tensor logits(const at::Tensor& x) const;

  // True when this gate is Y ⊙ σ(logits) at G1 with one logit per gated element (elementwise)
  // or per head (headwise): what an attention core may apply inside its kernels
  // (AttentionCore::forward_gated). Not for head_shared (a mean of scores is no σ of one
  // logit), other activations, additive forms or input: self.
  bool fusable_output_gate() const;
  // For such a gate: the logits in the core's output layout, [B, H, T, D] (elementwise) or
  // [B, H, T, 1] (headwise), views of the projection's [B, T, ...] output; [1, H, 1, W] for
  // input: constant.
  at::Tensor output_gate_logits(const GateInput& in) const;

  GateSite site() const { return site_; }
  bool has_parameters() const { return weight.defined() || bias.defined(); }
  int64_t n_out() const { return n_out_; }  // gate projection outputs (0 without projection)

  at::Tensor weight, bias;  // undefined when not used

 private:
  at::Tensor activate(const at::Tensor& z) const;
  // model.elementwise_kernels: fused at a fusable G1 gate: y ⊙ σ(logits) in one kernel
  // (model/fused_gate.h); undefined when the kernels do not take y (the caller goes on in ATen).
  at::Tensor apply_fused(const at::Tensor& y, const GateInput& in) const;

  GateSite site_ = GateSite::None;
  GateConfig cfg_;
  int64_t layer_ = 0, groups_ = 1, head_dim_ = 1, n_out_ = 0;
  bool fused_ = false;  // model.elementwise_kernels: fused
};
TORCH_MODULE(Gate);

GateSite parse_gate_site(const std::string& position);
// Outputs of the gate projection for this config (0 for position none or input self): the
// parameter count is n_out·d_model (input hidden) [+ n_out with a bias or input constant].
int64_t gate_projection_outputs(const ModelConfig& cfg);

}  // namespace sluice
