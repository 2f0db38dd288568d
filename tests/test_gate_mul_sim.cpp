// The fused sigmoid gate kernels' own CUDA code (kernels/gate_mul.cuh), run on the CPU by
// cuda_sim (kernels/sim/) through the launch sequence of kernels/gate_mul.cu
// (kernels/gate_mul_sim.h), against the ATen/autograd reference (gate_mul_reference.h): out, dy
// and dz for fp32/fp16/bf16 at widths 1 (elementwise gate), 3, 64 and 128 (headwise) and 1, 7,
// 33, 1000 and 4099 groups. The plans these reach: width 1 with one element per access (n 1, 7,
// 33, 4099) and 16-byte accesses (n 1000); width 3, one element per access, one thread per group;
// 64 and 128, 16-byte accesses, 8 lanes per group (and a warp per group for fp32 at 128); the
// unaligned case below, one element per access and a warp per group at 64. Partial blocks and
// partial warps (groups past the end beside live ones in the shuffles) throughout. Every case
// runs with the block's threads in order, reversed and shuffled, and the three results must be
// bitwise equal (dz has no atomics, so its sums have one order whatever the schedule).
// Label cpu: runs in CI (nvcc, no GPU).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "gate_mul_reference.h"
#include "gate_mul_sim.h"
#include "sim/launch.h"

namespace sluice {
namespace {

using namespace gate_mul_test;  // NOLINT: cases, inputs, reference and bounds
namespace gsim = kernels::gate_mul_sim;

gsim::Dtype sim_dtype(at::ScalarType t) {
  if (t == at::kFloat) return gsim::Dtype::Float;
  if (t == at::kHalf) return gsim::Dtype::Half;
  return gsim::Dtype::BFloat16;
}

// The kernels' forward and backward on CPU tensors.
Result run_sim(const Case& c, const Inputs& in, const gsim::Config& config) {
  Result r;
  r.out = at::empty_like(in.y);
  r.dy = at::empty_like(in.y);
  r.dz = at::empty_like(in.z);
  const int64_t n = c.groups * c.width;
  gsim::forward(sim_dtype(c.dtype), in.y.data_ptr(), in.z.data_ptr(), r.out.data_ptr(), n, c.width, config);
  gsim::backward(sim_dtype(c.dtype), in.dout.data_ptr(), in.y.data_ptr(), in.z.data_ptr(), r.dy.data_ptr(),
                 r.dz.data_ptr(), n, c.width, config);
  return r;
}

void expect_bitwise(const Result& a, const Result& b, const std::string& what) {
  EXPECT_TRUE(at::equal(a.out, b.out)) << what << " out";
  EXPECT_TRUE(at::equal(a.dy, b.dy)) << what << " dy";
  EXPECT_TRUE(at::equal(a.dz, b.dz)) << what << " dz";
}

void check_case(const Case& c) {
  SCOPED_TRACE(case_name(c));
  const Inputs in = make_inputs(c, 200 + static_cast<uint64_t>(c.groups * 131 + c.width), at::Device(at::kCPU));
  gsim::Config config;
  Result in_order;
  ASSERT_NO_THROW(in_order = run_sim(c, in, config));
  check_result(c, in, in_order, case_name(c));
  for (const sim::Order order : {sim::Order::Reversed, sim::Order::Shuffled}) {
    config.options = {order, sim::CopyTiming::AtWait, 17 + static_cast<uint64_t>(c.groups)};
    Result other;
    ASSERT_NO_THROW(other = run_sim(c, in, config));
    expect_bitwise(in_order, other, order == sim::Order::Reversed ? "reversed threads:" : "shuffled threads:");
  }
}

// One test per width (each test is a process under ctest): every group count, every type.
class GateMulSim : public ::testing::TestWithParam<int64_t> {};

TEST_P(GateMulSim, MatchesReferenceInEveryThreadOrder) {
  for (const int64_t groups : {1, 7, 33, 1000, 4099})
    for (const at::ScalarType t : {at::kFloat, at::kHalf, at::kBFloat16}) check_case({groups, GetParam(), t});
}

INSTANTIATE_TEST_SUITE_P(Widths, GateMulSim, ::testing::Values(1, 3, 64, 128),
                         [](const ::testing::TestParamInfo<int64_t>& i) { return "w" + std::to_string(i.param); });

// Bases one element off 16-byte alignment with n and width multiples of 8: the launcher falls back
// to one element per access (and, at width 64, a warp per group of 64 chunks).
TEST(GateMulSimLayout, UnalignedBasesUseTheElementPath) {
  for (const int64_t width : {int64_t{1}, int64_t{64}}) {
    const Case c{width == 1 ? 1000 : 33, width, at::kBFloat16};
    const Inputs aligned = make_inputs(c, 5, at::Device(at::kCPU));
    auto shift = [](const at::Tensor& t) {
      const at::Tensor buf = at::empty({t.numel() + 1}, t.options());
      at::Tensor view = buf.narrow(0, 1, t.numel()).view(t.sizes());
      view.copy_(t);
      return view;
    };
    const Inputs in{shift(aligned.y), shift(aligned.dout), shift(aligned.z)};
    ASSERT_NE(reinterpret_cast<uintptr_t>(in.y.data_ptr()) % 16, 0u);
    Result r;
    r.out = shift(at::zeros_like(aligned.y));
    r.dy = shift(at::zeros_like(aligned.y));
    r.dz = shift(at::zeros_like(aligned.z));
    const int64_t n = c.groups * c.width;
    ASSERT_NO_THROW(gsim::forward(gsim::Dtype::BFloat16, in.y.data_ptr(), in.z.data_ptr(), r.out.data_ptr(), n, c.width,
                                  gsim::Config{}));
    ASSERT_NO_THROW(gsim::backward(gsim::Dtype::BFloat16, in.dout.data_ptr(), in.y.data_ptr(), in.z.data_ptr(),
                                   r.dy.data_ptr(), r.dz.data_ptr(), n, c.width, gsim::Config{}));
    check_result(c, in, r, "unaligned, width " + std::to_string(width));
  }
}

TEST(GateMulSimLayout, NoElementsWriteNothing) {
  const at::Tensor y = at::full({4}, 7.f, at::kFloat), z = at::full({4}, 7.f, at::kFloat);
  at::Tensor out = y.clone(), dy = y.clone(), dz = z.clone();
  gsim::forward(gsim::Dtype::Float, y.data_ptr(), z.data_ptr(), out.data_ptr(), 0, 64, gsim::Config{});
  gsim::backward(gsim::Dtype::Float, y.data_ptr(), y.data_ptr(), z.data_ptr(), dy.data_ptr(), dz.data_ptr(), 0, 64,
                 gsim::Config{});
  EXPECT_TRUE(at::equal(out, y) && at::equal(dy, y) && at::equal(dz, z));
}

TEST(GateMulSimLayout, RejectsAWidthThatDoesNotDivideN) {
  const at::Tensor y = at::zeros({10}, at::kFloat), z = at::zeros({3}, at::kFloat);
  at::Tensor out = at::empty_like(y);
  EXPECT_THROW(gsim::forward(gsim::Dtype::Float, y.data_ptr(), z.data_ptr(), out.data_ptr(), 10, 3, gsim::Config{}),
               std::invalid_argument);
  EXPECT_THROW(gsim::forward(gsim::Dtype::Float, y.data_ptr(), z.data_ptr(), out.data_ptr(), 10, 0, gsim::Config{}),
               std::invalid_argument);
}

}  // namespace
}  // namespace sluice
