// The G1 output gate of gated attention (Qiu et al. 2025) as the flash kernels apply it:
// Y = O ⊙ σ(g), g the logits FwdParams::gate points at, element (b, t, h, d) at
// b·gate_batch_stride + t·gate_row_stride + h·gate_head_stride + d (headwise: no d).
// Scalar loads: the gate is read once per output element, next to a full attention row.
#pragma once
#include <cmath>

#include "flash/params.h"
#include "flash/utils.cuh"

namespace sluice::flash {

template <typename E>
__device__ __forceinline__ float gate_logit(const FwdParams& p, int b, int h, int t, int d) {
  const int64_t i = b * p.gate_batch_stride + t * p.gate_row_stride + h * p.gate_head_stride +
                    (p.gate_headwise ? 0 : d);
  return to_float(static_cast<const E*>(p.gate)[i]);
}

// σ(x) in fp32; expf overflows to inf for x < -88, giving exactly 0.
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// 1 - σ(x) = σ(-x) without the cancellation of 1 - σ(x) when σ(x) is close to 1.
__device__ __forceinline__ float sigmoid_complement(float x) { return 1.f / (1.f + expf(x)); }

template <typename E>
__device__ __forceinline__ float gate_sigmoid(const FwdParams& p, int b, int h, int t, int d) {
  return sigmoid(gate_logit<E>(p, b, h, t, d));
}

}  // namespace sluice::flash
