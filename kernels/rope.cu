#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "elementwise.h"

namespace sluice::kernels {
namespace {

// One thread per rotary pair (row, j): row = (b, t, h), j < D/2. Math in fp32.
template <typename scalar_t>
__global__ void rope_kernel(const scalar_t* __restrict__ x, const float* __restrict__ cos,
                            const float* __restrict__ sin, scalar_t* __restrict__ out, int64_t n_pairs, int64_t T,
                            int64_t H, int64_t half, float sign) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_pairs) return;
  const int64_t j = i % half;
  const int64_t row = i / half;              // (b * T + t) * H + h
  const int64_t t = (row / H) % T;
  const int64_t base = row * 2 * half;
  const float c = cos[t * half + j];
  const float s = sign * sin[t * half + j];
  const float x1 = static_cast<float>(x[base + j]);
  const float x2 = static_cast<float>(x[base + j + half]);
  out[base + j] = static_cast<scalar_t>(x1 * c - x2 * s);
  out[base + j + half] = static_cast<scalar_t>(x2 * c + x1 * s);
}

}  // namespace

void rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out, bool inverse) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 4 && x.is_contiguous(), "rope: x must be a contiguous CUDA [B, T, H, D]");
  TORCH_CHECK(out.is_contiguous() && out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type(),
              "rope: out must match x");
  const int64_t T = x.size(1), H = x.size(2), D = x.size(3);
  TORCH_CHECK(D % 2 == 0, "rope: head dim must be even");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && cos.is_contiguous() && cos.size(0) == T && cos.size(1) == D / 2,
              "rope: cos must be fp32 [T, D/2]");
  TORCH_CHECK(sin.sizes() == cos.sizes() && sin.scalar_type() == at::kFloat && sin.is_contiguous(),
              "rope: sin must match cos");
  const int64_t n_pairs = x.numel() / 2;
  if (n_pairs == 0) return;
  const int threads = 256;
  const auto blocks = static_cast<unsigned>((n_pairs + threads - 1) / threads);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sluice_rope", [&] {
    rope_kernel<scalar_t><<<blocks, threads, 0, stream>>>(x.data_ptr<scalar_t>(), cos.data_ptr<float>(),
                                                           sin.data_ptr<float>(), out.data_ptr<scalar_t>(), n_pairs,
                                                           T, H, D / 2, inverse ? -1.0f : 1.0f);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sluice::kernels
