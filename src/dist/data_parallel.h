// Data parallelism around a single-device model: every rank holds the whole model, trains on
// its share of each global batch, and gradients are averaged by c10d::Reducer (the C++
// engine of PyTorch's DistributedDataParallel: buckets of parallel.bucket_mb filled by
// autograd hooks and all-reduced while backward goes on). parallel.zero: 1 swaps the
// reducer's all-reduce for a reduce-scatter into ShardedAdamW (ZeRO-1). docs/distributed.md.
#pragma once
#include <memory>

#include "dist/communicator.h"
#include "dist/launch_env.h"
#include "sluice/config.h"
#include "train/parallel.h"

namespace c10d {
class Reducer;
}

namespace sluice::dist {

class DataParallel : public Parallel {
 public:
  DataParallel(std::shared_ptr<Communicator> comm, const Config& cfg, c10::Device device);
  ~DataParallel() override;

  int64_t rank() const override { return comm_->rank(); }
  int64_t world_size() const override { return comm_->world_size(); }
  int64_t local_world_size() const override { return comm_->env().local_world_size; }
  std::string describe() const override;
  c10::Device device(const c10::Device& resolved) const override;

  std::string agree(const std::string& what, const std::string& value) override;
  void barrier(const std::string& what) override;
  void sum_(at::Tensor& t) override;
  bool any(bool flag) override;

  std::unique_ptr<Optimizer> make_optimizer(CausalLMImpl& model,
                                            const std::vector<std::pair<std::string, at::Tensor>>& params,
                                            const Config& cfg) override;
  void before_backward(const at::Tensor& loss, bool last_micro_batch) override;
  void check_parameters_agree(CausalLMImpl& model, int64_t step) override;
  std::shared_ptr<RoutingCountReducer> routing_count_reducer() override;

 protected:
  // A reducer that averages `params`' gradients over `comm`'s ranks, in buckets of
  // parallel.bucket_mb laid out in backward order (the first one 1 MiB at most, as DDP);
  // `buckets` gets the layout (indices into `params`).
  std::shared_ptr<c10d::Reducer> make_reducer(const NamedTensors& params, const std::shared_ptr<Communicator>& comm,
                                              std::vector<std::vector<size_t>>& buckets) const;
  // The rank whose copy of parameter `name` rank `rank`'s must equal bitwise (check_every).
  virtual int64_t reference_rank(const std::string& name, int64_t rank) const { return 0; }

  std::shared_ptr<Communicator> comm_;
  ParallelConfig cfg_;
  c10::Device device_;
  std::shared_ptr<c10d::Reducer> reducer_;
};

// The distributed run this process belongs to, from the launcher's environment (launch_env.h);
// null when no launcher started it. Before any rank trains: checks parallel.data_parallel
// against the world size, binds a CUDA rank to cuda:LOCAL_RANK, joins the rendezvous, and
// checks that every rank runs the same resolved config and build. Each failure is an
// InputError (exit 2) naming the rank, the variable or the differing keys.
std::shared_ptr<Parallel> connect(const LoadedConfig& cfg);
// `expert_parallel_path`: expert parallelism's code path even at parallel.expert_parallel 1
// (benchmarks measure its cost).
std::shared_ptr<Parallel> connect(const LoadedConfig& cfg, const LaunchEnv& env, bool expert_parallel_path = false);

}  // namespace sluice::dist
