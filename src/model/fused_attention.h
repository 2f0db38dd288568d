// The `fused` attention backend: FlashAttention-2-style CUDA kernels (kernels/flash/) behind
// a torch::autograd::Function, falling back to `sdpa` for what they do not cover (CPU tensors,
// fp32, head dims other than 64 and 128, builds without nvcc), with one log line per
// reason and process. It fuses the G1 output gate (AttentionCore::forward_gated) into the
// kernels. See docs/attention.md, "Fused kernel".
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <tuple>

#include "sluice/attention.h"

namespace sluice {

std::shared_ptr<AttentionCore> make_fused_attention_core();

// Why the kernels cannot run these inputs, or "" when they can.
std::string fused_attention_unsupported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const AttentionMask& mask);

// The backward's tile, "queries x keys" (kernels/flash/bwd_tiles.h), the kernels run for this
// head dim (64 or 128) on this CUDA device: SLUICE_FLASH_BWD_TILE if set, else the largest whose
// shared memory the device grants one block. Throws what the backward would when the requested
// tile does not fit; "" in builds without the kernels.
std::string fused_backward_tile(int64_t head_dim, const at::Device& device);

// Attention (shapes and mask as AttentionCore::forward) and the per-row log-sum-exp of the
// scaled, masked scores, fp32 [B, H, T] (fp64 for fp64 inputs): L = log Σ_j exp(scale·q·k_j + bias_j) over the keys
// the query sees. The output is differentiable, L is not. With G1 gate logits (as
// AttentionCore::forward_gated takes them) the output is O ⊙ σ(gate) and L stays ungated.
// Fused kernels when supported, else attention_with_lse_reference.
std::tuple<at::Tensor, at::Tensor> fused_attention_with_lse(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v, const AttentionMask& mask,
                                                            double scale, const at::Tensor& gate_logits = {});

// The ATen reference of the above: explicit fp32 (fp64) scores, ALiBi bias included, the gate
// applied in fp32 before the one cast to v's dtype, any device.
std::tuple<at::Tensor, at::Tensor> attention_with_lse_reference(const at::Tensor& q, const at::Tensor& k,
                                                                const at::Tensor& v, const AttentionMask& mask,
                                                                double scale, const at::Tensor& gate_logits = {});

}  // namespace sluice
