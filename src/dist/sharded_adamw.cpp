#include "dist/sharded_adamw.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sluice/errors.h"
#include "train/adamw.h"

namespace sluice::dist {

// Reduce-scatter instead of the reducer's all-reduce: the bucket's flat gradient (this
// rank's, undivided) is scaled by 1/world as the reducer's own all-reduce path does, and
// summed into this rank's slice. The reducer then copies the (unreduced) buffer back into
// .grad, which ShardedAdamW never reads.
class ShardedAdamW::Hook : public c10d::CommHookInterface {
 public:
  explicit Hook(ShardedAdamW& opt) : opt_(opt) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    Bucket& b = opt_.buckets_.at(bucket.getIndex());
    at::Tensor& flat = bucket.getBufferRef();
    TORCH_CHECK(flat.numel() == b.numel, "ZeRO-1: reducer bucket ", bucket.getIndex(), " holds ", flat.numel(),
                " elements, the optimizer's layout ", b.numel);
    const int64_t world = opt_.comm_.world_size();
    at::Tensor input = at::zeros({b.shard * world}, flat.options());
    input.narrow(0, 0, b.numel).copy_(flat).mul_(1.0 / static_cast<double>(world));
    c10d::ReduceScatterOptions o;
    o.timeout = opt_.comm_.timeout();
    auto work = opt_.comm_.group()->_reduce_scatter_base(b.grad_shard, input, o);
    const at::Tensor result = flat;
    if (flat.is_cuda()) {  // NCCL: the work's future carries its stream
      return work->getFuture()->then(
          [input, result](c10::ivalue::Future&) { return c10::IValue(result); },  // keeps `input` alive
          c10::TensorType::get());
    }
    // Gloo's reduce-scatter work has no future: wait for it on an inter-op thread, so that
    // backward goes on meanwhile.
    auto future = c10::make_intrusive<c10::ivalue::Future>(c10::TensorType::get());
    at::launch([work, future, input, result] {
      try {
        work->wait();
        future->markCompleted(c10::IValue(result));
      } catch (...) {
        future->setError(std::current_exception());
      }
    });
    return future;
  }

  at::Tensor parseHookResult(const c10::IValue& result) override { return result.toTensor(); }

 private:
  ShardedAdamW& opt_;
};

ShardedAdamW::ShardedAdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params,
                           const std::vector<std::vector<size_t>>& buckets, const OptimConfig& cfg,
                           Communicator& comm)
    : cfg_(cfg), comm_(comm) {
  for (const auto& [name, t] : named_params) params_.push_back({name, t, !excluded_from_decay(name, cfg.no_decay)});
  const int64_t world = comm.world_size(), rank = comm.rank();
  for (const auto& indices : buckets) {
    Bucket b;
    b.params = indices;
    for (size_t i : indices) {
      b.offsets.push_back(b.numel);
      b.numel += params_[i].tensor.numel();
    }
    b.shard = (b.numel + world - 1) / world;
    const at::Tensor& first = params_[indices.at(0)].tensor;
    b.grad_shard = at::zeros({b.shard}, first.options().dtype(at::kFloat));
    // The parameter elements inside [rank·shard, rank·shard + shard) of the flat bucket.
    const int64_t lo = rank * b.shard, hi = std::min(b.numel, lo + b.shard);
    for (size_t j = 0; j < indices.size(); ++j) {
      const Param& p = params_[indices[j]];
      const int64_t begin = std::max(lo, b.offsets[j]), end = std::min(hi, b.offsets[j] + p.tensor.numel());
      if (begin >= end) continue;
      Piece piece;
      piece.bucket = buckets_.size();
      piece.param = indices[j];
      piece.offset = begin - b.offsets[j];
      piece.length = end - begin;
      piece.shard_offset = begin - lo;
      piece.value = p.tensor.detach().view(-1).narrow(0, piece.offset, piece.length);
      piece.exp_avg = at::zeros({piece.length}, p.tensor.options());
      piece.exp_avg_sq = at::zeros({piece.length}, p.tensor.options());
      piece.step = at::zeros({}, p.tensor.options().dtype(at::kFloat));
      pieces_.push_back(std::move(piece));
    }
    buckets_.push_back(std::move(b));
  }
}

std::unique_ptr<c10d::CommHookInterface> ShardedAdamW::make_comm_hook() { return std::make_unique<Hook>(*this); }

at::Tensor ShardedAdamW::grad_square_sum() {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> shards;
  for (const Bucket& b : buckets_) shards.push_back(b.grad_shard);
  // Padding elements are zero, so the sum of squares over the slices is the global one.
  at::Tensor sq = at::stack(at::_foreach_norm(shards, 2)).square().sum().to(at::kFloat);
  comm_.all_reduce(sq, "summing the gradient norm (ZeRO-1)");
  return sq;
}

void ShardedAdamW::scale_grads(const at::Tensor& coef) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> shards;
  for (const Bucket& b : buckets_) shards.push_back(b.grad_shard);
  at::_foreach_mul_(shards, coef);
}

at::Tensor ShardedAdamW::clip_grad_norm(double max_norm) {
  const at::Tensor total = grad_square_sum().sqrt();
  if (max_norm > 0) scale_grads(at::clamp_max(max_norm / (total + 1e-6), 1.0));
  return total;
}

