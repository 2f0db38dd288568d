// Model components against explicit references (CPU, fp32/fp64).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <ATen/record_function.h>
#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <map>
#include <cmath>

#include "counting_allocator.h"
#include "model/activation_checkpoint.h"
#include "model/chunked_loss.h"
#include "model/packed_linear.h"
#include "model/decoder_block.h"
#include "model/fused_ops.h"
#include "model/rms_norm.h"
#include "model/rope.h"
#include "model/swiglu.h"
#include "sluice/attention.h"
#include "sluice/model.h"

namespace sluice {
namespace {

ModelConfig small_config() {
  ModelConfig m;
  m.vocab_size = 64;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.ffn_hidden = 48;
  return m;
}

void expect_close(const at::Tensor& a, const at::Tensor& b, double atol, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  EXPECT_LE(diff, atol) << what;
}

TEST(RMSNorm, MatchesFormula) {
  at::manual_seed(0);
  RMSNorm norm(12, 1e-5);
  {
    at::NoGradGuard g;
    norm->weight.uniform_(0.5, 1.5);
  }
  const at::Tensor x = at::randn({3, 5, 12}, at::kDouble).to(at::kFloat);
  const at::Tensor xd = x.to(at::kDouble);
  const at::Tensor ref = xd / at::sqrt((xd * xd).mean(-1, true) + 1e-5) * norm->weight.to(at::kDouble);
  expect_close(norm->forward(x), ref, 1e-5, "rmsnorm");
}

// Rotating q at m and k at n gives a score that depends only on m - n.
TEST(Rope, ScoresDependOnlyOnRelativePosition) {
  at::manual_seed(1);
  const int64_t D = 16;
  Rotary rot(D, 10000.0);
  const at::Tensor q = at::randn({1, 1, 1, D}), k = at::randn({1, 1, 1, D});
  auto score = [&](int64_t m, int64_t n) {
    const at::Tensor qm = rope_reference(q, rot.tables(m, 1, at::kCPU));
    const at::Tensor kn = rope_reference(k, rot.tables(n, 1, at::kCPU));
    return (qm * kn).sum().item<double>();
  };
  for (int64_t delta : {0, 1, 5, 37}) {
    const double s0 = score(delta, 0);
    for (int64_t shift : {3, 100, 1000}) EXPECT_NEAR(score(delta + shift, shift), s0, 1e-4) << delta << " " << shift;
  }
  EXPECT_GT(std::abs(score(5, 0) - score(6, 0)), 1e-4);  // and it does depend on m - n
}

TEST(Rope, RotateHalfLayoutAndNorm) {
  const int64_t D = 8;
  Rotary rot(D, 100.0);
  const at::Tensor x = at::randn({2, 7, 3, D});
  const RotaryTables t = rot.tables(0, 7, at::kCPU);
  const at::Tensor y = rope_reference(x, t);
  expect_close(y.select(1, 0), x.select(1, 0), 0, "position 0 is the identity");
  expect_close(y.norm(2, -1), x.norm(2, -1), 1e-5, "rotation keeps norms");
  // dimension j pairs with j + D/2 at angle pos * base^(-2j/D)
  const int64_t pos = 5, j = 1;
  const double theta = pos * std::pow(100.0, -2.0 * j / D);
  const double x1 = x[0][pos][0][j].item<double>(), x2 = x[0][pos][0][j + D / 2].item<double>();
  EXPECT_NEAR(y[0][pos][0][j].item<double>(), x1 * std::cos(theta) - x2 * std::sin(theta), 1e-5);
  EXPECT_NEAR(y[0][pos][0][j + D / 2].item<double>(), x2 * std::cos(theta) + x1 * std::sin(theta), 1e-5);
}

TEST(SwiGLU, MatchesFormula) {
  at::manual_seed(2);
  SwiGLU mlp(8, 20);
  const at::Tensor x = at::randn({2, 3, 8});
  const at::Tensor g = at::matmul(x, mlp->gate_proj->weight.t());
  const at::Tensor u = at::matmul(x, mlp->up_proj->weight.t());
  const at::Tensor ref = at::matmul(g / (1 + at::exp(-g)) * u, mlp->down_proj->weight.t());
  expect_close(mlp->forward(x), ref, 1e-5, "swiglu");
}

// Loop reference: each query head h reads kv head h / (H / KV), keys up to its own position.
at::Tensor attention_loop(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, double scale) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), KV = k.size(1);
  at::Tensor out = at::zeros_like(q, at::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kvh = h / (H / KV);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t lo = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
        const at::Tensor keys = k[b][kvh].slice(0, lo, t + 1).to(at::kDouble);
        const at::Tensor p = at::softmax(at::mv(keys, q[b][h][t].to(at::kDouble)) * scale, 0);
        out[b][h][t] = at::mv(v[b][kvh].slice(0, lo, t + 1).to(at::kDouble).t(), p);
      }
    }
  return out;
}

