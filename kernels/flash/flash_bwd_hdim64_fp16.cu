// One instantiation per file so the build parallelises (see launch.h).
#include "flash/launch.cuh"

namespace sluice::flash {

template <>
void run_flash_bwd<64, __half>(const BwdParams& params, cudaStream_t stream) {
  launch_bwd<BwdTraits<64, __half>>(params, stream);
}

}  // namespace sluice::flash
