#include "dist/alltoall_dispatcher.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <chrono>
#include <cstdint>
#include <mutex>

namespace sluice::dist {

namespace {

std::mutex traffic_mutex;
AllToAllDispatcher::Traffic traffic;

// One exchange, timed and counted (rows and bytes this rank sends to the other members).
at::Tensor exchange(const at::Tensor& input, const std::vector<int64_t>& send, const std::vector<int64_t>& recv,
                    const Communicator& group, const char* what) {
  const auto t0 = std::chrono::steady_clock::now();
  at::Tensor out = group.all_to_all(input, send, recv, what);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t rows = 0;
  for (int64_t r = 0; r < static_cast<int64_t>(send.size()); ++r)
    if (r != group.rank()) rows += send[static_cast<size_t>(r)];
  int64_t row_bytes = input.element_size();
  for (int64_t d = 1; d < input.dim(); ++d) row_bytes *= input.size(d);
  std::lock_guard<std::mutex> lock(traffic_mutex);
  ++traffic.exchanges;
  traffic.bytes_sent += rows * row_bytes;
  traffic.seconds += s;
  return out;
}

class AllToAllFunction : public torch::autograd::Function<AllToAllFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                            const std::vector<int64_t>& send, const std::vector<int64_t>& recv,
                            const Communicator* group) {
    ctx->saved_data["send"] = send;
    ctx->saved_data["recv"] = recv;
    ctx->saved_data["group"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(group));
    return exchange(input, send, recv, *group, "the MoE token all-to-all");
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto send = ctx->saved_data["send"].toIntVector(), recv = ctx->saved_data["recv"].toIntVector();
    const auto* group = reinterpret_cast<const Communicator*>(static_cast<intptr_t>(ctx->saved_data["group"].toInt()));
    // The gradient of what came in goes back to where it came from.
    return {exchange(grads[0], recv, send, *group, "the MoE gradient all-to-all"), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

std::vector<int64_t> chunk_sums(const int64_t* v, int64_t chunks, int64_t per_chunk) {
  std::vector<int64_t> out(static_cast<size_t>(chunks), 0);
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t i = 0; i < per_chunk; ++i) out[static_cast<size_t>(c)] += v[c * per_chunk + i];
  return out;
}

}  // namespace

at::Tensor differentiable_all_to_all(const at::Tensor& input, const std::vector<int64_t>& send,
                                     const std::vector<int64_t>& recv, const Communicator& group) {
  return AllToAllFunction::apply(input, send, recv, &group);
}

AllToAllDispatcher::AllToAllDispatcher(std::shared_ptr<Communicator> group) : group_(std::move(group)) {}

AllToAllDispatcher::Traffic AllToAllDispatcher::take_traffic() {
  std::lock_guard<std::mutex> lock(traffic_mutex);
  Traffic t = traffic;
  traffic = Traffic();
  return t;
}

at::Tensor AllToAllDispatcher::run(const at::Tensor& rows, const DispatchPlan& plan, int64_t capacity,
                                   const ExpertFn& experts, at::Tensor& dropped) {
  const Communicator& g = *group_;
  const int64_t n = g.world_size(), E = plan.n_experts, k = plan.top_k, El = E / n;
  TORCH_CHECK(El * n == E, "expert parallelism: ", E, " experts over ", n, " ranks");
  const auto i64 = plan.counts.options();

  // 1. Rows per (expert, slot); member r is sent the El·k entries of its experts.
  const at::Tensor slot = at::div(plan.order, plan.n_tokens, "floor");
  const at::Tensor table = at::zeros({E * k}, i64).index_add_(0, plan.expert * k + slot, at::ones_like(slot));
  const std::vector<int64_t> equal(static_cast<size_t>(n), El * k);
  const at::Tensor blocks = exchange(table, equal, equal, g, "the MoE token-count all-to-all");  // (source, expert, slot)
  const at::Tensor host = at::cat({table, blocks}).cpu();  // the split sizes: the layer's one host sync
  const std::vector<int64_t> send = chunk_sums(host.data_ptr<int64_t>(), n, El * k);
  const std::vector<int64_t> recv = chunk_sums(host.data_ptr<int64_t>() + E * k, n, El * k);
  int64_t R = 0;
  for (const int64_t r : recv) R += r;

  // 2. The rows, sorted by expert and so by owner.
  const at::Tensor received = differentiable_all_to_all(rows, send, recv, g);  // order (source, expert, slot, token)

  // 3. Grouped by local expert. Without capacity any order inside an expert will do: each block
  // (source s, expert e, slot j) moves to where it starts in (e, j, s) order. With capacity the
  // order is the priority of one process holding the group's micro-batches (the trainer's
  // loader interleaves the ranks' sequences): expert, slot, sequence, source rank, position,
  // which needs every row's token index from its source.
  const at::Tensor block_of_row =
      at::repeat_interleave(at::arange(n * El * k, i64), blocks, /*dim=*/0, /*output_size=*/R);
  at::Tensor target, source;  // received row -> its place in the grouped order, and back
  if (capacity <= 0) {
    const at::Tensor src_start = blocks.cumsum(0) - blocks;
    const at::Tensor by_target = blocks.view({n, El, k}).permute({1, 2, 0}).reshape(-1);
    const at::Tensor tgt_start = (by_target.cumsum(0) - by_target).view({El, k, n}).permute({2, 0, 1}).reshape(-1);
    target = at::arange(R, i64) - src_start.index_select(0, block_of_row) + tgt_start.index_select(0, block_of_row);
    source = at::empty_like(target).scatter_(0, target, at::arange(R, i64));
  } else {
    const at::Tensor token = exchange(plan.token, send, recv, g, "the MoE token-index all-to-all");
    const int64_t T = plan.sequence_length > 0 ? plan.sequence_length : plan.n_tokens, B = plan.n_tokens / T;
    const at::Tensor s = at::div(block_of_row, El * k, "floor"), e = at::div(block_of_row, k, "floor").remainder(El),
                     j = block_of_row.remainder(k);
    const at::Tensor key = (((e * k + j) * B + at::div(token, T, "floor")) * n + s) * T + token.remainder(T);
    source = std::get<1>(at::sort(key));
    target = at::empty_like(source).scatter_(0, source, at::arange(R, i64));
  }
  at::Tensor local = received.index_select(0, source);
  const at::Tensor local_counts = blocks.view({n, El, k}).sum(at::IntArrayRef{0, 2});
  if (capacity > 0) {
    const at::Tensor row_expert = at::repeat_interleave(at::arange(El, i64), local_counts, 0, R);
    const at::Tensor kept = capacity_mask(row_expert, local_counts, capacity);
    dropped = kept.logical_not().sum();
    local = at::where(kept.unsqueeze(1), local, at::zeros({}, local.options()));
  }
  const at::Tensor out = experts(local, local_counts);

  // 4. Back in received order, and home.
  return differentiable_all_to_all(out.index_select(0, target), recv, send, g);
}

}  // namespace sluice::dist
