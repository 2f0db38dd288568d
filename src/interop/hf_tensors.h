// Tensor layouts between Sluice checkpoints and Hugging Face files (docs/interop.md). Names
// are the same except for MoE experts: Sluice stacks each layer's experts
// (`mlp.experts.gate_proj` [E, F, D]); transformers saves one tensor per expert
// (`mlp.experts.3.gate_proj.weight` [F, D]) and, in memory since 5.x, fuses gate and up
// (`mlp.experts.gate_up_proj` [E, 2F, D]). Every other tensor passes unchanged.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace sluice {

// Sluice's tensors as transformers saves them (per-expert).
std::map<std::string, at::Tensor> to_hf_tensors(const std::map<std::string, at::Tensor>& sluice);

// transformers' tensors (per-expert or fused experts) as Sluice's. Throws InputError naming
// `file` and the tensor when a layer's experts are incomplete or of different shapes.
std::map<std::string, at::Tensor> from_hf_tensors(const std::map<std::string, at::Tensor>& hf, const std::string& file);

}  // namespace sluice
