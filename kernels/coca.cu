// CoCA's Q_eff and K_eff (src/model/coca.h) in one pass each, forward and backward. The ATen
// reference (coca_query_reference, coca_key_reference) takes five to seven kernels per tensor
// (narrow, square, add, cat with zeros, RoPE) plus their backward; here each rotary pair (j,
// j + D/2) of a row is read once and written once. Math in fp32 (coca_pair.h, also tested on the
// CPU), one rounding at the store.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "coca_pair.h"
#include "elementwise.h"

namespace sluice::kernels {
namespace {

// One rotary pair of one row: element offsets of x[j] and x[j + D/2], and the rotation of the
// row's position.
struct Pair {
  int64_t lo, hi;
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

// Q_eff (kQuery) or K_eff of one pair per thread; the arithmetic is coca_pair.h's.
template <typename scalar_t, bool kQuery, bool kStrict>
__global__ void coca_fwd_kernel(const scalar_t* __restrict__ x, const float* __restrict__ cos,
                                const float* __restrict__ sin, scalar_t* __restrict__ out, int64_t n_pairs, int64_t T,
                                int64_t H, int64_t half) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_pairs) return;
  const Pair p = pair_at(i, cos, sin, T, H, half);
  const float x1 = static_cast<float>(x[p.lo]), x2 = static_cast<float>(x[p.hi]);
  const coca_pair::Out o = kQuery ? coca_pair::query_forward(x1, x2, p.c, p.s, kStrict)
                                  : coca_pair::key_forward(x1, x2, p.c, p.s, kStrict);
  out[p.lo] = static_cast<scalar_t>(o.a);
  out[p.hi] = static_cast<scalar_t>(o.b);
}

// The gradient into q (kQuery) or t_raw from the gradient dy of the forward's output.
template <typename scalar_t, bool kQuery, bool kStrict>
__global__ void coca_bwd_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                const float* __restrict__ cos, const float* __restrict__ sin,
                                scalar_t* __restrict__ dx, int64_t n_pairs, int64_t T, int64_t H, int64_t half) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_pairs) return;
  const Pair p = pair_at(i, cos, sin, T, H, half);
  const float x1 = static_cast<float>(x[p.lo]), x2 = static_cast<float>(x[p.hi]);
  const float g1 = static_cast<float>(dy[p.lo]), g2 = static_cast<float>(dy[p.hi]);
  const coca_pair::Out d = kQuery ? coca_pair::query_backward(g1, g2, x1, x2, p.c, p.s, kStrict)
                                  : coca_pair::key_backward(g1, g2, x1, x2, p.c, p.s, kStrict);
  dx[p.lo] = static_cast<scalar_t>(d.a);
  dx[p.hi] = static_cast<scalar_t>(d.b);
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

// One launch of the forward or backward kernel for (query or key, strict or slack).
template <bool kBackward>
void launch_coca(const char* name, bool query, bool strict, const at::Tensor& x, const at::Tensor& cos,
                 const at::Tensor& sin, at::Tensor& out, const at::Tensor* dy) {
  const Launch l = check_coca(name, x, cos, sin, out, dy);
  if (l.n_pairs == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sluice_coca", [&] {
    const float* c = cos.data_ptr<float>();
    const float* s = sin.data_ptr<float>();
    if constexpr (kBackward) {
      auto kernel = query ? (strict ? coca_bwd_kernel<scalar_t, true, true> : coca_bwd_kernel<scalar_t, true, false>)
                          : (strict ? coca_bwd_kernel<scalar_t, false, true> : coca_bwd_kernel<scalar_t, false, false>);
      kernel<<<l.blocks, 256, 0, stream>>>(dy->data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), c, s,
                                           out.data_ptr<scalar_t>(), l.n_pairs, l.T, l.H, l.half);
    } else {
      auto kernel = query ? (strict ? coca_fwd_kernel<scalar_t, true, true> : coca_fwd_kernel<scalar_t, true, false>)
                          : (strict ? coca_fwd_kernel<scalar_t, false, true> : coca_fwd_kernel<scalar_t, false, false>);
      kernel<<<l.blocks, 256, 0, stream>>>(x.data_ptr<scalar_t>(), c, s, out.data_ptr<scalar_t>(), l.n_pairs, l.T,
                                           l.H, l.half);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void coca_query_forward(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out,
                        bool strict) {
  launch_coca<false>("coca_query_forward", true, strict, q, cos, sin, out, nullptr);
}

void coca_query_backward(const at::Tensor& dy, const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin,
                         at::Tensor& dq, bool strict) {
  launch_coca<true>("coca_query_backward", true, strict, q, cos, sin, dq, &dy);
}

void coca_key_forward(const at::Tensor& t_raw, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out,
                      bool strict) {
  launch_coca<false>("coca_key_forward", false, strict, t_raw, cos, sin, out, nullptr);
}

void coca_key_backward(const at::Tensor& dy, const at::Tensor& t_raw, const at::Tensor& cos, const at::Tensor& sin,
                       at::Tensor& dt_raw, bool strict) {
  launch_coca<true>("coca_key_backward", false, strict, t_raw, cos, sin, dt_raw, &dy);
}

}  // namespace sluice::kernels
