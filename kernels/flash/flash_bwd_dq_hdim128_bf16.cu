// One instantiation per file so the build parallelises (see launch.h): the deterministic dQ
// kernel (flash_bwd_dq_kernel.cuh).
#include "flash/launch.cuh"

namespace sluice::flash {

template <>
void run_flash_bwd_dq<128, __nv_bfloat16>(const BwdParams& params, cudaStream_t stream) {
  launch_bwd_dq<BwdDqTraits<128, __nv_bfloat16>>(params, stream);
}

}  // namespace sluice::flash