struct AttnShape {
  int64_t B, H, KV, T, D, window;
};

class AttentionBackends : public ::testing::TestWithParam<AttnShape> {};

// `fused` on CPU tensors takes its sdpa fallback (the kernels are CUDA only; tests/test_flash_attention.cpp).
TEST_P(AttentionBackends, EveryBackendMatchesLoopReferenceForwardAndBackward) {
  const AttnShape s = GetParam();
  at::manual_seed(3);
  const at::Tensor q0 = at::randn({s.B, s.H, s.T, s.D}), k0 = at::randn({s.B, s.KV, s.T, s.D}),
                   v0 = at::randn({s.B, s.KV, s.T, s.D}), dy = at::randn({s.B, s.H, s.T, s.D});
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
  const at::Tensor ref = attention_loop(q0, k0, v0, s.window, scale);
  std::vector<std::vector<at::Tensor>> grads;
  for (const std::string backend : {"math", "sdpa", "fused"}) {
    auto core = make_attention_core(backend);
    at::Tensor q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true),
               v = v0.clone().requires_grad_(true);
    const at::Tensor y = core->forward(q, k, v, AttentionMask{s.window}, scale);
    expect_close(y, ref, 2e-5, backend + " forward");
    (y * dy).sum().backward();
    grads.push_back({q.grad(), k.grad(), v.grad()});
  }
  // gradients: the explicit math graph is the reference for the others
  for (size_t b = 1; b < grads.size(); ++b)
    for (int i = 0; i < 3; ++i) expect_close(grads[b][i], grads[0][i], 2e-5, "backend " + std::to_string(b) + " grad " + std::to_string(i));
}

void PrintTo(const AttnShape& s, std::ostream* os) {
  *os << "B" << s.B << " H" << s.H << " KV" << s.KV << " T" << s.T << " D" << s.D << " window" << s.window;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionBackends,
                         ::testing::Values(AttnShape{1, 1, 1, 1, 8, 0},     // a single token
                                           AttnShape{2, 4, 4, 17, 16, 0},   // MHA, odd length
                                           AttnShape{1, 8, 2, 33, 8, 0},    // GQA 4:1
                                           AttnShape{2, 4, 1, 20, 32, 0},   // MQA
                                           AttnShape{1, 4, 2, 29, 16, 7},   // sliding window
                                           AttnShape{3, 6, 3, 9, 4, 1}));   // window 1: attends only itself

TEST(Attention, GqaEqualsMhaWithRepeatedKvHeads) {
  at::manual_seed(4);
  const at::Tensor q = at::randn({2, 6, 11, 8}), k = at::randn({2, 2, 11, 8}), v = at::randn({2, 2, 11, 8});
  for (const std::string backend : {"math", "sdpa", "fused"}) {
    auto core = make_attention_core(backend);
    const at::Tensor gqa = core->forward(q, k, v, {}, 0.3);
    const at::Tensor mha = core->forward(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), {}, 0.3);
    expect_close(gqa, mha, 1e-5, backend);
  }
}

