// One instantiation per file so the build parallelises (see launch.h): backward tile 0 of
// bwd_tiles.h's head-dim-128 list (the largest: H100/H200).
#include "flash/launch.cuh"

namespace sluice::flash {

template <>
void run_flash_bwd<128, __half, 0>(const BwdParams& params, cudaStream_t stream) {
  launch_bwd<BwdTraits<128, __half, 0>>(params, stream);
}

}  // namespace sluice::flash
