// Host launchers of the fused RMSNorm kernels (rms_norm.h; kernels in rms_norm.cuh). The sim
// launcher (rms_norm_sim.cpp) follows the same plan.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "rms_norm.cuh"
#include "rms_norm.h"

namespace sluice::kernels {
namespace {

using namespace rms;  // NOLINT: the kernels and their plan

// Rows of d for x; checks x itself.
int64_t rows_of(const at::Tensor& x, const char* fn) {
  TORCH_CHECK(x.is_cuda(), fn, ": x must be a CUDA tensor");
  TORCH_CHECK(x.is_contiguous(), fn, ": x must be contiguous");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) > 0, fn, ": x must have a non-empty last dim");
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16, fn, ": x must be fp32, fp16 or bf16, got ", t);
  TORCH_CHECK(x.size(-1) <= (int64_t{1} << 30), fn, ": last dim too large");
  return x.numel() / x.size(-1);
}

void check_like(const at::Tensor& a, const at::Tensor& x, const char* fn, const char* what) {
  TORCH_CHECK(a.defined() && a.is_cuda() && a.is_contiguous() && a.sizes() == x.sizes() &&
                  a.scalar_type() == x.scalar_type() && a.device() == x.device(),
              fn, ": ", what, " must be a contiguous CUDA tensor shaped and typed like x (", x.sizes(), " ",
              x.scalar_type(), ")");
}

void check_weight(const at::Tensor& w, const at::Tensor& x, const char* fn, const char* what) {
  TORCH_CHECK(w.defined() && w.is_cuda() && w.is_contiguous() && w.dim() == 1 && w.size(0) == x.size(-1) &&
                  w.device() == x.device() && (w.scalar_type() == x.scalar_type() || w.scalar_type() == at::kFloat),
              fn, ": ", what, " must be a contiguous CUDA tensor [", x.size(-1), "] of x's dtype or fp32");
}

void check_rstd(const at::Tensor& rstd, int64_t rows, const at::Tensor& x, const char* fn) {
  TORCH_CHECK(rstd.defined() && rstd.is_cuda() && rstd.is_contiguous() && rstd.scalar_type() == at::kFloat &&
                  rstd.numel() == rows && rstd.device() == x.device(),
              fn, ": rstd must be a contiguous fp32 CUDA tensor of ", rows, " elements (one per row)");
}

// f(T{}, W{}): the CUDA element types of x and weight.
template <typename F>
void with_types(at::ScalarType t, at::ScalarType w, const F& f) {
  const bool wf = w == at::kFloat;
  switch (t) {
    case at::kFloat:
      return f(float{}, float{});
    case at::kHalf:
      return wf ? f(__half{}, float{}) : f(__half{}, __half{});
    case at::kBFloat16:
      return wf ? f(__nv_bfloat16{}, float{}) : f(__nv_bfloat16{}, __nv_bfloat16{});
    default:
      TORCH_CHECK(false, "rms_norm: unsupported dtype ", t);
  }
}

template <typename T>
const T* ptr(const at::Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.data_ptr()) : nullptr;
}
template <typename T>
T* mut_ptr(at::Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

// Blocks of the backward kernel resident on the device at once (its grid: each block loops over
// rows, and the fewer blocks, the smaller the dw workspace).
template <typename K>
int resident_blocks(K kernel, int smem_bytes) {
  const int device = at::cuda::current_device();
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(device);
  if (smem_bytes > 48 * 1024) {
    TORCH_CHECK(static_cast<size_t>(smem_bytes) <= prop->sharedMemPerBlockOptin,
                "rms_norm_backward: last dim too large for the dw accumulators in shared memory (", smem_bytes,
                " bytes)");
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
  }
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem_bytes));
  return prop->multiProcessorCount * (per_sm > 0 ? per_sm : 1);
}

}  // namespace

