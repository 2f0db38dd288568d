// The G1 output gate of gated attention (Qiu et al. 2025) as the flash kernels apply it:
// Y = O ⊙ σ(g), g the logits FwdParams::gate points at, element (b, t, h, d) at
// b·gate_batch_stride + t·gate_row_stride + h·gate_head_stride + d (headwise: no d).
// Scalar loads: the gate is read once per output element, next to a full attention row.
#pragma once
#include <cmath>

#include "flash/mma.cuh"
#include "flash/params.h"
#include "flash/utils.cuh"

namespace sluice::flash {

template <typename E>
__device__ __forceinline__ float gate_logit(const FwdParams& p, int b, int h, int t, int d) {
  const int64_t i = b * p.gate_batch_stride + t * p.gate_row_stride + h * p.gate_head_stride +
                    (p.gate_headwise ? 0 : d);
  return to_float(static_cast<const E*>(p.gate)[i]);
}

// σ(x) = 1 / (1 + 2^(-x·log2 e)) in fp32 with two MUFU operations and no branch:
// ex2.approx and rcp.approx (relative errors ~2^-22 and 1 ulp, far below the bf16/fp16
// rounding that follows). x < -88 gives 2^(>127) = inf and 1/inf = 0 exactly; x > 88 gives
// 1/(1 + 0) = 1. IEEE division or __frcp_rn would add a slow-path branch per element, which
// in the unrolled epilogue cost more than the gate's memory traffic (SASS: BSSY/BSYNC pairs).
__device__ __forceinline__ float fast_rcp(float x) {
#if defined(SLUICE_CUDA_SIM)
  return 1.f / x;
#else
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#endif
}
__device__ __forceinline__ float sigmoid(float x) { return fast_rcp(1.f + fast_exp2(x * -1.4426950408889634f)); }

// 1 - σ(x) = σ(-x) without the cancellation of 1 - σ(x) when σ(x) is close to 1.
__device__ __forceinline__ float sigmoid_complement(float x) {
  return fast_rcp(1.f + fast_exp2(x * 1.4426950408889634f));
}

template <typename E>
__device__ __forceinline__ float gate_sigmoid(const FwdParams& p, int b, int h, int t, int d) {
  return sigmoid(gate_logit<E>(p, b, h, t, d));
}

}  // namespace sluice::flash
