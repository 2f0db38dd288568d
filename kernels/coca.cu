// CoCA's Q_eff and K_eff (src/model/coca.h) in one pass each, forward and backward. The ATen
// reference (coca_query_reference, coca_key_reference) takes five to seven kernels per tensor
// (narrow, square, add, cat with zeros, RoPE) plus their backward; here each rotary pair (j,
// j + D/2) of a row is read once and written once. Math in fp32, one rounding at the store.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "elementwise.h"

namespace sluice::kernels {
namespace {

// One rotary pair of one row: x1 = x[j], x2 = x[j + D/2], rotation (c, s) of the row's position.
struct Pair {
  int64_t lo, hi;  // element offsets of x[j] and x[j + D/2]
  float c, s;
};

__device__ __forceinline__ Pair pair_at(int64_t i, const float* cos, const float* sin, int64_t T, int64_t H,
                                        int64_t half) {
  const int64_t j = i % half;
  const int64_t row = i / half;  // (b * T + t) * H + h
  const int64_t t = (row / H) % T;
  const int64_t lo = row * 2 * half + j;
  return {lo, lo + half, cos[t * half + j], sin[t * half + j]};
}

// Q_eff. strict: a = q1² + q2², (a·c, a·s). slack: q ⊙ RoPE(q):
// (q1·(q1·c - q2·s), q2·(q2·c + q1·s)).
template <typename scalar_t, bool kStrict>
__global__ void coca_query_fwd_kernel(const scalar_t* __restrict__ q, const float* __restrict__ cos,
                                      const float* __restrict__ sin, scalar_t* __restrict__ out, int64_t n_pairs,
                                      int64_t T, int64_t H, int64_t half) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_pairs) return;
  const Pair p = pair_at(i, cos, sin, T, H, half);
  const float q1 = static_cast<float>(q[p.lo]), q2 = static_cast<float>(q[p.hi]);
  if (kStrict) {
    const float a = q1 * q1 + q2 * q2;
    out[p.lo] = static_cast<scalar_t>(a * p.c);
    out[p.hi] = static_cast<scalar_t>(a * p.s);
  } else {
    out[p.lo] = static_cast<scalar_t>(q1 * (q1 * p.c - q2 * p.s));
    out[p.hi] = static_cast<scalar_t>(q2 * (q2 * p.c + q1 * p.s));
  }
}

// dq from dQ_eff = (g1, g2). strict: da = g1·c + g2·s, dq = 2·q·da. slack: the Jacobian of
// (q1²c - q1q2s, q2²c + q1q2s): dq1 = g1(2q1c - q2s) + g2·q2s, dq2 = -g1·q1s + g2(2q2c + q1s).
template <typename scalar_t, bool kStrict>
__global__ void coca_query_bwd_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ q,
                                      const float* __restrict__ cos, const float* __restrict__ sin,
                                      scalar_t* __restrict__ dq, int64_t n_pairs, int64_t T, int64_t H, int64_t half) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_pairs) return;
  const Pair p = pair_at(i, cos, sin, T, H, half);
  const float q1 = static_cast<float>(q[p.lo]), q2 = static_cast<float>(q[p.hi]);
  const float g1 = static_cast<float>(dy[p.lo]), g2 = static_cast<float>(dy[p.hi]);
  if (kStrict) {
    const float da = 2.0f * (g1 * p.c + g2 * p.s);
    dq[p.lo] = static_cast<scalar_t>(q1 * da);
    dq[p.hi] = static_cast<scalar_t>(q2 * da);
  } else {
    dq[p.lo] = static_cast<scalar_t>(g1 * (2.0f * q1 * p.c - q2 * p.s) + g2 * q2 * p.s);
    dq[p.hi] = static_cast<scalar_t>(g2 * (2.0f * q2 * p.c + q1 * p.s) - g1 * q1 * p.s);
  }
}

// K_eff from the k_proj output x: m = ReLU((x1 + x2) / 2). strict: (m·c, m·s); slack: RoPE of
// (m, m) = (m·(c - s), m·(c + s)).
template <typename scalar_t, bool kStrict>
__global__ void coca_key_fwd_kernel(const scalar_t* __restrict__ x, const float* __restrict__ cos,
                                    const float* __restrict__ sin, scalar_t* __restrict__ out, int64_t n_pairs,
                                    int64_t T, int64_t H, int64_t half) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_pairs) return;
  const Pair p = pair_at(i, cos, sin, T, H, half);
  const float m = fmaxf((static_cast<float>(x[p.lo]) + static_cast<float>(x[p.hi])) * 0.5f, 0.0f);
  out[p.lo] = static_cast<scalar_t>(kStrict ? m * p.c : m * (p.c - p.s));
  out[p.hi] = static_cast<scalar_t>(kStrict ? m * p.s : m * (p.c + p.s));
}

