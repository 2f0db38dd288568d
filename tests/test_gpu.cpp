// GPU tests (label gpu): fused kernels against their ATen references, forward and backward,
// and the model on CUDA against the CPU. Every test skips cleanly without a CUDA device.
#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/function.h>
#include <torch/cuda.h>

#include <atomic>
#include <functional>
#include <iostream>

#include "model/coca.h"
#include "model/fused_ops.h"
#include "model/kv_cache.h"
#include "model/moe.h"
#include "model/rope.h"
#include "sluice/attention.h"
#include "sluice/model.h"
#include "train/adamw.h"
#include "train/device.h"
#include "train/train_step.h"

namespace sluice {
namespace {

#define REQUIRE_CUDA()                                                           \
  do {                                                                           \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";          \
    if (!fused_kernels_built()) GTEST_SKIP() << "built without CUDA kernels";    \
  } while (0)

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kCPU, at::kDouble) - b.to(at::kCPU, at::kDouble)).abs().max().item<double>();
}

// |a - b| <= atol + rtol·|b|. fp32: the kernels do the reference's arithmetic up to
// operation order, so 1e-5. bf16 / fp16: both paths start from the same low-precision inputs
// and compute in fp32, but the ATen reference rounds intermediate results (silu(g), the
// rotated halves) to the storage type while the kernel rounds once, so they may differ by
// two roundings: 2·2^-8 relative for bf16 (8-bit mantissa), 2·2^-11 for fp16.
void expect_close(const at::Tensor& a, const at::Tensor& b, at::ScalarType t, const std::string& what,
                  double factor = 1.0) {
  const double rtol = factor * (t == at::kFloat ? 1e-5 : (t == at::kBFloat16 ? 2.0 / 256 : 2.0 / 2048));
  const double atol = t == at::kFloat ? 1e-5 : rtol * 0.1;
  const at::Tensor ad = a.to(at::kCPU, at::kDouble), bd = b.to(at::kCPU, at::kDouble);
  const at::Tensor excess = (ad - bd).abs() - (atol + rtol * bd.abs());
  EXPECT_LE(excess.max().item<double>(), 0.0) << what << ": max |a-b| = " << (ad - bd).abs().max().item<double>();
}

struct RopeCase {
  int64_t B, T, H, D;
  at::ScalarType dtype;
};

class RopeKernel : public ::testing::TestWithParam<RopeCase> {};

TEST_P(RopeKernel, ForwardAndBackwardMatchReference) {
  REQUIRE_CUDA();
  const RopeCase c = GetParam();
  at::manual_seed(0);
  Rotary rot(c.D, 10000.0);
  const RotaryTables t = rot.tables(3, c.T, at::kCUDA);  // non-zero start position
  const at::Tensor x0 = at::randn({c.B, c.T, c.H, c.D}, at::kCUDA).to(c.dtype);
  const at::Tensor dy = at::randn({c.B, c.T, c.H, c.D}, at::kCUDA).to(c.dtype);
  at::Tensor xa = x0.clone().requires_grad_(true), xb = x0.clone().requires_grad_(true);
  const at::Tensor ya = apply_rope(xa, t), yb = rope_reference(xb, t);
  expect_close(ya, yb, c.dtype, "rope forward");
  (ya.to(at::kFloat) * dy.to(at::kFloat)).sum().backward();
  (yb.to(at::kFloat) * dy.to(at::kFloat)).sum().backward();
  expect_close(xa.grad(), xb.grad(), c.dtype, "rope backward");
  EXPECT_EQ(ya.scalar_type(), c.dtype);
}

