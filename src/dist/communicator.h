// One rank's connection to the others: the rendezvous store (c10d::TCPStore, hosted by rank 0
// or by torchrun's agent) and a c10d::ProcessGroup with Gloo for CPU tensors and, on CUDA,
// NCCL for device tensors. Every wait is bounded by parallel.timeout_s, and every failure
// names this rank and what it waited for.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dist/launch_env.h"

namespace sluice::dist {

class Communicator {
 public:
  // Joins the job: the store first (InputError, exit 2, when the rendezvous does not complete
  // within `timeout`: unreachable master, missing ranks, a port in use), then the process
  // group. `backend` is "gloo" or "nccl" (NCCL only with a CUDA `device`).
  Communicator(const LaunchEnv& env, const std::string& backend, const c10::Device& device,
               std::chrono::milliseconds timeout);

  // A process group over some of the job's ranks (`ranks`, global, ascending; this process
  // among them), e.g. an expert-parallel group. Every member calls it, in the same order of
  // groups; `name` keeps the group's keys apart in the store and names it in errors.
  std::shared_ptr<Communicator> subgroup(const std::vector<int64_t>& ranks, const std::string& name) const;

  // This process's rank and the number of ranks in this group (the job for the first one).
  int64_t rank() const { return rank_; }
  int64_t world_size() const { return static_cast<int64_t>(ranks_.size()); }
  const std::vector<int64_t>& ranks() const { return ranks_; }  // global ranks of the members
  const LaunchEnv& env() const { return env_; }
  const std::string& backend() const { return backend_; }
  const c10::intrusive_ptr<c10d::ProcessGroup>& group() const { return group_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // Waits for `work`; a failure or a timeout becomes a DistributedError naming this rank and `what`.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) const;
  // Runs `op` translating c10d's errors the same way.
  void guarded(const std::string& what, const std::function<void()>& op) const;

  void all_reduce(at::Tensor& t, const std::string& what, c10d::ReduceOp op = c10d::ReduceOp::SUM) const;
  void broadcast(std::vector<at::Tensor>& tensors, const std::string& what) const;  // from rank 0, in place
  void barrier(const std::string& what) const;  // a CPU all-reduce: no device sync
  // Variable splits along dim 0: `input` holds send[r] rows for member r, in rank order; the
  // result holds recv[r] rows from each member r (sizes agreed beforehand).
  at::Tensor all_to_all(const at::Tensor& input, const std::vector<int64_t>& send, const std::vector<int64_t>& recv,
                        const std::string& what) const;
  // `t` [world_size · n, ...]: member r's `t` is ts[r] concatenated along dim 0 (all-gather).
  at::Tensor all_gather(const at::Tensor& t, const std::string& what) const;
  // Every rank's `value`, in rank order, through the store (strings of any size).
  std::vector<std::string> all_gather_strings(const std::string& what, const std::string& value);

 private:
  Communicator(const Communicator& parent, const std::vector<int64_t>& ranks, const std::string& name);
  void create_group(std::chrono::milliseconds timeout);  // group_ over store_, rank_, ranks_

  LaunchEnv env_;
  std::string backend_;
  c10::Device device_;
  std::chrono::milliseconds timeout_;
  std::string name_;               // "" for the whole job, else the subgroup's name
  std::vector<int64_t> ranks_;     // global ranks of the members
  int64_t rank_ = 0;               // this process's index in ranks_
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  mutable int64_t rounds_ = 0;  // all_gather_strings calls so far: each uses its own keys
};

}  // namespace sluice::dist
