// Host launchers of the fused sigmoid gate kernels (gate_mul.h; kernels in gate_mul.cuh). The sim
// launcher (gate_mul_sim.cpp) follows the same plan.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <limits>

#include "gate_mul.cuh"
#include "gate_mul.h"

namespace sluice::kernels {
namespace {

using namespace gate;  // NOLINT: the kernels and their plan

// Checks y, width and z; returns n.
int64_t check_inputs(const at::Tensor& y, const at::Tensor& z, int64_t width, const char* fn) {
  TORCH_CHECK(y.defined() && y.is_cuda(), fn, ": y must be a CUDA tensor");
  TORCH_CHECK(y.is_contiguous(), fn, ": y must be contiguous");
  const auto t = y.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16, fn, ": y must be fp32, fp16 or bf16, got ", t);
  const int64_t n = y.numel();
  TORCH_CHECK(width >= 1, fn, ": width must be >= 1 (1: elementwise gate, head dim: headwise), got ", width);
  TORCH_CHECK(n % width == 0, fn, ": width ", width, " must divide y's ", n, " elements");
  TORCH_CHECK(z.defined() && z.is_cuda() && z.is_contiguous() && z.scalar_type() == t && z.device() == y.device(), fn,
              ": z must be a contiguous CUDA tensor of y's dtype (", t, ") on y's device");
  TORCH_CHECK(z.numel() == n / width, fn, ": z must have y.numel() / width = ", n / width, " elements (one per ", width,
              " consecutive elements of y), got ", z.numel());
  return n;
}

void check_like(const at::Tensor& a, const at::Tensor& ref, const char* fn, const char* what, const char* ref_name) {
  TORCH_CHECK(a.defined() && a.is_cuda() && a.is_contiguous() && a.numel() == ref.numel() &&
                  a.scalar_type() == ref.scalar_type() && a.device() == ref.device(),
              fn, ": ", what, " must be a contiguous CUDA tensor with ", ref_name, "'s ", ref.numel(),
              " elements and dtype ", ref.scalar_type());
}

// f(T{}): the CUDA element type.
template <typename F>
void with_type(at::ScalarType t, const F& f) {
  switch (t) {
    case at::kFloat:
      return f(float{});
    case at::kHalf:
      return f(__half{});
    case at::kBFloat16:
      return f(__nv_bfloat16{});
    default:
      TORCH_CHECK(false, "gate_mul: unsupported dtype ", t);
  }
}

unsigned grid_of(int64_t blocks, const char* fn) {
  TORCH_CHECK(blocks <= std::numeric_limits<int>::max(), fn, ": too many elements for one grid");
  return static_cast<unsigned>(blocks);
}

}  // namespace

void gate_mul_forward(const at::Tensor& y, const at::Tensor& z, int64_t width, at::Tensor& out) {
  constexpr const char* fn = "gate_mul_forward";
  const int64_t n = check_inputs(y, z, width, fn);
  check_like(out, y, fn, "out", "y");
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(y.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  with_type(y.scalar_type(), [&](auto t0) {
    using T = decltype(t0);
    const FwdParams<T> p{static_cast<const T*>(y.data_ptr()), static_cast<const T*>(z.data_ptr()),
                         static_cast<T*>(out.data_ptr()), n, width};
    const bool elementwise = width == 1;
    const Plan plan =
        make_plan(n, width, sizeof(T), vec_ok(n, width, sizeof(T), {p.y, p.out, elementwise ? p.z : nullptr}));
    const unsigned blocks = grid_of(plan.fwd_blocks, fn);
    with_vec<T>(plan, [&](auto vec) {
      if (elementwise)
        gate_mul_fwd_kernel<T, decltype(vec)::value, true><<<blocks, kThreads, 0, stream>>>(p);
      else
        gate_mul_fwd_kernel<T, decltype(vec)::value, false><<<blocks, kThreads, 0, stream>>>(p);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void gate_mul_backward(const at::Tensor& dout, const at::Tensor& y, const at::Tensor& z, int64_t width, at::Tensor& dy,
                       at::Tensor& dz) {
  constexpr const char* fn = "gate_mul_backward";
  const int64_t n = check_inputs(y, z, width, fn);
  check_like(dout, y, fn, "dout", "y");
  check_like(dy, y, fn, "dy", "y");
  check_like(dz, z, fn, "dz", "z");
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(y.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  with_type(y.scalar_type(), [&](auto t0) {
    using T = decltype(t0);
    const BwdParams<T> p{static_cast<const T*>(dout.data_ptr()),
                         static_cast<const T*>(y.data_ptr()),
                         static_cast<const T*>(z.data_ptr()),
                         static_cast<T*>(dy.data_ptr()),
                         static_cast<T*>(dz.data_ptr()),
                         n,
                         width};
    const bool elementwise = width == 1;
    const Plan plan = make_plan(
        n, width, sizeof(T),
        vec_ok(n, width, sizeof(T), {p.dout, p.y, p.dy, elementwise ? p.z : nullptr, elementwise ? p.dz : nullptr}));
    const unsigned blocks = grid_of(plan.bwd_blocks, fn);
    with_vec<T>(plan, [&](auto vec) {
      constexpr int kVec = decltype(vec)::value;
      if (elementwise) {
        gate_mul_bwd_elementwise_kernel<T, kVec><<<blocks, kThreads, 0, stream>>>(p);
      } else {
        with_group_threads(plan, [&](auto g) {
          gate_mul_bwd_grouped_kernel<T, kVec, decltype(g)::value><<<blocks, kThreads, 0, stream>>>(p);
        });
      }
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sluice::kernels