void PrintTo(const RopeCase& c, std::ostream* os) {
  *os << c.B << "x" << c.T << "x" << c.H << "x" << c.D << " " << c.dtype;
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeKernel,
                         ::testing::Values(RopeCase{1, 1, 1, 2, at::kFloat}, RopeCase{2, 17, 3, 64, at::kFloat},
                                           RopeCase{3, 129, 4, 128, at::kFloat}, RopeCase{2, 33, 5, 64, at::kBFloat16},
                                           RopeCase{1, 1000, 2, 128, at::kHalf}),
                         [](const ::testing::TestParamInfo<RopeCase>& i) {
                           const RopeCase& c = i.param;
                           return "B" + std::to_string(c.B) + "T" + std::to_string(c.T) + "H" + std::to_string(c.H) +
                                  "D" + std::to_string(c.D) + "_" + std::string(c10::toString(c.dtype));
                         });

TEST(RopeKernel, NonContiguousInputFromProjectionView) {
  REQUIRE_CUDA();
  Rotary rot(16, 10000.0);
  const at::Tensor base = at::randn({2, 8, 3, 16}, at::kCUDA);
  const at::Tensor strided = base.transpose(1, 2).contiguous().transpose(1, 2);  // same values, other strides
  EXPECT_LE(max_diff(apply_rope(strided, rot.tables(0, 8, at::kCUDA)), rope_reference(base, rot.tables(0, 8, at::kCUDA))),
            1e-5);
}

// YaRN folds its attention factor into the tables (cos·a, sin·a): the kernel's backward, the
// rotation by -θ with the same tables, is then the transpose a·R(θ)ᵀ, still the exact gradient.
TEST(RopeKernel, ScaledTablesForwardAndBackward) {
  REQUIRE_CUDA();
  RopeConfig r;
  r.scaling = "yarn";
  r.factor = 8.0;
  r.original_max_len = 64;
  const Rotary rot(64, r);
  ASSERT_GT(rot.attention_factor(), 1.0);
  const RotaryTables t = rot.tables(5, 300, at::kCUDA);
  const at::Tensor x0 = at::randn({2, 300, 3, 64}, at::kCUDA), dy = at::randn({2, 300, 3, 64}, at::kCUDA);
  at::Tensor xa = x0.clone().requires_grad_(true), xb = x0.clone().requires_grad_(true);
  const at::Tensor ya = apply_rope(xa, t), yb = rope_reference(xb, t);
  expect_close(ya, yb, at::kFloat, "scaled rope forward");
  ya.backward(dy);
  yb.backward(dy);
  expect_close(xa.grad(), xb.grad(), at::kFloat, "scaled rope backward");
}

// kernels/coca.cu computes in fp32 and rounds once to the storage type, so against the ATen
// reference evaluated in fp32 on the same inputs: |a - ref| <= u·|ref| + atol, u the unit
// roundoff (2^-8 bf16, 2^-11 fp16; fp32: 1e-6 for operation order), atol 1e-4 for fp32
// cancellation in the gradients' sums of products (terms up to ~50 with randn inputs, each
// path within ~1e-5 of exact; a wrong term is off by O(1)). The reference's own bf16 path
// rounds every intermediate, hence its fp32 evaluation.
void expect_rounded_once(const at::Tensor& a, const at::Tensor& ref32, at::ScalarType t, const std::string& what) {
  const double u = t == at::kBFloat16 ? 1.0 / 256 : (t == at::kHalf ? 1.0 / 2048 : 1e-6);
  const at::Tensor ad = a.to(at::kCPU, at::kDouble), rd = ref32.to(at::kCPU, at::kDouble);
  const at::Tensor excess = (ad - rd).abs() - (1e-4 + u * rd.abs());
  EXPECT_LE(excess.max().item<double>(), 0.0) << what << ": max |a-ref| = " << (ad - rd).abs().max().item<double>();
}

struct CocaCase {
  CocaMode mode;
  int64_t B, T, H, D;
  at::ScalarType dtype;
};

class CocaKernel : public ::testing::TestWithParam<CocaCase> {};

