#include "dist/data_parallel.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/cuda/CUDAFunctions.h>
#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <cstdlib>
#include <map>
#include <sstream>

#include "dist/expert_parallel.h"
#include "dist/sharded_adamw.h"
#include "sluice/errors.h"
#include "sluice/log.h"
#include "train/adamw.h"
#include "train/device.h"

#ifndef SLUICE_GIT_REVISION
#define SLUICE_GIT_REVISION "unknown"
#endif

namespace sluice::dist {

namespace {

// The build and every resolved key, one "key: value" per line.
std::string fingerprint(const Config& cfg) {
  std::string s = "build: sluice " SLUICE_VERSION " (" SLUICE_GIT_REVISION ")\n";
  for (const auto& [key, value] : config_values(cfg)) s += key + ": " + value + "\n";
  return s;
}

std::map<std::string, std::string> parse_fingerprint(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    const size_t colon = line.find(": ");
    if (colon != std::string::npos) out[line.substr(0, colon)] = line.substr(colon + 2);
  }
  return out;
}

// Every rank must run the same resolved config and build; the message lists, per rank,
// each key that differs from rank 0's.
void check_same_config(Communicator& comm, const Config& cfg) {
  const std::vector<std::string> all = comm.all_gather_strings("the resolved configs", fingerprint(cfg));
  const auto reference = parse_fingerprint(all[0]);
  std::string problems;
  for (size_t r = 1; r < all.size(); ++r) {
    const auto mine = parse_fingerprint(all[r]);
    for (const auto& [key, value] : reference) {
      const auto it = mine.find(key);
      const std::string other = it == mine.end() ? "(missing)" : it->second;
      if (other != value) problems += fmt::format("\n  rank {}: {}: {} (rank 0: {})", r, key, other, value);
    }
  }
  if (!problems.empty()) {
    throw InputError("the ranks do not run the same config and build; every rank must be started with the same "
                     "CONFIG, --set overrides and sluice binary:" + problems);
  }
}

// A per-parameter checksum of the raw bits (two int64 sums: plain and position-weighted).
at::Tensor parameter_checksums(CausalLMImpl& model) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> sums;
  for (const auto& p : model.parameters()) {
    const at::Tensor bits = p.detach().contiguous().view(at::kInt).reshape(-1).to(at::kLong);
    const at::Tensor weights = at::arange(bits.numel(), bits.options()).remainder(65521).add(1);
    sums.push_back(at::stack({bits.sum(), (bits * weights).sum()}));
  }
  return at::stack(sums).cpu();
}

class GlobalRoutingCounts : public RoutingCountReducer {
 public:
  explicit GlobalRoutingCounts(Communicator& comm) : comm_(comm) {}
  at::Tensor sum(const at::Tensor& counts) override {
    at::Tensor t = counts.clone();
    comm_.all_reduce(t, "summing MoE routing counts");
    return t;
  }
  int64_t processes() const override { return comm_.world_size(); }

 private:
  Communicator& comm_;
};

}  // namespace

DataParallel::DataParallel(std::shared_ptr<Communicator> comm, const Config& cfg, c10::Device device)
    : comm_(std::move(comm)), cfg_(cfg.parallel), device_(device) {}

DataParallel::~DataParallel() = default;

std::string DataParallel::describe() const {
  return fmt::format("{} ({}), {} ranks{}", comm_->env().describe(), comm_->backend(), world_size(),
                     cfg_.zero == 1 ? ", ZeRO-1" : "");
}

c10::Device DataParallel::device(const c10::Device& resolved) const { return resolved.is_cuda() ? device_ : resolved; }

std::string DataParallel::agree(const std::string& what, const std::string& value) {
  return comm_->all_gather_strings(what, value).at(0);
}

void DataParallel::barrier(const std::string& what) { comm_->barrier(what); }

void DataParallel::sum_(at::Tensor& t) { comm_->all_reduce(t, "summing metrics"); }

bool DataParallel::any(bool flag) {
  at::Tensor t = at::full({1}, flag ? 1 : 0, at::kInt);  // CPU: Gloo, no device sync
  comm_->all_reduce(t, "agreeing on the stop flag", c10d::ReduceOp::MAX);
  return t.item<int>() != 0;
}

