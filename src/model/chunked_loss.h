// The output head and the cross-entropy over chunks of tokens (train.loss_chunk_tokens): the
// [tokens, vocab] logits and their gradient never exist whole, only [chunk, vocab] at a time.
// The gradients of h and of the head's weight are computed in the forward pass, chunk by
// chunk, while each chunk's logits are at hand (as Liger-Kernel's fused linear cross-entropy
// does), and backward only scales them: no logits are recomputed. In fp32 it equals the plain
// path (linear, then cross_entropy) up to the order of the sums over chunks; under autocast the
// GEMMs run in the autocast dtype and the softmax in fp32, as the plain path does.
#pragma once
#include <ATen/core/Tensor.h>

namespace sluice {

// Mean over the M rows of -log softmax(h W^T)[target]: h [M, d], weight [V, d], targets [M]
// int64. `chunk` rows at a time (> 0).
at::Tensor chunked_linear_cross_entropy(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& targets,
                                        int64_t chunk);

}  // namespace sluice
