// Attention variants (gates G1-G5, CoCA, ALiBi, RoPE scaling, sliding windows) against
// references written here: explicit loops over batch, heads and positions in fp64, with the
// paper formulas spelled out (CoCA builds every collinear key per query/key pair, O(N²·d)).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "coca_pair.h"
#include "model/alibi.h"
#include "model/coca.h"
#include "model/decoder_block.h"
#include "model/fused_attention.h"
#include "model/gate.h"
#include "model/rope.h"
#include "model/self_attention.h"
#include "sluice/attention.h"
#include "sluice/config.h"
#include "sluice/forward_observer.h"
#include "sluice/model.h"
#include "test_util.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/train_step.h"
#include "tensor_test_util.h"

namespace sluice {
namespace {

constexpr double kPi = 3.14159265358979323846;

// |a - b| <= tol·max(1, max|b|): fp32 against fp64 loses digits relative to the magnitude.
void expect_close(const at::Tensor& a, const at::Tensor& b, double tol, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  const double scale = std::max(1.0, b.to(at::kDouble).abs().max().item<double>());
  if (std::getenv("SLUICE_TEST_VERBOSE")) std::printf("%-40s diff %.3g scale %.3g\n", what.c_str(), diff, scale);
  EXPECT_LE(diff, tol * scale) << what << " (max |b| " << scale << ")";
}

using testing::max_abs_diff;

// d_model 24, 4 query heads, 2 KV heads (GQA 2:1), head_dim 8 (H·D = 32 != d_model).
ModelConfig base_config() {
  ModelConfig m;
  m.vocab_size = 64;
  m.d_model = 24;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.head_dim = 8;
  m.ffn_hidden = 32;
  m.attention.backend = "math";
  return m;
}

struct Variant {
  std::string name;
  std::function<void(ModelConfig&)> set;
  int64_t layer = 0;  // which layer's SelfAttention the layer tests build
};

void gate(ModelConfig& m, const char* position) { m.attention.gate.position = position; }

std::vector<Variant> all_variants() {
  return {
      {"Baseline", [](ModelConfig&) {}},
      {"G1_elementwise", [](ModelConfig& m) { gate(m, "G1"); }},
      {"G1_headwise", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.granularity = "headwise"; }},
      {"G1_head_shared", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.sharing = "head_shared"; }},
      {"G1_additive_silu",
       [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.form = "additive", m.attention.gate.activation = "silu"; }},
      {"G1_additive_identity",
       [](ModelConfig& m) {
         gate(m, "G1"), m.attention.gate.form = "additive", m.attention.gate.activation = "identity";
       }},
      {"G1_silu", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.activation = "silu"; }},
      {"G1_ns_sigmoid", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.activation = "ns_sigmoid"; }},
      {"G1_bias_fused", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.bias = true, m.attention.gate.fuse_q_proj = true; }},
      {"G1_input_constant", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.input = "constant"; }},
      {"G1_input_self", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.input = "self"; }},
      {"G2_elementwise", [](ModelConfig& m) { gate(m, "G2"); }},
      {"G2_headwise", [](ModelConfig& m) { gate(m, "G2"), m.attention.gate.granularity = "headwise"; }},
      {"G2_head_shared", [](ModelConfig& m) { gate(m, "G2"), m.attention.gate.sharing = "head_shared"; }},
      {"G3_elementwise_qknorm", [](ModelConfig& m) { gate(m, "G3"), m.qk_norm = true; }},
      {"G3_headwise", [](ModelConfig& m) { gate(m, "G3"), m.attention.gate.granularity = "headwise"; }},
      {"G4_elementwise_qknorm", [](ModelConfig& m) { gate(m, "G4"), m.qk_norm = true; }},
      {"G4_headwise_bias", [](ModelConfig& m) {
         gate(m, "G4"), m.attention.gate.granularity = "headwise", m.attention.gate.bias = true;
       }},
      {"G5", [](ModelConfig& m) { gate(m, "G5"); }},
      {"OutputNorm", [](ModelConfig& m) { m.attention.output_norm = true; }},
      {"CocaStrict", [](ModelConfig& m) { m.attention.coca.mode = "strict"; }},
      {"CocaSlack", [](ModelConfig& m) { m.attention.coca.mode = "slack"; }},
      {"CocaStrict_G3", [](ModelConfig& m) { m.attention.coca.mode = "strict", gate(m, "G3"); }},
      {"CocaSlack_DynamicNtk",
       [](ModelConfig& m) {
         m.attention.coca.mode = "slack", m.rope.scaling = "dynamic_ntk", m.rope.factor = 2.0,
         m.rope.original_max_len = 4;
       }},
      {"Alibi", [](ModelConfig& m) { m.position = "alibi"; }},
      {"Alibi_G1_window", [](ModelConfig& m) { m.position = "alibi", gate(m, "G1"), m.attention.window = 4; }},
      {"NoPE", [](ModelConfig& m) { m.position = "none"; }},
      {"RopeLinear", [](ModelConfig& m) { m.rope.scaling = "linear", m.rope.factor = 3.0; }},
      {"RopeNtk", [](ModelConfig& m) { m.rope.scaling = "ntk", m.rope.factor = 3.0; }},
      {"RopeDynamicNtk",
       [](ModelConfig& m) { m.rope.scaling = "dynamic_ntk", m.rope.factor = 2.0, m.rope.original_max_len = 4; }},
      {"RopeYarn",
       [](ModelConfig& m) { m.rope.base = 100.0, m.rope.scaling = "yarn", m.rope.factor = 4.0, m.rope.original_max_len = 6; }},
      {"G1_with_moe_ffn",  // gates and MoE feed-forward together (only counts and training see the MoE)
       [](ModelConfig& m) { gate(m, "G1"), m.arch = "moe", m.moe.n_experts = 4, m.moe.top_k = 2; }},
      {"WindowPattern_layer2", [](ModelConfig& m) { m.attention.window_pattern = {0, 5, 3}; }, 2},
      {"WindowPattern_layer1_full", [](ModelConfig& m) { m.attention.window_pattern = {3, 0}, gate(m, "G1"); }, 1},
  };
}

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

ModelConfig config_of(const Variant& v) {
  ModelConfig m = base_config();
  v.set(m);
  return m;
}

// --- the reference, written from the papers -------------------------------------------------

// Inverse frequencies for a context of L tokens, from the formulas (not from model/rope.cpp).
std::vector<double> expected_inv_freq(const RopeConfig& r, int64_t D, int64_t L) {
  std::vector<double> f;
  const double s = r.factor;
  double base = r.base;
  if (r.scaling == "ntk") base = r.base * std::pow(s, double(D) / double(D - 2));
  if (r.scaling == "dynamic_ntk" && L > r.original_max_len)
    base = r.base * std::pow(s * double(L) / double(r.original_max_len) - (s - 1.0), double(D) / double(D - 2));
  for (int64_t j = 0; j < D / 2; ++j) {
    const double theta = std::pow(base, -2.0 * double(j) / double(D));
    if (r.scaling == "linear") {
      f.push_back(theta / s);
    } else if (r.scaling == "yarn") {
      // dimension index where the wavelength fits `rot` times into L0
      auto dim_for = [&](double rot) {
        return double(D) * std::log(double(r.original_max_len) / (rot * 2.0 * kPi)) / (2.0 * std::log(r.base));
      };
      const double lo = std::max(0.0, std::floor(dim_for(32.0)));
      double hi = std::min(double(D - 1), std::ceil(dim_for(1.0)));
      if (hi == lo) hi += 0.001;
      const double ramp = std::min(1.0, std::max(0.0, (double(j) - lo) / (hi - lo)));
      f.push_back(theta * (1.0 - ramp) + theta / s * ramp);
    } else {
      f.push_back(theta);
    }
  }
  return f;
}

