// Evaluation: the sliding-window perplexity protocol and the attention statistics.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "data/token_corpus.h"
#include "eval/attention_stats.h"
#include "eval/eval_model.h"
#include "eval/perplexity.h"
#include "sluice/forward_observer.h"
#include "sluice/model.h"

namespace sluice {
namespace {

TEST(SlidingWindows, EveryTargetScoredExactlyOnce) {
  for (int64_t n : {1, 2, 3, 10, 17, 64, 65, 100}) {
    for (auto [N, S] : std::vector<std::pair<int64_t, int64_t>>{{8, 8}, {8, 1}, {8, 3}, {16, 16}, {5, 2}, {200, 50}}) {
      std::map<int64_t, int> scored;
      int64_t prev_end = 0;
      for (const ScoringWindow& w : sliding_windows(n, N, S)) {
        EXPECT_LE(w.length, N);
        EXPECT_GE(w.first_scored, 0);
        for (int64_t i = w.first_scored; i < w.length; ++i) {
          ++scored[w.begin + 1 + i];
          if (w.begin > 0) EXPECT_GE(i, N - S) << "later windows score only their last S predictions";
        }
        EXPECT_GE(w.begin + w.length, prev_end);
        prev_end = w.begin + w.length;
      }
      EXPECT_EQ(static_cast<int64_t>(scored.size()), std::max<int64_t>(0, n - 1)) << n << " " << N << " " << S;
      for (const auto& [target, count] : scored) {
        EXPECT_EQ(count, 1) << "target " << target;
        EXPECT_GE(target, 1);
        EXPECT_LT(target, n);
      }
    }
  }
  // stride == window: non-overlapping windows that score everything they predict
  for (const ScoringWindow& w : sliding_windows(40, 8, 8)) {
    EXPECT_EQ(w.begin % 8, 0);
    EXPECT_EQ(w.first_scored, 0);
  }
}

ModelConfig tiny_model() {
  ModelConfig m;
  m.vocab_size = 50;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.ffn_hidden = 48;
  m.attention.backend = "math";
  return m;
}

EvalModel eval_model(const ModelConfig& cfg) {
  EvalModel m;
  m.config.model = cfg;
  at::manual_seed(11);
  m.model = CausalLM(cfg);
  m.model->eval();
  return m;
}

// A plain per-token loop over the protocol: target j is predicted from x[b, j) where b is the
// start of the window that scores it (b = max(0, ceil((j - N) / S)) · S).
double loop_reference_nll(CausalLM& model, const std::vector<int64_t>& doc, int64_t N, int64_t S) {
  at::NoGradGuard no_grad;
  double nll = 0;
  for (int64_t j = 1; j < static_cast<int64_t>(doc.size()); ++j) {
    const int64_t b = j <= N ? 0 : (j - N + S - 1) / S * S;
    const at::Tensor ctx = at::tensor(std::vector<int64_t>(doc.begin() + b, doc.begin() + j)).unsqueeze(0);
    const at::Tensor logits = model->forward(ctx).select(1, j - b - 1).squeeze(0).to(at::kDouble);
    nll -= at::log_softmax(logits, -1)[doc[static_cast<size_t>(j)]].item<double>();
  }
  return nll;
}

TEST(Perplexity, EqualsAPlainLoopOverTokens) {
  EvalModel m = eval_model(tiny_model());
  std::vector<std::vector<int32_t>> docs(3);
  at::manual_seed(2);
  for (auto [d, len] : std::vector<std::pair<int, int>>{{0, 37}, {1, 12}, {2, 25}}) {
    const at::Tensor t = at::randint(49, {len});
    for (int64_t i = 0; i < len; ++i) docs[static_cast<size_t>(d)].push_back(static_cast<int32_t>(t[i].item<int64_t>()));
  }
  const TokenCorpus corpus = TokenCorpus::from_documents(docs, 49);  // EOS id 49 ends each document
  for (auto [N, S] : std::vector<std::pair<int64_t, int64_t>>{{8, 8}, {8, 3}, {16, 1}, {64, 64}}) {
    const PerplexityResult r = evaluate_perplexity(m, corpus, N, S, /*max_docs=*/0, /*batch=*/3, /*chunk=*/5);
    double ref = 0;
    int64_t tokens = 0;
    for (const auto& d : docs) {
      std::vector<int64_t> doc(d.begin(), d.end());
      doc.push_back(49);
      ref += loop_reference_nll(m.model, doc, N, S);
      tokens += static_cast<int64_t>(doc.size()) - 1;
    }
    EXPECT_EQ(r.tokens, tokens);
    EXPECT_EQ(r.documents, 3);
    EXPECT_NEAR(r.nll_sum, ref, 1e-3 * std::abs(ref) / static_cast<double>(tokens) + 1e-3) << N << "/" << S;
    EXPECT_NEAR(std::exp(r.nll()), std::exp(ref / static_cast<double>(tokens)), 1e-3);
  }
  EXPECT_EQ(evaluate_perplexity(m, corpus, 8, 8, /*max_docs=*/1).documents, 1);
}

// Captures what each layer's core receives and its output, to rebuild the attention matrix.
struct Capture final : ForwardObserver {
  std::map<int64_t, std::vector<at::Tensor>> core;  // q, k, v
  std::map<int64_t, AttentionMask> masks;
  std::map<int64_t, double> scales;
  std::map<int64_t, at::Tensor> outputs;  // before the gate [B, T, H, D]
  void on_attention_core(int64_t l, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const AttentionMask& mask, double scale) override {
    core[l] = {q.detach().clone(), k.detach().clone(), v.detach().clone()};
    masks[l] = mask;
    scales[l] = scale;
  }
  void on_attention_output(int64_t l, const at::Tensor& before, const at::Tensor&) override {
    outputs[l] = before.detach().clone();
  }
};

// The explicit attention matrix (the test reference): [B, H, T, S] probabilities.
at::Tensor explicit_probs(const at::Tensor& q, const at::Tensor& k, const AttentionMask& mask, double scale) {
  const int64_t H = q.size(1), KV = k.size(1), T = q.size(2), S = k.size(2);
  const at::Tensor kk = k.repeat_interleave(H / KV, 1).to(at::kDouble);
  at::Tensor s = at::matmul(q.to(at::kDouble), kk.transpose(-2, -1)) * scale;
  if (mask.alibi_slopes.defined()) s = s + alibi_bias(T, S, mask.alibi_slopes).to(at::kDouble);
  s = s.masked_fill(allowed_positions(T, S, mask, q.device()).logical_not(), -INFINITY);
  return at::softmax(s, -1);
}

void check_sink_against_explicit_matrix(ModelConfig cfg, const std::string& what) {
  SCOPED_TRACE(what);
  at::manual_seed(3);
  CausalLM model(cfg);
  model->eval();
  const at::Tensor tokens = at::randint(cfg.vocab_size, {2, 23});
  Capture cap;
  AttentionStatsObserver stats(cfg.n_layers);
  struct Both final : ForwardObserver {
    ForwardObserver *a, *b;
    void on_attention_core(int64_t l, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const AttentionMask& m, double s) override {
      a->on_attention_core(l, q, k, v, m, s);
      b->on_attention_core(l, q, k, v, m, s);
    }
    void on_attention_output(int64_t l, const at::Tensor& x, const at::Tensor& y) override {
      a->on_attention_output(l, x, y);
      b->on_attention_output(l, x, y);
    }
    void on_gate_scores(int64_t l, const at::Tensor& s) override { b->on_gate_scores(l, s); }
    void on_block_output(int64_t l, const at::Tensor& x, const at::Tensor& y, const at::Tensor& z) override {
      b->on_block_output(l, x, y, z);
    }
  } both;
  both.a = &cap;
  both.b = &stats;
  {
    at::NoGradGuard g;
    model->forward(tokens, &both);
  }
  const nlohmann::json j = stats.to_json();
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const auto& qkv = cap.core.at(l);
    const at::Tensor p = explicit_probs(qkv[0], qkv[1], cap.masks.at(l), cap.scales.at(l));
    // the captured q, k, v are what the core used: the explicit matrix reproduces its output
    const at::Tensor y = at::matmul(p, qkv[2].repeat_interleave(qkv[0].size(1) / qkv[2].size(1), 1).to(at::kDouble));
    EXPECT_LE((y.transpose(1, 2) - cap.outputs.at(l).to(at::kDouble)).abs().max().item<double>(), 1e-5);
    // O(N·d) path vs explicit matrix, per query, then the averaged statistic
    const at::Tensor fast = first_key_probability(qkv[0], qkv[1], cap.masks.at(l), cap.scales.at(l), /*query_chunk=*/5);
    EXPECT_LE((fast.to(at::kDouble) - p.select(-1, 0)).abs().max().item<double>(), 1e-5);
    const at::Tensor per_head = p.select(-1, 0).narrow(2, 1, 22).mean(at::IntArrayRef{0, 2});
    for (int64_t h = 0; h < cfg.n_heads; ++h)
      EXPECT_NEAR(j["sink"]["per_layer_head"][l][h].get<double>(), per_head[h].item<double>(), 1e-5);
  }
}

TEST(SinkStatistics, MatchTheExplicitAttentionMatrix) {
  ModelConfig base = tiny_model();
  check_sink_against_explicit_matrix(base, "softmax");
  ModelConfig gated = base;
  gated.attention.gate.position = "G1";
  check_sink_against_explicit_matrix(gated, "G1 gate");
  ModelConfig coca = base;
  coca.attention.coca.mode = "strict";
  check_sink_against_explicit_matrix(coca, "CoCA strict");
  ModelConfig alibi = base;
  alibi.position = "alibi";
  alibi.attention.window = 6;
  check_sink_against_explicit_matrix(alibi, "ALiBi with a window");
}

TEST(GateStatistics, OnHandMadeTensors) {
  AttentionStatsObserver obs(2);
  obs.on_gate_scores(0, at::tensor({0.0, 0.25, 0.5, 1.0}).view({1, 1, 2, 2}));
  obs.on_gate_scores(0, at::tensor({0.75, -0.5, 2.0, 0.25}).view({1, 1, 2, 2}));
  obs.on_attention_output(1, at::tensor({0.0, 0.005, 0.0005, 1.0}), at::tensor({0.0, 0.0, 0.02, 0.0005}));
  obs.on_block_output(1, at::tensor({-3.0, 1.0}), at::tensor({0.5, 0.5}), at::tensor({2.0, -6.0}));
  const nlohmann::json j = obs.to_json();
  const auto& g = j["gates"]["per_layer"][0];
  const std::vector<double> v = {0.0, 0.25, 0.5, 1.0, 0.75, -0.5, 2.0, 0.25};
  double mean = 0, sq = 0;
  for (double x : v) mean += x / 8, sq += x * x / 8;
  EXPECT_NEAR(g["mean"].get<double>(), mean, 1e-12);
  EXPECT_NEAR(g["std"].get<double>(), std::sqrt(sq - mean * mean), 1e-12);
  EXPECT_EQ(g["min"].get<double>(), -0.5);
  EXPECT_EQ(g["max"].get<double>(), 2.0);
  EXPECT_EQ(g["below_0"].get<double>(), 1);
  EXPECT_EQ(g["above_1"].get<double>(), 1);
  const auto counts = g["histogram"]["counts"].get<std::vector<double>>();
  ASSERT_EQ(counts.size(), 20u);
  EXPECT_EQ(counts[0], 1);   // 0.0
  EXPECT_EQ(counts[5], 2);   // 0.25 twice
  EXPECT_EQ(counts[10], 1);  // 0.5
  EXPECT_EQ(counts[15], 1);  // 0.75
  EXPECT_EQ(counts[19], 1);  // 1.0 (last bin is closed)
  EXPECT_TRUE(j["gates"]["per_layer"][1].is_null());
  const auto& sp = j["sparsity"]["per_layer"][1];
  EXPECT_DOUBLE_EQ(sp["before"]["lt_1e-2"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(sp["before"]["lt_1e-3"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(sp["after"]["lt_1e-2"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(sp["after"]["lt_1e-3"].get<double>(), 0.75);
  const auto& act = j["activations"]["per_layer"][1];
  EXPECT_EQ(act["residual_max"].get<double>(), 6.0);
  EXPECT_EQ(act["residual_mean"].get<double>(), 4.0);
  EXPECT_EQ(act["attn_max"].get<double>(), 3.0);
  EXPECT_EQ(act["ffn_mean"].get<double>(), 0.5);
}

}  // namespace
}  // namespace sluice