// Q_eff and K_eff, forward and backward, from non-contiguous views as SelfAttention passes them
// (a slice of the projection output), at a non-zero start position. randn puts half of the
// magnitudes below the ReLU, so the key's zero-gradient branch is exercised too.
TEST_P(CocaKernel, QueryAndKeyForwardAndBackwardMatchReference) {
  REQUIRE_CUDA();
  const CocaCase c = GetParam();
  at::manual_seed(2);
  const Rotary rot(c.D, 10000.0);
  const RotaryTables t = rot.tables(7, c.T, at::kCUDA);
  for (const bool query : {true, false}) {
    const std::string what = std::string(query ? "Q_eff" : "K_eff") + (c.mode == CocaMode::Strict ? " strict" : " slack");
    const at::Tensor proj = at::randn({c.B, c.T, c.H + 1, c.D}, at::kCUDA).to(c.dtype);
    const at::Tensor dy = at::randn({c.B, c.T, c.H, c.D}, at::kCUDA).to(c.dtype);
    at::Tensor xa = proj.clone().requires_grad_(true);
    const at::Tensor x = xa.narrow(2, 1, c.H);  // non-contiguous (unless B = T = 1: then only offset)
    if (c.B * c.T > 1) ASSERT_FALSE(x.is_contiguous());
    const at::Tensor ya = query ? coca_query(x, t, c.mode) : coca_key(x, t, c.mode);
    at::Tensor xr = proj.to(at::kFloat).narrow(2, 1, c.H).contiguous().requires_grad_(true);
    const at::Tensor yr = query ? coca_query_reference(xr, t, c.mode) : coca_key_reference(xr, t, c.mode);
    EXPECT_EQ(ya.scalar_type(), c.dtype) << what;
    ASSERT_EQ(ya.sizes(), yr.sizes()) << what;
    expect_rounded_once(ya, yr, c.dtype, what + " forward");
    ya.backward(dy);
    yr.backward(dy.to(at::kFloat));
    expect_rounded_once(xa.grad().narrow(2, 1, c.H), xr.grad(), c.dtype, what + " backward");
  }
}

void PrintTo(const CocaCase& c, std::ostream* os) {
  *os << (c.mode == CocaMode::Strict ? "strict" : "slack") << " B" << c.B << " T" << c.T << " H" << c.H << " D" << c.D
      << " " << c.dtype;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CocaKernel,
    ::testing::Values(CocaCase{CocaMode::Strict, 1, 1, 1, 2, at::kFloat}, CocaCase{CocaMode::Slack, 1, 1, 1, 2, at::kFloat},
                      CocaCase{CocaMode::Strict, 2, 17, 3, 64, at::kFloat},
                      CocaCase{CocaMode::Slack, 3, 129, 4, 128, at::kFloat},
                      CocaCase{CocaMode::Strict, 2, 33, 5, 64, at::kBFloat16},
                      CocaCase{CocaMode::Slack, 2, 33, 5, 128, at::kBFloat16},
                      CocaCase{CocaMode::Strict, 1, 1000, 2, 128, at::kHalf},
                      CocaCase{CocaMode::Slack, 1, 1000, 2, 64, at::kHalf}),
    [](const ::testing::TestParamInfo<CocaCase>& i) {
      const CocaCase& c = i.param;
      return std::string(c.mode == CocaMode::Strict ? "strict" : "slack") + "_B" + std::to_string(c.B) + "T" +
             std::to_string(c.T) + "H" + std::to_string(c.H) + "D" + std::to_string(c.D) + "_" +
             std::string(c10::toString(c.dtype));
    });

// The model's CoCA layers take the fused path on the GPU (same tables, dynamic NTK included):
// coca_query / coca_key equal the reference there, which the model tests below rely on.
TEST(CocaKernel, DispatchesToKernelOnlyOnGpu) {
  REQUIRE_CUDA();
  const Rotary rot(8, 10000.0);
  const at::Tensor q = at::randn({1, 4, 2, 8}, at::TensorOptions().device(at::kCUDA)).requires_grad_(true);
  EXPECT_NE(coca_query(q, rot.tables(0, 4, at::kCUDA), CocaMode::Strict).grad_fn()->name().find("CocaFunction"),
            std::string::npos);
  EXPECT_NE(coca_key(q, rot.tables(0, 4, at::kCUDA), CocaMode::Slack).grad_fn()->name().find("CocaFunction"),
            std::string::npos);
  const at::Tensor qc = q.detach().cpu().requires_grad_(true);
  EXPECT_EQ(coca_query(qc, rot.tables(0, 4, at::kCPU), CocaMode::Strict).grad_fn()->name().find("CocaFunction"),
            std::string::npos);
}

