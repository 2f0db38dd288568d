// Mixture-of-Experts: routing, combine weights, losses, dropping, statistics and parameter
// counts against explicit per-token loop references written here (fp64), forward and
// gradients; both expert-GEMM paths (ATen's _grouped_mm runs on the CPU too); a short run.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "model/moe.h"
#include "model/moe_dispatch.h"
#include "model/swiglu.h"
#include "sluice/config.h"
#include "sluice/model.h"
#include "sluice/trainer.h"
#include "test_util.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/routing_metrics.h"
#include "train/train_step.h"

namespace sluice {
namespace {

void expect_close(const at::Tensor& a, const at::Tensor& b, double atol, const std::string& what) {
  ASSERT_TRUE(a.defined()) << what;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  EXPECT_LE(diff, atol) << what;
}

// fp32 against fp32 computed another way: rounding differences scale with the magnitude.
void expect_rel_close(const at::Tensor& a, const at::Tensor& b, double rtol, const std::string& what) {
  expect_close(a, b, rtol * std::max(1.0, b.abs().max().item<double>()), what);
}

ModelConfig moe_config(int64_t E, int64_t k, int64_t d = 12, int64_t F = 20) {
  ModelConfig m;
  m.arch = "moe";
  m.vocab_size = 64;
  m.d_model = d;
  m.n_layers = 2;
  m.n_heads = 2;
  m.n_kv_heads = 1;
  m.head_dim = 4;
  m.ffn_hidden = 24;
  m.moe.n_experts = E;
  m.moe.top_k = k;
  m.moe.ffn_hidden = F;
  return m;
}

// Weights large enough that routing is far from uniform and the top-k has no near-ties.
void randomise(MoEImpl& moe, uint64_t seed) {
  at::manual_seed(seed);
  at::NoGradGuard g;
  for (auto& p : moe.parameters()) p.normal_(0.0, 0.4);
}

// ---- the loop reference (fp64, one token at a time) -------------------------------------

struct RefParams {
  at::Tensor router, bias, wg, wu, wd;  // [E, d], [E] or undefined, [E, F, d], [E, F, d], [E, d, F]
  at::Tensor sg, su, sd, sgate;         // shared expert and gate, undefined when absent
};

// Double-precision leaf copies of the module's parameters.
RefParams ref_params(MoEImpl& moe) {
  auto leaf = [](const at::Tensor& t) { return t.detach().to(at::kDouble).clone().requires_grad_(true); };
  RefParams p;
  p.router = leaf(moe.gate->weight);
  if (moe.gate->e_score_correction_bias.defined()) p.bias = moe.gate->e_score_correction_bias.to(at::kDouble);
  p.wg = leaf(moe.experts->gate_proj);
  p.wu = leaf(moe.experts->up_proj);
  p.wd = leaf(moe.experts->down_proj);
  if (moe.shared_expert) {
    p.sg = leaf(moe.shared_expert->gate_proj->weight);
    p.su = leaf(moe.shared_expert->up_proj->weight);
    p.sd = leaf(moe.shared_expert->down_proj->weight);
  }
  if (moe.shared_expert_gate) p.sgate = leaf(moe.shared_expert_gate->weight);
  return p;
}

at::Tensor swiglu_vec(const at::Tensor& x, const at::Tensor& g, const at::Tensor& u, const at::Tensor& d) {
  const at::Tensor a = at::mv(g, x), b = at::mv(u, x);
  return at::mv(d, a / (1 + at::exp(-a)) * b);
}

struct RefResult {
  at::Tensor y;                          // [N, d]
  std::vector<std::vector<int64_t>> sel; // selected experts per token, best first
  std::vector<std::vector<bool>> kept;   // per token and slot
  at::Tensor aux, z;                     // unscaled: E·Σ f·P and mean(lse²)
};

// The documented semantics, token by token: scores, top-k by selection score (+ bias),
// combine weights, capacity by (slot, token) priority, shared expert.
RefResult reference(const at::Tensor& x, const RefParams& p, const MoEConfig& c) {
  const int64_t N = x.size(0), E = c.n_experts, k = c.top_k;
  RefResult r;
  std::vector<at::Tensor> weights, probs, lse;
  for (int64_t n = 0; n < N; ++n) {
    const at::Tensor logits = at::mv(p.router, x[n]);
    const at::Tensor scores = c.scoring == "sigmoid" ? 1 / (1 + at::exp(-logits)) : at::softmax(logits, 0);
    probs.push_back(scores / scores.sum());
    lse.push_back(at::log(at::exp(logits).sum()));
    at::Tensor select = (c.router == "topk_softmax" ? logits : scores).detach();
    if (p.bias.defined()) select = select + p.bias;
    std::vector<int64_t> idx(E);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(),
                     [&](int64_t a, int64_t b) { return select[a].item<double>() > select[b].item<double>(); });
    idx.resize(k);
    r.sel.push_back(idx);
    const at::Tensor ix = at::tensor(idx, at::kLong);
    at::Tensor w;
    if (c.router == "topk_softmax") {
      w = at::softmax(logits.index_select(0, ix), 0);
    } else {
      w = scores.index_select(0, ix);
      if (c.norm_topk_prob) w = w / w.sum();
    }
    weights.push_back(w);
  }
  // capacity: all first choices in token order, then all second choices, ...
  const int64_t cap = c.capacity_factor > 0 ? expert_capacity(c.capacity_factor, N, k, E) : N * k;
  r.kept.assign(N, std::vector<bool>(k, true));
  std::vector<int64_t> taken(E, 0), count(E, 0);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t n = 0; n < N; ++n) {
      const int64_t e = r.sel[n][j];
      ++count[e];
      r.kept[n][j] = taken[e] < cap;
      if (r.kept[n][j]) ++taken[e];
    }
  std::vector<at::Tensor> ys;
  for (int64_t n = 0; n < N; ++n) {
    at::Tensor y = at::zeros({x.size(1)}, at::kDouble);
    for (int64_t j = 0; j < k; ++j) {
      if (!r.kept[n][j]) continue;
      const int64_t e = r.sel[n][j];
      y = y + weights[n][j] * swiglu_vec(x[n], p.wg[e], p.wu[e], p.wd[e]);
    }
    if (p.sg.defined()) {
      at::Tensor s = swiglu_vec(x[n], p.sg, p.su, p.sd);
      if (p.sgate.defined()) s = s / (1 + at::exp(-at::mv(p.sgate, x[n])));
      y = y + s;
    }
    ys.push_back(y);
  }
  r.y = at::stack(ys);
  const at::Tensor P = at::stack(probs).mean(0);
  r.aux = at::zeros({}, at::kDouble);
  for (int64_t e = 0; e < E; ++e) r.aux = r.aux + static_cast<double>(count[e]) / static_cast<double>(N * k) * P[e];
  r.aux = r.aux * static_cast<double>(E);
  r.z = at::stack(lse).square().mean();
  return r;
}