TEST(Attention, DecodingQueriesSeeAllEarlierKeys) {
  // T < S (KV cache): the queries are the last T positions, causal relative to them.
  at::manual_seed(5);
  const at::Tensor q = at::randn({1, 2, 10, 8}), k = at::randn({1, 2, 10, 8}), v = at::randn({1, 2, 10, 8});
  for (const std::string backend : {"math", "sdpa", "fused"}) {
    auto core = make_attention_core(backend);
    const at::Tensor full = core->forward(q, k, v, {}, 0.35);
    const at::Tensor tail = core->forward(q.narrow(2, 7, 3), k, v, {}, 0.35);
    expect_close(tail, full.narrow(2, 7, 3), 1e-5, backend);
  }
  EXPECT_THROW(make_attention_core("nope"), std::invalid_argument);
}

TEST(CausalLM, FutureTokensDoNotChangeEarlierLogits) {
  at::manual_seed(6);
  ModelConfig cfg = small_config();
  CausalLM model(cfg);
  at::Tensor tokens = at::randint(cfg.vocab_size, {2, 12}, at::kLong);
  const at::Tensor a = model->forward(tokens);
  at::Tensor changed = tokens.clone();
  changed.narrow(1, 8, 4).random_(0, cfg.vocab_size);
  const at::Tensor b = model->forward(changed);
  expect_close(a.narrow(1, 0, 8), b.narrow(1, 0, 8), 1e-5, "positions before the change");
  EXPECT_GT((a.narrow(1, 8, 4) - b.narrow(1, 8, 4)).abs().max().item<double>(), 1e-4);
}

TEST(CausalLM, MathAndSdpaBackendsAgreeOnTheWholeModel) {
  ModelConfig cfg = small_config();
  cfg.qk_norm = true;
  std::vector<at::Tensor> logits, grads;
  const at::Tensor tokens = at::randint(cfg.vocab_size, {2, 15}, at::kLong);
  for (const std::string backend : {"math", "sdpa"}) {
    cfg.attention.backend = backend;
    at::manual_seed(7);
    CausalLM model(cfg);
    const at::Tensor y = model->forward(tokens);
    model->loss(tokens, tokens.roll(-1, 1)).backward();
    logits.push_back(y);
    grads.push_back(model->named_parameters()["model.layers.0.self_attn.q_proj.weight"].grad().clone());
  }
  expect_close(logits[0], logits[1], 1e-5, "logits");
  expect_close(grads[0], grads[1], 1e-5, "q_proj grad");
}

TEST(CausalLM, HuggingFaceParameterNames) {
  ModelConfig cfg = small_config();
  cfg.qk_norm = true;
  cfg.tie_embeddings = false;
  CausalLM model(cfg);
  const auto params = model->named_parameters();
  for (const char* name :
       {"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.layers.1.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight",
        "model.layers.1.self_attn.o_proj.weight", "model.layers.0.self_attn.q_norm.weight",
        "model.layers.0.self_attn.k_norm.weight", "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"}) {
    EXPECT_TRUE(params.contains(name)) << name;
  }
  EXPECT_EQ(params["model.layers.1.self_attn.k_proj.weight"].sizes(), (at::IntArrayRef{16, 32}));  // 2 kv heads x 8
  cfg.tie_embeddings = true;
  EXPECT_FALSE(CausalLM(cfg)->named_parameters().contains("lm_head.weight"));
}