void rms_norm_forward(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, double eps,
                      at::Tensor& y, at::Tensor& residual_out, at::Tensor& rstd) {
  constexpr const char* fn = "rms_norm_forward";
  const int64_t rows = rows_of(x, fn);
  const int64_t d = x.size(-1);
  TORCH_CHECK(residual.defined() == residual_out.defined(), fn,
              ": residual and residual_out must both be defined or both undefined");
  if (residual.defined()) {
    check_like(residual, x, fn, "residual");
    check_like(residual_out, x, fn, "residual_out");
  }
  check_weight(weight, x, fn, "weight");
  check_like(y, x, fn, "y");
  check_rstd(rstd, rows, x, fn);
  if (rows == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  with_types(x.scalar_type(), weight.scalar_type(), [&](auto t0, auto w0) {
    using T = decltype(t0);
    using W = decltype(w0);
    const FwdParams<T, W> p{ptr<T>(x),     ptr<T>(residual),         ptr<W>(weight),
                            mut_ptr<T>(y), mut_ptr<T>(residual_out), rstd.data_ptr<float>(),
                            rows,          static_cast<int>(d),      static_cast<float>(eps)};
    const Plan plan = make_plan(rows, d, vec_ok(d, sizeof(T), {p.x, p.residual, p.weight, p.y, p.residual_out}), 1);
    with_config<T>(plan, p.residual != nullptr, [&](auto wpr, auto vec, auto res) {
      rms_norm_fwd_kernel<T, W, decltype(wpr)::value, decltype(vec)::value, res()>
          <<<static_cast<unsigned>(plan.fwd_blocks), kThreads, 0, stream>>>(p);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void rms_norm_backward(const at::Tensor& dy, const at::Tensor& s, const at::Tensor& weight, const at::Tensor& rstd,
                       const at::Tensor& d_residual_out, at::Tensor& ds, at::Tensor& dw) {
  constexpr const char* fn = "rms_norm_backward";
  const int64_t rows = rows_of(s, fn);
  const int64_t d = s.size(-1);
  check_like(dy, s, fn, "dy");
  if (d_residual_out.defined()) check_like(d_residual_out, s, fn, "d_residual_out");
  check_like(ds, s, fn, "ds");
  check_weight(weight, s, fn, "weight");
  check_weight(dw, s, fn, "dw");
  TORCH_CHECK(dw.scalar_type() == weight.scalar_type(), fn, ": dw must have weight's dtype");
  check_rstd(rstd, rows, s, fn);
  const c10::cuda::CUDAGuard guard(s.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  with_types(s.scalar_type(), weight.scalar_type(), [&](auto t0, auto w0) {
    using T = decltype(t0);
    using W = decltype(w0);
    BwdParams<T, W> p{ptr<T>(dy),     ptr<T>(s), ptr<W>(weight), rstd.data_ptr<float>(), ptr<T>(d_residual_out),
                      mut_ptr<T>(ds), nullptr,   rows,           static_cast<int>(d)};
    const bool vec = vec_ok(d, sizeof(T), {p.dy, p.s, p.weight, p.d_residual_out, p.ds});
    Plan plan = make_plan(rows, d, vec, 1);
    with_config<T>(plan, p.d_residual_out != nullptr, [&](auto wpr, auto v, auto dres) {
      auto* kernel = rms_norm_bwd_kernel<T, W, decltype(wpr)::value, decltype(v)::value, dres()>;
      plan = make_plan(rows, d, vec, resident_blocks(kernel, plan.bwd_smem_bytes));
      const at::Tensor partial =
          at::empty({plan.bwd_blocks, d}, s.options().dtype(at::kFloat));  // every element written
      p.dw_partial = partial.data_ptr<float>();
      kernel<<<plan.bwd_blocks, kThreads, plan.bwd_smem_bytes, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const DwParams<W> q{partial.data_ptr<float>(), mut_ptr<W>(dw), plan.bwd_blocks, static_cast<int>(d)};
      rms_norm_dw_kernel<W><<<plan.dw_blocks, kThreads, 0, stream>>>(q);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace sluice::kernels
