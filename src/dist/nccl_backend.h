// ProcessGroupNCCL, in its own translation unit: only it needs nccl.h and the CUDA headers.
#pragma once
#include <c10/core/Device.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>

namespace sluice::dist {

// NCCL for `device`'s collectives; the watchdog aborts a collective (and the process) that
// does not finish within `timeout`. Throws InputError when this build has no NCCL.
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    const c10::Device& device, std::chrono::milliseconds timeout);

}  // namespace sluice::dist