double expected_attention_factor(const RopeConfig& r) {
  return r.scaling == "yarn" && r.factor > 1.0 ? 0.1 * std::log(r.factor) + 1.0 : 1.0;
}

// cos/sin [T, D/2] in fp64, the attention factor included.
std::pair<at::Tensor, at::Tensor> reference_tables(const RopeConfig& r, int64_t D, int64_t T) {
  const std::vector<double> f = expected_inv_freq(r, D, T);
  const double a = expected_attention_factor(r);
  at::Tensor c = at::empty({T, D / 2}, at::kDouble), s = at::empty({T, D / 2}, at::kDouble);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < D / 2; ++j) {
      c[t][j] = a * std::cos(double(t) * f[j]);
      s[t][j] = a * std::sin(double(t) * f[j]);
    }
  return {c, s};
}

// Rotates the pairs (j, j + D/2) of v [D] at position t.
at::Tensor rotate(const at::Tensor& v, const at::Tensor& c, const at::Tensor& s) {
  const int64_t h = v.size(-1) / 2;
  const at::Tensor a = v.narrow(-1, 0, h), b = v.narrow(-1, h, h);
  return at::cat({a * c - b * s, b * c + a * s}, -1);
}

at::Tensor act(const std::string& a, const at::Tensor& z) {
  if (a == "sigmoid") return 1.0 / (1.0 + at::exp(-z));
  if (a == "silu") return z / (1.0 + at::exp(-z));
  if (a == "ns_sigmoid") return 0.5 + 0.5 / (1.0 + at::exp(-z));
  return z;  // identity
}

struct Leaves {
  std::map<std::string, at::Tensor> p;  // fp64 copies of the module's parameters, requiring grad
  at::Tensor get(const std::string& n) const {
    const auto it = p.find(n);
    return it == p.end() ? at::Tensor() : it->second;
  }
};

Leaves leaves_of(torch::nn::Module& m) {
  Leaves l;
  for (const auto& kv : m.named_parameters()) l.p[kv.key()] = kv.value().detach().to(at::kDouble).requires_grad_(true);
  return l;
}

// Y' = Y ⊙ act(X·W_g + b) or Y + act(...), the scores laid out per head as in the paper.
at::Tensor reference_gate(const GateConfig& g, const Leaves& w, const at::Tensor& x, const at::Tensor& y) {
  at::Tensor s;
  if (g.input == "self") {
    s = act(g.activation, y);
  } else {
    at::Tensor z;
    if (g.input == "hidden") {
      z = at::einsum("btd,od->bto", {x, w.get("g_proj.weight")});
      if (w.get("g_proj.bias").defined()) z = z + w.get("g_proj.bias");
    } else {
      z = w.get("g_proj.bias").expand({x.size(0), x.size(1), -1});  // input-independent
    }
    s = act(g.activation, z);
    if (g.position != "G5") {
      const int64_t G = y.size(2), W = g.granularity == "headwise" ? 1 : y.size(3);
      s = s.reshape({x.size(0), x.size(1), G, W});
      if (g.sharing == "head_shared") {
        at::Tensor sum = s.select(2, 0);
        for (int64_t h = 1; h < G; ++h) sum = sum + s.select(2, h);
        s = (sum / double(G)).unsqueeze(2);
      }
    }
  }
  return g.form == "additive" ? y + s : y * s;
}

at::Tensor reference_rms(const at::Tensor& x, const at::Tensor& w, double eps) {
  return x / at::sqrt((x * x).mean(-1, true) + eps) * w;
}

// The whole layer, explicit per (batch, head, query) loop for the attention itself.
at::Tensor reference_layer(const ModelConfig& cfg, const Leaves& w, const at::Tensor& x, int64_t layer) {
  const int64_t B = x.size(0), T = x.size(1), H = cfg.n_heads, KV = cfg.n_kv_heads, D = cfg.resolved_head_dim();
  const GateConfig& g = cfg.attention.gate;
  const std::string coca = cfg.attention.coca.mode;
  at::Tensor q = at::einsum("btd,od->bto", {x, w.get("q_proj.weight")}).reshape({B, T, H, D});
  at::Tensor k = at::einsum("btd,od->bto", {x, w.get("k_proj.weight")}).reshape({B, T, KV, D});
  at::Tensor v = at::einsum("btd,od->bto", {x, w.get("v_proj.weight")}).reshape({B, T, KV, D});
  // G2-G4 sit right after their projection, before QK-norm and RoPE (our documented choice).
  if (g.position == "G4") q = reference_gate(g, w, x, q);
  if (g.position == "G3") k = reference_gate(g, w, x, k);
  if (g.position == "G2") v = reference_gate(g, w, x, v);
  if (cfg.qk_norm) {
    q = reference_rms(q, w.get("q_norm.weight"), cfg.norm_eps);
    k = reference_rms(k, w.get("k_norm.weight"), cfg.norm_eps);
  }
  at::Tensor cos, sin;
  if (cfg.position == "rope") std::tie(cos, sin) = reference_tables(cfg.rope, D, T);
  const int64_t window =
      cfg.attention.window_pattern.empty()
          ? cfg.attention.window
          : cfg.attention.window_pattern[static_cast<size_t>(layer) % cfg.attention.window_pattern.size()];
  std::vector<double> slopes;
  if (cfg.position == "alibi") {
    for (int64_t h = 1; h <= H; ++h) slopes.push_back(std::pow(2.0, -8.0 * double(h) / double(H)));  // H = 4
  }
  const double scale = 1.0 / std::sqrt(double(D));
  const int64_t half = D / 2;
  std::vector<at::Tensor> rows;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < T; ++m)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kvh = h / (H / KV);
        const int64_t lo = window > 0 ? std::max<int64_t>(0, m - window + 1) : 0;
        const at::Tensor qm = q[b][m][h];
        std::vector<at::Tensor> scores;
        for (int64_t n = lo; n <= m; ++n) {
          at::Tensor score;
          if (coca == "strict") {
            // the key at n, collinear with q_m in every pair, with magnitude t_{n,j} >= 0
            const at::Tensor kr = k[b][n][kvh];
            const at::Tensor t = at::relu((kr.narrow(0, 0, half) + kr.narrow(0, half, half)) / 2.0);
            const at::Tensor key = at::cat({t * qm.narrow(0, 0, half), t * qm.narrow(0, half, half)});
            score = (rotate(qm, cos[m], sin[m]) * rotate(key, cos[n], sin[n])).sum();
          } else if (coca == "slack") {
            const at::Tensor kr = k[b][n][kvh];
            const at::Tensor t = at::relu((kr.narrow(0, 0, half) + kr.narrow(0, half, half)) / 2.0);
            score = (qm * rotate(qm, cos[m], sin[m]) * rotate(at::cat({t, t}), cos[n], sin[n])).sum();
          } else if (cfg.position == "rope") {
            score = (rotate(qm, cos[m], sin[m]) * rotate(k[b][n][kvh], cos[n], sin[n])).sum();
          } else {
            score = (qm * k[b][n][kvh]).sum();
          }
          score = score * scale;
          if (!slopes.empty()) score = score - slopes[h] * double(m - n);
          scores.push_back(score);
        }
        const at::Tensor p = at::softmax(at::stack(scores), 0);
        rows.push_back(at::mv(v[b].select(1, kvh).slice(0, lo, m + 1).t(), p));
      }
  at::Tensor y = at::stack(rows).reshape({B, T, H, D});
  if (cfg.attention.output_norm) {
    y = y / at::sqrt((y * y).mean(-1, true) + cfg.norm_eps) * w.get("o_norm.weight").reshape({H, D});
  }
  if (g.position == "G1") y = reference_gate(g, w, x, y);
  at::Tensor out = at::einsum("bto,do->btd", {y.reshape({B, T, H * D}), w.get("o_proj.weight")});
  if (g.position == "G5") out = reference_gate(g, w, x, out);
  return out;
}

