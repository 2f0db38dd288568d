// gate_mul.cu's launch sequence on cuda_sim (gate_mul_sim.h).
#include "sim/cuda_sim.h"  // first: it defines SLUICE_CUDA_SIM and the CUDA built-ins for the kernels

#include "gate_mul_sim.h"

#include <limits>
#include <stdexcept>
#include <string>

#include "gate_mul.cuh"

namespace sluice::kernels::gate_mul_sim {
namespace {

using namespace gate;  // NOLINT: the kernels and their plan

void check_shape(int64_t n, int64_t width) {
  if (n < 0 || width < 1 || n % width != 0)
    throw std::invalid_argument("gate_mul sim: bad shape n " + std::to_string(n) + ", width " + std::to_string(width));
}

int grid_of(int64_t blocks) {
  if (blocks > std::numeric_limits<int>::max()) throw std::invalid_argument("gate_mul sim: too many blocks");
  return static_cast<int>(blocks);
}

template <typename T>
void forward_typed(const FwdParams<T>& p, const Config& config) {
  if (p.n == 0) return;
  const bool elementwise = p.width == 1;
  const Plan plan =
      make_plan(p.n, p.width, sizeof(T), vec_ok(p.n, p.width, sizeof(T), {p.y, p.out, elementwise ? p.z : nullptr}));
  const sim::LaunchShape shape{grid_of(plan.fwd_blocks), kThreads, 0};
  with_vec<T>(plan, [&](auto vec) {
    constexpr int kVec = decltype(vec)::value;
    if (elementwise)
      sim::launch(shape, config.options, [&] { gate_mul_fwd_kernel<T, kVec, true>(p); });
    else
      sim::launch(shape, config.options, [&] { gate_mul_fwd_kernel<T, kVec, false>(p); });
  });
}

template <typename T>
void backward_typed(const BwdParams<T>& p, const Config& config) {
  if (p.n == 0) return;
  const bool elementwise = p.width == 1;
  const Plan plan = make_plan(
      p.n, p.width, sizeof(T),
      vec_ok(p.n, p.width, sizeof(T), {p.dout, p.y, p.dy, elementwise ? p.z : nullptr, elementwise ? p.dz : nullptr}));
  const sim::LaunchShape shape{grid_of(plan.bwd_blocks), kThreads, 0};
  with_vec<T>(plan, [&](auto vec) {
    constexpr int kVec = decltype(vec)::value;
    if (elementwise) {
      sim::launch(shape, config.options, [&] { gate_mul_bwd_elementwise_kernel<T, kVec>(p); });
    } else {
      with_group_threads(plan, [&](auto g) {
        sim::launch(shape, config.options, [&] { gate_mul_bwd_grouped_kernel<T, kVec, decltype(g)::value>(p); });
      });
    }
  });
}

// f(T{}) for the element type.
template <typename F>
void with_type(Dtype t, const F& f) {
  switch (t) {
    case Dtype::Float:
      return f(float{});
    case Dtype::Half:
      return f(__half{});
    case Dtype::BFloat16:
      return f(__nv_bfloat16{});
  }
}

}  // namespace

void forward(Dtype t, const void* y, const void* z, void* out, int64_t n, int64_t width, const Config& config) {
  check_shape(n, width);
  with_type(t, [&](auto t0) {
    using T = decltype(t0);
    const FwdParams<T> p{static_cast<const T*>(y), static_cast<const T*>(z), static_cast<T*>(out), n, width};
    forward_typed(p, config);
  });
}

void backward(Dtype t, const void* dout, const void* y, const void* z, void* dy, void* dz, int64_t n, int64_t width,
              const Config& config) {
  check_shape(n, width);
  with_type(t, [&](auto t0) {
    using T = decltype(t0);
    const BwdParams<T> p{static_cast<const T*>(dout),
                         static_cast<const T*>(y),
                         static_cast<const T*>(z),
                         static_cast<T*>(dy),
                         static_cast<T*>(dz),
                         n,
                         width};
    backward_typed(p, config);
  });
}

}  // namespace sluice::kernels::gate_mul_sim
