// The fused sigmoid gate kernels' ATen reference (kernels/gate_mul.cuh has the formulas), shared
// by tests/test_gate_mul_sim.cpp (the kernels under cuda_sim) and tests/test_gate_mul_gpu.cpp
// (the CUDA launchers): inputs, the reference in fp32 from the same low-precision inputs, and
// the per-element bounds with their reasons. The backward comes from autograd through
// y * at::sigmoid(z) (z [groups, 1] broadcast over the group's width), not from the kernels'
// hand-derived formula.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <ostream>
#include <string>

namespace sluice::gate_mul_test {

struct Case {
  int64_t groups, width;  // y has groups · width elements, z one per group (width 1: elementwise)
  at::ScalarType dtype;
};

inline std::string dtype_name(at::ScalarType t) { return t == at::kFloat ? "f32" : (t == at::kHalf ? "f16" : "bf16"); }

inline std::string case_name(const Case& c) {
  return std::to_string(c.groups) + "x" + std::to_string(c.width) + "_" + dtype_name(c.dtype);
}

inline void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

struct Inputs {
  at::Tensor y, dout;  // [groups, width]
  at::Tensor z;        // [groups, 1]
};

// z = 3·N(0, 1): gates from nearly closed to nearly open (s·(1 - s) down to ~1e-5 at the tails).
inline Inputs make_inputs(const Case& c, uint64_t seed, const at::Device& device) {
  at::manual_seed(seed);
  const auto f = at::TensorOptions(at::kFloat);
  Inputs in;
  in.y = at::randn({c.groups, c.width}, f).to(device, c.dtype);
  in.z = (3.0 * at::randn({c.groups, 1}, f)).to(device, c.dtype);
  in.dout = at::randn({c.groups, c.width}, f).to(device, c.dtype);
  return in;
}

struct Reference {
  at::Tensor out, dy, dz;  // fp32 on the CPU; out, dy [groups, width], dz [groups, 1]
  at::Tensor dz_scale;     // Σ_group |dout · y · s|: the size of the terms dz sums, [groups, 1]
};

// Autograd through y * sigmoid(z) in fp32 on the CPU.
inline Reference reference(const Inputs& in) {
  at::AutoGradMode grad(true);
  const at::Tensor y = in.y.to(at::kCPU, at::kFloat).detach().requires_grad_(true);
  const at::Tensor z = in.z.to(at::kCPU, at::kFloat).detach().requires_grad_(true);
  const at::Tensor dout = in.dout.to(at::kCPU, at::kFloat);
  const at::Tensor out = y * at::sigmoid(z);
  const auto grads = torch::autograd::grad({out}, {y, z}, {dout});
  Reference r;
  r.out = out.detach();
  r.dy = grads[0];
  r.dz = grads[1];
  at::NoGradGuard no_grad;
  r.dz_scale = (dout * y.detach() * at::sigmoid(z.detach())).abs().sum(1, true);
  return r;
}

// Relative bound of one rounding to `t` plus margin: the kernels compute in fp32 and round each
// output once, against an unrounded fp32 reference (at most half a unit in the last place:
// 2^-9 relative for bf16's 8-bit significand, 2^-12 for fp16's 11); the bound is twice that.
// fp32 outputs: 1e-6, about 8 fp32 units, for sigmoid's exp and division (within a unit or two
// each, glibc or CUDA against ATen's vectorised one) and the products in another order.
inline double rtol_for(at::ScalarType t) {
  return t == at::kFloat ? 1e-6 : (t == at::kBFloat16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11));
}

// Absolute floor of the output type: fp16's subnormals (below 2^-14) are spaced 2^-24 apart, and
// dz's small terms land there (|dz| ~ 1e-5 at the tails of z); bf16 and fp32 keep fp32's range.
inline double atol_floor_for(at::ScalarType t) { return t == at::kHalf ? std::ldexp(1.0, -24) : 0.0; }

// |got - ref| <= atol + rtol·|ref| everywhere (atol a tensor broadcast against ref).
inline void expect_close(const at::Tensor& got, const at::Tensor& ref, double rtol, const at::Tensor& atol,
                         const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(got.numel(), ref.numel()) << what;
  const at::Tensor g = got.to(at::kCPU, at::kDouble).reshape(ref.sizes()), r = ref.to(at::kCPU, at::kDouble);
  ASSERT_FALSE(at::isnan(g).any().item<bool>()) << what << ": NaN";
  const at::Tensor excess = (g - r).abs() - (atol.to(at::kDouble) + rtol * r.abs());
  EXPECT_LE(excess.max().item<double>(), 0.0)
      << what << ": max |got - ref| = " << (g - r).abs().max().item<double>() << ", max excess over the bound "
      << excess.max().item<double>() << ", rtol " << rtol;
}

// Outputs of one forward and backward of the kernels.
struct Result {
  at::Tensor out, dy, dz;
};

// out and dy: the rounding bound alone (products, no cancellation). dz = Σ dout·y·s·(1 - s):
// plus 1e-6 · Σ|dout·y·s| for the fp32 part, which covers the sums' order (at most 128 terms,
// a few fp32 units of their absolute sum) and 1 - s cancelling when s is near 1 (an error of a
// unit or two of 1 in s, 2^-23 and 2^-24, is an absolute error of that in 1 - s).
inline void check_result(const Case& c, const Inputs& in, const Result& got, const std::string& name) {
  const Reference r = reference(in);
  const double rtol = rtol_for(c.dtype);
  const at::Tensor floor = at::full({1}, atol_floor_for(c.dtype), at::kDouble);
  expect_close(got.out, r.out, rtol, floor, name + " out");
  expect_close(got.dy, r.dy, rtol, floor, name + " dy");
  expect_close(got.dz, r.dz, rtol, floor + 1e-6 * r.dz_scale.to(at::kDouble), name + " dz");
}

}  // namespace sluice::gate_mul_test
