// model.elementwise_kernels: fused without a GPU. The fused RMSNorm and sigmoid gate kernels
// (kernels/rms_norm.cuh, kernels/gate_mul.cuh) run on CPU tensors under cuda_sim through a test
// launcher installed in the model's seam (model/elementwise_launcher.h), so that the autograd
// Functions (model/fused_rms_norm.h, model/fused_gate.h) and the decoder's wiring run the same
// kernel code a GPU would:
//   (a) the Functions, forward and backward, against ATen/autograd (fp32 and bf16; the residual
//       form; the gate at width 1 and at the head dim; non-contiguous inputs);
//   (b) a small decoder with a G1 gate (elementwise, headwise; and input-constant logits) and
//       QK-norm, dense and MoE, under no, selective and full activation checkpointing: loss and
//       every parameter gradient of `fused` within 1e-5 relative of `aten`, with the number of
//       kernel launches checked;
//   (c) `fused` with the default launcher (CUDA kernels) on CPU tensors falls back to ATen and
//       equals `aten` bitwise.
// Label cpu: runs wherever nvcc is found (cuda_sim needs the toolkit's headers), GPU or not.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <string>
#include <vector>

#include "gate_mul_sim.h"
#include "model/elementwise_launcher.h"
#include "model/fused_gate.h"
#include "model/fused_rms_norm.h"
#include "rms_norm_sim.h"
#include "sluice/model.h"