std::shared_ptr<c10d::Reducer> DataParallel::make_reducer(const NamedTensors& params,
                                                          const std::shared_ptr<Communicator>& comm,
                                                          std::vector<std::vector<size_t>>& buckets) const {
  std::vector<at::Tensor> tensors;
  for (const auto& [name, t] : params) tensors.push_back(t);
  const auto cap = static_cast<size_t>(cfg_.bucket_mb * 1024 * 1024);
  // Buckets in reverse parameter order: the order backward produces gradients in, so each
  // bucket fills and is sent while backward works on earlier layers. As in PyTorch's DDP the
  // first of them (the last layers) holds at most 1 MiB, so communication starts early.
  const size_t first_cap = std::min<size_t>(cap, 1 << 20);
  std::vector<int64_t> backward_order(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) backward_order[i] = static_cast<int64_t>(tensors.size() - 1 - i);
  auto [assigned, limits] = c10d::compute_bucket_assignment_by_size(
      tensors, {first_cap, cap}, std::vector<bool>(tensors.size(), false), backward_order);
  buckets = assigned;
  if (std::getenv("SLUICE_DEBUG_BUCKETS") != nullptr) {
    for (const auto& b : buckets) log::info(fmt::format("bucket: parameters {}..{} ({})", b.front(), b.back(), b.size()));
  }
  std::unordered_map<size_t, std::string> names;
  for (size_t i = 0; i < params.size(); ++i) names[i] = params[i].first;
  auto reducer = std::make_shared<c10d::Reducer>(tensors, buckets, comm->group(), std::vector<bool>(tensors.size(), false),
                                                 static_cast<int64_t>(cap), /*find_unused_parameters=*/false,
                                                 /*gradient_as_bucket_view=*/false, names,
                                                 /*first_bucket_bytes_cap=*/static_cast<int64_t>(first_cap),
                                                 /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false,
                                                 std::vector<int64_t>(limits.begin(), limits.end()));
  log::info(fmt::format("gradients averaged over {} rank(s) in {} bucket(s) of up to {:.3g} MiB (the first 1 MiB at "
                        "most)",
                        comm->world_size(), buckets.size(), cfg_.bucket_mb));
  return reducer;
}

std::unique_ptr<Optimizer> DataParallel::make_optimizer(CausalLMImpl& model,
                                                        const std::vector<std::pair<std::string, at::Tensor>>& params,
                                                        const Config& cfg) {
  // Rank 0's initial weights (and buffers) everywhere, as DDP's constructor does.
  {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> state;
    for (const auto& p : model.parameters()) state.push_back(p.detach());
    for (const auto& b : model.buffers()) state.push_back(b);
    comm_->broadcast(state, "broadcasting rank 0's initial parameters");
  }
  std::vector<std::vector<size_t>> buckets;
  reducer_ = make_reducer(params, comm_, buckets);
  if (cfg.parallel.zero == 1) {
    auto sharded = std::make_unique<ShardedAdamW>(params, buckets, cfg.optim, *comm_);
    reducer_->register_comm_hook(sharded->make_comm_hook());
    return sharded;
  }
  return std::make_unique<AdamW>(params, cfg.optim);
}

void DataParallel::before_backward(const at::Tensor& loss, bool last_micro_batch) {
  // Earlier micro-batches only accumulate into .grad (DDP's no_sync); the reducer's hooks
  // act during the backward that follows prepare_for_backward.
  if (last_micro_batch) comm_->guarded("preparing the gradient reduction", [&] { reducer_->prepare_for_backward({loss}); });
}

