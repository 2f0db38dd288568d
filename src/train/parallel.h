// The processes one run spans, as the trainer sees them. `Parallel` itself is one process
// (every call is trivial); src/dist/ derives data parallelism over c10d from it. The model
// is written for one device and never sees this: parallelism is applied around it here.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sluice/config.h"
#include "sluice/model.h"
#include "train/optimizer.h"

namespace sluice {

class Parallel {
 public:
  virtual ~Parallel() = default;
  virtual int64_t rank() const { return 0; }
  virtual int64_t world_size() const { return 1; }
  virtual int64_t local_world_size() const { return 1; }  // ranks on this node
  bool is_main() const { return rank() == 0; }
  virtual std::string describe() const { return "a single process"; }
  // The device this rank trains on, given train.device resolved (CUDA ranks: cuda:LOCAL_RANK).
  virtual c10::Device device(const c10::Device& resolved) const { return resolved; }

  // Rank 0's `value`, on every rank (the run directory each rank would choose, say).
  virtual std::string agree(const std::string& what, const std::string& value) { return value; }
  // Returns once every rank has called it (`what` names the wait in a timeout's message).
  virtual void barrier(const std::string& what) {}
  // Sum over the ranks, in place (a device tensor).
  virtual void sum_(at::Tensor& t) {}
  // True on every rank when `flag` is true on any (a stop request that reached one rank).
  virtual bool any(bool flag) { return flag; }

  // Before the model moves to its device: keep what this process holds of it (expert
  // parallelism: its experts, with their tokens routed through an all-to-all).
  virtual void shard_model(CausalLMImpl& model) {}
  // Every parameter and buffer by name, whole (what a checkpoint holds); a collective where
  // parts live on other processes.
  virtual NamedTensors whole_model_tensors(CausalLMImpl& model);
  // This process's part of the whole tensor `name` (a checkpoint's, for loading).
  virtual at::Tensor local_part(const std::string& name, const at::Tensor& whole) const { return whole; }
  // Trainable parameters of the whole model.
  virtual int64_t parameter_count(const CausalLMImpl& model) const;

  // The optimizer for `model`'s parameters, with gradient averaging over the ranks applied
  // (parameters broadcast from rank 0 first). One process: AdamW.
  virtual std::unique_ptr<Optimizer> make_optimizer(CausalLMImpl& model,
                                                    const std::vector<std::pair<std::string, at::Tensor>>& params,
                                                    const Config& cfg);
  // Called before each micro-batch's backward; gradients are exchanged during the last one's.
  virtual void before_backward(const at::Tensor& loss, bool last_micro_batch) {}
  // Stops the run (exit 1) naming the rank whose parameters differ from rank 0's.
  virtual void check_parameters_agree(CausalLMImpl& model, int64_t step) {}
  // Extra metrics of a log interval of `steps` steps and `seconds` (expert parallelism: its
  // all-to-all traffic), as (metrics.jsonl key, value).
  virtual std::vector<std::pair<std::string, double>> interval_metrics(int64_t steps, double seconds) { return {}; }
  // Counts MoE routing over the ranks (null: this process alone).
  virtual std::shared_ptr<RoutingCountReducer> routing_count_reducer() { return nullptr; }
};

}  // namespace sluice