// --- running the module ----------------------------------------------------------------------

ForwardContext context_for(const ModelConfig& cfg, int64_t T, ForwardObserver* observer = nullptr) {
  ForwardContext ctx;
  if (cfg.position == "rope") ctx.rope = Rotary(cfg.resolved_head_dim(), cfg.rope).tables(0, T, at::kCPU);
  if (cfg.position == "alibi") ctx.mask.alibi_slopes = alibi_slopes_tensor(cfg.n_heads, at::kCPU);
  ctx.observer = observer;
  return ctx;
}

void randomise(torch::nn::Module& m, double std) {
  at::NoGradGuard g;
  for (auto& p : m.parameters()) p.normal_(0.0, std);
}

void copy_parameters(torch::nn::Module& from, torch::nn::Module& to) {
  at::NoGradGuard g;
  const auto src = from.named_parameters();
  for (auto& kv : to.named_parameters()) kv.value().copy_(src[kv.key()]);
}

class LayerVariant : public ::testing::TestWithParam<Variant> {};

TEST_P(LayerVariant, MathMatchesReferenceForwardAndBackward) {
  const Variant& var = GetParam();
  const ModelConfig cfg = config_of(var);
  at::manual_seed(11);
  SelfAttention attn(cfg, var.layer);
  randomise(*attn, 0.35);
  const int64_t B = 2, T = 9;  // odd length, longer than the windows and original_max_len above
  const at::Tensor x0 = at::randn({B, T, cfg.d_model}), dy = at::randn({B, T, cfg.d_model});

  at::Tensor x = x0.clone().requires_grad_(true);
  const at::Tensor y = attn->forward(x, context_for(cfg, T));
  (y * dy).sum().backward();

  const Leaves ref = leaves_of(*attn);
  const at::Tensor xr = x0.to(at::kDouble).requires_grad_(true);
  const at::Tensor yr = reference_layer(cfg, ref, xr, var.layer);
  (yr * dy.to(at::kDouble)).sum().backward();

  expect_close(y, yr, 2e-5, "forward");
  expect_close(x.grad(), xr.grad(), 2e-5, "grad x");
  for (const auto& kv : attn->named_parameters()) {
    const at::Tensor expected = ref.get(kv.key()).grad();
    ASSERT_TRUE(kv.value().grad().defined()) << kv.key();
    expect_close(kv.value().grad(), expected, 2e-5, "grad " + kv.key());
  }
  // every parameter is exercised: a gate that never acts has zero gradient
  for (const auto& kv : attn->named_parameters()) EXPECT_GT(kv.value().grad().abs().max().item<double>(), 0.0) << kv.key();
}

// `fused` on CPU runs its sdpa fallback: this checks its registration and mask plumbing per variant.
TEST_P(LayerVariant, SdpaAndFusedMatchMath) {
  const Variant& var = GetParam();
  for (const std::string backend : {"sdpa", "fused"}) {
    ModelConfig cfg = config_of(var);
    at::manual_seed(12);
    SelfAttention math(cfg, var.layer);
    randomise(*math, 0.35);
    cfg.attention.backend = backend;
    SelfAttention other(cfg, var.layer);
    copy_parameters(*math, *other);
    const int64_t T = 11;
    const at::Tensor x0 = at::randn({2, T, cfg.d_model}), dy = at::randn({2, T, cfg.d_model});
    std::vector<at::Tensor> outs, xgrads;
    for (SelfAttention* m : {&math, &other}) {
      at::Tensor x = x0.clone().requires_grad_(true);
      const at::Tensor y = (*m)->forward(x, context_for(cfg, T));
      (y * dy).sum().backward();
      outs.push_back(y);
      xgrads.push_back(x.grad());
    }
    expect_close(outs[1], outs[0], 1e-5, backend + " forward");
    expect_close(xgrads[1], xgrads[0], 1e-5, backend + " grad x");
    const auto pm = math->named_parameters();
    for (const auto& kv : other->named_parameters())
      expect_close(kv.value().grad(), pm[kv.key()].grad(), 1e-5, backend + " " + kv.key());
  }
}

// fused_attention_with_lse on CPU (the reference path): the output equals math and the
// log-sum-exp equals one computed here with explicit loops, with GQA, a window, ALiBi and T < S.
TEST(FusedAttention, WithLseOnCpuMatchesExplicitLoops) {
  at::manual_seed(31);
  const int64_t B = 2, H = 4, KV = 2, S = 12, D = 8;
  const at::Tensor q0 = at::randn({B, H, S, D}), k = at::randn({B, KV, S, D}), v = at::randn({B, KV, S, D});
  const std::vector<double> slopes = alibi_slopes(H);
  for (int64_t T : {S, int64_t{3}})
    for (int64_t window : {int64_t{0}, int64_t{4}})
      for (bool alibi : {false, true}) {
        const at::Tensor q = q0.narrow(2, S - T, T);
        AttentionMask mask;
        mask.window = window;
        if (alibi) mask.alibi_slopes = alibi_slopes_tensor(H, at::kCPU);
        const auto [out, lse] = fused_attention_with_lse(q, k, v, mask, 0.4);
        const std::string what = "T=" + std::to_string(T) + " window=" + std::to_string(window) + (alibi ? " alibi" : "");
        expect_close(out, make_attention_core("math")->forward(q, k, v, mask, 0.4), 1e-5, what + " out");
        ASSERT_EQ(lse.sizes(), at::IntArrayRef({B, H, T})) << what;
        at::Tensor ref = at::zeros({B, H, T}, at::kDouble);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t t = 0; t < T; ++t) {
              const int64_t i = S - T + t, lo = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
              double m = -INFINITY;
              std::vector<double> sc;
              for (int64_t j = lo; j <= i; ++j) {
                double s = (q[b][h][t] * k[b][h / 2][j]).sum().item<double>() * 0.4;
                if (alibi) s -= slopes[h] * double(i - j);
                sc.push_back(s);
                m = std::max(m, s);
              }
              double sum = 0;
              for (double s : sc) sum += std::exp(s - m);
              ref[b][h][t] = m + std::log(sum);
            }
        expect_close(lse, ref, 1e-5, what + " lse");
      }
}

INSTANTIATE_TEST_SUITE_P(Variants, LayerVariant, ::testing::ValuesIn(all_variants()),
                         [](const ::testing::TestParamInfo<Variant>& i) { return i.param.name; });

// --- gates -----------------------------------------------------------------------------------

