// The fused RMSNorm kernels' ATen reference (kernels/rms_norm.cuh has the formulas), shared by
// tests/test_rms_norm_sim.cpp (the kernels under cuda_sim) and tests/test_rms_norm_gpu.cpp (the
// CUDA launchers): inputs, the reference in fp32 from the same low-precision inputs, and the
// per-element bounds with their reasons. The backward comes from autograd through at::rms_norm,
// not from the kernels' hand-derived formula.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <ostream>
#include <string>

namespace sluice::rms_norm_test {

struct Case {
  int64_t rows, d;
  at::ScalarType dtype;         // x, residual, y, s, dy, ds
  at::ScalarType weight_dtype;  // dtype or fp32
  bool residual;                // forward: s = x + residual
  bool d_residual_out;          // backward: a gradient reaching s from its later uses
};

inline std::string dtype_name(at::ScalarType t) { return t == at::kFloat ? "f32" : (t == at::kHalf ? "f16" : "bf16"); }

inline std::string case_name(const Case& c) {
  return std::to_string(c.rows) + "x" + std::to_string(c.d) + "_" + dtype_name(c.dtype) + "_w" +
         dtype_name(c.weight_dtype) + (c.residual ? "_res" : "") + (c.d_residual_out ? "_dres" : "");
}

inline void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }  // gtest's parameter names

struct Inputs {
  at::Tensor x, residual, weight, dy, d_residual_out;  // residual, d_residual_out: undefined unless the case has them
};

inline Inputs make_inputs(const Case& c, uint64_t seed, const at::Device& device) {
  at::manual_seed(seed);
  const auto f = at::TensorOptions(at::kFloat);
  Inputs in;
  in.x = at::randn({c.rows, c.d}, f).to(device, c.dtype);
  if (c.residual) in.residual = at::randn({c.rows, c.d}, f).to(device, c.dtype);
  in.weight = (1.0 + 0.5 * at::randn({c.d}, f)).to(device, c.weight_dtype);
  in.dy = at::randn({c.rows, c.d}, f).to(device, c.dtype);
  if (c.d_residual_out) in.d_residual_out = at::randn({c.rows, c.d}, f).to(device, c.dtype);
  return in;
}

struct Forward {
  at::Tensor s;     // x + residual rounded to the element type (as the kernel stores it), or x
  at::Tensor y;     // fp32
  at::Tensor rstd;  // fp32 [rows]
};

// On the CPU, in fp32.
inline Forward forward_reference(const Inputs& in, double eps) {
  const at::Tensor x = in.x.to(at::kCPU, at::kFloat);
  Forward r;
  r.s = in.residual.defined() ? (x + in.residual.to(at::kCPU, at::kFloat)).to(in.x.scalar_type()) : in.x.cpu();
  const at::Tensor s = r.s.to(at::kFloat);
  r.rstd = at::rsqrt(s.pow(2).mean(-1) + eps);
  r.y = at::rms_norm(s, {s.size(-1)}, in.weight.to(at::kCPU, at::kFloat), eps);
  return r;
}

struct Backward {
  at::Tensor ds, dw;  // fp32
  // The bounds' scales: max |rstd·dy·w| (the size of the terms that cancel in ds) and
  // max over columns of Σ_rows |dy·xhat| (of the terms dw sums).
  double ds_scale, dw_scale;
};

// dy, s from `in` and `s`; autograd through at::rms_norm in fp32 on the CPU.
inline Backward backward_reference(const Inputs& in, const at::Tensor& s, double eps) {
  at::AutoGradMode grad(true);
  const at::Tensor sf = s.to(at::kCPU, at::kFloat).detach().requires_grad_(true);
  const at::Tensor wf = in.weight.to(at::kCPU, at::kFloat).detach().requires_grad_(true);
  const at::Tensor dy = in.dy.to(at::kCPU, at::kFloat);
  const at::Tensor y = at::rms_norm(sf, {sf.size(-1)}, wf, eps);
  const auto grads = torch::autograd::grad({y}, {sf, wf}, {dy});
  Backward r;
  r.ds = grads[0];
  if (in.d_residual_out.defined()) r.ds = r.ds + in.d_residual_out.to(at::kCPU, at::kFloat);
  at::NoGradGuard no_grad;
  const at::Tensor rstd = at::rsqrt(sf.detach().pow(2).mean(-1, true) + eps);
  r.ds_scale = (rstd * dy * wf.detach()).abs().max().item<double>();
  if (in.d_residual_out.defined()) r.ds_scale += in.d_residual_out.to(at::kCPU, at::kDouble).abs().max().item<double>();
  r.dw = grads[1];
  r.dw_scale = (dy * sf.detach() * rstd).abs().sum(0).max().item<double>();
  return r;
}

// Relative bound of one rounding to `t` plus margin: the kernels compute in fp32 and round each
// output once, against an unrounded fp32 reference (an error of at most half a unit in the last
// place: 2^-8 relative for bf16's 8-bit significand, 2^-11 for fp16's 11); the bound is twice
// that. fp32 outputs: 1e-5, for fp32 arithmetic in another order.
inline double rtol_for(at::ScalarType t) {
  return t == at::kFloat ? 1e-5 : (t == at::kBFloat16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -10));
}

// |got - ref| <= atol + rtol·|ref| everywhere; atol = 1e-5 · scale covers the fp32 summation
// order (the row sums over d <= 4096 terms and dw's over the rows differ from ATen's by a few
// fp32 units of the summed terms' size) and the cancellation in ds (g - xhat·mean(g·xhat) is
// far smaller than its terms when d is 1).
inline void expect_close(const at::Tensor& got, const at::Tensor& ref, double rtol, double scale,
                         const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(got.sizes(), ref.sizes()) << what;
  const at::Tensor g = got.to(at::kCPU, at::kDouble), r = ref.to(at::kCPU, at::kDouble);
  ASSERT_FALSE(at::isnan(g).any().item<bool>()) << what << ": NaN";
  const double atol = 1e-5 * scale;
  const at::Tensor excess = (g - r).abs() - (atol + rtol * r.abs());
  EXPECT_LE(excess.max().item<double>(), 0.0)
      << what << ": max |got - ref| = " << (g - r).abs().max().item<double>() << ", atol " << atol << ", rtol " << rtol;
}

// Outputs of one forward and backward of the kernels.
struct Result {
  at::Tensor y, residual_out, rstd, ds, dw;
};

// The kernels' outputs against the references, and residual_out bitwise equal to the rounded sum.
inline void check_result(const Case& c, const Inputs& in, const Result& got, double eps, const std::string& name) {
  const Forward f = forward_reference(in, eps);
  if (c.residual)
    EXPECT_TRUE(at::equal(got.residual_out.cpu(), f.s)) << name << ": residual_out != round(x + residual)";
  const double y_scale = f.y.abs().max().item<double>();
  expect_close(got.y, f.y, rtol_for(c.dtype), y_scale, name + " y");
  expect_close(got.rstd, f.rstd, 1e-5, 0.0, name + " rstd");
  const Backward b = backward_reference(in, f.s, eps);
  expect_close(got.ds, b.ds, rtol_for(c.dtype), b.ds_scale, name + " ds");
  expect_close(got.dw, b.dw, rtol_for(c.weight_dtype), b.dw_scale, name + " dw");
}

}  // namespace sluice::rms_norm_test
