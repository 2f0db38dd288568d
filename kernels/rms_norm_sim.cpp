// rms_norm.cu's launch sequence on cuda_sim (rms_norm_sim.h).
#include "sim/cuda_sim.h"  // first: it defines SLUICE_CUDA_SIM and the CUDA built-ins for the kernels

#include "rms_norm_sim.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "rms_norm.cuh"

namespace sluice::kernels::rms_norm_sim {
namespace {

using namespace rms;  // NOLINT: the kernels and their plan

void check_shape(int64_t rows, int64_t d) {
  if (rows < 0 || d <= 0 || d > (int64_t{1} << 30))
    throw std::invalid_argument("rms_norm sim: bad shape rows " + std::to_string(rows) + ", d " + std::to_string(d));
}

template <typename T, typename W>
void forward_typed(const FwdParams<T, W>& p, const Config& config) {
  if (p.rows == 0) return;
  const Plan plan = make_plan(p.rows, p.d, vec_ok(p.d, sizeof(T), {p.x, p.residual, p.weight, p.y, p.residual_out}),
                              config.max_bwd_blocks);
  const sim::LaunchShape shape{static_cast<int>(plan.fwd_blocks), kThreads, 0};
  with_config<T>(plan, p.residual != nullptr, [&](auto wpr, auto vec, auto residual) {
    sim::launch(shape, config.options,
                [&] { rms_norm_fwd_kernel<T, W, decltype(wpr)::value, decltype(vec)::value, residual()>(p); });
  });
}

template <typename T, typename W>
void backward_typed(BwdParams<T, W> p, W* dw, const Config& config) {
  const Plan plan = make_plan(p.rows, p.d, vec_ok(p.d, sizeof(T), {p.dy, p.s, p.weight, p.d_residual_out, p.ds}),
                              config.max_bwd_blocks);
  std::vector<float> partial(static_cast<size_t>(plan.bwd_blocks) * static_cast<size_t>(p.d));
  p.dw_partial = partial.data();
  const sim::LaunchShape shape{plan.bwd_blocks, kThreads, plan.bwd_smem_bytes};
  with_config<T>(plan, p.d_residual_out != nullptr, [&](auto wpr, auto vec, auto dres) {
    sim::launch(shape, config.options,
                [&] { rms_norm_bwd_kernel<T, W, decltype(wpr)::value, decltype(vec)::value, dres()>(p); });
  });
  const DwParams<W> q{partial.data(), dw, plan.bwd_blocks, p.d};
  sim::launch({plan.dw_blocks, kThreads, 0}, config.options, [&] { rms_norm_dw_kernel<W>(q); });
}

// f(T{}, W{}) for the element and weight types.
template <typename F>
void with_types(Dtype t, Dtype w, const F& f) {
  if (w != t && w != Dtype::Float) throw std::invalid_argument("rms_norm sim: weight must be of x's type or fp32");
  const bool wf = w == Dtype::Float;
  switch (t) {
    case Dtype::Float:
      return f(float{}, float{});
    case Dtype::Half:
      return wf ? f(__half{}, float{}) : f(__half{}, __half{});
    case Dtype::BFloat16:
      return wf ? f(__nv_bfloat16{}, float{}) : f(__nv_bfloat16{}, __nv_bfloat16{});
  }
}

}  // namespace

void forward(Dtype t, Dtype w, const void* x, const void* residual, const void* weight, void* y, void* residual_out,
             float* rstd, int64_t rows, int64_t d, float eps, const Config& config) {
  check_shape(rows, d);
  if (residual != nullptr && residual_out == nullptr)
    throw std::invalid_argument("rms_norm sim: a residual needs residual_out");
  with_types(t, w, [&](auto t0, auto w0) {
    using T = decltype(t0);
    using W = decltype(w0);
    const FwdParams<T, W> p{static_cast<const T*>(x),
                            static_cast<const T*>(residual),
                            static_cast<const W*>(weight),
                            static_cast<T*>(y),
                            static_cast<T*>(residual_out),
                            rstd,
                            rows,
                            static_cast<int>(d),
                            eps};
    forward_typed(p, config);
  });
}

void backward(Dtype t, Dtype w, const void* dy, const void* s, const void* weight, const float* rstd,
              const void* d_residual_out, void* ds, void* dw, int64_t rows, int64_t d, const Config& config) {
  check_shape(rows, d);
  with_types(t, w, [&](auto t0, auto w0) {
    using T = decltype(t0);
    using W = decltype(w0);
    const BwdParams<T, W> p{static_cast<const T*>(dy),
                            static_cast<const T*>(s),
                            static_cast<const W*>(weight),
                            rstd,
                            static_cast<const T*>(d_residual_out),
                            static_cast<T*>(ds),
                            nullptr,
                            rows,
                            static_cast<int>(d)};
    backward_typed(p, static_cast<W*>(dw), config);
  });
}

}  // namespace sluice::kernels::rms_norm_sim
