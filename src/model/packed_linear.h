// Several linear maps of one input as one GEMM: q, k, v (and the gate's logits) of attention,
// gate and up of SwiGLU (model.fused_projections; the G1 gate with q alone under
// model.attention.gate.fuse_q_proj). The weights stay separate parameters, so names,
// checkpoints, optimizer state and HF export are per tensor, but pack_weights() puts them back to
// back in one buffer and packed_linear() reads that buffer as one [Σ out_i, in] matrix: no
// per-step concatenation. Its backward is two GEMMs as well (dx, and dW whose row blocks are
// the weights' gradients). Weights that are not packed (moved since, say) are concatenated.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace sluice {

// Moves the weights' values into one contiguous buffer, each weight a row block of it (in
// order), keeping the tensors themselves (set_data): optimizers and hooks holding them see the
// same parameters. All [out_i, in], of one dtype and device. Call again after moving them.
void pack_weights(const std::vector<at::Tensor>& weights);
// True when the weights are row blocks, in order and back to back, of one contiguous buffer.
bool weights_packed(const std::vector<at::Tensor>& weights);
// x [..., in] -> [..., Σ out_i] = x · [W_0; W_1; ...]ᵀ; under autocast in its dtype, as at::linear.
at::Tensor packed_linear(const at::Tensor& x, const std::vector<at::Tensor>& weights);

}  // namespace sluice
