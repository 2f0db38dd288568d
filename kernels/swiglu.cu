#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "elementwise.h"

namespace sluice::kernels {
namespace {

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + __expf(-x)); }

template <typename scalar_t>
__global__ void swiglu_fwd_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ u,
                                  scalar_t* __restrict__ out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float gv = static_cast<float>(g[i]);
  out[i] = static_cast<scalar_t>(gv * sigmoidf(gv) * static_cast<float>(u[i]));
}

template <typename scalar_t>
__global__ void swiglu_bwd_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ g,
                                  const scalar_t* __restrict__ u, scalar_t* __restrict__ dg,
                                  scalar_t* __restrict__ du, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float gv = static_cast<float>(g[i]);
  const float uv = static_cast<float>(u[i]);
  const float d = static_cast<float>(dy[i]);
  const float s = sigmoidf(gv);
  dg[i] = static_cast<scalar_t>(d * uv * s * (1.0f + gv * (1.0f - s)));
  du[i] = static_cast<scalar_t>(d * gv * s);
}

void check_same(const at::Tensor& a, const at::Tensor& ref, const char* what) {
  TORCH_CHECK(a.is_cuda() && a.is_contiguous() && a.sizes() == ref.sizes() && a.scalar_type() == ref.scalar_type(),
              "swiglu: ", what, " must be a contiguous CUDA tensor shaped and typed like gate");
}

constexpr int kThreads = 256;
unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

void swiglu_forward(const at::Tensor& gate, const at::Tensor& up, at::Tensor& out) {
  check_same(gate, gate, "gate");
  check_same(up, gate, "up");
  check_same(out, gate, "out");
  const int64_t n = gate.numel();
  if (n == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gate.scalar_type(), "sluice_swiglu_fwd", [&] {
    swiglu_fwd_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        gate.data_ptr<scalar_t>(), up.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void swiglu_backward(const at::Tensor& dy, const at::Tensor& gate, const at::Tensor& up, at::Tensor& d_gate,
                     at::Tensor& d_up) {
  check_same(dy, gate, "dy");
  check_same(up, gate, "up");
  check_same(d_gate, gate, "d_gate");
  check_same(d_up, gate, "d_up");
  const int64_t n = gate.numel();
  if (n == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gate.scalar_type(), "sluice_swiglu_bwd", [&] {
    swiglu_bwd_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
        dy.data_ptr<scalar_t>(), gate.data_ptr<scalar_t>(), up.data_ptr<scalar_t>(), d_gate.data_ptr<scalar_t>(),
        d_up.data_ptr<scalar_t>(), n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sluice::kernels
