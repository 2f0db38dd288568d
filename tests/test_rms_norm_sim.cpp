// The fused RMSNorm kernels' own CUDA code (kernels/rms_norm.cuh), run on the CPU by cuda_sim
// (kernels/sim/) through the launch sequence of kernels/rms_norm.cu (kernels/rms_norm_sim.h),
// against the ATen/autograd reference (rms_norm_reference.h): y, rstd, the residual stream
// (bitwise), ds and dw, with and without the residual add and the residual-stream gradient,
// fp32/fp16/bf16 (and fp32 weights beside fp16/bf16 activations), awkward shapes (rows 1, 3, 17,
// 130: a partial block of warp rows and blocks looping over rows in the backward; d 1, 7, 33:
// one element per access and idle lanes; 64 and 1000: 16-byte accesses, warp rows; 4096: block
// rows with the shared-memory exchange between warps). Every case runs with the block's threads
// in order, reversed and shuffled, and the three results must be bitwise equal (dw has no
// atomics, so its sums have one order whatever the schedule). Label cpu: runs in CI (nvcc, no GPU).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "rms_norm_reference.h"
#include "rms_norm_sim.h"
#include "sim/launch.h"

namespace sluice {
namespace {

using namespace rms_norm_test;  // NOLINT: cases, inputs, reference and bounds
namespace rsim = kernels::rms_norm_sim;

constexpr double kEps = 1e-5;

rsim::Dtype sim_dtype(at::ScalarType t) {
  if (t == at::kFloat) return rsim::Dtype::Float;
  if (t == at::kHalf) return rsim::Dtype::Half;
  return rsim::Dtype::BFloat16;
}

const void* data_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// The kernels' forward, then their backward from its s and rstd, on CPU tensors.
Result run_sim(const Case& c, const Inputs& in, const rsim::Config& config) {
  Result r;
  r.y = at::empty_like(in.x);
  if (c.residual) r.residual_out = at::empty_like(in.x);
  r.rstd = at::empty({c.rows}, at::kFloat);
  rsim::forward(sim_dtype(c.dtype), sim_dtype(c.weight_dtype), in.x.data_ptr(), data_or_null(in.residual),
                in.weight.data_ptr(), r.y.data_ptr(), c.residual ? r.residual_out.data_ptr() : nullptr,
                r.rstd.data_ptr<float>(), c.rows, c.d, static_cast<float>(kEps), config);
  const at::Tensor s = c.residual ? r.residual_out : in.x;
  r.ds = at::empty_like(in.x);
  r.dw = at::empty_like(in.weight);
  rsim::backward(sim_dtype(c.dtype), sim_dtype(c.weight_dtype), in.dy.data_ptr(), s.data_ptr(), in.weight.data_ptr(),
                 r.rstd.data_ptr<float>(), data_or_null(in.d_residual_out), r.ds.data_ptr(), r.dw.data_ptr(), c.rows,
                 c.d, config);
  return r;
}

void expect_bitwise(const Result& a, const Result& b, const std::string& what) {
  EXPECT_TRUE(at::equal(a.y, b.y)) << what << " y";
  if (a.residual_out.defined()) EXPECT_TRUE(at::equal(a.residual_out, b.residual_out)) << what << " residual_out";
  EXPECT_TRUE(at::equal(a.rstd, b.rstd)) << what << " rstd";
  EXPECT_TRUE(at::equal(a.ds, b.ds)) << what << " ds";
  EXPECT_TRUE(at::equal(a.dw, b.dw)) << what << " dw";
}

void check_case(const Case& c) {
  SCOPED_TRACE(case_name(c));
  const Inputs in = make_inputs(c, 100 + static_cast<uint64_t>(c.rows * 7919 + c.d), at::Device(at::kCPU));
  rsim::Config config;
  Result in_order;
  ASSERT_NO_THROW(in_order = run_sim(c, in, config));
  check_result(c, in, in_order, kEps, case_name(c));
  for (const sim::Order order : {sim::Order::Reversed, sim::Order::Shuffled}) {
    config.options = {order, sim::CopyTiming::AtWait, 11 + static_cast<uint64_t>(c.d)};
    Result other;
    ASSERT_NO_THROW(other = run_sim(c, in, config));
    expect_bitwise(in_order, other, order == sim::Order::Reversed ? "reversed threads:" : "shuffled threads:");
  }
}

struct Flags {
  at::ScalarType dtype, weight_dtype;
  bool residual, d_residual_out;
};

// Every shape; at each, the element/weight types and flags rotate so that each d sees several
// of them and every combination appears at several shapes.
std::vector<Case> cases_for(int64_t d) {
  const std::vector<Flags> flags = {
      {at::kFloat, at::kFloat, false, false},       {at::kBFloat16, at::kBFloat16, true, true},
      {at::kHalf, at::kHalf, true, false},          {at::kBFloat16, at::kFloat, false, true},
      {at::kFloat, at::kFloat, true, true},         {at::kHalf, at::kFloat, true, true},
      {at::kBFloat16, at::kBFloat16, false, false}, {at::kHalf, at::kHalf, false, true},
      {at::kFloat, at::kFloat, true, false},        {at::kFloat, at::kFloat, false, true},
      {at::kBFloat16, at::kFloat, true, false},     {at::kHalf, at::kHalf, true, true},
  };
  const std::vector<int64_t> rows = {1, 3, 17, 130}, dims = {1, 7, 33, 64, 1000, 4096};
  const size_t j = static_cast<size_t>(std::find(dims.begin(), dims.end(), d) - dims.begin());
  std::vector<Case> cases;
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t k = 0; k < 2; ++k) {
      const Flags& f = flags[(i * 5 + j * 2 + k * 7) % flags.size()];
      cases.push_back({rows[i], d, f.dtype, f.weight_dtype, f.residual, f.d_residual_out});
    }
  return cases;
}

// One test per d (each test is a process under ctest, and loading LibTorch costs about as much
// as a d's eight cases): rows 1, 3, 17, 130, two type/flag combinations each.
class RmsNormSim : public ::testing::TestWithParam<int64_t> {};

TEST_P(RmsNormSim, MatchesReferenceInEveryThreadOrder) {
  for (const Case& c : cases_for(GetParam())) check_case(c);
}

INSTANTIATE_TEST_SUITE_P(Widths, RmsNormSim, ::testing::Values(1, 7, 33, 64, 1000, 4096),
                         [](const ::testing::TestParamInfo<int64_t>& i) { return "d" + std::to_string(i.param); });

// Bases one element off 16-byte alignment with d a multiple of 8: the launcher falls back to one
// element per access (the vectorised path would read across rows' boundaries misaligned).
TEST(RmsNormSimLayout, UnalignedBasesUseTheElementPath) {
  const Case c{17, 64, at::kBFloat16, at::kBFloat16, true, true};
  const Inputs aligned = make_inputs(c, 5, at::Device(at::kCPU));
  auto shift = [](const at::Tensor& t) {
    const at::Tensor buf = at::empty({t.numel() + 1}, t.options());
    at::Tensor view = buf.narrow(0, 1, t.numel()).view(t.sizes());
    view.copy_(t);
    return view;
  };
  Inputs in{shift(aligned.x), shift(aligned.residual), shift(aligned.weight), shift(aligned.dy),
            shift(aligned.d_residual_out)};
  ASSERT_NE(reinterpret_cast<uintptr_t>(in.x.data_ptr()) % 16, 0u);
  Result r;
  ASSERT_NO_THROW(r = run_sim(c, in, rsim::Config{}));
  check_result(c, in, r, kEps, "unaligned");
}

// More rows than the backward grid's blocks times the rows per block, at both row layouts, with
// one block: the whole dw is one block's loop.
TEST(RmsNormSimLayout, OneBackwardBlock) {
  for (const int64_t d : {int64_t{33}, int64_t{2048}}) {
    const Case c{21, d, at::kFloat, at::kFloat, true, false};
    const Inputs in = make_inputs(c, 9, at::Device(at::kCPU));
    rsim::Config config;
    config.max_bwd_blocks = 1;
    Result r;
    ASSERT_NO_THROW(r = run_sim(c, in, config));
    check_result(c, in, r, kEps, "one block, d " + std::to_string(d));
  }
}

TEST(RmsNormSimLayout, NoRowsGiveZeroWeightGradient) {
  const at::Tensor w = at::ones({40}, at::kFloat), dw = at::full({40}, 7.f, at::kFloat);
  const at::Tensor none = at::empty({0, 40}, at::kFloat), rstd = at::empty({0}, at::kFloat);
  rsim::forward(rsim::Dtype::Float, rsim::Dtype::Float, none.data_ptr(), nullptr, w.data_ptr(), none.data_ptr(),
                nullptr, rstd.data_ptr<float>(), 0, 40, 1e-5f, rsim::Config{});
  rsim::backward(rsim::Dtype::Float, rsim::Dtype::Float, none.data_ptr(), none.data_ptr(), w.data_ptr(),
                 rstd.data_ptr<float>(), nullptr, none.data_ptr(), dw.data_ptr(), 0, 40, rsim::Config{});
  EXPECT_TRUE(at::equal(dw, at::zeros({40}, at::kFloat)));
}

TEST(RmsNormSimLayout, RejectsAWeightOfAnotherHalfType) {
  const at::Tensor x = at::zeros({2, 8}, at::kHalf), w = at::ones({8}, at::kBFloat16), y = at::empty_like(x);
  const at::Tensor rstd = at::empty({2}, at::kFloat);
  EXPECT_THROW(rsim::forward(rsim::Dtype::Half, rsim::Dtype::BFloat16, x.data_ptr(), nullptr, w.data_ptr(),
                             y.data_ptr(), nullptr, rstd.data_ptr<float>(), 2, 8, 1e-5f, rsim::Config{}),
               std::invalid_argument);
}

}  // namespace
}  // namespace sluice
