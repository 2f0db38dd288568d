// One instantiation per file so the build parallelises (see launch.h): backward tile 2 of
// bwd_tiles.h's head-dim-128 list (for 99 KB: sm_86/sm_89).
#include "flash/launch.cuh"

namespace sluice::flash {

template <>
void run_flash_bwd<128, __half, 2>(const BwdParams& params, cudaStream_t stream) {
  launch_bwd<BwdTraits<128, __half, 2>>(params, stream);
}

}  // namespace sluice::flash