TEST(CausalLM, ParameterCountMatchesAnalyticFormula) {
  std::vector<ModelConfig> configs;
  configs.push_back(small_config());
  ModelConfig b = small_config();
  b.qk_norm = true;
  b.tie_embeddings = false;
  b.head_dim = 12;  // H·head_dim != d_model (Qwen3 style)
  configs.push_back(b);
  ModelConfig c = small_config();
  c.n_kv_heads = 1;
  c.ffn_hidden = 0;  // 8/3 rule
  configs.push_back(c);
  ModelConfig g = b;  // gate projection and bias, per-head output norm
  g.attention.gate.position = "G1";
  g.attention.gate.bias = true;
  g.attention.output_norm = true;
  configs.push_back(g);
  ModelConfig k = small_config();  // KV-head gate, input-independent logits
  k.attention.gate.position = "G2";
  k.attention.gate.input = "constant";
  configs.push_back(k);
  ModelConfig moe = small_config();  // MoE in every second block, shared expert with a gate
  moe.arch = "moe";
  moe.n_layers = 4;
  moe.moe.every = 2;
  moe.moe.n_experts = 5;
  moe.moe.top_k = 2;
  moe.moe.ffn_hidden = 24;
  moe.moe.shared_experts = 2;
  moe.moe.shared_expert_gate = true;
  moe.moe.bias_update_rate = 0.01;  // a buffer: not counted
  configs.push_back(moe);
  for (const auto& cfg : configs) {
    CausalLM model(cfg);
    EXPECT_EQ(count_parameters(*model), model_stats(cfg, 16).params_total) << cfg.arch;
    EXPECT_LE(model_stats(cfg, 16).params_active, model_stats(cfg, 16).params_total);
  }
  EXPECT_EQ(model_stats(moe, 16).params_total - model_stats(moe, 16).params_active, 2 * 3 * 3 * 32 * 24);
  EXPECT_EQ(c.resolved_ffn_hidden(), 128);  // 8/3 * 32 = 85.3 -> 128 (multiple of 64)
  // 125M-class config of docs/performance.md: d768, 12 layers, 12/4 heads, SwiGLU 2048, vocab 32000
  ModelConfig m;
  m.vocab_size = 32000;
  m.d_model = 768;
  m.n_layers = 12;
  m.n_heads = 12;
  m.n_kv_heads = 4;
  m.ffn_hidden = 2048;
  const ModelStats s = model_stats(m, 2048);
  const int64_t per_layer = 768 * 768 * 2 + 768 * 256 * 2 + 3 * 768 * 2048 + 2 * 768;
  EXPECT_EQ(s.params_total, 12 * per_layer + 768 + 32000 * 768);
  EXPECT_DOUBLE_EQ(s.train_flops_per_token,
                   6.0 * (12 * (per_layer - 2 * 768) + 32000 * 768) + 12.0 * 12 * 12 * 64 * 2048);
}

TEST(CausalLM, InitialisationScales) {
  ModelConfig cfg;
  cfg.vocab_size = 256;
  cfg.d_model = 256;
  cfg.n_layers = 8;
  cfg.n_heads = 4;
  cfg.n_kv_heads = 4;
  cfg.init_std = 0.02;
  at::manual_seed(8);
  CausalLM model(cfg);
  auto p = model->named_parameters();
  EXPECT_NEAR(p["model.layers.0.self_attn.q_proj.weight"].std().item<double>(), 0.02, 0.001);
  EXPECT_NEAR(p["model.layers.0.self_attn.o_proj.weight"].std().item<double>(), 0.02 / 4.0, 0.0003);
  EXPECT_NEAR(p["model.layers.3.mlp.down_proj.weight"].std().item<double>(), 0.02 / 4.0, 0.0003);
  EXPECT_EQ(p["model.norm.weight"].min().item<double>(), 1.0);
}

TEST(FusedOps, CpuFallsBackToReference) {
  const at::Tensor g = at::randn({4, 5}), u = at::randn({4, 5});
  expect_close(swiglu(g, u), swiglu_reference(g, u), 0, "swiglu on cpu");
}

