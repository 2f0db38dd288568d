// The fused sigmoid gate kernels' CUDA launchers (kernels/gate_mul.h) against the ATen/autograd
// reference (gate_mul_reference.h, the bounds justified there), on the shapes of
// test_gate_mul_sim.cpp (which runs the same kernel code on the CPU) and the 125M G1 gate's
// (2048 tokens x 12 heads of 64, elementwise and headwise): out, dy, dz; a second run must give
// the same bits (dz has no atomics); the launchers' checks. Label gpu: every test skips without a
// CUDA device.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <string>
#include <vector>

#include "gate_mul.h"
#include "gate_mul_reference.h"

namespace sluice {
namespace {

using namespace gate_mul_test;  // NOLINT: cases, inputs, reference and bounds

#define REQUIRE_CUDA()                                                  \
  do {                                                                  \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)

Result run_cuda(const Case& c, const Inputs& in) {
  Result r;
  r.out = at::empty_like(in.y);
  r.dy = at::empty_like(in.y);
  r.dz = at::empty_like(in.z);
  kernels::gate_mul_forward(in.y, in.z, c.width, r.out);
  kernels::gate_mul_backward(in.dout, in.y, in.z, c.width, r.dy, r.dz);
  return r;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const int64_t width : {1, 3, 64, 128})
    for (const int64_t groups : {1, 7, 33, 1000, 4099})
      for (const at::ScalarType t : {at::kFloat, at::kHalf, at::kBFloat16}) out.push_back({groups, width, t});
  // The 125M G1 gate at one sequence: headwise (a logit per head of 64) and elementwise.
  out.push_back({2048 * 12, 64, at::kBFloat16});
  out.push_back({2048 * 12 * 64, 1, at::kBFloat16});
  return out;
}

TEST(GateMulGpu, MatchesReferenceAndRepeatsBitwise) {
  REQUIRE_CUDA();
  for (const Case& c : cases()) {
    const std::string name = case_name(c);
    SCOPED_TRACE(name);
    const Inputs in = make_inputs(c, 200 + static_cast<uint64_t>(c.groups * 131 + c.width), at::Device(at::kCUDA));
    const Result r = run_cuda(c, in);
    check_result(c, in, r, name);
    const Result again = run_cuda(c, in);
    EXPECT_TRUE(at::equal(r.out, again.out) && at::equal(r.dy, again.dy) && at::equal(r.dz, again.dz))
        << name << ": a second run differs";
  }
}

// Bases one element off 16-byte alignment (n and width multiples of 8): the element-per-access path.
TEST(GateMulGpu, UnalignedBases) {
  REQUIRE_CUDA();
  for (const int64_t width : {int64_t{1}, int64_t{64}}) {
    const Case c{width == 1 ? 1000 : 130, width, at::kBFloat16};
    const Inputs aligned = make_inputs(c, 5, at::Device(at::kCUDA));
    auto shift = [](const at::Tensor& t) {
      at::Tensor view = at::empty({t.numel() + 1}, t.options()).narrow(0, 1, t.numel()).view(t.sizes());
      view.copy_(t);
      return view;
    };
    const Inputs in{shift(aligned.y), shift(aligned.dout), shift(aligned.z)};
    Result r{shift(at::zeros_like(aligned.y)), shift(at::zeros_like(aligned.y)), shift(at::zeros_like(aligned.z))};
    kernels::gate_mul_forward(in.y, in.z, c.width, r.out);
    kernels::gate_mul_backward(in.dout, in.y, in.z, c.width, r.dy, r.dz);
    check_result(c, in, r, "unaligned, width " + std::to_string(width));
  }
}

TEST(GateMulGpu, RejectsBadArguments) {
  REQUIRE_CUDA();
  const auto opts = at::TensorOptions(at::kCUDA).dtype(at::kBFloat16);
  const at::Tensor y = at::randn({4, 16}, opts), z = at::randn({4}, opts);
  at::Tensor out = at::empty_like(y), dy = at::empty_like(y), dz = at::empty_like(z);
  EXPECT_NO_THROW(kernels::gate_mul_forward(y, z, 16, out));
  EXPECT_THROW(kernels::gate_mul_forward(y, z, 0, out), c10::Error);                              // width < 1
  EXPECT_THROW(kernels::gate_mul_forward(y, z, 5, out), c10::Error);                              // does not divide n
  EXPECT_THROW(kernels::gate_mul_forward(y, z, 8, out), c10::Error);                              // z too short
  EXPECT_THROW(kernels::gate_mul_forward(y, z.to(at::kHalf), 16, out), c10::Error);               // dtype
  EXPECT_THROW(kernels::gate_mul_forward(at::randn({16, 4}, opts).t(), z, 16, out), c10::Error);  // not contiguous
  EXPECT_THROW(kernels::gate_mul_forward(y.cpu(), z, 16, out), c10::Error);                       // not CUDA
  at::Tensor short_dz = at::empty({3}, opts);
  EXPECT_THROW(kernels::gate_mul_backward(y, y, z, 16, dy, short_dz), c10::Error);
}

}  // namespace
}  // namespace sluice