// The elementwise kernels take 8 bf16/fp16 values per thread when the rows allow it and the
// bases are 16-byte aligned (kernels/pack.cuh), one per thread otherwise. Both compute the same
// fp32 arithmetic per element, so the same values at a 2-byte-offset base (the fallback) must
// give the same outputs and gradients: bitwise, up to one bf16 step where the compiler fused
// a multiply-add differently in the two instantiations (an indexing slip is off by O(1)).
void expect_same_map(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  const at::Tensor ad = a.to(at::kDouble), bd = b.to(at::kDouble);
  const double excess = ((ad - bd).abs() - (1.0 / 128) * bd.abs() - 1e-6).max().item<double>();
  EXPECT_LE(excess, 0.0) << what << ": max |a - b| " << (ad - bd).abs().max().item<double>();
}

TEST(ElementwiseKernels, VectorisedPathMatchesUnalignedFallback) {
  REQUIRE_CUDA();
  at::manual_seed(3);
  const auto opts = at::TensorOptions(at::kCUDA).dtype(at::kBFloat16);
  const int64_t B = 2, T = 9, H = 3, D = 64;
  // The same values at an aligned base and at base + 1 element (contiguous either way).
  auto both = [&](const std::vector<int64_t>& shape) {
    const at::Tensor a = at::randn(shape, opts);
    const at::Tensor buf = at::empty({a.numel() + 1}, opts);
    const at::Tensor u = buf.narrow(0, 1, a.numel()).view(shape).copy_(a);
    EXPECT_NE(reinterpret_cast<std::uintptr_t>(u.data_ptr()) % 16, 0u);
    return std::pair{a, u};
  };
  const RotaryTables t = Rotary(D, 10000.0).tables(4, T, at::kCUDA);
  using Map = std::function<at::Tensor(const at::Tensor&)>;
  const std::vector<std::pair<std::string, Map>> maps = {
      {"rope", [&](const at::Tensor& x) { return apply_rope(x, t); }},
      {"coca query strict", [&](const at::Tensor& x) { return coca_query(x, t, CocaMode::Strict); }},
      {"coca query slack", [&](const at::Tensor& x) { return coca_query(x, t, CocaMode::Slack); }},
      {"coca key strict", [&](const at::Tensor& x) { return coca_key(x, t, CocaMode::Strict); }},
      {"coca key slack", [&](const at::Tensor& x) { return coca_key(x, t, CocaMode::Slack); }}};
  for (const auto& [name, map] : maps) {
    const auto [xa, xu] = both({B, T, H, D});
    const at::Tensor dy = at::randn({B, T, H, D}, opts);
    const at::Tensor ga = xa.clone().requires_grad_(true), gu = xu.detach().requires_grad_(true);
    const at::Tensor ya = map(ga), yu = map(gu);
    expect_same_map(ya, yu, name + " forward");
    ya.backward(dy);
    yu.backward(dy);
    expect_same_map(ga.grad(), gu.grad(), name + " backward");
  }
  const auto [ga0, gu0] = both({5, 72});
  const auto [ua0, uu0] = both({5, 72});
  const at::Tensor dy = at::randn({5, 72}, opts);
  const at::Tensor ga = ga0.clone().requires_grad_(true), ua = ua0.clone().requires_grad_(true);
  const at::Tensor gu = gu0.detach().requires_grad_(true), uu = uu0.detach().requires_grad_(true);
  const at::Tensor ya = swiglu(ga, ua), yu = swiglu(gu, uu);
  expect_same_map(ya, yu, "swiglu forward");
  ya.backward(dy);
  yu.backward(dy);
  expect_same_map(ga.grad(), gu.grad(), "swiglu backward (gate)");
  expect_same_map(ua.grad(), uu.grad(), "swiglu backward (up)");
}