// Model `b` takes every parameter of `a` that it has with the same shape.
void copy_shared(CausalLM& a, CausalLM& b) {
  at::NoGradGuard g;
  const auto src = a->named_parameters();
  for (auto& kv : b->named_parameters())
    if (src.contains(kv.key()) && src[kv.key()].sizes() == kv.value().sizes()) kv.value().copy_(src[kv.key()]);
}

TEST(Gate, SaturatedMultiplicativeGateEqualsUngatedModel) {
  const at::Tensor tokens = at::randint(64, {2, 13}, at::kLong);
  for (const char* position : {"G1", "G2", "G3", "G4", "G5"}) {
    ModelConfig plain = base_config();
    plain.qk_norm = true;
    at::manual_seed(13);
    CausalLM ungated(plain);
    ModelConfig cfg = plain;
    cfg.attention.gate.position = position;
    cfg.attention.gate.bias = true;
    CausalLM gated(cfg);
    copy_shared(ungated, gated);
    {
      at::NoGradGuard g;
      for (auto& kv : gated->named_parameters()) {
        if (kv.key().find("g_proj.weight") != std::string::npos) kv.value().zero_();
        if (kv.key().find("g_proj.bias") != std::string::npos) kv.value().fill_(40.0);  // sigmoid(40) == 1 in fp32
      }
    }
    EXPECT_EQ(max_abs_diff(gated->forward(tokens), ungated->forward(tokens)), 0.0) << position;
    // and an unsaturated gate does change the output
    {
      at::NoGradGuard g;
      for (auto& kv : gated->named_parameters())
        if (kv.key().find("g_proj.bias") != std::string::npos) kv.value().fill_(0.0);
    }
    EXPECT_GT(max_abs_diff(gated->forward(tokens), ungated->forward(tokens)), 1e-5) << position;
  }
}

TEST(Gate, HeadwiseEqualsElementwiseWithIdenticalScoresPerHead) {
  const at::Tensor tokens = at::randint(64, {2, 10}, at::kLong);
  for (const char* position : {"G1", "G2", "G3", "G4"}) {
    ModelConfig hw = base_config();
    hw.attention.gate.position = position;
    hw.attention.gate.granularity = "headwise";
    hw.attention.gate.bias = true;
    ModelConfig ew = hw;
    ew.attention.gate.granularity = "elementwise";
    at::manual_seed(14);
    CausalLM a(hw), b(ew);
    copy_shared(a, b);
    const int64_t D = hw.resolved_head_dim();
    {
      at::NoGradGuard g;
      auto pa = a->named_parameters();
      for (auto& kv : b->named_parameters()) {
        if (kv.key().find("g_proj.") == std::string::npos) continue;
        kv.value().copy_(pa[kv.key()].repeat_interleave(D, 0));  // row h·D + j = headwise row h
      }
    }
    expect_close(b->forward(tokens), a->forward(tokens), 1e-6, position);
  }
}

TEST(Gate, FusedQProjEqualsSeparateProjectionsForwardAndBackward) {
  const at::Tensor tokens = at::randint(64, {2, 12}, at::kLong);
  for (const char* position : {"G1", "G2", "G4", "G5"}) {
    ModelConfig cfg = base_config();
    cfg.attention.gate.position = position;
    cfg.attention.gate.bias = true;
    std::vector<at::Tensor> logits;
    std::vector<std::map<std::string, at::Tensor>> grads;
    for (bool fuse : {false, true}) {
      cfg.attention.gate.fuse_q_proj = fuse;
      at::manual_seed(15);
      CausalLM model(cfg);
      {
        at::NoGradGuard g;
        for (auto& kv : model->named_parameters())
          if (kv.key().find("g_proj.bias") != std::string::npos) kv.value().normal_(0.0, 0.5);
      }
      const at::Tensor y = model->forward(tokens);
      model->loss(tokens, tokens.roll(-1, 1)).backward();
      logits.push_back(y);
      std::map<std::string, at::Tensor> g;
      for (const auto& kv : model->named_parameters()) g[kv.key()] = kv.value().grad();
      grads.push_back(g);
    }
    expect_close(logits[1], logits[0], 1e-6, position);
    for (const auto& [name, grad] : grads[0]) expect_close(grads[1][name], grad, 1e-6, std::string(position) + " " + name);
  }
}

// The G3 gate acts before QK-norm (our documented placement). A headwise multiplicative gate on
// k before the norm is then divided out again (RMSNorm is scale invariant up to eps), which the
// same gate without QK-norm is not: the test pins the order down.
TEST(Gate, G3SitsBeforeQkNorm) {
  const at::Tensor tokens = at::randint(64, {2, 10}, at::kLong);
  for (bool qk_norm : {true, false}) {
    ModelConfig plain = base_config();
    plain.qk_norm = qk_norm;
    plain.norm_eps = 1e-12;  // so the norm's scale invariance is exact to rounding
    ModelConfig cfg = plain;
    cfg.attention.gate.position = "G3";
    cfg.attention.gate.granularity = "headwise";
    at::manual_seed(16);
    CausalLM a(plain), b(cfg);
    copy_shared(a, b);
    const double diff = max_abs_diff(a->forward(tokens), b->forward(tokens));
    if (qk_norm) {
      EXPECT_LT(diff, 1e-6);
    } else {
      EXPECT_GT(diff, 1e-4);
    }
  }
}

struct Recorder : ForwardObserver {
  std::map<int64_t, at::Tensor> inputs, scores, before, after;
  int calls = 0;
  void on_attention_input(int64_t layer, const at::Tensor& x) override { inputs[layer] = x.detach().clone(), ++calls; }
  void on_gate_scores(int64_t layer, const at::Tensor& s) override { scores[layer] = s.detach().clone(), ++calls; }
  void on_attention_output(int64_t layer, const at::Tensor& b, const at::Tensor& a) override {
    before[layer] = b.detach().clone(), after[layer] = a.detach().clone(), ++calls;
  }
};

TEST(Observer, RecordsGateScoresOfTheSamePass) {
  ModelConfig cfg = base_config();
  cfg.n_layers = 3;
  cfg.attention.gate.position = "G1";
  cfg.attention.gate.bias = true;
  at::manual_seed(17);
  CausalLM model(cfg);
  const at::Tensor tokens = at::randint(64, {2, 9}, at::kLong);
  Recorder rec;
  const at::Tensor logits = model->forward(tokens, &rec);
  EXPECT_EQ(rec.calls, 3 * 3);  // input, scores, output per layer, once each
  auto p = model->named_parameters();
  for (int64_t layer = 0; layer < 3; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".self_attn.g_proj.";
    const at::Tensor x = rec.inputs.at(layer).to(at::kDouble);
    const at::Tensor z = at::einsum("btd,od->bto", {x, p[prefix + "weight"].detach().to(at::kDouble)}) +
                         p[prefix + "bias"].detach().to(at::kDouble);
    const at::Tensor expected = (1.0 / (1.0 + at::exp(-z))).reshape({2, 9, cfg.n_heads, cfg.resolved_head_dim()});
    expect_close(rec.scores.at(layer), expected, 1e-6, "scores layer " + std::to_string(layer));
    expect_close(rec.after.at(layer), rec.before.at(layer) * rec.scores.at(layer), 1e-6, "gated output");
  }
  // the same pass: without an observer the logits are identical
  expect_close(model->forward(tokens), logits, 0.0, "observer changes nothing");
}

// --- the G1 gate inside the attention core (AttentionCore::forward_gated) ----------------------

