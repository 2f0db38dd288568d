// ZeRO-1 (Rajbhandari et al. 2020, stage 1): AdamW whose state is split over the ranks.
// Gradients are laid out in the DDP reducer's buckets; each bucket's flat gradient is
// reduce-scattered so that rank r holds the averaged slice [r·S, (r+1)·S) of it (S = the
// bucket padded to a multiple of the world size, / world), updates the parameter elements
// of that slice with its share of exp_avg / exp_avg_sq, and all-gathers the updated
// parameters. The arithmetic per element is AdamW's, so results equal parallel.zero: 0 up to
// the order of the gradient sums. Checkpoints hold the whole state by parameter name.
#pragma once
#include <torch/csrc/distributed/c10d/comm.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dist/communicator.h"
#include "sluice/config.h"
#include "train/optimizer.h"

namespace sluice::dist {

class ShardedAdamW : public Optimizer {
 public:
  // `buckets`: indices into `named_params`, in the reducer's bucket order; each bucket's flat
  // buffer is its parameters back to back.
  ShardedAdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params,
               const std::vector<std::vector<size_t>>& buckets, const OptimConfig& cfg, Communicator& comm);

  // The reducer's communication hook: reduce-scatters bucket gradients into the shards.
  std::unique_ptr<c10d::CommHookInterface> make_comm_hook();

  at::Tensor clip_grad_norm(double max_norm) override;
  at::Tensor grad_square_sum() override;  // all-reduced over the ranks
  void scale_grads(const at::Tensor& coef) override;
  void step(double lr, const at::Tensor& found_inf = {}) override;
  void zero_grad() override;
  NamedTensors state_tensors() override;
  void load_state_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& file) override;
  int64_t state_bytes() const override;

 private:
  // The elements of one parameter that fall into this rank's slice of its bucket.
  struct Piece {
    size_t bucket;        // index into buckets_
    size_t param;         // index into params_
    int64_t offset;       // first element in the flattened parameter
    int64_t length;
    int64_t shard_offset; // where they sit in the bucket's gradient shard
    at::Tensor value;     // view of the parameter's elements (updated in place)
    at::Tensor exp_avg, exp_avg_sq, step;
  };
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;  // of each parameter in the flat buffer
    int64_t numel = 0, shard = 0;  // shard: slice length per rank (numel padded / world)
    at::Tensor grad_shard;         // this rank's averaged slice of the bucket's gradient
  };
  struct Param {
    std::string name;
    at::Tensor tensor;
    bool decay;
  };
  class Hook;

  OptimConfig cfg_;
  Communicator& comm_;
  std::vector<Param> params_;
  std::vector<Bucket> buckets_;
  std::vector<Piece> pieces_;
  // Gathers each bucket's slices of `slice_of(piece)` from every rank into whole tensors.
  std::vector<at::Tensor> gather_whole(const std::function<at::Tensor(const Piece&)>& slice_of, const std::string& what);
};

}  // namespace sluice::dist
