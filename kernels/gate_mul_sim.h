// The fused sigmoid gate kernels (kernels/gate_mul.cuh) run on the CPU through cuda_sim
// (kernels/sim/cuda_sim.h): the launch sequence of kernels/gate_mul.cu (plan, grids, block size)
// with sim::launch in place of <<<>>>, on CPU buffers. For tests without a GPU
// (tests/test_gate_mul_sim.cpp). ATen-free: raw contiguous buffers.
#pragma once
#include <cstdint>

#include "sim/launch.h"

namespace sluice::kernels::gate_mul_sim {

enum class Dtype { Float, Half, BFloat16 };

struct Config {
  sim::Options options;
};

// Every buffer of element type `t`, contiguous: y, out, dout, dy [n]; z, dz [n / width]
// (width >= 1 divides n; 1: elementwise gate). Throws std::invalid_argument on a bad shape.
// out[i] = y[i] · sigmoid(z[i / width]).
void forward(Dtype t, const void* y, const void* z, void* out, int64_t n, int64_t width, const Config& config);

// dy[i] = dout[i] · s, dz[g] = Σ_{i / width = g} dout[i] · y[i] · s · (1 - s), s = sigmoid(z[i / width]).
void backward(Dtype t, const void* dout, const void* y, const void* z, void* dy, void* dz, int64_t n, int64_t width,
              const Config& config);

}  // namespace sluice::kernels::gate_mul_sim
