// One instantiation per file so the build parallelises (see launch.h): backward tile 1 of
// bwd_tiles.h's head-dim-128 list (for the A100's 163 KB of shared memory).
#include "flash/launch.cuh"

namespace sluice::flash {

template <>
void run_flash_bwd<128, __nv_bfloat16, 1>(const BwdParams& params, cudaStream_t stream) {
  launch_bwd<BwdTraits<128, __nv_bfloat16, 1>>(params, stream);
}

}  // namespace sluice::flash