// ---- MoE layer against the reference ------------------------------------------------------

struct Case {
  const char* name;
  int64_t E, k;
  std::string router = "softmax_topk", scoring = "softmax";
  bool norm = true;
  int64_t shared = 0;
  bool shared_gate = false;
  bool bias = false;
  double capacity = 0.0;
  std::string gemm = "loop";
  int64_t B = 3, T = 7, d = 12, F = 20;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class MoEReference : public ::testing::TestWithParam<Case> {};

TEST_P(MoEReference, ForwardGradientsAndLossesMatchLoopReference) {
  const Case cs = GetParam();
  ModelConfig cfg = moe_config(cs.E, cs.k, cs.d, cs.F);
  MoEConfig& c = cfg.moe;
  c.router = cs.router;
  c.scoring = cs.scoring;
  c.norm_topk_prob = cs.norm;
  c.shared_experts = cs.shared;
  c.shared_ffn_hidden = cs.shared > 0 ? 8 : 0;
  c.shared_expert_gate = cs.shared_gate;
  c.bias_update_rate = cs.bias ? 0.01 : 0.0;
  c.capacity_factor = cs.capacity;
  c.gemm = cs.gemm;
  c.aux_loss_coef = 0.3;
  c.z_loss_coef = 0.07;
  MoE moe(cfg);
  randomise(*moe, 11);
  if (cs.bias) {
    at::NoGradGuard g;
    moe->gate->e_score_correction_bias.copy_(at::randn({cs.E}) * 0.3);
  }
  const at::Tensor x0 = at::randn({cs.B, cs.T, cs.d});
  const at::Tensor dy = at::randn({cs.B, cs.T, cs.d});

  at::Tensor x = x0.clone().requires_grad_(true);
  const at::Tensor y = moe->forward(x);
  auto [aux, z] = moe->take_losses();
  EXPECT_EQ(std::string(expert_gemm_name(moe->last_gemm())), cs.gemm);
  // one backward through output and both losses, as training does
  ((y * dy).sum() + 2.0 * aux + 3.0 * z).backward();

  const RefParams p = ref_params(*moe);
  at::Tensor xr = x0.reshape({-1, cs.d}).to(at::kDouble).requires_grad_(true);
  const RefResult r = reference(xr, p, c);
  const at::Tensor ref_aux = r.aux * c.aux_loss_coef, ref_z = r.z * c.z_loss_coef;
  ((r.y * dy.reshape({-1, cs.d}).to(at::kDouble)).sum() + 2.0 * ref_aux + 3.0 * ref_z).backward();

  const double tol = 2e-5;
  expect_close(y.reshape({-1, cs.d}), r.y, tol, "output");
  expect_close(aux, ref_aux, 1e-6, "aux loss");
  expect_close(z, ref_z, 1e-5, "z loss");
  expect_close(x.grad().reshape({-1, cs.d}), xr.grad(), tol, "dx");
  expect_close(moe->gate->weight.grad(), p.router.grad(), tol, "router grad");
  expect_close(moe->experts->gate_proj.grad(), p.wg.grad(), tol, "experts gate_proj grad");
  expect_close(moe->experts->up_proj.grad(), p.wu.grad(), tol, "experts up_proj grad");
  expect_close(moe->experts->down_proj.grad(), p.wd.grad(), tol, "experts down_proj grad");
  if (cs.shared > 0) {
    expect_close(moe->shared_expert->down_proj->weight.grad(), p.sd.grad(), tol, "shared down grad");
    expect_close(moe->shared_expert->gate_proj->weight.grad(), p.sg.grad(), tol, "shared gate_proj grad");
  }
  if (cs.shared_gate) expect_close(moe->shared_expert_gate->weight.grad(), p.sgate.grad(), tol, "shared gate grad");
  if (cs.capacity > 0) {
    int64_t dropped = 0;
    for (const auto& t : r.kept) dropped += std::count(t.begin(), t.end(), false);
    EXPECT_GT(dropped, 0) << "the case should drop something";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, MoEReference,
    ::testing::Values(
        Case{"SoftmaxTopkNorm", 5, 2},
        Case{"SoftmaxTopkNoNorm", 4, 3, "softmax_topk", "softmax", false},
        Case{"TopkSoftmax", 6, 2, "topk_softmax"},
        Case{"SigmoidNormWithBias", 5, 2, "softmax_topk", "sigmoid", true, 0, false, true},
        Case{"SigmoidTop1NoNorm", 3, 1, "softmax_topk", "sigmoid", false},
        Case{"SharedExpertsGated", 4, 2, "softmax_topk", "softmax", true, 2, true},
        Case{"Capacity", 4, 2, "softmax_topk", "softmax", true, 0, false, false, 0.6},
        Case{"AllExpertsSelected", 3, 3},
        Case{"OddWidthsOneToken", 4, 2, "softmax_topk", "softmax", true, 1, false, false, 0.0, "loop", 1, 1, 10, 7},
        Case{"GroupedSoftmax", 5, 2, "softmax_topk", "softmax", true, 0, false, false, 0.0, "grouped"},
        Case{"GroupedCapacityShared", 4, 2, "softmax_topk", "softmax", true, 1, true, false, 0.6, "grouped"},
        Case{"GroupedMixtralOddTokens", 8, 2, "topk_softmax", "softmax", true, 0, false, false, 0.0, "grouped", 1,
             13, 16, 24}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

// ---- special cases that must be exactly equal ----------------------------------------------

TEST(MoE, OneExpertTop1EqualsDenseSwiGLU) {
  for (const bool norm : {true, false}) {
    ModelConfig cfg = moe_config(1, 1, 12, 20);
    cfg.moe.norm_topk_prob = norm;
    MoE moe(cfg);
    randomise(*moe, 3);
    SwiGLU dense(12, 20);
    {
      at::NoGradGuard g;
      dense->gate_proj->weight.copy_(moe->experts->gate_proj[0]);
      dense->up_proj->weight.copy_(moe->experts->up_proj[0]);
      dense->down_proj->weight.copy_(moe->experts->down_proj[0]);
    }
    const at::Tensor x0 = at::randn({2, 9, 12}), dy = at::randn({2, 9, 12});
    at::Tensor xa = x0.clone().requires_grad_(true), xb = x0.clone().requires_grad_(true);
    const at::Tensor ya = moe->forward(xa), yb = dense->forward(xb);
    expect_close(ya, yb, 1e-6, "forward");
    (ya * dy).sum().backward();
    (yb * dy).sum().backward();
    expect_close(xa.grad(), xb.grad(), 1e-6, "dx");
    expect_close(moe->experts->gate_proj.grad()[0], dense->gate_proj->weight.grad(), 1e-6, "gate grad");
    expect_close(moe->experts->up_proj.grad()[0], dense->up_proj->weight.grad(), 1e-6, "up grad");
    expect_close(moe->experts->down_proj.grad()[0], dense->down_proj->weight.grad(), 1e-6, "down grad");
    // the single expert's weight is softmax over one logit = 1: the router gets no gradient
    EXPECT_EQ(moe->gate->weight.grad().abs().max().item<double>(), 0.0);
  }
}

// Mixtral's softmax over the selected logits is softmax-then-top-k renormalised.
TEST(MoE, RouterStylesAgreeWhereTheyMust) {
  std::vector<at::Tensor> outs, grads;
  const at::Tensor x0 = at::randn({4, 5, 12}), dy = at::randn({4, 5, 12});
  for (const std::string router : {"topk_softmax", "softmax_topk"}) {
    ModelConfig cfg = moe_config(6, 2);
    cfg.moe.router = router;
    cfg.moe.norm_topk_prob = true;
    MoE moe(cfg);
    randomise(*moe, 5);
    at::Tensor x = x0.clone().requires_grad_(true);
    const at::Tensor y = moe->forward(x);
    (y * dy).sum().backward();
    outs.push_back(y);
    grads.push_back(moe->gate->weight.grad());
    grads.push_back(x.grad());
  }
  expect_rel_close(outs[0], outs[1], 1e-6, "output");
  expect_rel_close(grads[0], grads[2], 1e-6, "router grad");
  expect_rel_close(grads[1], grads[3], 1e-6, "dx");
  // and without renormalisation they differ (the weights no longer sum to 1)
  ModelConfig cfg = moe_config(6, 2);
  cfg.moe.norm_topk_prob = false;
  MoE moe(cfg);
  randomise(*moe, 5);
  EXPECT_GT((moe->forward(x0) - outs[1]).abs().max().item<double>(), 1e-3);
}

TEST(MoE, CombineWeightsSumToOneWhenNormalised) {
  ModelConfig cfg = moe_config(7, 3);
  for (const std::string scoring : {"softmax", "sigmoid"}) {
    cfg.moe.scoring = scoring;
    MoE moe(cfg);
    randomise(*moe, 6);
    const Routing r = moe->gate->forward(at::randn({11, 12}));
    expect_close(r.weight.sum(-1), at::ones({11}), 1e-6, scoring);
    expect_close(r.probs.sum(-1), at::ones({11}), 1e-6, scoring + " probs");
    // slot 0 holds the best expert
    EXPECT_TRUE(at::equal(r.expert.select(1, 0), r.logits.argmax(-1))) << scoring;
  }
}

// ---- losses ---------------------------------------------------------------------------------

TEST(MoELoss, AuxLossIsAlphaForAUniformRouterAndForBalancedLoad) {
  ModelConfig cfg = moe_config(4, 2);
  cfg.moe.aux_loss_coef = 0.05;
  MoE moe(cfg);
  randomise(*moe, 7);
  {
    at::NoGradGuard g;
    moe->gate->weight.zero_();  // uniform probabilities; selection by tie-break, f arbitrary
  }
  moe->forward(at::randn({3, 10, 12}));
  EXPECT_NEAR(moe->take_losses().first.item<double>(), 0.05, 1e-7);

  // Balanced load with non-uniform probabilities: each token of a pair prefers the other
  // half of the experts, so every expert gets exactly N·k/E assignments.
  ModelConfig c2 = moe_config(2, 1, 4, 8);
  c2.moe.aux_loss_coef = 0.05;
  MoE m2(c2);
  randomise(*m2, 8);
  {
    at::NoGradGuard g;
    m2->gate->weight.zero_();
    m2->gate->weight[0][0] = 1.0;
    m2->gate->weight[1][0] = -1.0;
  }
  const at::Tensor x = at::zeros({1, 6, 4});
  x.select(2, 0).copy_(at::tensor({0.5, -0.3, 2.0, -1.0, 0.1, -4.0}));
  m2->forward(x);
  EXPECT_NEAR(m2->take_losses().first.item<double>(), 0.05, 1e-7);

  // and the whole model: mean over MoE layers keeps it at α
  ModelConfig mc = moe_config(4, 2);
  mc.moe.aux_loss_coef = 0.05;
  CausalLM model(mc);
  {
    at::NoGradGuard g;
    for (auto& item : model->named_parameters())
      if (item.key().find("mlp.gate.weight") != std::string::npos) item.value().zero_();
  }
  const at::Tensor tokens = at::randint(64, {2, 9}, at::kLong);
  const LossParts lp = model->loss_parts(tokens, tokens.roll(-1, 1));
  EXPECT_NEAR(lp.aux.item<double>(), 0.05, 1e-7);
  EXPECT_EQ(lp.z.item<double>(), 0.0);  // z_loss_coef 0
  EXPECT_NEAR(lp.total.item<double>(), lp.lm.item<double>() + 0.05, 1e-6);
}

TEST(MoELoss, ImbalanceRaisesAuxLossAndZLossValue) {
  ModelConfig cfg = moe_config(4, 1, 4, 8);
  cfg.moe.aux_loss_coef = 1.0;
  cfg.moe.z_loss_coef = 1.0;
  MoE moe(cfg);
  randomise(*moe, 9);
  {
    at::NoGradGuard g;
    moe->gate->weight.zero_();
    moe->gate->weight[2][0] = 3.0;  // every token with x_0 = 1 picks expert 2
  }
  const at::Tensor x = at::zeros({1, 5, 4});
  x.select(2, 0).fill_(1.0);
  moe->forward(x);
  auto [aux, z] = moe->take_losses();
  // f = (0, 0, 1, 0), P_2 = e^3 / (e^3 + 3): aux = E·P_2
  const double p2 = std::exp(3.0) / (std::exp(3.0) + 3.0);
  EXPECT_NEAR(aux.item<double>(), 4.0 * p2, 1e-6);
  const double lse = std::log(std::exp(3.0) + 3.0);
  EXPECT_NEAR(z.item<double>(), lse * lse, 1e-5);
}

TEST(MoELoss, GlobalBatchScopeCountsOverTheStepsMicroBatches) {
  ModelConfig cfg = moe_config(3, 1, 4, 8);
  cfg.moe.aux_loss_coef = 1.0;
  cfg.moe.aux_loss_scope = "global_batch";
  MoE moe(cfg);
  randomise(*moe, 10);
  {
    at::NoGradGuard g;
    moe->gate->weight.zero_();
    moe->gate->weight[0][0] = 2.0;
    moe->gate->weight[1][0] = -2.0;
  }
  const at::Tensor a = at::zeros({1, 4, 4}), b = at::zeros({1, 4, 4});
  a.select(2, 0).fill_(1.0);   // all to expert 0
  b.select(2, 0).fill_(-1.0);  // all to expert 1
  auto probs_mean = [&](const at::Tensor& x) { return moe->gate->forward(x.reshape({-1, 4})).probs.mean(0); };
  moe->forward(a);
  const double first = moe->take_losses().first.item<double>();
  EXPECT_NEAR(first, 3.0 * probs_mean(a)[0].item<double>(), 1e-6);  // f = (1, 0, 0)
  moe->forward(b);
  const at::Tensor Pb = probs_mean(b);
  // running f over both micro-batches = (1/2, 1/2, 0), P from this micro-batch only
  EXPECT_NEAR(moe->take_losses().first.item<double>(), 3.0 * 0.5 * (Pb[0] + Pb[1]).item<double>(), 1e-6);
  moe->after_optimizer_step();  // a new step: counts restart
  moe->forward(b);
  EXPECT_NEAR(moe->take_losses().first.item<double>(), 3.0 * Pb[1].item<double>(), 1e-6);
  // in eval mode the scope is the micro-batch and nothing accumulates
  moe->eval();
  moe->forward(a);
  EXPECT_NEAR(moe->take_losses().first.item<double>(), first, 1e-6);
}

// ---- capacity dropping ------------------------------------------------------------------

TEST(MoECapacity, DropsExactlyTheDocumentedAssignments) {
  // Hand-made routing: E = 2, k = 2, N = 5, capacity factor 0.6 -> C = ceil(0.6·5·2/2) = 3.
  // First choices: tokens 0-3 -> expert 0, token 4 -> expert 1; second choices the other.
  EXPECT_EQ(expert_capacity(0.6, 5, 2, 2), 3);
  const at::Tensor expert = at::tensor({0, 1, 0, 1, 0, 1, 0, 1, 1, 0}, at::kLong).view({5, 2});
  const DispatchPlan plan = plan_dispatch(expert, 2, 3);
  EXPECT_TRUE(at::equal(plan.counts, at::tensor({5, 5}, at::kLong)));
  // Expert 0's rows in priority order: first choices of tokens 0,1,2,3, then token 4's second
  // choice; it keeps tokens 0,1,2. Expert 1: first choice of token 4, then second choices of
  // tokens 0,1,2,3; it keeps tokens 4,0,1.
  EXPECT_TRUE(at::equal(plan.token, at::tensor({0, 1, 2, 3, 4, 4, 0, 1, 2, 3}, at::kLong)));
  EXPECT_TRUE(at::equal(plan.kept, at::tensor({1, 1, 1, 0, 0, 1, 1, 1, 0, 0}, at::kLong).to(at::kBool)));

  // Through the layer: a dropped assignment contributes exactly nothing.
  ModelConfig cfg = moe_config(2, 1, 4, 8);
  cfg.moe.capacity_factor = 1.0;  // C = ceil(6·1/2) = 3
  MoE moe(cfg);
  randomise(*moe, 12);
  {
    at::NoGradGuard g;
    moe->gate->weight.zero_();
    moe->gate->weight[0][0] = 5.0;  // x_0 > 0: every token prefers expert 0
  }
  at::Tensor x = at::randn({1, 6, 4});
  x.select(2, 0).fill_(1.0);
  x.requires_grad_(true);
  const at::Tensor y = moe->forward(x);
  EXPECT_GT(y[0].narrow(0, 0, 3).abs().min().item<double>(), 0.0);
  EXPECT_EQ(y[0].narrow(0, 3, 3).abs().max().item<double>(), 0.0);
  y.sum().backward();
  EXPECT_EQ(x.grad()[0].narrow(0, 3, 3).abs().max().item<double>(), 0.0);
  int64_t tokens = 0;
  const at::Tensor stats = moe->take_stats(tokens);
  EXPECT_EQ(stats[2].item<double>(), 3.0);  // dropped assignments
}

// ---- dispatch and combine ------------------------------------------------------------------

TEST(MoEDispatch, PermutationRoundTripsAndSlicesAreContiguous) {
  at::manual_seed(13);
  const int64_t N = 37, E = 6, k = 3;
  const at::Tensor same = at::randperm(E, at::kLong).narrow(0, 0, k).repeat({N, 1});  // two experts idle
  std::vector<at::Tensor> choices;
  for (int64_t n = 0; n < N; ++n) choices.push_back(at::randperm(E, at::kLong).narrow(0, 0, k));
  const at::Tensor scrambled = at::stack(choices);
  for (const at::Tensor& e : {same, scrambled}) {
    const DispatchPlan plan = plan_dispatch(e, E, 0);
    const at::Tensor x = at::randn({N, 5});
    const at::Tensor rows = dispatch(x, plan);
    // rows sorted by expert: the expert of each row is non-decreasing
    const at::Tensor row_expert = e.t().reshape({-1}).index_select(0, plan.inverse.argsort());
    EXPECT_TRUE(at::equal(row_expert, std::get<0>(row_expert.sort())));
    EXPECT_EQ(plan.counts.sum().item<int64_t>(), N * k);
    // combine with weight 1 on every slot gives k·x back
    expect_close(combine(rows, at::ones({N, k}), plan), x * k, 1e-6, "round trip");
    // and with one-hot weights on slot j it returns x from that slot only
    at::Tensor w = at::zeros({N, k});
    w.select(1, k - 1).fill_(1.0);
    expect_close(combine(rows * 2, w, plan), x * 2, 1e-6, "slot");
  }
}

// ---- aux-loss-free bias --------------------------------------------------------------------

TEST(MoEBias, UpdateMovesAgainstTheLoadAndOnlyChangesSelection) {
  ModelConfig cfg = moe_config(4, 1, 4, 8);
  cfg.moe.scoring = "sigmoid";
  cfg.moe.norm_topk_prob = false;
  cfg.moe.bias_update_rate = 0.1;
  MoE moe(cfg);
  randomise(*moe, 14);
  {
    at::NoGradGuard g;
    moe->gate->weight.zero_();
    moe->gate->weight[0][0] = 2.0;  // every token picks expert 0
  }
  at::Tensor x = at::zeros({2, 4, 4});
  x.select(2, 0).fill_(1.0);
  moe->forward(x);
  moe->after_optimizer_step(at::ones({}));  // a skipped (non-finite) step: no bias update either
  EXPECT_EQ(moe->gate->e_score_correction_bias.abs().max().item<double>(), 0.0);
  moe->forward(x);
  moe->after_optimizer_step(at::zeros({}));
  expect_close(moe->gate->e_score_correction_bias, at::tensor({-0.1, 0.1, 0.1, 0.1}), 1e-7, "bias step 1");
  moe->after_optimizer_step();  // no forward since: no load information, no change
  expect_close(moe->gate->e_score_correction_bias, at::tensor({-0.1, 0.1, 0.1, 0.1}), 1e-7, "no load");
  moe->eval();
  moe->forward(x);  // evaluation does not count as load
  moe->after_optimizer_step();
  expect_close(moe->gate->e_score_correction_bias, at::tensor({-0.1, 0.1, 0.1, 0.1}), 1e-7, "eval");
  moe->train();

  // A bias that flips the choice to expert 3 leaves the weight at expert 3's own score.
  {
    at::NoGradGuard g;
    moe->gate->e_score_correction_bias.copy_(at::tensor({0.0, 0.0, 0.0, 5.0}));
  }
  const Routing r = moe->gate->forward(x.reshape({-1, 4}));
  EXPECT_TRUE(at::equal(r.expert, at::full({8, 1}, 3, at::kLong)));
  expect_close(r.weight, at::full({8, 1}, 0.5), 1e-7, "unbiased sigmoid(0)");

  // Balanced load: the bias stays.
  ModelConfig c2 = moe_config(2, 2, 4, 8);
  c2.moe.bias_update_rate = 0.1;
  MoE m2(c2);
  randomise(*m2, 15);
  m2->forward(at::randn({1, 5, 4}));  // top-2 of 2: every expert gets every token
  m2->after_optimizer_step();
  EXPECT_EQ(m2->gate->e_score_correction_bias.abs().max().item<double>(), 0.0);
}

// ---- statistics ----------------------------------------------------------------------------

TEST(MoEStats, CountsEntropyAndResets) {
  ModelConfig cfg = moe_config(4, 2);
  cfg.n_layers = 3;
  cfg.moe.every = 2;  // MoE only in block 1
  CausalLM model(cfg);
  {
    at::NoGradGuard g;
    model->named_parameters()["model.layers.1.mlp.gate.weight"].zero_();  // uniform router
  }
  const at::Tensor tokens = at::randint(64, {2, 7}, at::kLong);
  model->loss(tokens, tokens);
  model->loss(tokens, tokens);
  const auto stats = model->routing_stats();
  ASSERT_EQ(stats.size(), 1u);
  const MoELayerStats& s = stats[0];
  EXPECT_EQ(s.layer, 1);
  EXPECT_EQ(s.tokens, 28);
  EXPECT_EQ(std::accumulate(s.expert_tokens.begin(), s.expert_tokens.end(), int64_t{0}), 56);
  EXPECT_EQ(s.load_max, *std::max_element(s.expert_tokens.begin(), s.expert_tokens.end()));
  EXPECT_EQ(s.load_min, *std::min_element(s.expert_tokens.begin(), s.expert_tokens.end()));
  EXPECT_NEAR(s.router_entropy, std::log(4.0), 1e-6);
  EXPECT_EQ(s.dropped, 0);
  EXPECT_EQ(s.gemm, "loop");
  // coefficient of variation from the counts
  double mean = 14.0, var = 0;
  for (int64_t c : s.expert_tokens) var += (c - mean) * (c - mean) / 4.0;
  EXPECT_NEAR(s.load_cv, std::sqrt(var) / mean, 1e-12);
  // as metrics.jsonl fields and a log line
  nlohmann::json rec;
  add_routing_metrics(rec, stats);
  EXPECT_EQ(rec["moe_layer"], nlohmann::json::array({1}));
  EXPECT_EQ(rec["moe_load_max"][0].get<int64_t>(), s.load_max);
  EXPECT_DOUBLE_EQ(rec["moe_router_entropy"][0].get<double>(), s.router_entropy);
  EXPECT_NE(routing_summary(stats).find("dropped 0"), std::string::npos) << routing_summary(stats);
  nlohmann::json dense_rec = nlohmann::json::object();
  add_routing_metrics(dense_rec, {});
  EXPECT_TRUE(dense_rec.empty());
  EXPECT_TRUE(model->routing_stats().empty());  // read resets
  model->eval();
  model->loss(tokens, tokens);
  EXPECT_TRUE(model->routing_stats().empty());  // evaluation is not counted
  // dense models have none
  ModelConfig dense;
  dense.vocab_size = 64;
  EXPECT_TRUE(CausalLM(dense)->routing_stats().empty());
}

// ---- the model: names, parameter counts, gradients --------------------------------------------

TEST(MoEModel, NamesAndEveryKthBlock) {
  ModelConfig cfg = moe_config(4, 2);
  cfg.n_layers = 4;
  cfg.moe.every = 2;
  cfg.moe.shared_experts = 1;
  cfg.moe.shared_expert_gate = true;
  cfg.moe.bias_update_rate = 0.01;
  CausalLM model(cfg);
  const auto params = model->named_parameters();
  for (const char* name : {"model.layers.1.mlp.gate.weight", "model.layers.1.mlp.experts.gate_proj",
                           "model.layers.1.mlp.experts.up_proj", "model.layers.3.mlp.experts.down_proj",
                           "model.layers.1.mlp.shared_expert.gate_proj.weight",
                           "model.layers.1.mlp.shared_expert.down_proj.weight",
                           "model.layers.1.mlp.shared_expert_gate.weight", "model.layers.0.mlp.gate_proj.weight",
                           "model.layers.2.mlp.down_proj.weight"}) {
    EXPECT_TRUE(params.contains(name)) << name;
  }
  EXPECT_FALSE(params.contains("model.layers.0.mlp.experts.gate_proj"));
  EXPECT_EQ(params["model.layers.1.mlp.experts.gate_proj"].sizes(), (at::IntArrayRef{4, 20, 12}));
  EXPECT_EQ(params["model.layers.1.mlp.experts.down_proj"].sizes(), (at::IntArrayRef{4, 12, 20}));
  EXPECT_TRUE(model->named_buffers().contains("model.layers.1.mlp.gate.e_score_correction_bias"));
}

TEST(MoEModel, ParameterCountsTotalAndActive) {
  std::vector<ModelConfig> configs;
  configs.push_back(moe_config(4, 2));
  ModelConfig b = moe_config(5, 1, 16, 24);
  b.n_layers = 5;
  b.moe.every = 2;
  b.moe.shared_experts = 2;
  b.moe.shared_ffn_hidden = 8;
  b.moe.shared_expert_gate = true;
  b.moe.bias_update_rate = 0.01;  // a buffer, not a parameter
  b.tie_embeddings = false;
  b.qk_norm = true;
  configs.push_back(b);
  ModelConfig c = moe_config(3, 3);
  c.moe.ffn_hidden = 0;  // the dense width
  c.moe.shared_experts = 1;
  configs.push_back(c);
  for (const auto& cfg : configs) {
    CausalLM model(cfg);
    const ModelStats s = model_stats(cfg, 16);
    EXPECT_EQ(count_parameters(*model), s.params_total);
    // active = total minus the unselected experts of each MoE layer
    int64_t unused = 0;
    for (int64_t i = 0; i < cfg.n_layers; ++i)
      if (cfg.is_moe_layer(i)) unused += (cfg.moe.n_experts - cfg.moe.top_k) * 3 * cfg.d_model * cfg.resolved_expert_hidden();
    EXPECT_EQ(s.params_active, s.params_total - unused);
    EXPECT_EQ(s.params_matmul, s.params_active - s.params_embedding - cfg.d_model -
                                   cfg.n_layers * (2 * cfg.d_model + (cfg.qk_norm ? 2 * cfg.resolved_head_dim() : 0)) +
                                   cfg.vocab_size * cfg.d_model);  // the head multiplies, the lookup does not
  }
  // dense: active == total
  ModelConfig d;
  d.vocab_size = 256;
  EXPECT_EQ(model_stats(d, 16).params_active, model_stats(d, 16).params_total);
}

// The gated-attention paper's 15B-A2B layout, from the config file, counted by hand here.
TEST(MoEModel, Qwen15BA2BLayoutCounts) {
  const std::string path = SLUICE_SOURCE_DIR "/configs/qwen_15b_a2b_scaled.yaml";
  // the data paths are placeholders: point them at something that exists
  const Config cfg = load_config(path, {"data.train=" + path, "data.tokenizer=byte"}).config;
  const ModelConfig& m = cfg.model;
  ASSERT_EQ(m.n_layers, 24);
  ASSERT_EQ(m.d_model, 2048);
  ASSERT_EQ(m.moe.n_experts, 128);
  ASSERT_EQ(m.moe.top_k, 8);
  const int64_t d = 2048, L = 24, V = m.vocab_size;
  const int64_t attn = d * (32 * 128) * 2 + d * (4 * 128) * 2;  // q, o; k, v
  const int64_t norms = 2 * d + 2 * 128;                          // two RMSNorms + q/k norms
  const int64_t router = 128 * d;
  const int64_t expert = 3 * d * 768;
  const int64_t embed = V * d * (m.tie_embeddings ? 1 : 2);
  const int64_t total = L * (attn + norms + router + 128 * expert) + d + embed;
  const int64_t active = L * (attn + norms + router + 8 * expert) + d + embed;
  const ModelStats s = model_stats(m, cfg.data.seq_len);
  EXPECT_EQ(s.params_total, total);
  EXPECT_EQ(s.params_active, active);
  // "15B-A2B": 15.6B total, 2.0B active (1.4B of them outside the embeddings)
  EXPECT_NEAR(static_cast<double>(total) / 1e9, 15.6, 0.05);
  EXPECT_NEAR(static_cast<double>(active) / 1e9, 2.0, 0.05);
}

TEST(MoEModel, GradientsReachRouterExpertsAndSharedExperts) {
  ModelConfig cfg = moe_config(4, 2);
  cfg.moe.shared_experts = 1;
  cfg.moe.shared_expert_gate = true;
  cfg.moe.z_loss_coef = 1e-3;
  at::manual_seed(16);
  CausalLM model(cfg);
  const at::Tensor tokens = at::randint(64, {4, 16}, at::kLong);
  model->loss(tokens, tokens.roll(-1, 1)).backward();
  for (const auto& item : model->named_parameters()) {
    if (item.key().find(".mlp.") == std::string::npos) continue;
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    if (item.key().find("experts.") != std::string::npos) {
      // each expert that received tokens has a gradient
      const at::Tensor per_expert = item.value().grad().abs().flatten(1).amax(1);
      EXPECT_GT(per_expert.min().item<double>(), 0.0) << item.key();
    } else {
      EXPECT_GT(item.value().grad().abs().max().item<double>(), 0.0) << item.key();
    }
  }
}

// ---- training ----------------------------------------------------------------------------

TEST(MoETrain, TrainStepReportsPartsAndUpdatesTheBias) {
  ModelConfig cfg = moe_config(4, 2);
  cfg.moe.scoring = "sigmoid";
  cfg.moe.bias_update_rate = 1e-3;
  cfg.moe.z_loss_coef = 1e-3;
  at::manual_seed(17);
  CausalLM model(cfg);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
  OptimConfig oc;
  AdamW opt(named, oc);
  TrainStep step(model, opt, 1.0, at::kCPU, false);
  const at::Tensor in = at::randint(64, {2, 8}, at::kLong);
  const TrainStep::Result r = step.run({{in, in.roll(-1, 1)}, {in.flip(1), in}}, 1e-3);
  ASSERT_TRUE(r.aux_loss.defined());
  ASSERT_TRUE(r.z_loss.defined());
  EXPECT_GT(r.aux_loss.item<double>(), 0.0);
  EXPECT_GT(r.z_loss.item<double>(), 0.0);
  EXPECT_GT(r.loss.item<double>(), 3.0);  // ≈ ln 64 at init
  const at::Tensor bias = model->named_buffers()["model.layers.0.mlp.gate.e_score_correction_bias"];
  EXPECT_NEAR(bias.abs().max().item<double>(), 1e-3, 1e-9);  // moved by exactly ±rate (or 0)

  // dense: no parts
  ModelConfig dense;
  dense.vocab_size = 256;
  CausalLM dm(dense);
  std::vector<std::pair<std::string, at::Tensor>> dn;
  for (const auto& p : dm->named_parameters()) dn.emplace_back(p.key(), p.value());
  AdamW dopt(dn, oc);
  TrainStep dstep(dm, dopt, 1.0, at::kCPU, false);
  const at::Tensor din = at::randint(256, {2, 8}, at::kLong);
  const TrainStep::Result dr = dstep.run({{din, din}}, 1e-3);
  EXPECT_FALSE(dr.aux_loss.defined());
  EXPECT_FALSE(dr.z_loss.defined());
}

// Checkpoints hold the stacked experts and the selection bias; the per-step counters are
// empty at a step boundary, so a resumed run repeats the straight one bit for bit.
TEST(MoETrain, ResumeReproducesTheStraightRun) {
  testing::TempDir dir;
  const std::string corpus = testing::write_file(dir.file("corpus.txt"), testing::make_corpus(40000));
  const std::vector<std::string> sets = {
      "data.train=" + corpus, "model.arch=moe", "model.d_model=32", "model.n_layers=2", "model.n_heads=2",
      "model.n_kv_heads=1", "model.moe.n_experts=4", "model.moe.top_k=2", "model.moe.ffn_hidden=32",
      "model.moe.scoring=sigmoid", "model.moe.bias_update_rate=0.01", "model.moe.aux_loss_scope=global_batch",
      "model.moe.z_loss_coef=0.001", "data.seq_len=24", "train.micro_batch=4", "train.grad_accum=2",
      "train.steps=8", "train.log_every=1", "train.eval_every=0", "schedule.warmup_steps=2", "train.threads=1",
      "train.device=cpu", "log.level=warn", "log.file=false"};
  auto run = [&](const std::string& name, int64_t stop_after) {
    TrainOptions o;
    o.run_dir = dir.file(name);
    o.stop_after = stop_after;
    return train(load_config_text("{}", "test", sets), o);
  };
  const TrainSummary straight = run("straight", 0);
  run("resumed", 3);
  const TrainSummary resumed = run("resumed", 0);
  EXPECT_EQ(resumed.resumed_from_step, 3);
  ASSERT_EQ(resumed.logged_losses.size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(resumed.logged_losses[i], straight.logged_losses[i + 3]) << i;
  const auto load = [&](const std::string& name) {
    const std::string ck = resolve_checkpoint(dir.file(name));
    const CheckpointInfo info = read_checkpoint_info(ck);
    CausalLM model(info.config.model);
    load_checkpoint(ck, *model, nullptr, false);
    return model;
  };
  CausalLM a = load("straight"), b = load("resumed");
  const at::Tensor bias = a->named_buffers()["model.layers.1.mlp.gate.e_score_correction_bias"];
  EXPECT_GT(bias.abs().max().item<double>(), 0.0);  // it moved, and was saved
  for (const auto& item : a->named_buffers())
    EXPECT_TRUE(at::equal(item.value(), b->named_buffers()[item.key()])) << item.key();
  for (const auto& item : a->named_parameters())
    EXPECT_TRUE(at::equal(item.value(), b->named_parameters()[item.key()])) << item.key();
}

TEST(MoETrain, ShortRunLossFalls) {
  testing::TempDir dir;
  const std::string corpus = testing::write_file(dir.file("corpus.txt"), testing::make_corpus(60000));
  const LoadedConfig cfg = load_config_text(
      "{}", "test",
      {"data.train=" + corpus, "model.arch=moe", "model.d_model=32", "model.n_layers=2", "model.n_heads=2",
       "model.n_kv_heads=1", "model.moe.n_experts=4", "model.moe.top_k=2", "model.moe.ffn_hidden=32",
       "model.moe.shared_experts=1", "model.moe.z_loss_coef=0.001", "data.seq_len=32", "train.micro_batch=8",
       "train.grad_accum=2", "train.steps=30", "train.log_every=5", "train.eval_every=0", "schedule.warmup_steps=5",
       "optim.lr=3e-3", "train.threads=1", "train.device=cpu", "log.level=warn", "log.file=false"});
  TrainOptions opts;
  opts.run_dir = dir.file("run");
  const TrainSummary s = train(cfg, opts);
  ASSERT_GE(s.logged_losses.size(), 2u);
  for (double l : s.logged_losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_LT(s.logged_losses.back(), s.logged_losses.front() - 0.5);
}

}  // namespace
}  // namespace sluice
