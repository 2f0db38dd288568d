// Activation checkpointing (train.activation_checkpointing): a region of the forward runs
// without keeping its intermediate tensors, and backward runs it again, with autograd on, to
// get them back. LibTorch has no torch.utils.checkpoint; this is its reentrant form as an
// autograd Function: only the region's inputs are saved; in backward the region is recomputed
// from detached copies of them and differentiated there (parameter gradients accumulate as in
// a normal backward), then the inputs' gradients leave the node. The default generator's state
// (of the inputs' device) and the autocast state are restored for the recompute, so the
// recomputed tensors are bitwise the forward's on the CPU.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

namespace sluice {

enum class ActivationCheckpointing {
  None,       // keep everything autograd saves
  Selective,  // recompute the norms, SwiGLU's product and the attention region; keep the GEMMs' outputs
  Full,       // recompute whole blocks (MoE blocks: their attention half; DecoderBlock)
};
ActivationCheckpointing parse_activation_checkpointing(const std::string& name);  // none|selective|full

using RegionFn = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

// `region(inputs)`, keeping only `inputs` for backward. Every tensor the region differentiates
// through must be among `inputs` (or be a module parameter): a tensor captured by the closure
// gets no gradient. Without grad mode, or when no input requires grad, it is a plain call. The
// region must be a function of its inputs and parameters: no side effects that a second run
// would repeat (statistics, collectives).
std::vector<at::Tensor> checkpoint(const RegionFn& region, const std::vector<at::Tensor>& inputs);

// Selective recompute of a cheap function whose result only the GEMMs of `consumer` read:
// `consumer(region(inputs))`, where the region runs under checkpoint() (its intermediates are
// not kept) and its result's memory is released once `consumer` has run, though the GEMMs'
// backward nodes hold it; right before the backward of consumer's result starts, the region runs
// again and its result goes back into that memory (as Megatron-Core's CheckpointWithoutOutput).
// `consumer` must be the result's only user, and every path from it to the loss must go through
// consumer's result (true of a block's norm feeding its attention or MLP). Without grad mode, a
// plain call.
at::Tensor with_recomputed_input(const RegionFn& region, const std::vector<at::Tensor>& inputs,
                                 const std::function<at::Tensor(const at::Tensor&)>& consumer);

}  // namespace sluice
