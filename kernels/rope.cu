#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>

#include "elementwise.h"
#include "pair_map.cuh"

namespace sluice::kernels {
namespace {

// Rotate-half RoPE of one pair by (c, sign·s); math in fp32.
struct RotatePair {
  float sign;
  __device__ __forceinline__ PairOut operator()(float x1, float x2, float, float, float c, float s) const {
    s *= sign;
    return {x1 * c - x2 * s, x2 * c + x1 * s};
  }
};

}  // namespace

void rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& out, bool inverse) {
  check_pair_map("rope", x, cos, sin, out);
  const int64_t T = x.size(1), H = x.size(2), D = x.size(3);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sluice_rope", [&] {
    launch_pair_map<scalar_t, false>(x.data_ptr<scalar_t>(), nullptr, cos.data_ptr<float>(), sin.data_ptr<float>(),
                                     out.data_ptr<scalar_t>(), x.numel() / 2, T, H, D / 2,
                                     RotatePair{inverse ? -1.0f : 1.0f}, stream);
  });
}

}  // namespace sluice::kernels