// train.loss_chunk_tokens: the same loss and every parameter's gradient as the plain head +
// cross-entropy, for chunks that do and do not divide the tokens, tied and untied heads, a dense
// and an MoE model (its router losses unchanged), and without grad (evaluation).
TEST(ChunkedLoss, EqualsThePlainHeadAndCrossEntropy) {
  for (const bool tied : {false, true}) {
    for (const bool moe : {false, true}) {
      ModelConfig cfg = small_config();
      cfg.vocab_size = 97;  // not a multiple of anything
      cfg.tie_embeddings = tied;
      if (moe) {
        cfg.arch = "moe";
        cfg.moe.n_experts = 4;
        cfg.moe.top_k = 2;
        cfg.moe.ffn_hidden = 16;
        cfg.moe.aux_loss_coef = 0.01;
        cfg.moe.z_loss_coef = 0.001;
      }
      at::manual_seed(7);
      CausalLM model(cfg);
      const at::Tensor tokens = at::randint(cfg.vocab_size, {3, 13}, at::kLong);
      const at::Tensor targets = at::randint(cfg.vocab_size, {3, 13}, at::kLong);
      auto run = [&](int64_t chunk) {
        model->set_loss_chunk_tokens(chunk);
        for (auto& p : model->parameters()) p.mutable_grad() = at::Tensor();
        LossParts l = model->loss_parts(tokens, targets);
        l.total.backward();
        std::vector<at::Tensor> grads;
        for (auto& p : model->parameters()) grads.push_back(p.grad().clone());
        return std::make_pair(l, grads);
      };
      const auto [plain, plain_grads] = run(0);
      for (const int64_t chunk : {1, 5, 16, 39, 64}) {
        SCOPED_TRACE("tied " + std::to_string(tied) + ", moe " + std::to_string(moe) + ", chunk " + std::to_string(chunk));
        const auto [chunked, grads] = run(chunk);
        EXPECT_NEAR(chunked.lm.item<double>(), plain.lm.item<double>(), 1e-6 * plain.lm.item<double>());
        EXPECT_NEAR(chunked.total.item<double>(), plain.total.item<double>(), 1e-6 * plain.total.item<double>());
        for (size_t i = 0; i < grads.size(); ++i) {
          const double norm = plain_grads[i].norm().item<double>();
          EXPECT_LE((grads[i] - plain_grads[i]).norm().item<double>(), 1e-6 * norm + 1e-12) << "parameter " << i;
        }
        at::NoGradGuard no_grad;
        model->set_loss_chunk_tokens(chunk);
        EXPECT_NEAR(model->loss_parts(tokens, targets).lm.item<double>(), plain.lm.item<double>(),
                    1e-6 * plain.lm.item<double>());
      }
    }
  }
  // the function itself against ATen's, gradients included, with a batch of one row
  const at::Tensor h = at::randn({1, 8}).requires_grad_(), w = at::randn({11, 8}).requires_grad_();
  const at::Tensor t = at::tensor({4}, at::kLong);
  at::Tensor ref = at::cross_entropy_loss(at::linear(h, w), t);
  const auto ref_grads = torch::autograd::grad({ref}, {h, w});
  at::Tensor got = chunked_linear_cross_entropy(h, w, t, 3);
  const auto got_grads = torch::autograd::grad({got}, {h, w});
  EXPECT_NEAR(got.item<double>(), ref.item<double>(), 1e-6);
  expect_close(got_grads[0], ref_grads[0], 1e-6, "dh");
  expect_close(got_grads[1], ref_grads[1], 1e-6, "dW");
  EXPECT_THROW(chunked_linear_cross_entropy(h, w, t, 0), c10::Error);
}

using testing::CountingCPUAllocator;

std::vector<at::Tensor> loss_and_grads(CausalLM& model, const at::Tensor& tokens, const at::Tensor& targets,
                                       const at::Tensor& segments = {}) {
  for (auto& p : model->parameters()) p.mutable_grad() = at::Tensor();
  const LossParts l = model->loss_parts(tokens, targets, segments);
  l.total.backward();
  std::vector<at::Tensor> out{l.total.detach()};
  for (auto& p : model->parameters()) out.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
  return out;
}