class SwiGLUKernel : public ::testing::TestWithParam<at::ScalarType> {};

TEST_P(SwiGLUKernel, ForwardAndBackwardMatchReference) {
  REQUIRE_CUDA();
  const at::ScalarType dt = GetParam();
  for (const auto& shape : {std::vector<int64_t>{1}, std::vector<int64_t>{3, 17, 131}, std::vector<int64_t>{4, 1000}}) {
    at::manual_seed(1);
    const at::Tensor g0 = (3 * at::randn(shape, at::kCUDA)).to(dt), u0 = at::randn(shape, at::kCUDA).to(dt);
    const at::Tensor dy = at::randn(shape, at::kCUDA).to(dt);
    at::Tensor ga = g0.clone().requires_grad_(true), ua = u0.clone().requires_grad_(true);
    at::Tensor gb = g0.clone().requires_grad_(true), ub = u0.clone().requires_grad_(true);
    const at::Tensor ya = swiglu(ga, ua), yb = swiglu_reference(gb, ub);
    expect_close(ya, yb, dt, "swiglu forward");
    ya.backward(dy);
    yb.backward(dy);
    // the reference backward rounds more intermediates (sigmoid, products): allow 2x
    expect_close(ga.grad(), gb.grad(), dt, "swiglu d_gate", 2.0);
    expect_close(ua.grad(), ub.grad(), dt, "swiglu d_up");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, SwiGLUKernel, ::testing::Values(at::kFloat, at::kBFloat16, at::kHalf));

TEST(CudaAttention, SdpaMatchesMathForwardAndBackward) {
  REQUIRE_CUDA();
  at::manual_seed(2);
  for (int64_t window : {0, 9}) {
    const at::Tensor q0 = at::randn({2, 8, 77, 64}, at::kCUDA), k0 = at::randn({2, 2, 77, 64}, at::kCUDA),
                     v0 = at::randn({2, 2, 77, 64}, at::kCUDA), dy = at::randn({2, 8, 77, 64}, at::kCUDA);
    std::vector<std::vector<at::Tensor>> out;
    for (const char* backend : {"math", "sdpa"}) {
      at::Tensor q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true),
                 v = v0.clone().requires_grad_(true);
      const at::Tensor y = make_attention_core(backend)->forward(q, k, v, AttentionMask{window}, 0.125);
      y.backward(dy);
      out.push_back({y, q.grad(), k.grad(), v.grad()});
    }
    // fp32 on GPU: TF32 is off by default in LibTorch for matmul, differences are rounding only
    for (int i = 0; i < 4; ++i) EXPECT_LE(max_diff(out[0][i], out[1][i]), 1e-4) << "window " << window << " " << i;
  }
}

TEST(CudaModel, MatchesCpuInFp32AndTrainsInBf16) {
  REQUIRE_CUDA();
  ModelConfig m;
  m.vocab_size = 128;
  m.d_model = 64;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.qk_norm = true;
  at::manual_seed(3);
  CausalLM cpu(m);
  at::manual_seed(3);
  CausalLM gpu(m);
  gpu->to(at::kCUDA);
  const at::Tensor tokens = at::randint(128, {2, 40}, at::kLong);
  cpu->eval();
  gpu->eval();  // routing statistics count training forwards only
  EXPECT_LE(max_diff(cpu->forward(tokens), gpu->forward(tokens.cuda())), 1e-4);

  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : gpu->named_parameters()) named.emplace_back(p.key(), p.value());
  OptimConfig oc;
  oc.lr = 1e-2;
  AdamW opt(named, oc);
  TrainStep step(gpu, opt, 1.0, at::Device(at::kCUDA), /*bf16=*/true);
  const Batch b = to_device({tokens, tokens.roll(-1, 1)}, at::Device(at::kCUDA));
  const double first = step.run({b}, 1e-2).loss.item<double>();
  double last = first;
  for (int i = 0; i < 20; ++i) last = step.run({b}, 1e-2).loss.item<double>();
  EXPECT_TRUE(std::isfinite(last));
  EXPECT_LT(last, first - 1.0) << "overfitting one batch in bf16";
}

