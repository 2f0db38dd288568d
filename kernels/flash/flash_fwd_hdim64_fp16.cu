// One instantiation per file so the build parallelises (see launch.h).
#include "flash/launch.cuh"

namespace sluice::flash {

template <>
void run_flash_fwd<64, __half>(const FwdParams& params, cudaStream_t stream) {
  launch_fwd<FwdTraits<64, __half>>(params, stream);
}

}  // namespace sluice::flash
