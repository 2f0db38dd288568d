// Read-only hooks into one forward pass, for statistics (gate scores, attention outputs)
// without a second pass. Pass a pointer to CausalLM::forward; with none (the default) the
// model does no extra work. Tensors are the live activations (still in the autograd graph):
// detach or copy what you keep, and never modify them in place.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "sluice/attention.h"

namespace sluice {

struct ForwardObserver {
  virtual ~ForwardObserver() = default;
  // X of layer `layer`: the block's normalised input that feeds q/k/v and the gate, [B, T, d_model].
  virtual void on_attention_input(int64_t /*layer*/, const at::Tensor& /*x*/) {}
  // The gate scores act(X·W_g [+ b]) as the gate applies them: [B, T, G, W] with G = heads at the
  // gate's position (n_heads for G1/G4, n_kv_heads for G2/G3; 1 when head_shared) and W = head_dim
  // (1 when headwise); [B, T, d_model] for G5. An input-independent gate (input: constant) has no
  // [B, T] dimensions.
  virtual void on_gate_scores(int64_t /*layer*/, const at::Tensor& /*scores*/) {}
  // Each head's SDPA output [B, T, n_heads, head_dim] before and after the G1 gate (the same
  // tensor twice when the layer has no G1 gate).
  virtual void on_attention_output(int64_t /*layer*/, const at::Tensor& /*before_gate*/,
                                   const at::Tensor& /*after_gate*/) {}
  // What the attention core receives: q [B, H, T, D], k and v [B, KV, S, D] after QK-norm and
  // positions (for CoCA the effective queries and keys), with the mask and scale it applies, so
  // scores s(q, j) = scale·q·k_j + mask bias can be recomputed (attention-sink statistics).
  virtual void on_attention_core(int64_t /*layer*/, const at::Tensor& /*q*/, const at::Tensor& /*k*/,
                                 const at::Tensor& /*v*/, const AttentionMask& /*mask*/, double /*scale*/) {}
  // Per block: the attention branch output (after o_proj and G5), the FFN branch output, and the
  // residual stream after the block, each [B, T, d_model].
  virtual void on_block_output(int64_t /*layer*/, const at::Tensor& /*attn_out*/, const at::Tensor& /*ffn_out*/,
                               const at::Tensor& /*residual*/) {}
};

}  // namespace sluice
