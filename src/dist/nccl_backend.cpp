#include "dist/nccl_backend.h"

#include "sluice/errors.h"

#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace sluice::dist {

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                    const c10::Device& device, std::chrono::milliseconds timeout) {
#ifdef USE_C10D_NCCL
  if (!device.is_cuda()) throw InputError("parallel.backend: nccl needs a CUDA device (train.device)");
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  // The communicator is created at the first collective, on the current device (cuda:LOCAL_RANK).
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
#else
  (void)store, (void)rank, (void)size, (void)device, (void)timeout;
  throw InputError("parallel.backend: this build of sluice has no NCCL (LibTorch without CUDA); use gloo");
#endif
}

}  // namespace sluice::dist
