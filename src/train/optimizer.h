// What the train step and checkpoints need of an optimizer: AdamW (train/adamw.h) in one
// process or with plain data parallelism, dist::ShardedAdamW for ZeRO-1.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace sluice {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // The global L2 norm of the gradients (fp32 device scalar, no sync); when max_norm > 0 the
  // gradients are scaled so that it is at most max_norm.
  virtual at::Tensor clip_grad_norm(double max_norm) = 0;
  // The parts of clip_grad_norm, for an optimizer made of several (expert parallelism): the
  // squared L2 norm of the gradients this optimizer updates, summed wherever they are
  // sharded (fp32 device scalar), and a scale applied to them.
  virtual at::Tensor grad_square_sum() = 0;
  virtual void scale_grads(const at::Tensor& coef) = 0;
  // One update; skipped entirely on the device when `found_inf` (a device scalar) is non-zero.
  virtual void step(double lr, const at::Tensor& found_inf = {}) = 0;
  virtual void zero_grad() = 0;
  // exp_avg.<param>, exp_avg_sq.<param>, step.<param> for every parameter, whole and in the
  // parameter's shape, whatever the sharding: what optimizer.safetensors holds. Where the
  // state is sharded this is a collective: every rank calls it.
  virtual NamedTensors state_tensors() = 0;
  // Loads that state (`file` names the source in errors, InputError on any mismatch).
  virtual void load_state_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& file) = 0;
  // Bytes of optimizer state this process holds.
  virtual int64_t state_bytes() const = 0;
};

}  // namespace sluice