// Every attention variant on CUDA (fused RoPE kernel, SDPA with float ALiBi masks) matches the
// CPU in fp32 and trains in bf16.
TEST(CudaModel, AttentionVariantsMatchCpuAndTrainInBf16) {
  REQUIRE_CUDA();
  ModelConfig base;
  base.vocab_size = 128;
  base.d_model = 64;
  base.n_layers = 2;
  base.n_heads = 4;
  base.n_kv_heads = 2;
  std::vector<std::pair<std::string, std::function<void(ModelConfig&)>>> variants = {
      {"G1", [](ModelConfig& m) { m.attention.gate.position = "G1"; }},
      {"G2 headwise", [](ModelConfig& m) { m.attention.gate.position = "G2", m.attention.gate.granularity = "headwise"; }},
      {"G3 qk_norm", [](ModelConfig& m) { m.attention.gate.position = "G3", m.qk_norm = true; }},
      {"G4 fused bias",
       [](ModelConfig& m) { m.attention.gate.position = "G4", m.attention.gate.fuse_q_proj = true, m.attention.gate.bias = true; }},
      {"G5", [](ModelConfig& m) { m.attention.gate.position = "G5"; }},
      {"G1 constant", [](ModelConfig& m) { m.attention.gate.position = "G1", m.attention.gate.input = "constant"; }},
      {"coca strict", [](ModelConfig& m) { m.attention.coca.mode = "strict"; }},
      {"coca slack", [](ModelConfig& m) { m.attention.coca.mode = "slack"; }},
      {"alibi", [](ModelConfig& m) { m.position = "alibi"; }},
      {"alibi window", [](ModelConfig& m) { m.position = "alibi", m.attention.window = 7; }},
      {"window pattern", [](ModelConfig& m) { m.attention.window_pattern = {5, 0}; }},
      {"yarn", [](ModelConfig& m) { m.rope.scaling = "yarn", m.rope.factor = 4.0, m.rope.original_max_len = 16; }},
      {"dynamic ntk",
       [](ModelConfig& m) { m.rope.scaling = "dynamic_ntk", m.rope.factor = 2.0, m.rope.original_max_len = 16; }},
  };
  const at::Tensor tokens = at::randint(128, {2, 40}, at::kLong);
  for (const auto& [name, set] : variants) {
    ModelConfig m = base;
    set(m);
    at::manual_seed(4);
    CausalLM cpu(m);
    at::manual_seed(4);
    CausalLM gpu(m);
    gpu->to(at::kCUDA);
    EXPECT_LE(max_diff(cpu->forward(tokens), gpu->forward(tokens.cuda())), 1e-4) << name;

    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& p : gpu->named_parameters()) named.emplace_back(p.key(), p.value());
    OptimConfig oc;
    AdamW opt(named, oc);
    TrainStep step(gpu, opt, 1.0, at::Device(at::kCUDA), /*bf16=*/true);
    const Batch b = to_device({tokens, tokens.roll(-1, 1)}, at::Device(at::kCUDA));
    const double first = step.run({b}, 1e-2).loss.item<double>();
    double last = first;
    for (int i = 0; i < 15; ++i) last = step.run({b}, 1e-2).loss.item<double>();
    EXPECT_TRUE(std::isfinite(last)) << name;
    EXPECT_LT(last, first - 0.5) << name;
  }
}

// ---- MoE: the grouped-GEMM path against the per-expert loop ------------------------------

// ||a - b|| / ||b||: weight gradients sum over many rows, so an elementwise bound would be
// dominated by entries near zero.
double rel_error(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor ad = a.to(at::kCPU, at::kDouble), bd = b.to(at::kCPU, at::kDouble);
  return (ad - bd).norm().item<double>() / std::max(bd.norm().item<double>(), 1e-30);
}