void ShardedAdamW::step(double lr, const at::Tensor& found_inf) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> p[2], g[2], m[2], v[2], steps[2];  // [0]: decayed, [1]: not
  for (const Piece& piece : pieces_) {
    const int k = params_[piece.param].decay ? 0 : 1;
    p[k].push_back(piece.value);
    g[k].push_back(buckets_[piece.bucket].grad_shard.narrow(0, piece.shard_offset, piece.length));
    m[k].push_back(piece.exp_avg);
    v[k].push_back(piece.exp_avg_sq);
    steps[k].push_back(piece.step);
  }
  const std::optional<at::Tensor> inf = found_inf.defined() ? std::optional<at::Tensor>(found_inf) : std::nullopt;
  for (int k = 0; k < 2; ++k) {
    if (p[k].empty()) continue;
    at::_foreach_add_(steps[k], 1.0);
    at::_fused_adamw_(p[k], g[k], m[k], v[k], /*max_exp_avg_sqs=*/{}, steps[k], lr, cfg_.beta1, cfg_.beta2,
                      k == 0 ? cfg_.weight_decay : 0.0, cfg_.eps, /*amsgrad=*/false, /*maximize=*/false,
                      /*grad_scale=*/std::nullopt, inf);
    if (inf) at::_foreach_sub_(steps[k], std::vector<at::Tensor>(steps[k].size(), *inf));
  }
  // Every rank's updated slice to every rank.
  const std::vector<at::Tensor> whole = gather_whole([](const Piece& p) { return p.value; }, "all-gathering parameters (ZeRO-1)");
  for (size_t i = 0; i < params_.size(); ++i) params_[i].tensor.detach().copy_(whole[i]);
}

void ShardedAdamW::zero_grad() {
  for (auto& p : params_) p.tensor.mutable_grad() = at::Tensor();
  for (auto& b : buckets_) b.grad_shard.zero_();
}

std::vector<at::Tensor> ShardedAdamW::gather_whole(const std::function<at::Tensor(const Piece&)>& slice_of,
                                                   const std::string& what) {
  std::vector<at::Tensor> whole(params_.size());
  const int64_t world = comm_.world_size();
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    const Bucket& b = buckets_[bi];
    at::Tensor mine = at::zeros({b.shard}, b.grad_shard.options());
    for (const Piece& piece : pieces_)
      if (piece.bucket == bi) mine.narrow(0, piece.shard_offset, piece.length).copy_(slice_of(piece));
    at::Tensor all = at::empty({b.shard * world}, mine.options());
    c10d::AllgatherOptions o;
    o.timeout = comm_.timeout();
    c10::intrusive_ptr<c10d::Work> work;
    comm_.guarded(what, [&] { work = comm_.group()->_allgather_base(all, mine, o); });
    comm_.wait(work, what);
    for (size_t j = 0; j < b.params.size(); ++j) {
      const at::Tensor& t = params_[b.params[j]].tensor;
      whole[b.params[j]] = all.narrow(0, b.offsets[j], t.numel()).view(t.sizes()).clone();
    }
  }
  return whole;
}

NamedTensors ShardedAdamW::state_tensors() {
  const auto exp_avg = gather_whole([](const Piece& p) { return p.exp_avg; }, "gathering exp_avg (ZeRO-1)");
  const auto exp_avg_sq = gather_whole([](const Piece& p) { return p.exp_avg_sq; }, "gathering exp_avg_sq (ZeRO-1)");
  // A parameter's step count, from the rank holding its first element.
  at::Tensor steps = at::zeros({static_cast<int64_t>(params_.size())}, params_.at(0).tensor.options().dtype(at::kFloat));
  for (const Piece& piece : pieces_)
    if (piece.offset == 0) steps[static_cast<int64_t>(piece.param)].copy_(piece.step);
  comm_.all_reduce(steps, "gathering step counts (ZeRO-1)");
  NamedTensors out;
  for (const bool decay : {true, false}) {  // AdamW's order: the decayed group first
    for (size_t i = 0; i < params_.size(); ++i) {
      if (params_[i].decay != decay) continue;
      out.emplace_back("exp_avg." + params_[i].name, exp_avg[i]);
      out.emplace_back("exp_avg_sq." + params_[i].name, exp_avg_sq[i]);
      out.emplace_back("step." + params_[i].name, steps[static_cast<int64_t>(i)].clone());
    }
  }
  return out;
}

void ShardedAdamW::load_state_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& file) {
  at::NoGradGuard no_grad;
  auto find = [&](const std::string& key, const Param& p, bool scalar) -> const at::Tensor& {
    const auto it = tensors.find(key);
    if (it == tensors.end()) throw InputError("checkpoint file '" + file + "': tensor '" + key + "' is missing");
    const bool fits = scalar ? it->second.numel() == 1 : it->second.sizes() == p.tensor.sizes();
    if (!fits || it->second.scalar_type() != at::kFloat)
      throw InputError(fmt::format("checkpoint file '{}': tensor '{}' does not match the parameter (shape [{}])", file,
                                   key, fmt::join(it->second.sizes(), ", ")));
    return it->second;
  };
  for (Piece& piece : pieces_) {
    const Param& p = params_[piece.param];
    piece.exp_avg.copy_(find("exp_avg." + p.name, p, false).reshape(-1).narrow(0, piece.offset, piece.length));
    piece.exp_avg_sq.copy_(find("exp_avg_sq." + p.name, p, false).reshape(-1).narrow(0, piece.offset, piece.length));
    piece.step.copy_(find("step." + p.name, p, true).reshape({}));
  }
}

int64_t ShardedAdamW::state_bytes() const {
  int64_t n = 0;
  for (const Piece& p : pieces_) n += 2 * p.length * p.exp_avg.element_size();
  return n;
}

}  // namespace sluice::dist