// Claims to fuse every G1 gate and applies it with AttentionCore's default (the ATen ops of the
// unfused path), counting the calls: SelfAttention's fused path must give what its unfused path
// gives, and be taken for exactly the gates a core may fuse.
class GateClaimingCore final : public AttentionCore {
 public:
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                     double scale) const override {
    return inner_->forward(q, k, v, mask, scale);
  }
  bool fuses_output_gate(const at::Tensor&, const at::Tensor&, const at::Tensor&, const AttentionMask&) const override {
    return true;
  }
  at::Tensor forward_gated(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                           double scale, const at::Tensor& gate_logits) const override {
    ++gated_calls;
    logits_shape = gate_logits.sizes().vec();
    return AttentionCore::forward_gated(q, k, v, mask, scale, gate_logits);
  }
  const char* name() const override { return "gate-claiming"; }

  mutable int gated_calls = 0;
  mutable std::vector<int64_t> logits_shape;

 private:
  std::shared_ptr<AttentionCore> inner_ = make_attention_core("math");
};

TEST(FusedGate, SelfAttentionHandsEligibleG1GatesToTheCore) {
  struct GateCase {
    const char* name;
    std::function<void(ModelConfig&)> set;
    bool fused;  // whether SelfAttention may hand the gate to the core
    std::vector<int64_t> logits_shape;  // B = 2, H = 4, T = 7, D = 8
  };
  const std::vector<GateCase> cases = {
      {"G1_elementwise", [](ModelConfig& m) { gate(m, "G1"); }, true, {2, 4, 7, 8}},
      {"G1_headwise", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.granularity = "headwise"; }, true, {2, 4, 7, 1}},
      {"G1_bias_fused_q_proj",
       [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.bias = true, m.attention.gate.fuse_q_proj = true; },
       true,
       {2, 4, 7, 8}},
      {"G1_input_constant_headwise",
       [](ModelConfig& m) {
         gate(m, "G1"), m.attention.gate.input = "constant", m.attention.gate.granularity = "headwise";
       },
       true,
       {1, 4, 1, 1}},
      {"G1_window_qk_norm", [](ModelConfig& m) { gate(m, "G1"), m.attention.window = 3, m.qk_norm = true; }, true,
       {2, 4, 7, 8}},
      {"G1_head_shared", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.sharing = "head_shared"; }, false, {}},
      {"G1_silu", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.activation = "silu"; }, false, {}},
      {"G1_ns_sigmoid", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.activation = "ns_sigmoid"; }, false, {}},
      {"G1_additive", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.form = "additive"; }, false, {}},
      {"G1_input_self", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.input = "self"; }, false, {}},
      {"G1_output_norm", [](ModelConfig& m) { gate(m, "G1"), m.attention.output_norm = true; }, false, {}},
      {"G4", [](ModelConfig& m) { gate(m, "G4"); }, false, {}},
      {"no_gate", [](ModelConfig&) {}, false, {}},
  };
  for (const GateCase& gc : cases) {
    ModelConfig cfg = base_config();
    gc.set(cfg);
    at::manual_seed(18);
    SelfAttention unfused(cfg, 0), fused(cfg, 0);
    randomise(*unfused, 0.35);
    copy_parameters(*unfused, *fused);
    const auto core = std::make_shared<GateClaimingCore>();
    fused->set_core(core);
    const int64_t T = 7;
    const at::Tensor x0 = at::randn({2, T, cfg.d_model}), dy = at::randn({2, T, cfg.d_model});
    std::vector<at::Tensor> outs, xgrads;
    for (SelfAttention* m : {&unfused, &fused}) {
      at::Tensor x = x0.clone().requires_grad_(true);
      const at::Tensor y = (*m)->forward(x, context_for(cfg, T));
      (y * dy).sum().backward();
      outs.push_back(y);
      xgrads.push_back(x.grad());
    }
    EXPECT_EQ(core->gated_calls, gc.fused ? 1 : 0) << gc.name;
    if (gc.fused) EXPECT_EQ(core->logits_shape, gc.logits_shape) << gc.name;
    // The same ATen ops in the same order, on differently strided views: equal to rounding.
    expect_close(outs[1], outs[0], 1e-6, std::string(gc.name) + " forward");
    expect_close(xgrads[1], xgrads[0], 1e-6, std::string(gc.name) + " grad x");
    const auto pu = unfused->named_parameters();
    for (const auto& kv : fused->named_parameters())
      expect_close(kv.value().grad(), pu[kv.key()].grad(), 1e-6, std::string(gc.name) + " grad " + kv.key());
  }
}

// An observer sees O before the gate, which a fused core never materialises: with one attached
// the gate stays outside the core and the observer gets both tensors.
TEST(FusedGate, ObserverKeepsTheGateOutsideTheCore) {
  ModelConfig cfg = base_config();
  gate(cfg, "G1");
  at::manual_seed(19);
  SelfAttention attn(cfg, 0);
  const auto core = std::make_shared<GateClaimingCore>();
  attn->set_core(core);
  const at::Tensor x = at::randn({2, 5, cfg.d_model});
  Recorder rec;
  const at::Tensor observed = attn->forward(x, context_for(cfg, 5, &rec));
  EXPECT_EQ(core->gated_calls, 0);
  ASSERT_EQ(rec.before.count(0), 1u);
  expect_close(rec.after.at(0), rec.before.at(0) * rec.scores.at(0), 1e-6, "gated output");
  const at::Tensor plain = attn->forward(x, context_for(cfg, 5));
  EXPECT_EQ(core->gated_calls, 1);
  expect_close(plain, observed, 1e-6, "observer changes nothing");
}

// On the CPU the `fused` core cannot run its kernels: it declines the gate, and forward_gated
// (and fused_attention_with_lse with logits) still give the unfused result.
TEST(FusedGate, FusedCoreOnCpuFallsBackToTheUnfusedGate) {
  at::manual_seed(20);
  const at::Tensor q = at::randn({2, 4, 6, 8}), k = at::randn({2, 2, 6, 8}), v = at::randn({2, 2, 6, 8});
  const auto fused = make_attention_core("fused");
  const auto sdpa = make_attention_core("sdpa");
  AttentionMask mask;
  mask.window = 4;
  EXPECT_FALSE(fused->fuses_output_gate(q, k, v, mask));
  for (int64_t W : {8, 1}) {
    const at::Tensor g = at::randn({2, 6, 4, W}).transpose(1, 2);  // SelfAttention's layout
    const at::Tensor expected = sdpa->forward(q, k, v, mask, 0.3) * at::sigmoid(g);
    EXPECT_TRUE(at::equal(fused->forward_gated(q, k, v, mask, 0.3, g), expected)) << W;
    const auto [out, lse] = fused_attention_with_lse(q, k, v, mask, 0.3, g);
    expect_close(out, make_attention_core("math")->forward(q, k, v, mask, 0.3) * at::sigmoid(g), 1e-6, "with lse");
  }
}

TEST(WindowPattern, EachLayerGetsItsWindowCyclically) {
  ModelConfig cfg = base_config();
  cfg.n_layers = 5;
  cfg.attention.window_pattern = {4, 4, 0};
  CausalLM model(cfg);
  const int64_t expected[] = {4, 4, 0, 4, 4};
  for (int64_t i = 0; i < 5; ++i) {
    const auto& attn = model->model->layers[i]->as<DecoderBlockImpl>()->self_attn;
    EXPECT_EQ(attn->window(), expected[i]) << i;
    EXPECT_EQ(attn->layer(), i);
  }
  cfg.attention.window_pattern.clear();
  cfg.attention.window = 3;
  CausalLM uniform(cfg);
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(uniform->model->layers[i]->as<DecoderBlockImpl>()->self_attn->window(), 3);
}

