// The per-pair arithmetic of kernels/coca.cu, shared by the CUDA kernels and a CPU test
// (tests/test_attention_variants.cpp, CocaPairMath) that checks it against the ATen reference
// (src/model/coca.h) without a GPU. One rotary pair: x1 = x[j], x2 = x[j + D/2], rotation
// (c, s) of the row's position; fp32 throughout.
#pragma once

#ifdef __CUDACC__
#define SLUICE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SLUICE_HOST_DEVICE inline
#endif

namespace sluice::coca_pair {

struct Out {
  float a, b;  // the pair's two outputs, at j and j + D/2
};

// Q_eff. strict: m = q1² + q2², (m·c, m·s). slack: q ⊙ RoPE(q) = (q1·(q1·c - q2·s), q2·(q2·c + q1·s)).
SLUICE_HOST_DEVICE Out query_forward(float q1, float q2, float c, float s, bool strict) {
  if (strict) {
    const float m = q1 * q1 + q2 * q2;
    return {m * c, m * s};
  }
  return {q1 * (q1 * c - q2 * s), q2 * (q2 * c + q1 * s)};
}

// dq from dQ_eff = (g1, g2). strict: dm = g1·c + g2·s, dq = 2·q·dm. slack: the Jacobian of
// (q1²c - q1q2s, q2²c + q1q2s): dq1 = g1(2q1c - q2s) + g2·q2s, dq2 = g2(2q2c + q1s) - g1·q1s.
SLUICE_HOST_DEVICE Out query_backward(float g1, float g2, float q1, float q2, float c, float s, bool strict) {
  if (strict) {
    const float dm = 2.0f * (g1 * c + g2 * s);
    return {q1 * dm, q2 * dm};
  }
  return {g1 * (2.0f * q1 * c - q2 * s) + g2 * q2 * s, g2 * (2.0f * q2 * c + q1 * s) - g1 * q1 * s};
}

// K_eff from the k_proj output x: m = ReLU((x1 + x2) / 2). strict: (m·c, m·s); slack: RoPE of
// (m, m) = (m·(c - s), m·(c + s)).
SLUICE_HOST_DEVICE Out key_forward(float x1, float x2, float c, float s, bool strict) {
  const float pre = (x1 + x2) * 0.5f;
  const float m = pre > 0.0f ? pre : 0.0f;
  return strict ? Out{m * c, m * s} : Out{m * (c - s), m * (c + s)};
}

// dx1 = dx2 = dm / 2 where the ReLU passed (pre-activation > 0, as ATen's relu backward), else
// 0; dm = g1·c + g2·s (strict) or g1·(c - s) + g2·(c + s) (slack).
SLUICE_HOST_DEVICE Out key_backward(float g1, float g2, float x1, float x2, float c, float s, bool strict) {
  const float pre = (x1 + x2) * 0.5f;
  const float dm = strict ? g1 * c + g2 * s : g1 * (c - s) + g2 * (c + s);
  const float d = pre > 0.0f ? 0.5f * dm : 0.0f;
  return {d, d};
}

}  // namespace sluice::coca_pair
