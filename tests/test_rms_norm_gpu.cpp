// The fused RMSNorm kernels' CUDA launchers (kernels/rms_norm.h) against the ATen/autograd
// reference (rms_norm_reference.h, the bounds justified there), on the shapes of
// test_rms_norm_sim.cpp (which runs the same kernel code on the CPU) and the model's widths:
// y, rstd, the residual stream (bitwise), ds, dw; a second run must give the same bits (dw has no
// atomics); the launchers' checks. Label gpu: every test skips without a CUDA device.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <string>
#include <vector>

#include "rms_norm.h"
#include "rms_norm_reference.h"

namespace sluice {
namespace {

using namespace rms_norm_test;  // NOLINT: cases, inputs, reference and bounds

constexpr double kEps = 1e-5;

#define REQUIRE_CUDA()                                                  \
  do {                                                                  \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

Result run_cuda(const Case& c, const Inputs& in) {
  Result r;
  r.y = at::empty_like(in.x);
  if (c.residual) r.residual_out = at::empty_like(in.x);
  r.rstd = at::empty({c.rows}, in.x.options().dtype(at::kFloat));
  kernels::rms_norm_forward(in.x, in.residual, in.weight, kEps, r.y, r.residual_out, r.rstd);
  const at::Tensor s = c.residual ? r.residual_out : in.x;
  r.ds = at::empty_like(in.x);
  r.dw = at::empty_like(in.weight);
  kernels::rms_norm_backward(in.dy, s, in.weight, r.rstd, in.d_residual_out, r.ds, r.dw);
  return r;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const int64_t rows : {1, 3, 17, 130})
    for (const int64_t d : {1, 7, 33, 64, 1000, 4096})
      for (const at::ScalarType t : {at::kFloat, at::kHalf, at::kBFloat16})
        for (const int flags : {0, 1, 2, 3}) {
          out.push_back({rows, d, t, t, (flags & 1) != 0, (flags & 2) != 0});
          if (t != at::kFloat && flags == 3) out.push_back({rows, d, t, at::kFloat, true, true});
        }
  // The 125M and 1.7B widths at a few thousand rows: full grids of resident blocks.
  for (const int64_t d : {768, 2048})
    for (const at::ScalarType w : {at::kBFloat16, at::kFloat}) out.push_back({4099, d, at::kBFloat16, w, true, true});
  return out;
}

TEST(RmsNormGpu, MatchesReferenceAndRepeatsBitwise) {
  REQUIRE_CUDA();
  for (const Case& c : cases()) {
    const std::string name = case_name(c);
    SCOPED_TRACE(name);
    const Inputs in = make_inputs(c, 100 + static_cast<uint64_t>(c.rows * 7919 + c.d), at::Device(at::kCUDA));
    const Result r = run_cuda(c, in);
    check_result(c, in, r, kEps, name);
    const Result again = run_cuda(c, in);
    EXPECT_TRUE(at::equal(r.y, again.y) && at::equal(r.ds, again.ds) && at::equal(r.dw, again.dw) &&
                at::equal(r.rstd, again.rstd))
        << name << ": a second run differs";
  }
}

// Bases one element off 16-byte alignment (d a multiple of 8): the element-per-access path.
TEST(RmsNormGpu, UnalignedBases) {
  REQUIRE_CUDA();
  const Case c{130, 1000, at::kBFloat16, at::kBFloat16, true, true};
  const Inputs aligned = make_inputs(c, 5, at::Device(at::kCUDA));
  auto shift = [](const at::Tensor& t) {
    at::Tensor view = at::empty({t.numel() + 1}, t.options()).narrow(0, 1, t.numel()).view(t.sizes());
    view.copy_(t);
    return view;
  };
  const Inputs in{shift(aligned.x), shift(aligned.residual), shift(aligned.weight), shift(aligned.dy),
                  shift(aligned.d_residual_out)};
  check_result(c, in, run_cuda(c, in), kEps, "unaligned");
}

TEST(RmsNormGpu, RejectsBadArguments) {
  REQUIRE_CUDA();
  const auto opts = at::TensorOptions(at::kCUDA).dtype(at::kBFloat16);
  const at::Tensor x = at::randn({4, 16}, opts), w = at::ones({16}, opts);
  at::Tensor y = at::empty_like(x), rstd = at::empty({4}, opts.dtype(at::kFloat)), none;
  at::Tensor xt = at::randn({16, 4}, opts).t();  // not contiguous
  EXPECT_THROW(kernels::rms_norm_forward(xt, none, w, kEps, y, none, rstd), c10::Error);
  const at::Tensor wh = at::ones({16}, opts.dtype(at::kHalf));
  EXPECT_THROW(kernels::rms_norm_forward(x, none, wh, kEps, y, none, rstd), c10::Error);
  at::Tensor res_out = at::empty_like(x);
  EXPECT_THROW(kernels::rms_norm_forward(x, none, w, kEps, y, res_out, rstd), c10::Error);
  at::Tensor short_rstd = at::empty({3}, opts.dtype(at::kFloat));
  EXPECT_THROW(kernels::rms_norm_forward(x, none, w, kEps, y, none, short_rstd), c10::Error);
}

}  // namespace
}  // namespace sluice