// --- positions -------------------------------------------------------------------------------

TEST(RopeScaling, FormulasAgainstHandComputedValues) {
  const int64_t D = 8;
  RopeConfig r;
  const double theta1 = std::pow(10000.0, -2.0 / 8.0);  // 0.1
  const double theta3 = std::pow(10000.0, -6.0 / 8.0);  // 0.001
  r.scaling = "linear";
  r.factor = 4.0;
  EXPECT_NEAR(Rotary(D, r).inv_freq(16)[1].item<double>(), 0.025, 1e-15);
  // NTK: base' = base·s^(D/(D-2)); the lowest frequency is divided by exactly s, the highest kept.
  r.scaling = "ntk";
  const at::Tensor ntk = Rotary(D, r).inv_freq(16);
  EXPECT_NEAR(ntk[0].item<double>(), 1.0, 1e-15);
  EXPECT_NEAR(ntk[3].item<double>(), theta3 / 4.0, 1e-15);
  EXPECT_NEAR(ntk[1].item<double>(), std::pow(10000.0 * std::pow(4.0, 8.0 / 6.0), -0.25), 1e-15);
  // dynamic NTK, L0 = 16, s = 2: unscaled up to L0; at L = 64 the ratio is 2·64/16 - 1 = 7.
  r.scaling = "dynamic_ntk";
  r.factor = 2.0;
  r.original_max_len = 16;
  const Rotary dyn(D, r);
  EXPECT_NEAR(dyn.inv_freq(16)[1].item<double>(), theta1, 1e-15);
  EXPECT_NEAR(dyn.inv_freq(64)[3].item<double>(), theta3 / 7.0, 1e-15);
  // YaRN, D = 32, base 1e4, L0 = 2048, s = 8: the β_fast = 32 rotation dimension is
  // 32·ln(2048/(64π))/(2·ln 1e4) = 4.03 -> 4, the β_slow = 1 one 32·ln(2048/(2π))/(2·ln 1e4) =
  // 10.05 -> 11. Dimensions < 4 keep θ_j, > 11 use θ_j/8, j = 7 is 3/7 of the way: θ_7·(4/7 + 3/56).
  RopeConfig y;
  y.scaling = "yarn";
  y.factor = 8.0;
  y.original_max_len = 2048;
  const Rotary yarn(32, y);
  auto theta = [](int64_t j) { return std::pow(10000.0, -2.0 * double(j) / 32.0); };
  const at::Tensor f = yarn.inv_freq(4096);
  EXPECT_NEAR(f[2].item<double>(), theta(2), 1e-15);
  EXPECT_NEAR(f[4].item<double>(), theta(4), 1e-15);
  EXPECT_NEAR(f[7].item<double>(), theta(7) * 0.625, 1e-15);
  EXPECT_NEAR(f[11].item<double>(), theta(11) / 8.0, 1e-15);
  EXPECT_NEAR(f[15].item<double>(), theta(15) / 8.0, 1e-15);
  EXPECT_NEAR(yarn.attention_factor(), 1.2079441541679836, 1e-12);  // 0.1·ln 8 + 1
  const RotaryTables t = yarn.tables(0, 3000, at::kCPU);
  EXPECT_NEAR(t.cos[2999][7].item<double>(), 1.2079441541679836 * std::cos(2999.0 * theta(7) * 0.625), 1e-5);
  EXPECT_NEAR(t.sin[5][0].item<double>(), 1.2079441541679836 * std::sin(5.0), 1e-5);
  // the independent reference above agrees everywhere
  for (const RopeConfig& c : {r, y}) {
    const int64_t d = c.scaling == "yarn" ? 32 : D;
    for (int64_t L : {8, 16, 64, 5000}) {
      const std::vector<double> e = expected_inv_freq(c, d, L);
      const at::Tensor got = Rotary(d, c).inv_freq(L);
      for (int64_t j = 0; j < d / 2; ++j) EXPECT_NEAR(got[j].item<double>(), e[j], 1e-15) << c.scaling << " " << L;
    }
  }
}

TEST(RopeScaling, DynamicNtkCarriesNoStateBetweenCalls) {
  RopeConfig r;
  r.scaling = "dynamic_ntk";
  r.factor = 4.0;
  r.original_max_len = 8;
  const Rotary rot(16, r);
  const RotaryTables short1 = rot.tables(0, 6, at::kCPU);
  const RotaryTables longer = rot.tables(0, 40, at::kCPU);
  const RotaryTables short2 = rot.tables(0, 6, at::kCPU);
  expect_close(short2.cos, short1.cos, 0.0, "cos after a long call");
  expect_close(short2.sin, short1.sin, 0.0, "sin after a long call");
  EXPECT_GT(max_abs_diff(longer.cos.narrow(0, 0, 6), short1.cos), 1e-3);  // the long call was scaled
  expect_close(short1.cos, Rotary(16, 10000.0).tables(0, 6, at::kCPU).cos, 0.0, "unscaled within L0");
  // decoding: the table for positions 30..39 is the tail of the full table of 40
  expect_close(rot.tables(30, 10, at::kCPU).cos, longer.cos.narrow(0, 30, 10), 0.0, "offset tables");

  // the whole model: a long input in between does not change the logits of a short one
  ModelConfig cfg = base_config();
  cfg.rope = r;
  at::manual_seed(18);
  CausalLM model(cfg);
  const at::Tensor small = at::randint(64, {1, 6}, at::kLong), big = at::randint(64, {1, 40}, at::kLong);
  const at::Tensor before = model->forward(small);
  model->forward(big);
  expect_close(model->forward(small), before, 0.0, "model logits");
}

// Extrapolation studies switch the scaling after training: the weights do not depend on it.
TEST(RopeScaling, EvaluationTimeScalingLoadsATrainedCheckpoint) {
  testing::TempDir dir;
  Config trained;
  trained.model = base_config();
  at::manual_seed(22);
  CausalLM model(trained.model);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
  AdamW opt(named, trained.optim);
  const std::string ckpt = save_checkpoint(dir.path(), trained, *model, opt, TrainingState{});
  const at::Tensor tokens = at::randint(64, {1, 24}, at::kLong);
  const at::Tensor reference = model->forward(tokens);
  for (const char* scaling : {"dynamic_ntk", "yarn", "linear"}) {
    ModelConfig m = trained.model;
    m.rope.scaling = scaling;
    m.rope.factor = 4.0;
    m.rope.original_max_len = 16;
    CausalLM scaled(m);
    ASSERT_NO_THROW(load_checkpoint(ckpt, *scaled, nullptr, /*restore_rng=*/false)) << scaling;
    const at::Tensor out = scaled->forward(tokens);
    if (std::string(scaling) == "dynamic_ntk") {
      // within L0 dynamic NTK is the identity, beyond it the logits change
      expect_close(scaled->forward(tokens.narrow(1, 0, 16)), model->forward(tokens.narrow(1, 0, 16)), 1e-6, scaling);
    }
    EXPECT_GT(max_abs_diff(out, reference), 1e-6) << scaling;  // small: a freshly initialised model
  }
}