// train.activation_checkpointing: full gives bitwise the loss and every gradient of none on the
// CPU; selective bitwise the loss and the gradients up to the order of a sum (the norms' input
// gradients), across the attention variants (gates at every site, fused q/gate GEMM,
// QK-norm, output_norm, CoCA, ALiBi, NoPE, windows, the math core), documents and MoE blocks.
TEST(ActivationCheckpointing, BitwiseEqualToNoneAcrossVariants) {
  std::vector<std::pair<std::string, ModelConfig>> configs;
  configs.emplace_back("baseline", small_config());
  ModelConfig g1 = small_config();
  g1.qk_norm = true;
  g1.attention.gate.position = "G1";
  g1.attention.gate.bias = true;
  g1.attention.gate.fuse_q_proj = true;
  configs.emplace_back("g1 fused, qk_norm", g1);
  ModelConfig packed = g1;
  packed.fused_projections = true;
  configs.emplace_back("fused projections, g1, qk_norm", packed);
  ModelConfig hw = small_config();
  hw.attention.gate.position = "G1";
  hw.attention.gate.granularity = "headwise";
  hw.attention.output_norm = true;
  hw.attention.backend = "math";
  configs.emplace_back("g1 headwise, output_norm, math", hw);
  ModelConfig g2 = small_config();
  g2.attention.gate.position = "G2";
  g2.attention.gate.input = "constant";
  g2.position = "alibi";
  configs.emplace_back("g2 constant, alibi", g2);
  ModelConfig g4 = small_config();
  g4.attention.gate.position = "G4";
  g4.attention.gate.activation = "silu";
  g4.attention.gate.form = "additive";
  g4.attention.window_pattern = {4, 0};
  configs.emplace_back("g4 additive silu, windows", g4);
  ModelConfig g5 = small_config();
  g5.attention.gate.position = "G5";
  g5.position = "none";
  configs.emplace_back("g5, no positions", g5);
  ModelConfig self = small_config();
  self.attention.gate.position = "G1";
  self.attention.gate.input = "self";
  self.attention.gate.sharing = "head_shared";
  configs.emplace_back("g1 self head_shared", self);
  ModelConfig coca = small_config();
  coca.attention.coca.mode = "strict";
  configs.emplace_back("coca strict", coca);
  ModelConfig moe = small_config();
  moe.arch = "moe";
  moe.n_layers = 3;
  moe.moe.every = 2;
  moe.moe.n_experts = 4;
  moe.moe.top_k = 2;
  moe.moe.ffn_hidden = 16;
  moe.moe.shared_experts = 1;
  moe.moe.aux_loss_coef = 0.01;
  moe.moe.z_loss_coef = 0.001;
  moe.moe.capacity_factor = 1.0;
  configs.emplace_back("moe every 2, capacity, shared expert", moe);
  for (const auto& [name, cfg] : configs) {
    for (const bool documents : {false, true}) {
      at::manual_seed(3);
      CausalLM model(cfg);
      const at::Tensor tokens = at::randint(cfg.vocab_size, {2, 12}, at::kLong);
      const at::Tensor targets = at::randint(cfg.vocab_size, {2, 12}, at::kLong);
      const at::Tensor segments =
          documents ? at::tensor({0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, at::kLong)
                          .view({2, 12})
                    : at::Tensor();
      model->set_activation_checkpointing("none");
      const auto ref = loss_and_grads(model, tokens, targets, segments);
      for (const std::string mode : {"selective", "full"}) {
        SCOPED_TRACE(name + (documents ? ", documents, " : ", ") + mode);
        model->set_activation_checkpointing(mode);
        const auto got = loss_and_grads(model, tokens, targets, segments);
        ASSERT_EQ(got.size(), ref.size());
        EXPECT_TRUE(at::equal(got[0], ref[0])) << got[0].item<double>() << " vs " << ref[0].item<double>();
        for (size_t i = 1; i < got.size(); ++i) {
          ASSERT_EQ(got[i].defined(), ref[i].defined()) << "parameter " << i;
          if (!ref[i].defined()) continue;
          const std::string what = model->named_parameters().keys()[i - 1];
          if (mode == "full") {
            EXPECT_TRUE(at::equal(got[i], ref[i])) << what;
          } else {
            // The gradient reaching a norm's input is the same terms summed in another order.
            const double scale = ref[i].abs().max().item<double>();
            EXPECT_LE((got[i] - ref[i]).abs().max().item<double>(), 1e-6 * scale + 1e-12) << what;
          }
        }
      }
    }
  }
  CausalLM model(small_config());
  EXPECT_THROW(model->set_activation_checkpointing("blocks"), std::invalid_argument);
}

// Recomputing is what saves the memory: after the forward, selective keeps less than none (not
// the norms' outputs, nor SwiGLU's product and its silu: about 4 of the ~14 tensors of d_model
// and the SwiGLU width a block keeps) and full much less (each block only its input).
TEST(ActivationCheckpointing, ForwardKeepsLessForBackward) {
  ModelConfig cfg = small_config();
  cfg.d_model = 64;
  cfg.n_layers = 4;
  cfg.ffn_hidden = 256;
  at::manual_seed(1);
  CausalLM model(cfg);
  model->set_loss_chunk_tokens(64);  // so the logits do not dominate
  const at::Tensor tokens = at::randint(cfg.vocab_size, {4, 64}, at::kLong);
  const at::Tensor targets = at::randint(cfg.vocab_size, {4, 64}, at::kLong);
  std::map<std::string, int64_t> kept;
  for (const std::string mode : {"none", "selective", "full"}) {
    model->set_activation_checkpointing(mode);
    CountingCPUAllocator counter;
    const int64_t before = counter.live();
    at::Tensor loss = model->loss(tokens, targets);
    kept[mode] = counter.live() - before;
    loss.backward();
    loss = at::Tensor();
  }
  const int64_t block_input = 4 * 64 * cfg.d_model * 4;  // bytes of one block's input
  // none keeps, per block, about a dozen [B, T, d_model]-sized tensors and three of the SwiGLU width
  EXPECT_GT(kept["none"], 4 * 10 * block_input) << kept["none"];
  EXPECT_LT(kept["selective"], kept["none"] * 7 / 10) << kept["selective"] << " vs " << kept["none"];
  EXPECT_LT(kept["full"], kept["none"] / 4) << kept["full"] << " vs " << kept["none"];
}

// The region is recomputed with the generator's state of its forward (dropout masks agree), and
// the generator then goes on as if there had been no recompute.
TEST(ActivationCheckpointing, RecomputeSeesTheForwardsRandomNumbers) {
  const at::Tensor x0 = at::randn({5, 7}), w0 = at::randn({7});
  auto region = [](const std::vector<at::Tensor>& in) {
    return std::vector<at::Tensor>{at::dropout(in[0] * in[1], 0.5, /*train=*/true).tanh()};
  };
  auto run = [&](bool recompute) {
    const at::Tensor x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_();
    at::manual_seed(11);
    const at::Tensor y = recompute ? checkpoint(region, {x, w})[0] : region({x, w})[0];
    const at::Tensor between = at::rand({3});  // drawn after the forward, before backward
    (y * at::arange(35, at::kFloat).view({5, 7})).sum().backward();
    return std::vector<at::Tensor>{y.detach(), x.grad(), w.grad(), between, at::rand({3})};
  };
  const auto plain = run(false), recomputed = run(true);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(at::equal(plain[i], recomputed[i])) << i;
  EXPECT_GT((plain[1] == 0).sum().item<int64_t>(), 0);  // dropout did drop
  // no grad mode or no input that needs one: a plain call
  at::NoGradGuard no_grad;
  EXPECT_FALSE(checkpoint(region, {x0, w0})[0].requires_grad());
}

std::atomic<int> cat_calls{0};
std::unique_ptr<at::ObserverContext> count_cat(const at::RecordFunction& fn) {
  if (std::string_view(fn.name()) == "aten::cat") ++cat_calls;
  return nullptr;
}

// packed_linear: x · [W_0; W_1; W_2]ᵀ and its gradients for x and every weight, as at::linear on
// the concatenation, over odd sizes; packed weights are read in place (no aten::cat) and stay the
// same parameter tensors; unpacked ones are concatenated.
TEST(PackedLinear, EqualsLinearOnTheConcatenationWithoutConcatenating) {
  at::manual_seed(5);
  const std::vector<int64_t> outs = {7, 3, 5};
  std::vector<at::Tensor> w;
  for (int64_t o : outs) w.push_back(at::randn({o, 6}).requires_grad_());
  const at::Tensor* first = &w[0];
  const at::TensorImpl* impl = w[0].unsafeGetTensorImpl();
  EXPECT_FALSE(weights_packed(w));
  pack_weights(w);
  EXPECT_TRUE(weights_packed(w));
  EXPECT_EQ(w[0].unsafeGetTensorImpl(), impl);  // the same parameter, its data moved
  EXPECT_EQ(&w[0], first);
  EXPECT_TRUE(w[0].is_leaf() && w[0].requires_grad());
  const at::Tensor x = at::randn({2, 3, 6}).requires_grad_();
  const at::Tensor probe = at::randn({2, 3, 15});
  auto grads = [&](const at::Tensor& y) {
    std::vector<at::Tensor> inputs{x};
    inputs.insert(inputs.end(), w.begin(), w.end());
    return torch::autograd::grad({(y * probe).sum()}, inputs);
  };
  const at::Tensor ref = at::linear(x, at::cat(w));
  const auto ref_grads = grads(ref);
  const auto handle = at::addThreadLocalCallback(at::RecordFunctionCallback(count_cat));
  cat_calls = 0;
  const at::Tensor got = packed_linear(x, w);
  const auto got_grads = grads(got);
  at::removeCallback(handle);
  EXPECT_EQ(cat_calls.load(), 0);
  expect_close(got, ref, 1e-6, "packed forward");
  for (size_t i = 0; i < got_grads.size(); ++i) expect_close(got_grads[i], ref_grads[i], 1e-6, "grad " + std::to_string(i));
  // moved apart: still right, by concatenation
  const std::vector<at::Tensor> apart = {w[0].detach().clone(), w[1].detach().clone(), w[2].detach().clone()};
  EXPECT_FALSE(weights_packed(apart));
  expect_close(packed_linear(x, apart), ref, 1e-6, "unpacked forward");
  at::NoGradGuard no_grad;
  expect_close(packed_linear(x, w), ref, 1e-6, "forward without grad");
}

// model.fused_projections: the same parameters by name, packed after construction and after
// moving; loss and gradients equal the unfused model's with the same weights up to fp32 rounding
// (dense with a G1 gate and bias, and MoE with a shared expert).
TEST(PackedLinear, FusedProjectionsModelEqualsTheUnfusedOne) {
  for (const bool moe : {false, true}) {
    SCOPED_TRACE(moe ? "moe" : "dense");
    ModelConfig cfg = small_config();
    cfg.attention.gate.position = "G1";
    cfg.attention.gate.bias = true;
    if (moe) {
      cfg.arch = "moe";
      cfg.moe.n_experts = 4;
      cfg.moe.top_k = 2;
      cfg.moe.ffn_hidden = 16;
      cfg.moe.shared_experts = 1;
    }
    at::manual_seed(9);
    CausalLM plain(cfg);
    cfg.fused_projections = true;
    CausalLM fused(cfg);
    ASSERT_EQ(plain->named_parameters().keys(), fused->named_parameters().keys());
    {
      at::NoGradGuard no_grad;
      for (const auto& p : plain->named_parameters()) fused->named_parameters()[p.key()].copy_(p.value());
    }
    auto packed = [](CausalLM& m) {
      for (const auto& layer : *m->model->layers) {
        const auto& a = layer->as<DecoderBlockImpl>()->self_attn;
        if (!weights_packed({a->q_proj->weight, a->k_proj->weight, a->v_proj->weight, a->gate->weight})) return false;
      }
      return true;
    };
    EXPECT_TRUE(packed(fused));
    EXPECT_FALSE(packed(plain));
    fused->to(at::kDouble);
    fused->to(at::kFloat);
    EXPECT_TRUE(packed(fused)) << "packed again after moving";
    const at::Tensor tokens = at::randint(cfg.vocab_size, {2, 9}, at::kLong);
    const at::Tensor targets = at::randint(cfg.vocab_size, {2, 9}, at::kLong);
    const auto ref = loss_and_grads(plain, tokens, targets);
    const auto got = loss_and_grads(fused, tokens, targets);
    EXPECT_NEAR(got[0].item<double>(), ref[0].item<double>(), 1e-6 * ref[0].item<double>());
    for (size_t i = 1; i < got.size(); ++i) {
      const double scale = ref[i].abs().max().item<double>();
      EXPECT_LE((got[i] - ref[i]).abs().max().item<double>(), 1e-5 * scale + 1e-12)
          << plain->named_parameters().keys()[i - 1];
    }
  }
}

}  // namespace
}  // namespace sluice
