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
#include "pair_map.cuh"

namespace sluice::kernels {
namespace {

// The four maps of coca_pair.h as pair_map functors: forward from x (the second input unused),
// backward from x and the output gradient g.
template <bool kQuery, bool kStrict>
struct CocaForward {
  __device__ __forceinline__ PairOut operator()(float x1, float x2, float, float, float c, float s) const {
    const coca_pair::Out o =
        kQuery ? coca_pair::query_forward(x1, x2, c, s, kStrict) : coca_pair::key_forward(x1, x2, c, s, kStrict);
    return {o.a, o.b};
  }
};

template <bool kQuery, bool kStrict>
struct CocaBackward {
  __device__ __forceinline__ PairOut operator()(float x1, float x2, float g1, float g2, float c, float s) const {
    const coca_pair::Out d = kQuery ? coca_pair::query_backward(g1, g2, x1, x2, c, s, kStrict)
                                    : coca_pair::key_backward(g1, g2, x1, x2, c, s, kStrict);
    return {d.a, d.b};
  }
};

// run(Map<query, strict>{}) for the runtime choice of query/key and strict/slack.
template <template <bool, bool> class Map, typename Run>
void with_map(bool query, bool strict, Run run) {
  if (query)
    strict ? run(Map<true, true>{}) : run(Map<true, false>{});
  else
    strict ? run(Map<false, true>{}) : run(Map<false, false>{});
}

// One launch of the forward or backward map for (query or key, strict or slack).
template <bool kBackward>
void launch_coca(const char* name, bool query, bool strict, const at::Tensor& x, const at::Tensor& cos,
                 const at::Tensor& sin, at::Tensor& out, const at::Tensor* dy) {
  check_pair_map(name, x, cos, sin, out, dy);
  const int64_t T = x.size(1), H = x.size(2), half = x.size(3) / 2;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sluice_coca", [&] {
    const scalar_t* g = kBackward ? dy->data_ptr<scalar_t>() : nullptr;
    auto run = [&](auto op) {
      launch_pair_map<scalar_t, kBackward>(x.data_ptr<scalar_t>(), g, cos.data_ptr<float>(), sin.data_ptr<float>(),
                                           out.data_ptr<scalar_t>(), x.numel() / 2, T, H, half, op, stream);
    };
    if constexpr (kBackward)
      with_map<CocaBackward>(query, strict, run);
    else
      with_map<CocaForward>(query, strict, run);
  });
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
