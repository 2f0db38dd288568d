// The flash kernels run on the CPU through cuda_sim (kernels/sim/cuda_sim.h): the launch
// sequence of launch.cuh (which kernels, grids, block sizes, shared memory, block order) with
// sim::launch in place of <<<>>>. For tests on machines without a GPU; params as the host API
// (flash_api.cu) fills them, pointing at CPU memory. Slow: thousands of times a GPU's time.
#pragma once
#include "flash/params.h"
#include "sim/launch.h"

namespace sluice::flash::sim_run {

struct Config {
  int head_dim = 64;  // 64 or 128
  bool bf16 = true;   // else fp16
  int bwd_tile = 0;   // index into bwd_tiles.h's tiles for the head dim
  // > 0: the sectioned block order (tile_order.h) for a device keeping this many blocks in
  // flight (small, so that small shapes get several sections); 0: the plain order.
  int sectioned_resident_blocks = 0;
  sim::Options options;
};

// launch_fwd: o and lse written.
void forward(const FwdParams& p, const Config& c);
// launch_bwd, then launch_bwd_dq if p.deterministic_dq: dq, dk, dv (and dgate) written;
// dq_accum must be zeroed unless deterministic.
void backward(const BwdParams& p, const Config& c);

}  // namespace sluice::flash::sim_run
