// One instantiation per file so the build parallelises (see launch.h).
#include "flash/launch.cuh"

namespace sluice::flash {

template <>
void run_flash_fwd<128, __nv_bfloat16>(const FwdParams& params, cudaStream_t stream) {
  launch_fwd<FwdTraits<128, __nv_bfloat16>>(params, stream);
}

}  // namespace sluice::flash