TEST(RopeScaling, YarnAttentionFactorScalesScoresBySquare) {
  // q·k with tables folded by a equals a²·(q·k) with unscaled tables of the same frequencies.
  RopeConfig y;
  y.scaling = "yarn";
  y.factor = 4.0;
  y.original_max_len = 32;
  const Rotary rot(16, y);
  const RotaryTables t = rot.tables(0, 10, at::kCPU);
  const double a = rot.attention_factor();
  const RotaryTables unit{t.cos / a, t.sin / a};
  const at::Tensor q = at::randn({1, 10, 1, 16}, at::kDouble).to(at::kFloat), k = at::randn({1, 10, 1, 16});
  const at::Tensor s1 = (rope_reference(q, t) * rope_reference(k, t)).sum(-1);
  const at::Tensor s0 = (rope_reference(q, unit) * rope_reference(k, unit)).sum(-1);
  expect_close(s1, s0 * (a * a), 1e-4, "a² q·k");
}

TEST(Alibi, SlopesMatchPublishedValues) {
  const std::vector<double> s8 = alibi_slopes(8);
  ASSERT_EQ(s8.size(), 8u);
  for (int h = 0; h < 8; ++h) EXPECT_DOUBLE_EQ(s8[h], std::pow(0.5, h + 1));  // 1/2, 1/4, ..., 1/256
  // 12 heads: the 8 slopes above, then every other slope of 16 heads (2^-0.5, 2^-1.5, ...)
  const std::vector<double> s12 = alibi_slopes(12);
  const std::vector<double> published = {0.5,      0.25,       0.125,      0.0625,     0.03125,    0.015625,
                                         0.0078125, 0.00390625, 0.70710678, 0.35355339, 0.17677670, 0.08838835};
  ASSERT_EQ(s12.size(), 12u);
  for (int h = 0; h < 12; ++h) EXPECT_NEAR(s12[h], published[h], 1e-8) << h;
  const std::vector<double> s4 = alibi_slopes(4);
  for (int h = 0; h < 4; ++h) EXPECT_DOUBLE_EQ(s4[h], std::pow(0.25, h + 1));
}

TEST(Alibi, CoresAddTheBiasWithGqaWindowsAndDecoding) {
  at::manual_seed(19);
  const int64_t B = 2, H = 6, KV = 3, S = 13, D = 8;
  const at::Tensor q0 = at::randn({B, H, S, D}), k0 = at::randn({B, KV, S, D}), v0 = at::randn({B, KV, S, D});
  const std::vector<double> slopes = alibi_slopes(H);
  for (int64_t T : {S, int64_t{4}}) {  // training, and the last 4 queries against a cache of S keys
    for (int64_t window : {int64_t{0}, int64_t{5}}) {
      const at::Tensor q = q0.narrow(2, S - T, T);
      at::Tensor ref = at::zeros({B, H, T, D}, at::kDouble);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t t = 0; t < T; ++t) {
            const int64_t i = S - T + t, lo = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
            std::vector<at::Tensor> sc;
            for (int64_t j = lo; j <= i; ++j)
              sc.push_back((q[b][h][t] * k0[b][h / 2][j]).sum().to(at::kDouble) * 0.3 - slopes[h] * double(i - j));
            const at::Tensor p = at::softmax(at::stack(sc), 0);
            ref[b][h][t] = at::mv(v0[b][h / 2].slice(0, lo, i + 1).to(at::kDouble).t(), p);
          }
      AttentionMask mask;
      mask.window = window;
      mask.alibi_slopes = alibi_slopes_tensor(H, at::kCPU);
      for (const std::string backend : {"math", "sdpa", "fused"})
        expect_close(make_attention_core(backend)->forward(q, k0, v0, mask, 0.3), ref, 2e-5,
                     backend + " T=" + std::to_string(T) + " window=" + std::to_string(window));
    }
  }
}

// --- CoCA ------------------------------------------------------------------------------------

// strict CoCA: the score of query m and key n depends on m - n only (rotating both by the same
// shift leaves it unchanged), and on positions through cos only.
TEST(Coca, StrictScoreDependsOnlyOnRelativePosition) {
  at::manual_seed(20);
  const int64_t D = 16;
  const Rotary rot(D, 10000.0);
  const at::Tensor q = at::randn({1, 1, 1, D}), t_raw = at::randn({1, 1, 1, D});
  auto score = [&](int64_t m, int64_t n, CocaMode mode) {
    const at::Tensor qe = coca_query(q, rot.tables(m, 1, at::kCPU), mode);
    const at::Tensor ke = coca_key(t_raw, rot.tables(n, 1, at::kCPU), mode);
    return (qe * ke).sum().item<double>();
  };
  for (int64_t delta : {0, 1, 7, 40}) {
    const double s0 = score(delta, 0, CocaMode::Strict);
    for (int64_t shift : {5, 300, 4000}) EXPECT_NEAR(score(delta + shift, shift, CocaMode::Strict), s0, 1e-3);
    // Eq. 9 directly
    double expected = 0.0;
    for (int64_t j = 0; j < D / 2; ++j) {
      const double a = q[0][0][0][j].item<double>(), b = q[0][0][0][j + D / 2].item<double>();
      const double t = std::max(0.0, (t_raw[0][0][0][j].item<double>() + t_raw[0][0][0][j + D / 2].item<double>()) / 2);
      expected += t * (a * a + b * b) * std::cos(double(delta) * std::pow(10000.0, -2.0 * double(j) / double(D)));
    }
    EXPECT_NEAR(s0, expected, 1e-4 * std::max(1.0, std::abs(expected)));
  }
  EXPECT_GT(std::abs(score(9, 0, CocaMode::Strict) - score(10, 0, CocaMode::Strict)), 1e-4);
  // slack is not shift invariant: it also depends on the absolute position
  EXPECT_GT(std::abs(score(7, 0, CocaMode::Slack) - score(307, 300, CocaMode::Slack)), 1e-3);
}

TEST(Coca, MagnitudeIsTiedWithinRotaryPairsAndNonNegative) {
  const at::Tensor t_raw = at::tensor({1.0f, -3.0f, 2.0f, 5.0f, 1.0f, 1.0f}).view({1, 1, 1, 6});
  // pairs (0,3), (1,4), (2,5): means 3, -1, 1.5 -> ReLU 3, 0, 1.5
  expect_close(coca_magnitude(t_raw).flatten(), at::tensor({3.0f, 0.0f, 1.5f}), 0.0, "t");
  const Rotary rot(6, 10000.0);
  // at position 0 the strict key is [t, 0] and the slack key [t, t]
  expect_close(coca_key(t_raw, rot.tables(0, 1, at::kCPU), CocaMode::Strict).flatten(),
               at::tensor({3.0f, 0.0f, 1.5f, 0.0f, 0.0f, 0.0f}), 1e-7, "strict K_eff");
  expect_close(coca_key(t_raw, rot.tables(0, 1, at::kCPU), CocaMode::Slack).flatten(),
               at::tensor({3.0f, 0.0f, 1.5f, 3.0f, 0.0f, 1.5f}), 1e-7, "slack K_eff");
}