TEST(CudaMoE, GroupedGemmMatchesLoopForwardAndBackward) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  ModelConfig m;
  m.arch = "moe";
  m.d_model = 64;
  m.moe.n_experts = 8;
  m.moe.top_k = 2;
  m.moe.ffn_hidden = 128;
  m.moe.shared_experts = 1;
  m.moe.capacity_factor = 0.0;
  const c10::Device cuda(at::kCUDA);
  std::cout << "auto expert GEMM for bf16 here: "
            << expert_gemm_name(choose_expert_gemm("auto", cuda, at::kBFloat16, 64, 128)) << "\n";
  for (const bool bf16 : {false, true}) {
    at::manual_seed(4);
    const at::Tensor x0 = at::randn({4, 97, 64}, at::kCUDA), dy = at::randn({4, 97, 64}, at::kCUDA);
    std::vector<std::vector<at::Tensor>> out;
    for (const char* gemm : {"loop", "grouped"}) {
      m.moe.gemm = gemm;
      at::manual_seed(5);
      MoE moe(m);
      for (auto& p : moe->parameters()) {
        at::NoGradGuard g;
        p.normal_(0.0, 0.1);
      }
      moe->to(cuda);
      at::Tensor x = x0.clone().requires_grad_(true);
      at::Tensor y;
      {
        AutocastScope autocast(cuda, bf16);
        y = moe->forward(x);
      }
      EXPECT_STREQ(expert_gemm_name(moe->last_gemm()), gemm);
      y.backward(dy);
      out.push_back({y, x.grad(), moe->gate->weight.grad(), moe->experts->gate_proj.grad(),
                     moe->experts->up_proj.grad(), moe->experts->down_proj.grad()});
    }
    // fp32: the same products in another order. bf16: both paths multiply the same bf16
    // operands with fp32 accumulation, but in different orders, so a bf16-rounded
    // intermediate (gate, up, hidden) may differ by one unit (2^-8 relative).
    const double tol = bf16 ? 1e-2 : 1e-5;
    const char* what[] = {"output", "dx", "router grad", "gate_proj grad", "up_proj grad", "down_proj grad"};
    for (size_t i = 0; i < out[0].size(); ++i)
      EXPECT_LE(rel_error(out[1][i], out[0][i]), tol) << (bf16 ? "bf16 " : "fp32 ") << what[i];
  }
}

TEST(CudaMoE, ModelMatchesCpuAndTrainsInBf16) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  ModelConfig m;
  m.arch = "moe";
  m.vocab_size = 128;
  m.d_model = 64;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.moe.n_experts = 4;
  m.moe.top_k = 2;
  m.moe.ffn_hidden = 64;
  m.moe.z_loss_coef = 1e-3;
  at::manual_seed(6);
  CausalLM cpu(m);
  at::manual_seed(6);
  CausalLM gpu(m);
  gpu->to(at::kCUDA);
  const at::Tensor tokens = at::randint(128, {2, 40}, at::kLong);
  cpu->eval();
  gpu->eval();  // routing statistics count training forwards only
  EXPECT_LE(max_diff(cpu->forward(tokens), gpu->forward(tokens.cuda())), 1e-4);

  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : gpu->named_parameters()) named.emplace_back(p.key(), p.value());
  OptimConfig oc;
  oc.lr = 1e-2;
  AdamW opt(named, oc);
  TrainStep step(gpu, opt, 1.0, at::Device(at::kCUDA), /*bf16=*/true);
  const Batch b = to_device({tokens, tokens.roll(-1, 1)}, at::Device(at::kCUDA));
  const TrainStep::Result r0 = step.run({b}, 1e-2);
  ASSERT_TRUE(r0.aux_loss.defined());
  const double first = r0.loss.item<double>();
  double last = first;
  for (int i = 0; i < 20; ++i) last = step.run({b}, 1e-2).loss.item<double>();
  EXPECT_TRUE(std::isfinite(last));
  EXPECT_LT(last, first - 1.0) << "overfitting one batch in bf16";
  const auto stats = gpu->routing_stats();
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats[0].tokens, 21 * 80);
  std::cout << "layer 0: gemm " << stats[0].gemm << ", load cv " << stats[0].load_cv << ", entropy "
            << stats[0].router_entropy << "\n";
}

