// The fused RMSNorm kernels (kernels/rms_norm.cuh) run on the CPU through cuda_sim
// (kernels/sim/cuda_sim.h): the launch sequence of kernels/rms_norm.cu (plan, grids, block size,
// dynamic shared memory, the dw reduction) with sim::launch in place of <<<>>>, on CPU buffers.
// For tests without a GPU (tests/test_rms_norm_sim.cpp). ATen-free: raw contiguous buffers.
#pragma once
#include <cstdint>

#include "sim/launch.h"

namespace sluice::kernels::rms_norm_sim {

enum class Dtype { Float, Half, BFloat16 };

struct Config {
  sim::Options options;
  // The backward's grid cap (the GPU launcher uses the blocks resident on the device); small
  // here so that blocks loop over several rows and several blocks' dw partials are added.
  int max_bwd_blocks = 3;
};

// Element type `t` for x, residual, y, residual_out; `w` (t or Float) for weight. All buffers
// contiguous: [rows, d], weight [d], rstd fp32 [rows]. residual == nullptr: no residual add
// (residual_out unused).
void forward(Dtype t, Dtype w, const void* x, const void* residual, const void* weight, void* y, void* residual_out,
             float* rstd, int64_t rows, int64_t d, float eps, const Config& config);

// ds [rows, d] of `t`, dw [d] of `w`; d_residual_out may be nullptr. The fp32 workspace is
// allocated here.
void backward(Dtype t, Dtype w, const void* dy, const void* s, const void* weight, const float* rstd,
              const void* d_residual_out, void* ds, void* dw, int64_t rows, int64_t d, const Config& config);

}  // namespace sluice::kernels::rms_norm_sim
