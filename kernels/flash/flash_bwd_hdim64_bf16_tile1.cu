// One instantiation per file so the build parallelises (see launch.h): backward tile 1 of
// bwd_tiles.h's head-dim-64 list (for 99 KB of shared memory: sm_86/sm_89).
#include "flash/launch.cuh"

namespace sluice::flash {

template <>
void run_flash_bwd<64, __nv_bfloat16, 1>(const BwdParams& params, cudaStream_t stream) {
  launch_bwd<BwdTraits<64, __nv_bfloat16, 1>>(params, stream);
}

}  // namespace sluice::flash