// dx1 = dx2 = dm / 2 where the ReLU passed (pre-activation > 0, as ATen's relu backward),
// else 0. dm = g1·c + g2·s (strict) or g1·(c - s) + g2·(c + s) (slack).
template <typename scalar_t, bool kStrict>
__global__ void coca_key_bwd_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                    const float* __restrict__ cos, const float* __restrict__ sin,
                                    scalar_t* __restrict__ dx, int64_t n_pairs, int64_t T, int64_t H, int64_t half) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_pairs) return;
  const Pair p = pair_at(i, cos, sin, T, H, half);
  const float pre = (static_cast<float>(x[p.lo]) + static_cast<float>(x[p.hi])) * 0.5f;
  const float g1 = static_cast<float>(dy[p.lo]), g2 = static_cast<float>(dy[p.hi]);
  const float dm = kStrict ? g1 * p.c + g2 * p.s : g1 * (p.c - p.s) + g2 * (p.c + p.s);
  const scalar_t d = static_cast<scalar_t>(pre > 0.0f ? 0.5f * dm : 0.0f);
  dx[p.lo] = d;
  dx[p.hi] = d;
}

struct Launch {
  unsigned blocks;
  int64_t n_pairs, T, H, half;
};

// Shape checks shared by the four entry points; n_pairs == 0 means nothing to launch.
Launch check_coca(const char* name, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                  const at::Tensor& out, const at::Tensor* dy = nullptr) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 4 && x.is_contiguous(), name, ": input must be a contiguous CUDA [B, T, H, D]");
  TORCH_CHECK(out.is_contiguous() && out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type(), name,
              ": output must match the input");
  if (dy != nullptr)
    TORCH_CHECK(dy->is_contiguous() && dy->sizes() == x.sizes() && dy->scalar_type() == x.scalar_type(), name,
                ": gradient must match the input");
  const int64_t T = x.size(1), H = x.size(2), D = x.size(3);
  TORCH_CHECK(D % 2 == 0, name, ": head dim must be even, got ", D);
  TORCH_CHECK(cos.scalar_type() == at::kFloat && cos.is_contiguous() && cos.dim() == 2 && cos.size(0) == T &&
                  cos.size(1) == D / 2,
              name, ": cos must be fp32 [T, D/2]");
  TORCH_CHECK(sin.sizes() == cos.sizes() && sin.scalar_type() == at::kFloat && sin.is_contiguous(), name,
              ": sin must match cos");
  constexpr int kThreads = 256;
  const int64_t n_pairs = x.numel() / 2;
  return {static_cast<unsigned>((n_pairs + kThreads - 1) / kThreads), n_pairs, T, H, D / 2};
}

}  // namespace

void coca_query_forward(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out,
                        bool strict) {
  const Launch l = check_coca("coca_query_forward", q, cos, sin, out);
  if (l.n_pairs == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "sluice_coca_query_fwd", [&] {
    auto kernel = strict ? coca_query_fwd_kernel<scalar_t, true> : coca_query_fwd_kernel<scalar_t, false>;
    kernel<<<l.blocks, 256, 0, stream>>>(q.data_ptr<scalar_t>(), cos.data_ptr<float>(), sin.data_ptr<float>(),
                                         out.data_ptr<scalar_t>(), l.n_pairs, l.T, l.H, l.half);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void coca_query_backward(const at::Tensor& dy, const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin,
                         at::Tensor& dq, bool strict) {
  const Launch l = check_coca("coca_query_backward", q, cos, sin, dq, &dy);
  if (l.n_pairs == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "sluice_coca_query_bwd", [&] {
    auto kernel = strict ? coca_query_bwd_kernel<scalar_t, true> : coca_query_bwd_kernel<scalar_t, false>;
    kernel<<<l.blocks, 256, 0, stream>>>(dy.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), cos.data_ptr<float>(),
                                         sin.data_ptr<float>(), dq.data_ptr<scalar_t>(), l.n_pairs, l.T, l.H, l.half);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void coca_key_forward(const at::Tensor& t_raw, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out,
                      bool strict) {
  const Launch l = check_coca("coca_key_forward", t_raw, cos, sin, out);
  if (l.n_pairs == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t_raw.scalar_type(), "sluice_coca_key_fwd", [&] {
    auto kernel = strict ? coca_key_fwd_kernel<scalar_t, true> : coca_key_fwd_kernel<scalar_t, false>;
    kernel<<<l.blocks, 256, 0, stream>>>(t_raw.data_ptr<scalar_t>(), cos.data_ptr<float>(), sin.data_ptr<float>(),
                                         out.data_ptr<scalar_t>(), l.n_pairs, l.T, l.H, l.half);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void coca_key_backward(const at::Tensor& dy, const at::Tensor& t_raw, const at::Tensor& cos, const at::Tensor& sin,
                       at::Tensor& dt_raw, bool strict) {
  const Launch l = check_coca("coca_key_backward", t_raw, cos, sin, dt_raw, &dy);
  if (l.n_pairs == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t_raw.scalar_type(), "sluice_coca_key_bwd", [&] {
    auto kernel = strict ? coca_key_bwd_kernel<scalar_t, true> : coca_key_bwd_kernel<scalar_t, false>;
    kernel<<<l.blocks, 256, 0, stream>>>(dy.data_ptr<scalar_t>(), t_raw.data_ptr<scalar_t>(), cos.data_ptr<float>(),
                                         sin.data_ptr<float>(), dt_raw.data_ptr<scalar_t>(), l.n_pairs, l.T, l.H,
                                         l.half);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sluice::kernels