namespace sluice {
namespace {

namespace rsim = kernels::rms_norm_sim;
namespace gsim = kernels::gate_mul_sim;

// Kernel launches through the sim launcher since the last reset.
struct Launches {
  int rms_forward = 0, rms_forward_residual = 0, rms_backward = 0, gate_forward = 0, gate_backward = 0;
};
Launches g_launches;

// The checks of the CUDA launchers (kernels/rms_norm.cu, gate_mul.cu) that the raw-buffer sim
// API cannot make: a Function handing over a strided or mistyped tensor fails here as it would there.
void check_buffer(const at::Tensor& t, at::ScalarType dtype, int64_t numel, const char* what) {
  TORCH_CHECK(t.defined() && t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == dtype &&
                  t.numel() == numel,
              "sim launcher: ", what, " must be a contiguous CPU tensor of ", dtype, " with ", numel, " elements");
}

template <typename Dtype>
Dtype sim_dtype(at::ScalarType t) {
  if (t == at::kFloat) return Dtype::Float;
  if (t == at::kHalf) return Dtype::Half;
  TORCH_CHECK(t == at::kBFloat16, "sim launcher: dtype ", t);
  return Dtype::BFloat16;
}

const void* data_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

void sim_rms_norm_forward(const at::Tensor& x, const at::Tensor& residual, const at::Tensor& weight, double eps,
                          at::Tensor& y, at::Tensor& residual_out, at::Tensor& rstd) {
  const int64_t d = x.size(-1), rows = x.numel() / d;
  check_buffer(x, x.scalar_type(), x.numel(), "x");
  check_buffer(y, x.scalar_type(), x.numel(), "y");
  TORCH_CHECK(residual.defined() == residual_out.defined(), "sim launcher: residual and residual_out");
  if (residual.defined()) {
    check_buffer(residual, x.scalar_type(), x.numel(), "residual");
    check_buffer(residual_out, x.scalar_type(), x.numel(), "residual_out");
  }
  check_buffer(weight, weight.scalar_type(), d, "weight");
  check_buffer(rstd, at::kFloat, rows, "rstd");
  rsim::forward(sim_dtype<rsim::Dtype>(x.scalar_type()), sim_dtype<rsim::Dtype>(weight.scalar_type()), x.data_ptr(),
                data_or_null(residual), weight.data_ptr(), y.data_ptr(),
                residual_out.defined() ? residual_out.data_ptr() : nullptr, rstd.data_ptr<float>(), rows, d,
                static_cast<float>(eps), rsim::Config{});
  ++(residual.defined() ? g_launches.rms_forward_residual : g_launches.rms_forward);
}

void sim_rms_norm_backward(const at::Tensor& dy, const at::Tensor& s, const at::Tensor& weight,
                           const at::Tensor& rstd, const at::Tensor& d_residual_out, at::Tensor& ds, at::Tensor& dw) {
  const int64_t d = s.size(-1), rows = s.numel() / d;
  check_buffer(s, s.scalar_type(), s.numel(), "s");
  check_buffer(dy, s.scalar_type(), s.numel(), "dy");
  check_buffer(ds, s.scalar_type(), s.numel(), "ds");
  if (d_residual_out.defined()) check_buffer(d_residual_out, s.scalar_type(), s.numel(), "d_residual_out");
  check_buffer(weight, weight.scalar_type(), d, "weight");
  check_buffer(dw, weight.scalar_type(), d, "dw");
  check_buffer(rstd, at::kFloat, rows, "rstd");
  rsim::backward(sim_dtype<rsim::Dtype>(s.scalar_type()), sim_dtype<rsim::Dtype>(weight.scalar_type()),
                 dy.data_ptr(), s.data_ptr(), weight.data_ptr(), rstd.data_ptr<float>(), data_or_null(d_residual_out),
                 ds.data_ptr(), dw.data_ptr(), rows, d, rsim::Config{});
  ++g_launches.rms_backward;
}

void sim_gate_mul_forward(const at::Tensor& y, const at::Tensor& z, int64_t width, at::Tensor& out) {
  check_buffer(y, y.scalar_type(), y.numel(), "y");
  check_buffer(out, y.scalar_type(), y.numel(), "out");
  check_buffer(z, y.scalar_type(), y.numel() / width, "z");
  gsim::forward(sim_dtype<gsim::Dtype>(y.scalar_type()), y.data_ptr(), z.data_ptr(), out.data_ptr(), y.numel(), width,
                gsim::Config{});
  ++g_launches.gate_forward;
}

void sim_gate_mul_backward(const at::Tensor& dout, const at::Tensor& y, const at::Tensor& z, int64_t width,
                           at::Tensor& dy, at::Tensor& dz) {
  check_buffer(y, y.scalar_type(), y.numel(), "y");
  check_buffer(dout, y.scalar_type(), y.numel(), "dout");
  check_buffer(dy, y.scalar_type(), y.numel(), "dy");
  check_buffer(z, y.scalar_type(), y.numel() / width, "z");
  check_buffer(dz, y.scalar_type(), y.numel() / width, "dz");
  gsim::backward(sim_dtype<gsim::Dtype>(y.scalar_type()), dout.data_ptr(), y.data_ptr(), z.data_ptr(), dy.data_ptr(),
                 dz.data_ptr(), y.numel(), width, gsim::Config{});
  ++g_launches.gate_backward;
}

const ElementwiseLauncher kSimLauncher{"cuda_sim",           c10::DeviceType::CPU,  &sim_rms_norm_forward,
                                       &sim_rms_norm_backward, &sim_gate_mul_forward, &sim_gate_mul_backward};

// Installs the sim launcher for a scope (forward and backward), then restores the default.
struct UseSimLauncher {
  UseSimLauncher() {
    set_elementwise_launcher(&kSimLauncher);
    g_launches = {};
  }
  ~UseSimLauncher() { set_elementwise_launcher(nullptr); }
  UseSimLauncher(const UseSimLauncher&) = delete;
  UseSimLauncher& operator=(const UseSimLauncher&) = delete;
};

at::Tensor leaf(const at::Tensor& t) { return t.detach().clone().requires_grad_(true); }

// |got - ref| <= rtol·|ref| + atol·max|ref| everywhere (ref computed in fp32 from the same inputs).
void expect_close(const at::Tensor& got, const at::Tensor& ref, double rtol, double atol, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(got.sizes(), ref.sizes()) << what;
  const at::Tensor g = got.to(at::kDouble), r = ref.to(at::kDouble);
  ASSERT_FALSE(at::isnan(g).any().item<bool>()) << what << ": NaN";
  const double scale = r.abs().max().item<double>();
  const at::Tensor excess = (g - r).abs() - (rtol * r.abs() + atol * scale);
  EXPECT_LE(excess.max().item<double>(), 0.0)
      << what << ": max |got - ref| = " << (g - r).abs().max().item<double>() << " (max |ref| " << scale << ")";
}

// Bounds: fp32 outputs against fp32 ATen in another summation order, 1e-5 of the largest value
// (rows of 64 terms, a few fp32 units each). bf16 outputs: the kernels round once from fp32, at
// most half a bf16 unit (2^-8 relative with the 8-bit significand), bounded by twice that, as in
// tests/rms_norm_reference.h; plus 1e-4 of the largest value for the fp32 part (ds cancels terms
// of that size). fp32 weight gradients of bf16 activations: fp32 sums.
struct Tol {
  double rtol, atol;
};
Tol tol_for(at::ScalarType t) { return t == at::kFloat ? Tol{1e-5, 1e-5} : Tol{std::ldexp(1.0, -7), 1e-4}; }
constexpr Tol kFp32Sum{1e-5, 1e-5};

class FusedFunctions : public ::testing::TestWithParam<at::ScalarType> {};

// y = rms_norm(x)·w and its gradients; x non-contiguous (as QK-norm's input of packed projections).
TEST_P(FusedFunctions, RmsNormMatchesAten) {
  const at::ScalarType t = GetParam();
  at::manual_seed(1);
  const at::Tensor x0 = at::randn({7, 3, 64}).transpose(0, 1).to(t);  // [3, 7, 64], strided
  const at::Tensor w0 = 1.0 + 0.5 * at::randn({64});                   // fp32, as parameters under autocast
  const at::Tensor dy = at::randn({3, 7, 64}).to(t);
  const double eps = 1e-5;
  const UseSimLauncher sim;
  ASSERT_EQ(fused_rms_norm_unsupported(x0, w0), "");
  const at::Tensor x = leaf(x0), w = leaf(w0);
  const at::Tensor y = fused_rms_norm(x, w, eps);
  EXPECT_EQ(y.scalar_type(), t);
  y.backward(dy);
  EXPECT_EQ(g_launches.rms_forward, 1);
  EXPECT_EQ(g_launches.rms_backward, 1);
  const at::Tensor xr = leaf(x0.to(at::kFloat)), wr = leaf(w0);
  const at::Tensor yr = at::rms_norm(xr, {64}, wr, eps);
  yr.backward(dy.to(at::kFloat));
  expect_close(y, yr, tol_for(t).rtol, tol_for(t).atol, "y");
  expect_close(x.grad(), xr.grad(), tol_for(t).rtol, tol_for(t).atol, "dx");
  expect_close(w.grad(), wr.grad(), kFp32Sum.rtol, kFp32Sum.atol, "dw");
}

// {h, y} = {residual + x, rms_norm(h)·w}: h bitwise ATen's add; gradients through both outputs
// (h feeds the next residual add, y the MLP).
TEST_P(FusedFunctions, ResidualFormMatchesAten) {
  const at::ScalarType t = GetParam();
  at::manual_seed(2);
  const at::Tensor r0 = at::randn({2, 5, 96}).to(t), x0 = at::randn({2, 5, 96}).to(t);
  const at::Tensor w0 = 1.0 + 0.5 * at::randn({96});
  const at::Tensor dy = at::randn({2, 5, 96}).to(t), dh = at::randn({2, 5, 96}).to(t);
  const UseSimLauncher sim;
  ASSERT_EQ(fused_rms_norm_unsupported(x0, w0, r0), "");
  const at::Tensor r = leaf(r0), x = leaf(x0), w = leaf(w0);
  const auto [h, y] = fused_add_rms_norm(r, x, w, 1e-5);
  EXPECT_TRUE(at::equal(h, r0 + x0)) << "h != residual + x";
  torch::autograd::backward({y, h}, {dy, dh});
  EXPECT_EQ(g_launches.rms_forward_residual, 1);
  EXPECT_EQ(g_launches.rms_backward, 1);
  const at::Tensor rr = leaf(r0.to(at::kFloat)), xr = leaf(x0.to(at::kFloat)), wr = leaf(w0);
  const at::Tensor hr = rr + xr;
  // h rounded to t as the kernel stores it, its gradient passed through unrounded.
  const at::Tensor hs = hr + (hr.to(t).to(at::kFloat) - hr).detach();
  const at::Tensor yr = at::rms_norm(hs, {96}, wr, 1e-5);
  torch::autograd::backward({yr, hr}, {dy.to(at::kFloat), dh.to(at::kFloat)});
  const Tol tl = tol_for(t);
  expect_close(y, yr, tl.rtol, tl.atol, "y");
  expect_close(x.grad(), xr.grad(), tl.rtol, tl.atol, "dx");
  expect_close(r.grad(), rr.grad(), tl.rtol, tl.atol, "dresidual");
  expect_close(w.grad(), wr.grad(), kFp32Sum.rtol, kFp32Sum.atol, "dw");
}

// out = y ⊙ σ(z) with z one logit per element (width 1) or per head (width = head dim 16); y as
// the attention core leaves it ([B, H, T, D] transposed to [B, T, H, D]: strided).
TEST_P(FusedFunctions, GateMatchesAten) {
  const at::ScalarType t = GetParam();
  for (const int64_t width : {int64_t{1}, int64_t{16}}) {
    SCOPED_TRACE("width " + std::to_string(width));
    at::manual_seed(3 + width);
    const int64_t B = 2, T = 5, H = 3, D = 16;
    const at::Tensor y0 = at::randn({B, H, T, D}).transpose(1, 2).to(t);
    const at::Tensor z0 = (3.0 * at::randn({B, T, H * D / width})).to(t);
    const at::Tensor dout = at::randn({B, T, H, D}).to(t);
    const UseSimLauncher sim;
    ASSERT_EQ(fused_gate_unsupported(y0), "");
    const at::Tensor y = leaf(y0), z = leaf(z0);
    const at::Tensor out = fused_gate_mul(y, z, width);
    EXPECT_EQ(out.sizes(), y0.sizes());
    out.backward(dout);
    EXPECT_EQ(g_launches.gate_forward, 1);
    EXPECT_EQ(g_launches.gate_backward, 1);
    const at::Tensor yr = leaf(y0.to(at::kFloat)), zr = leaf(z0.to(at::kFloat));
    const at::Tensor outr = yr * at::sigmoid(zr).view({B, T, H, D / width});
    outr.backward(dout.to(at::kFloat));
    const Tol tl = tol_for(t);
    expect_close(out, outr, tl.rtol, tl.atol, "out");
    expect_close(y.grad(), yr.grad(), tl.rtol, tl.atol, "dy");
    expect_close(z.grad(), zr.grad(), tl.rtol, tl.atol, "dz");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, FusedFunctions, ::testing::Values(at::kFloat, at::kBFloat16),
                         [](const ::testing::TestParamInfo<at::ScalarType>& i) {
                           return i.param == at::kFloat ? std::string("fp32") : std::string("bf16");
                         });

// What the kernels do not take is reported, so that the modules fall back.
TEST(FusedFunctionsSupport, ReportsWhatTheKernelsDoNotTake) {
  const at::Tensor x = at::randn({4, 8}), w = at::ones({8});
  {
    const UseSimLauncher sim;
    EXPECT_EQ(fused_rms_norm_unsupported(x, w), "");
    EXPECT_NE(fused_rms_norm_unsupported(x.to(at::kDouble), w.to(at::kDouble)), "");
    EXPECT_NE(fused_rms_norm_unsupported(x.to(at::kBFloat16), w.to(at::kHalf)), "");  // weight neither x's nor fp32
    EXPECT_NE(fused_rms_norm_unsupported(x, at::ones({4})), "");
    EXPECT_NE(fused_rms_norm_unsupported(x, w, x.to(at::kBFloat16)), "");
    EXPECT_NE(fused_gate_unsupported(x.to(at::kDouble)), "");
  }
  // The default launcher: CUDA kernels (or none without nvcc), never CPU tensors.
  EXPECT_NE(fused_rms_norm_unsupported(x, w), "");
  EXPECT_NE(fused_gate_unsupported(x), "");
}

ModelConfig tiny_config(const std::string& granularity, bool moe) {
  ModelConfig m;
  m.vocab_size = 64;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.head_dim = 8;
  m.ffn_hidden = 48;
  m.qk_norm = true;
  m.attention.gate.position = "G1";
  if (granularity == "constant") {  // input-independent logits (one [H·D] vector for every token)
    m.attention.gate.input = "constant";
  } else {
    m.attention.gate.granularity = granularity;
    m.attention.gate.bias = true;
  }
  if (moe) {
    m.arch = "moe";
    m.n_layers = 3;
    m.moe.every = 2;  // blocks 0 and 2 dense, block 1 MoE
    m.moe.n_experts = 4;
    m.moe.top_k = 2;
    m.moe.ffn_hidden = 16;
    m.moe.shared_experts = 1;
  }
  return m;
}

// Same seed, same parameters; norm weights away from 1 so that dw and the weight's use are tested.
CausalLM make_model(ModelConfig cfg, const std::string& kernels) {
  cfg.elementwise_kernels = kernels;
  at::manual_seed(11);
  CausalLM model(cfg);
  at::NoGradGuard no_grad;
  for (auto& p : model->named_parameters())
    if (p.key().find("norm") != std::string::npos) p.value().add_(0.3 * at::randn(p.value().sizes()));
  return model;
}

struct LossAndGrads {
  at::Tensor loss;
  std::vector<std::pair<std::string, at::Tensor>> grads;
};

LossAndGrads loss_and_grads(CausalLM& model, const std::string& checkpointing) {
  model->set_activation_checkpointing(checkpointing);
  at::manual_seed(5);
  const at::Tensor tokens = at::randint(64, {2, 12}, at::kLong), targets = at::randint(64, {2, 12}, at::kLong);
  LossAndGrads r;
  r.loss = model->loss(tokens, targets);
  r.loss.backward();
  for (const auto& p : model->named_parameters()) r.grads.emplace_back(p.key(), p.value().grad());
  return r;
}

struct ModelCase {
  std::string granularity;
  bool moe;
  std::string checkpointing;
};

std::string case_name(const ModelCase& c) { return c.granularity + (c.moe ? "_moe_" : "_dense_") + c.checkpointing; }
std::string model_case_name(const ::testing::TestParamInfo<ModelCase>& i) { return case_name(i.param); }
void PrintTo(const ModelCase& c, std::ostream* os) { *os << case_name(c); }

std::vector<ModelCase> model_cases() {
  std::vector<ModelCase> cases;
  for (const std::string g : {"elementwise", "headwise"})
    for (const bool moe : {false, true})
      for (const std::string c : {"none", "selective", "full"}) cases.push_back({g, moe, c});
  cases.push_back({"constant", false, "none"});
  return cases;
}

class FusedDecoder : public ::testing::TestWithParam<ModelCase> {};

// (b) fused through the sim launcher within 1e-5 relative of aten (fp32: the kernels' sums run
// in another order than ATen's), every parameter gradient included.
TEST_P(FusedDecoder, SimKernelsMatchAten) {
  const ModelCase& c = GetParam();
  const ModelConfig cfg = tiny_config(c.granularity, c.moe);
  CausalLM aten = make_model(cfg, "aten");
  const LossAndGrads ref = loss_and_grads(aten, c.checkpointing);
  CausalLM fused = make_model(cfg, "fused");
  LossAndGrads got;
  Launches launches;
  {
    const UseSimLauncher sim;
    got = loss_and_grads(fused, c.checkpointing);
    launches = g_launches;
  }
  // Per forward: per block norm1, q_norm and k_norm, and norm2 (with the residual add except
  // under selective checkpointing), then the final norm; one G1 gate per block. Recompute
  // (selective, full) runs forwards again in backward.
  const int layers = static_cast<int>(cfg.n_layers);
  const bool residual_form = c.checkpointing != "selective";
  if (c.checkpointing == "none") {
    EXPECT_EQ(launches.rms_forward, 3 * layers + 1);
    EXPECT_EQ(launches.rms_forward_residual, layers);
    EXPECT_EQ(launches.gate_forward, layers);
  } else {
    EXPECT_GT(launches.rms_forward, 3 * layers + 1);
    EXPECT_GT(launches.gate_forward, layers);
  }
  EXPECT_EQ(launches.rms_forward_residual > 0, residual_form);
  EXPECT_EQ(launches.rms_backward, 4 * layers + 1);
  EXPECT_EQ(launches.gate_backward, layers);

  EXPECT_LE(std::abs(got.loss.item<double>() - ref.loss.item<double>()), 1e-5 * std::abs(ref.loss.item<double>()))
      << got.loss.item<double>() << " vs " << ref.loss.item<double>();
  ASSERT_EQ(got.grads.size(), ref.grads.size());
  for (size_t i = 0; i < ref.grads.size(); ++i) {
    const auto& [name, g] = got.grads[i];
    ASSERT_EQ(name, ref.grads[i].first);
    const at::Tensor& r = ref.grads[i].second;
    ASSERT_EQ(g.defined(), r.defined()) << name;
    if (!r.defined()) continue;
    const double scale = r.abs().max().item<double>();
    ASSERT_GT(scale, 0.0) << name << ": a zero gradient tests nothing";
    EXPECT_LE((g - r).abs().max().item<double>(), 1e-5 * scale) << name;
  }
}

// (c) fused with the default launcher (CUDA kernels) on CPU tensors: every norm and the gate
// fall back to ATen, bitwise the aten model.
TEST_P(FusedDecoder, CpuFallbackIsBitwiseAten) {
  const ModelCase& c = GetParam();
  const ModelConfig cfg = tiny_config(c.granularity, c.moe);
  CausalLM aten = make_model(cfg, "aten");
  const LossAndGrads ref = loss_and_grads(aten, c.checkpointing);
  CausalLM fused = make_model(cfg, "fused");
  const LossAndGrads got = loss_and_grads(fused, c.checkpointing);
  EXPECT_TRUE(at::equal(got.loss, ref.loss)) << got.loss.item<double>() << " vs " << ref.loss.item<double>();
  ASSERT_EQ(got.grads.size(), ref.grads.size());
  for (size_t i = 0; i < ref.grads.size(); ++i) {
    ASSERT_EQ(got.grads[i].second.defined(), ref.grads[i].second.defined()) << ref.grads[i].first;
    if (!ref.grads[i].second.defined()) continue;
    EXPECT_TRUE(at::equal(got.grads[i].second, ref.grads[i].second)) << ref.grads[i].first;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, FusedDecoder, ::testing::ValuesIn(model_cases()), model_case_name);

}  // namespace
}  // namespace sluice
