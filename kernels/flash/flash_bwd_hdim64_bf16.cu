// One instantiation per file so the build parallelises (see launch.h): backward tile 0 of
// bwd_tiles.h's head-dim-64 list (the largest: H100, A100).
#include "flash/launch.cuh"

namespace sluice::flash {

template <>
void run_flash_bwd<64, __nv_bfloat16, 0>(const BwdParams& params, cudaStream_t stream) {
  launch_bwd<BwdTraits<64, __nv_bfloat16, 0>>(params, stream);
}

}  // namespace sluice::flash
