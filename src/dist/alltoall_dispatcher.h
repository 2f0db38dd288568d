// Expert parallelism's token dispatcher: the routed copies of this rank's tokens go to the
// ranks holding their experts and come back, through two variable-split all-to-alls over the
// expert-parallel group (Megatron-Core's AlltoAll dispatcher). Per MoE layer and forward:
//   1. counts per (expert, routing slot) exchanged: a small all-to-all, read on the host for
//      the split sizes (the one sync of the layer);
//   2. the rows (already sorted by expert, so by owner) sent with alltoall_base;
//   3. received rows reordered to (local expert, slot, source rank, token), the order one
//      process holding the whole group's batch would give them, so capacity dropping keeps
//      the same rows; then the local experts on contiguous slices;
//   4. outputs put back in received order and returned by the mirror all-to-all.
// Both all-to-alls are autograd functions whose backward is the all-to-all the other way.
#pragma once
#include <memory>

#include "dist/communicator.h"
#include "model/token_dispatcher.h"

namespace sluice::dist {

class AllToAllDispatcher : public TokenDispatcher {
 public:
  // `group`: the expert-parallel group; member i holds experts [i·E/n, (i+1)·E/n).
  explicit AllToAllDispatcher(std::shared_ptr<Communicator> group);

  at::Tensor run(const at::Tensor& rows, const DispatchPlan& plan, int64_t capacity, const ExpertFn& experts,
                 at::Tensor& dropped) override;
  int64_t capacity_processes() const override { return group_->world_size(); }

  // Since the last call, over every layer, forward and backward: all-to-alls run, bytes this
  // rank sent to the other members (the count exchanges included), and seconds spent inside
  // them (waiting for the slowest member included). Benchmarks read it.
  struct Traffic {
    int64_t exchanges = 0, bytes_sent = 0;
    double seconds = 0;
  };
  static Traffic take_traffic();

 private:
  std::shared_ptr<Communicator> group_;
};

// The differentiable exchange itself: `input` holds send[r] rows for member r of `group`;
// returns recv[r] rows from each. Backward sends the gradient back the same way reversed.
at::Tensor differentiable_all_to_all(const at::Tensor& input, const std::vector<int64_t>& send,
                                     const std::vector<int64_t>& recv, const Communicator& group);

}  // namespace sluice::dist