void DataParallel::check_parameters_agree(CausalLMImpl& model, int64_t step) {
  const char* perturb = std::getenv("SLUICE_TEST_PERTURB_RANK");  // test hook: make one rank diverge
  if (perturb != nullptr && std::atoll(perturb) == rank()) {
    at::NoGradGuard no_grad;
    model.parameters().front().add_(1e-3);
  }
  const at::Tensor mine = parameter_checksums(model);
  at::Tensor all = at::zeros({world_size(), mine.size(0), 2}, at::kLong);
  all[rank()].copy_(mine);
  comm_->all_reduce(all, "comparing parameter checksums");
  std::vector<std::string> names;
  for (const auto& p : model.named_parameters()) names.push_back(p.key());
  std::string problems;
  for (int64_t r = 1; r < world_size(); ++r) {
    at::Tensor expected = all[0].clone();  // per parameter: the copy of the rank it must equal
    for (size_t i = 0; i < names.size(); ++i) {
      const int64_t ref = reference_rank(names[i], r);
      if (ref != 0) expected[static_cast<int64_t>(i)].copy_(all[ref][static_cast<int64_t>(i)]);
    }
    const at::Tensor differs = all[r].ne(expected).any(1);
    const int64_t n = differs.sum().item<int64_t>();
    if (n == 0) continue;
    const int64_t first = differs.nonzero()[0][0].item<int64_t>();
    problems += fmt::format("\n  rank {}: {} parameter(s) differ, first {}", r, n, names[static_cast<size_t>(first)]);
  }
  if (!problems.empty()) {
    throw std::runtime_error(fmt::format("parallel.check_every: after step {} the ranks' parameters are not bitwise "
                                         "those of rank 0 (or, for experts, of the first rank holding them):{}",
                                         step, problems));
  }
}

std::shared_ptr<RoutingCountReducer> DataParallel::routing_count_reducer() {
  return std::make_shared<GlobalRoutingCounts>(*comm_);
}

std::shared_ptr<Parallel> connect(const LoadedConfig& loaded) { return connect(loaded, read_launch_env()); }

std::shared_ptr<Parallel> connect(const LoadedConfig& loaded, const LaunchEnv& env, bool expert_parallel_path) {
  const Config& cfg = loaded.config;
  if (cfg.parallel.data_parallel > 0 && cfg.parallel.data_parallel != env.world_size) {
    throw InputError(fmt::format(
        "parallel.data_parallel: this config expects {} ranks, but {}; start it with `sluice launch --nproc {} -- "
        "train ...`, torchrun or srun with that many tasks, or set parallel.data_parallel: 0",
        cfg.parallel.data_parallel,
        env.launched() ? fmt::format("the launcher started {} (WORLD_SIZE/SLURM_NTASKS)", env.world_size)
                       : std::string("no launcher started this process (1 rank)"),
        cfg.parallel.data_parallel));
  }
  const int64_t ep = cfg.parallel.expert_parallel;
  if (ep > 1 && env.world_size % ep != 0) {
    throw InputError(fmt::format("parallel.expert_parallel: {} ranks per expert-parallel group, but {}; the world "
                                 "size must be a multiple of {}",
                                 ep,
                                 env.launched() ? fmt::format("the launcher started {} (WORLD_SIZE/SLURM_NTASKS)",
                                                              env.world_size)
                                                : std::string("no launcher started this process (1 rank)"),
                                 ep));
  }
  if (!env.launched()) return nullptr;
  c10::Device device = resolve_device(cfg.train.device);
  if (device.is_cuda()) {
    const int64_t n = c10::cuda::device_count();
    if (env.local_rank >= n) {
      throw InputError(fmt::format("rank {}: LOCAL_RANK {} but this node has {} CUDA device(s); start at most {} ranks "
                                   "per node",
                                   env.rank, env.local_rank, n, n));
    }
    device = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
    c10::cuda::set_device(device.index());
  }
  std::string backend = cfg.parallel.backend;
  if (backend == "auto") backend = device.is_cuda() ? "nccl" : "gloo";
  if (backend == "nccl" && !device.is_cuda()) {
    throw InputError("parallel.backend: nccl needs CUDA devices, but train.device resolved to cpu; use gloo or auto");
  }
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(cfg.parallel.timeout_s * 1000));
  auto comm = std::make_shared<Communicator>(env, backend, device, timeout);
  check_same_config(*comm, cfg);
  if (ep > 1 || (expert_parallel_path && cfg.model.is_moe()))
    return std::make_shared<ExpertParallel>(std::move(comm), cfg, device);
  return std::make_shared<DataParallel>(std::move(comm), cfg, device);
}

}  // namespace sluice::dist
