// Causal self-attention: projections, optional gate, QK-norm, positions, and an AttentionCore.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <memory>

#include "model/gate.h"
#include "model/kv_cache.h"
#include "model/qk_positions.h"
#include "model/rms_norm.h"
#include "model/rope.h"
#include "sluice/attention.h"
#include "sluice/config.h"
#include "sluice/forward_observer.h"

namespace sluice {

// Per-forward state shared by all layers (computed once per forward, not per layer).
struct ForwardContext {
  RotaryTables rope;  // undefined when model.position != rope
  AttentionMask mask;  // alibi slopes, document segments; each layer applies its own window
  ForwardObserver* observer = nullptr;  // statistics hooks; null: no extra work
  KVCache* cache = nullptr;  // decoding: this forward's tokens follow the cached ones (rope tables start there)
};

class SelfAttentionImpl : public torch::nn::Module {
 public:
  // `layer` selects the layer's sliding window and names it to the observer.
  explicit SelfAttentionImpl(const ModelConfig& cfg, int64_t layer = 0);
  // x [B, T, d_model] -> [B, T, d_model]
  at::Tensor forward(const at::Tensor& x, const ForwardContext& ctx);

  // k_proj is CoCA's magnitude projection W_T when model.attention.coca.mode != off.
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};
  RMSNorm o_norm{nullptr};  // model.attention.output_norm: weight [n_heads·head_dim]
  Gate gate{nullptr};       // always set; registered as g_proj when it has parameters

  int64_t layer() const { return layer_; }
  // Replaces the core chosen by model.attention.backend (tests: a core outside the registry).
  void set_core(std::shared_ptr<AttentionCore> core) { core_ = std::move(core); }
  int64_t window() const { return window_; }
  // train.activation_checkpointing: selective. The region between the projections and o_proj
  // keeps only its inputs and is recomputed in backward (training forwards without observer).
  void set_recompute_region(bool on) { recompute_region_ = on; }
  // Packs the weights that share a GEMM into one buffer (model.fused_projections: q, k, v and
  // the gate's; gate.fuse_q_proj: q and the gate's). After moving the module too.
  void pack_projections();

 private:
  // q_proj(x) [B, T, H·D] and, when fused, the gate logits from the same GEMM.
  at::Tensor project_query(const at::Tensor& x, GateInput& gate_in);
  // Projections' outputs [B, T, heads, D] -> the gated core output [B, T, H, D]: G2-G4, QK-norm,
  // positions, the core (with the KV cache), output_norm, G1.
  at::Tensor attention_region(at::Tensor q, at::Tensor k, at::Tensor v, const GateInput& gate_in,
                              const ForwardContext& ctx);
  // o_proj and G5.
  at::Tensor output_projection(const at::Tensor& gated, const GateInput& gate_in, ForwardObserver* obs);

  int64_t n_heads_, n_kv_heads_, head_dim_, layer_, window_;
  double norm_eps_;
  bool fuse_q_proj_;
  bool fused_projections_;
  // The weights of the one GEMM over x: q, k, v and the gate's (fused_projections), or q and
  // the gate's (fuse_q_proj).
  std::vector<at::Tensor> packed_group() const;
  bool recompute_region_ = false;
  std::shared_ptr<AttentionCore> core_;
  std::shared_ptr<QKPositions> positions_;
};
TORCH_MODULE(SelfAttention);

}  // namespace sluice