TEST(CudaKVCache, CachedDecodingEqualsFullRecomputation) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  ModelConfig m;
  m.vocab_size = 96;
  m.d_model = 64;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.attention.window_pattern = {5, 0};  // one sliding-window layer (evicts), one full layer
  m.attention.gate.position = "G1";
  for (const char* coca : {"off", "strict"}) {
    m.attention.coca.mode = coca;
    at::manual_seed(9);
    CausalLM model(m);
    model->to(at::kCUDA);
    model->eval();
    const at::Tensor tokens = at::randint(96, {2, 19}, at::kLong).cuda();
    at::NoGradGuard no_grad;
    const at::Tensor full = model->forward(tokens);
    KVCache cache(m);
    std::vector<at::Tensor> parts = {model->forward_cached(tokens.narrow(1, 0, 7), cache)};
    for (int64_t t = 7; t < 19; ++t) parts.push_back(model->forward_cached(tokens.narrow(1, t, 1), cache));
    // fp32 on the GPU: the same math in a different order (one row at a time), so rounding only
    EXPECT_LE(max_diff(at::cat(parts, 1), full), 1e-4) << "coca " << coca;
  }
}

// Device-to-host transfers inside a training step: scalar reads (.item()) and copies from CUDA
// to the CPU, counted by a RecordFunction observer. A step must make none (metrics stay on the
// device until the logging interval reads them).
std::atomic<int> d2h_copies{0};
std::unique_ptr<at::ObserverContext> count_d2h(const at::RecordFunction& fn) {
  const std::string_view name(fn.name());
  if (name == "aten::_local_scalar_dense") {
    ++d2h_copies;
  } else if (name == "aten::copy_") {
    const auto inputs = fn.inputs();
    if (inputs.size() >= 2 && inputs[0].isTensor() && inputs[1].isTensor() && inputs[0].toTensor().is_cpu() &&
        inputs[1].toTensor().is_cuda()) {
      ++d2h_copies;
    }
  }
  return nullptr;
}

TEST(CudaTrainStep, NoDeviceToHostCopiesInsideAStep) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const bool moe : {false, true}) {
    SCOPED_TRACE(moe ? "moe" : "dense");
    ModelConfig m;
    m.vocab_size = 96;
    m.d_model = 64;
    m.n_layers = 2;
    m.n_heads = 4;
    m.n_kv_heads = 2;
    m.attention.gate.position = "G1";
    if (moe) {
      m.arch = "moe";
      m.moe.n_experts = 4;
      m.moe.top_k = 2;
      m.moe.ffn_hidden = 32;
      m.moe.aux_loss_coef = 0.01;
      m.moe.capacity_factor = 1.0;
    }
    at::manual_seed(0);
    CausalLM model(m);
    model->to(at::kCUDA);
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
    AdamW opt(named, OptimConfig{});
    TrainStep step(model, opt, /*grad_clip=*/1.0, at::Device(at::kCUDA), /*bf16=*/true);
    const Batch b{at::randint(96, {2, 16}, at::kLong).cuda(), at::randint(96, {2, 16}, at::kLong).cuda()};
    step.run({b, b}, 1e-3);  // first-step setup outside the count
    const auto handle = at::addThreadLocalCallback(at::RecordFunctionCallback(count_d2h).needsInputs(true));
    d2h_copies = 0;
    for (int i = 0; i < 2; ++i) step.run({b, b}, 1e-3);
    const int in_steps = d2h_copies.load();
    (void)at::ones({1}, at::kCUDA).cpu();  // the counter sees a copy when there is one
    const int with_one = d2h_copies.load();
    at::removeCallback(handle);
    EXPECT_EQ(in_steps, 0);
    EXPECT_GT(with_one, in_steps);
  }
}

}  // namespace
}  // namespace sluice