// The per-pair arithmetic of the fused CoCA kernels (kernels/coca_pair.h, which kernels/coca.cu
// runs per thread) against the ATen reference and its autograd, on the CPU: forward and
// backward, strict and slack, query and key, with YaRN-scaled tables (cos, sin not a unit
// rotation) and keys both sides of the ReLU. The GPU test CocaKernel.* checks the kernels'
// indexing and roundings on a device.
TEST(Coca, FusedKernelPairMathMatchesReference) {
  at::manual_seed(21);
  const int64_t B = 2, T = 7, H = 3, D = 16, half = D / 2;
  RopeConfig rc;
  rc.scaling = "yarn", rc.factor = 4.0, rc.original_max_len = 4;
  const RotaryTables tables = Rotary(D, rc).tables(5, T, at::kCPU);
  const auto cos = tables.cos.accessor<float, 2>(), sin = tables.sin.accessor<float, 2>();
  for (const CocaMode mode : {CocaMode::Strict, CocaMode::Slack}) {
    const bool strict = mode == CocaMode::Strict;
    for (const bool query : {true, false}) {
      const std::string what = std::string(query ? "Q_eff" : "K_eff") + (strict ? " strict" : " slack");
      const at::Tensor x = at::randn({B, T, H, D}).requires_grad_(true), dy = at::randn({B, T, H, D});
      const at::Tensor y = query ? coca_query_reference(x, tables, mode) : coca_key_reference(x, tables, mode);
      y.backward(dy);
      at::Tensor y_pair = at::empty_like(y), dx_pair = at::empty_like(y);
      const at::Tensor xd = x.detach();
      const auto xa = xd.accessor<float, 4>(), ga = dy.accessor<float, 4>();
      auto ya = y_pair.accessor<float, 4>(), da = dx_pair.accessor<float, 4>();
      int clipped = 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t j = 0; j < half; ++j) {
              const float x1 = xa[b][t][h][j], x2 = xa[b][t][h][j + half], c = cos[t][j], s = sin[t][j];
              const float g1 = ga[b][t][h][j], g2 = ga[b][t][h][j + half];
              const coca_pair::Out o =
                  query ? coca_pair::query_forward(x1, x2, c, s, strict) : coca_pair::key_forward(x1, x2, c, s, strict);
              const coca_pair::Out d = query ? coca_pair::query_backward(g1, g2, x1, x2, c, s, strict)
                                             : coca_pair::key_backward(g1, g2, x1, x2, c, s, strict);
              ya[b][t][h][j] = o.a, ya[b][t][h][j + half] = o.b;
              da[b][t][h][j] = d.a, da[b][t][h][j + half] = d.b;
              clipped += x1 + x2 <= 0.0f;
            }
      if (!query) EXPECT_GT(clipped, 0) << what << ": some keys below the ReLU";
      expect_close(y_pair, y.detach(), 1e-5, what + " forward");
      expect_close(dx_pair, x.grad(), 1e-5, what + " backward");
    }
  }
}

// --- sizes -----------------------------------------------------------------------------------

TEST(ParameterCount, MatchesModelStatsForEveryVariant) {
  for (const Variant& v : all_variants()) {
    ModelConfig cfg = config_of(v);
    CausalLM model(cfg);
    EXPECT_EQ(count_parameters(*model), model_stats(cfg, 32).params_total) << v.name;
  }
}

// The paper's 15B-A2B attention (Table 1): d_model 2048, 32 query heads, 4 KV heads, head_dim
// 128, 24 layers; "Added Param" in millions over all layers.
TEST(ParameterCount, GateSizesOfThePapersMoeConfig) {
  ModelConfig m;
  m.vocab_size = 151646;
  m.d_model = 2048;
  m.n_layers = 24;
  m.n_heads = 32;
  m.n_kv_heads = 4;
  m.head_dim = 128;
  m.ffn_hidden = 768;
  const int64_t base = model_stats(m, 4096).params_total;
  struct Row {
    const char* position;
    const char* granularity;
    const char* sharing;
    int64_t per_layer;
    double table_millions;
  };
  const Row rows[] = {
      {"G1", "elementwise", "head_specific", 2048 * 4096, 201},  // row 5
      {"G2", "elementwise", "head_specific", 2048 * 512, 25},    // row 6
      {"G3", "elementwise", "head_specific", 2048 * 512, 25},    // row 7
      {"G4", "elementwise", "head_specific", 2048 * 4096, 201},  // row 8
      {"G5", "elementwise", "head_specific", 2048 * 2048, 100},  // row 9
      {"G1", "headwise", "head_specific", 2048 * 32, 1.6},       // row 10
      {"G2", "headwise", "head_specific", 2048 * 4, 0.2},        // row 11
      {"G1", "elementwise", "head_shared", 2048 * 4096, 201},    // row 12
      {"G2", "elementwise", "head_shared", 2048 * 512, 25},      // row 13
  };
  for (const Row& r : rows) {
    ModelConfig g = m;
    g.attention.gate.position = r.position;
    g.attention.gate.granularity = r.granularity;
    g.attention.gate.sharing = r.sharing;
    const int64_t added = model_stats(g, 4096).params_total - base;
    EXPECT_EQ(added, 24 * r.per_layer) << r.position << " " << r.granularity << " " << r.sharing;
    // the table rounds down to its digits (100.7M is printed 100)
    const double millions = double(added) / 1e6;
    EXPECT_GE(millions, r.table_millions - 0.05) << r.position;
    EXPECT_LT(millions, r.table_millions + 1.0) << r.position;
  }
  ModelConfig b = m;
  b.attention.gate.position = "G1";
  b.attention.gate.bias = true;
  EXPECT_EQ(model_stats(b, 4096).params_total - base, 24 * (2048 * 4096 + 4096));
}

// --- training ----------------------------------------------------------------------------------

class TrainVariant : public ::testing::TestWithParam<Variant> {};

TEST_P(TrainVariant, TwentyStepsLossFiniteAndFalling) {
  ModelConfig cfg = config_of(GetParam());
  cfg.attention.backend = "sdpa";
  cfg.vocab_size = 256;
  cfg.d_model = 32;
  cfg.n_heads = 4;
  cfg.n_kv_heads = 2;
  cfg.head_dim = 8;
  at::set_num_threads(1);
  at::manual_seed(21);
  CausalLM model(cfg);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
  OptimConfig oc;
  AdamW opt(named, oc);
  TrainStep step(model, opt, /*grad_clip=*/1.0, at::kCPU, /*bf16=*/false);
  const std::string text = testing::make_corpus(20000);
  const at::Tensor bytes = at::tensor(std::vector<int64_t>(text.begin(), text.end()), at::kLong);
  const int64_t seq = 32, batch = 8;
  std::vector<double> losses;
  for (int i = 0; i < 20; ++i) {
    const at::Tensor starts = at::randint(bytes.size(0) - seq - 1, {batch}, at::kLong);
    std::vector<at::Tensor> in, out;
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t s = starts[b].item<int64_t>();
      in.push_back(bytes.slice(0, s, s + seq));
      out.push_back(bytes.slice(0, s + 1, s + seq + 1));
    }
    const auto r = step.run({Batch{at::stack(in), at::stack(out)}}, 5e-3);
    losses.push_back(r.loss.item<double>());
    ASSERT_TRUE(std::isfinite(losses.back())) << "step " << i;
  }
  const double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[17] + losses[18] + losses[19]) / 3;
  EXPECT_LT(last, first - 1.0) << "first " << first << " last " << last;
}

INSTANTIATE_TEST_SUITE_P(Variants, TrainVariant, ::testing::ValuesIn(all_variants()),
                         [](const ::testing::TestParamInfo<Variant>& i) { return i.param.name; });

}  // namespace
}  // namespace sluice
