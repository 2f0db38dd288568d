#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "elementwise.h"
#include "pack.cuh"

namespace sluice::kernels {
namespace {

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + __expf(-x)); }

// kVec elements per thread: 8 (one 16-byte access per tensor) for 2-byte types when n % 8 == 0
// and the bases are 16-byte aligned (swiglu_vec_ok), else 1.
template <typename scalar_t, int kVec>
__global__ void swiglu_fwd_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ u,
                                  scalar_t* __restrict__ out, int64_t n_chunks) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_chunks) return;
  using P = Pack<scalar_t, kVec>;
  const P gp = reinterpret_cast<const P*>(g)[i], up = reinterpret_cast<const P*>(u)[i];
  P o;
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    const float gv = static_cast<float>(gp.v[v]);
    o.v[v] = static_cast<scalar_t>(gv * sigmoidf(gv) * static_cast<float>(up.v[v]));
  }
  store_pack(reinterpret_cast<P*>(out) + i, o);
}

template <typename scalar_t, int kVec>
__global__ void swiglu_bwd_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ g,
                                  const scalar_t* __restrict__ u, scalar_t* __restrict__ dg,
                                  scalar_t* __restrict__ du, int64_t n_chunks) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_chunks) return;
  using P = Pack<scalar_t, kVec>;
  const P gp = reinterpret_cast<const P*>(g)[i], up = reinterpret_cast<const P*>(u)[i],
          dp = reinterpret_cast<const P*>(dy)[i];
  P dgp, dup;
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    const float gv = static_cast<float>(gp.v[v]);
    const float uv = static_cast<float>(up.v[v]);
    const float d = static_cast<float>(dp.v[v]);
    const float s = sigmoidf(gv);
    dgp.v[v] = static_cast<scalar_t>(d * uv * s * (1.0f + gv * (1.0f - s)));
    dup.v[v] = static_cast<scalar_t>(d * gv * s);
  }
  store_pack(reinterpret_cast<P*>(dg) + i, dgp);
  store_pack(reinterpret_cast<P*>(du) + i, dup);
}

bool swiglu_vec_ok(int64_t element_size, int64_t n, std::initializer_list<const void*> ptrs) {
  return element_size == 2 && n % 8 == 0 && aligned16(ptrs);
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
    const scalar_t *g = gate.data_ptr<scalar_t>(), *u = up.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    if constexpr (sizeof(scalar_t) == 2) {
      if (swiglu_vec_ok(sizeof(scalar_t), n, {g, u, o})) {
        swiglu_fwd_kernel<scalar_t, 8><<<blocks_for(n / 8), kThreads, 0, stream>>>(g, u, o, n / 8);
        return;
      }
    }
    swiglu_fwd_kernel<scalar_t, 1><<<blocks_for(n), kThreads, 0, stream>>>(g, u, o, n);
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
    const scalar_t *d = dy.data_ptr<scalar_t>(), *g = gate.data_ptr<scalar_t>(), *u = up.data_ptr<scalar_t>();
    scalar_t *dg = d_gate.data_ptr<scalar_t>(), *du = d_up.data_ptr<scalar_t>();
    if constexpr (sizeof(scalar_t) == 2) {
      if (swiglu_vec_ok(sizeof(scalar_t), n, {d, g, u, dg, du})) {
        swiglu_bwd_kernel<scalar_t, 8><<<blocks_for(n / 8), kThreads, 0, stream>>>(d, g, u, dg, du, n / 8);
        return;
      }
    }
    swiglu_bwd_kernel<scalar_t, 1><<<blocks_for(n), kThreads, 0, stream>>>(d, g, u, dg, du, n);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sluice::kernels
