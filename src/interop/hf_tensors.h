// Tensor layouts between Sluice checkpoints and Hugging Face files (docs/interop.md). Names
// are the same except for MoE experts: Sluice stacks each layer's experts
// (`mlp.experts.gate_proj` [E, F, D]); transformers saves one tensor per expert
// (`mlp.experts.3.gate_proj.weight` [F, D]) and, in memory since 5.x, fuses gate and up
// (`mlp.experts.gate_up_proj` [E, 2F, D]). Qwen3-Next (G1 with QK-norm) holds each head's
// query and gate rows together in q_proj ([q_h; gate_h] per head) and computes its RMSNorms as
// x̂·(1 + w), so Sluice's g_proj goes into q_proj and norm weights are w - 1 there. Every other
// tensor passes unchanged.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace sluice {

// Sluice's tensors as transformers saves them for `architecture` (per-expert; Qwen3-Next's
// q_proj and norms). `head_dim`, `n_heads` and `headwise` (one gate logit per head, repeated
// over the head's dimensions for Qwen3-Next) describe the gate.
struct GateLayout {
  int64_t n_heads = 0, head_dim = 0;
  bool headwise = false;
};
std::map<std::string, at::Tensor> to_hf_tensors(const std::map<std::string, at::Tensor>& sluice,
                                                const std::string& architecture = "", const GateLayout& gate = {});

// transformers' tensors (per-expert or fused experts) as Sluice's. Throws InputError naming
// `file` and the tensor when a layer's experts are incomplete or of different shapes.
std::map<std::string, at::Tensor> from_hf_tensors(const std::map<std::string, at::Tensor>& hf, const std::string& file,
                                                  const std::string& architecture = "", const GateLayout& gate = {});

}  // namespace sluice
