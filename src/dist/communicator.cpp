#include "dist/communicator.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <cstdlib>

#include "dist/nccl_backend.h"
#include "sluice/errors.h"

namespace sluice::dist {

namespace {

double seconds(std::chrono::milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; }

std::string error_text(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

// Gloo needs an address the other ranks can reach: the interface named by GLOO_SOCKET_IFNAME
// (as in PyTorch), loopback for a one-node job on 127.0.0.1, else this host's name.
std::shared_ptr<::gloo::transport::Device> gloo_device(const LaunchEnv& env) {
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost")
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

c10::intrusive_ptr<c10d::Store> connect_store(const LaunchEnv& env, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(env.master_port);
  o.isServer = env.rank == 0 && !env.agent_store;
  o.numWorkers = env.agent_store ? std::nullopt : std::optional<std::size_t>(env.world_size);
  o.waitWorkers = !env.agent_store;
  o.timeout = timeout;
  const std::string where = fmt::format("{}:{}", env.master_addr, env.master_port);
  try {
    auto store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
    return c10::make_intrusive<c10d::PrefixStore>("sluice", store);
  } catch (const std::exception& e) {
    const std::string role = o.isServer ? fmt::format("rank 0 hosts the rendezvous at {} and waited {:.0f}s for the "
                                                      "other {} rank(s) to join",
                                                      where, seconds(timeout), env.world_size - 1)
                                        : fmt::format("rank {} waited {:.0f}s to reach the rendezvous at {}",
                                                      env.rank, seconds(timeout), where);
    throw InputError(fmt::format("rendezvous did not complete: {} ({}); check MASTER_ADDR/MASTER_PORT and that all "
                                 "{} ranks were started: {}",
                                 role, env.describe(), env.world_size, error_text(e)));
  }
}

}  // namespace

Communicator::Communicator(const LaunchEnv& env, const std::string& backend, const c10::Device& device,
                           std::chrono::milliseconds timeout)
    : env_(env), backend_(backend), device_(device), timeout_(timeout), rank_(env.rank) {
  for (int64_t r = 0; r < env.world_size; ++r) ranks_.push_back(r);
  store_ = connect_store(env, timeout);
  const int rank = static_cast<int>(env.rank), size = static_cast<int>(env.world_size);
  // With torchrun's agent store nobody waited for the workers yet: every rank checks in.
  if (env.agent_store) {
    store_->set(fmt::format("joined/{}", rank), std::vector<uint8_t>{1});
    std::vector<std::string> keys;
    for (int r = 0; r < size; ++r) keys.push_back(fmt::format("joined/{}", r));
    try {
      store_->wait(keys, timeout);
    } catch (const std::exception& e) {
      throw InputError(fmt::format("rendezvous did not complete: rank {} waited {:.0f}s for all {} ranks to join "
                                   "torchrun's store at {}:{}: {}",
                                   rank, seconds(timeout), size, env.master_addr, env.master_port, error_text(e)));
    }
  }
  create_group(timeout);
}

Communicator::Communicator(const Communicator& parent, const std::vector<int64_t>& ranks, const std::string& name)
    : env_(parent.env_),
      backend_(parent.backend_),
      device_(parent.device_),
      timeout_(parent.timeout_),
      name_(name),
      ranks_(ranks) {
  const auto it = std::find(ranks.begin(), ranks.end(), env_.rank);
  if (it == ranks.end()) throw std::logic_error(fmt::format("rank {} is not a member of group {}", env_.rank, name));
  rank_ = it - ranks.begin();
  store_ = c10::make_intrusive<c10d::PrefixStore>("group/" + name, parent.store_);
  create_group(timeout_);
}

std::shared_ptr<Communicator> Communicator::subgroup(const std::vector<int64_t>& ranks, const std::string& name) const {
  return std::shared_ptr<Communicator>(new Communicator(*this, ranks, name));
}

void Communicator::create_group(std::chrono::milliseconds timeout) {
  const int rank = static_cast<int>(rank_), size = static_cast<int>(ranks_.size());
  group_ = c10::make_intrusive<c10d::ProcessGroup>(store_, rank, size);
  try {
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    opts->devices.push_back(gloo_device(env_));
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", store_), rank, size, opts);
    group_->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
    group_->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    if (backend_ == "nccl") {
      auto nccl = make_nccl_backend(c10::make_intrusive<c10d::PrefixStore>("nccl", store_), rank, size, device_, timeout);
      group_->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
      group_->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
    } else if (device_.is_cuda()) {
      group_->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::GLOO, gloo);
    }
  } catch (const InputError&) {
    throw;
  } catch (const std::exception& e) {
    throw DistributedError(fmt::format("rank {}: creating the {} process group{} failed: {}", env_.rank, backend_,
                                       name_.empty() ? "" : " " + name_, error_text(e)));
  }
}

void Communicator::guarded(const std::string& what, const std::function<void()>& op) const {
  try {
    op();
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    throw DistributedError(fmt::format("rank {}: {} failed: {} (waits are bounded by parallel.timeout_s = {:.0f}s; "
                                       "another rank has probably died or stalled: see its log in RUN_DIR/logs/)",
                                       env_.rank, what, error_text(e), seconds(timeout_)));
  }
}

void Communicator::wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) const {
  guarded(what, [&] {
    if (!work->wait(timeout_)) throw std::runtime_error(fmt::format("no result after {:.0f}s", seconds(timeout_)));
  });
}

void Communicator::all_reduce(at::Tensor& t, const std::string& what, c10d::ReduceOp op) const {
  std::vector<at::Tensor> ts{t};
  c10d::AllreduceOptions o;
  o.reduceOp = op;
  c10::intrusive_ptr<c10d::Work> work;
  guarded(what, [&] { work = group_->allreduce(ts, o); });
  wait(work, what);
}

void Communicator::broadcast(std::vector<at::Tensor>& tensors, const std::string& what) const {
  for (auto& t : tensors) {
    std::vector<at::Tensor> one{t};
    c10::intrusive_ptr<c10d::Work> work;
    guarded(what, [&] { work = group_->broadcast(one); });
    wait(work, what);
  }
}

void Communicator::barrier(const std::string& what) const {
  at::Tensor t = at::ones({1}, at::kInt);
  all_reduce(t, "waiting for " + what);
}

at::Tensor Communicator::all_to_all(const at::Tensor& input, const std::vector<int64_t>& send,
                                    const std::vector<int64_t>& recv, const std::string& what) const {
  int64_t rows = 0;
  for (const int64_t n : recv) rows += n;
  std::vector<int64_t> shape = input.sizes().vec();
  shape[0] = rows;
  at::Tensor out = at::empty(shape, input.options());
  at::Tensor in = input.contiguous();
  std::vector<int64_t> out_splits = recv, in_splits = send;
  c10::intrusive_ptr<c10d::Work> work;
  guarded(what, [&] { work = group_->alltoall_base(out, in, out_splits, in_splits); });
  wait(work, what);
  return out;
}

at::Tensor Communicator::all_gather(const at::Tensor& t, const std::string& what) const {
  std::vector<std::vector<at::Tensor>> out(1);
  for (int64_t r = 0; r < world_size(); ++r) out[0].push_back(at::empty_like(t, at::MemoryFormat::Contiguous));
  std::vector<at::Tensor> in{t.contiguous()};
  c10::intrusive_ptr<c10d::Work> work;
  guarded(what, [&] { work = group_->allgather(out, in); });
  wait(work, what);
  return at::cat(out[0], 0);
}

std::vector<std::string> Communicator::all_gather_strings(const std::string& what, const std::string& value) {
  const std::string prefix = fmt::format("strings/{}/", rounds_++);
  std::vector<std::string> out;
  guarded("exchanging " + what, [&] {
    store_->set(prefix + std::to_string(rank_), std::vector<uint8_t>(value.begin(), value.end()));
    std::vector<std::string> keys;
    for (int64_t r = 0; r < world_size(); ++r) keys.push_back(prefix + std::to_string(r));
    store_->wait(keys, timeout_);
    for (const auto& k : keys) {
      const std::vector<uint8_t> v = store_->get(k);
      out.emplace_back(v.begin(), v.end());
    }
  });
  return out;
}

}  // namespace sluice::dist
