// KV-cached decoding against full recomputation, sampling against hand-computed
// distributions, the passkey protocol against oracles, and the two commands end to end.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli.h"
#include "data/byte_tokenizer.h"
#include "sluice/errors.h"
#include "eval/generate.h"
#include "eval/passkey.h"
#include "eval/passkey_corpus.h"
#include "model/kv_cache.h"
#include "sluice/config.h"
#include "sluice/forward_observer.h"
#include "sluice/model.h"
#include "sluice/tokenizer.h"
#include "sluice/trainer.h"
#include "test_util.h"
#include "tensor_test_util.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::read_file;
using testing::write_file;

using testing::max_abs_diff;

// ------------------------------------------------------------------ models under test

// d_model 24, 4 query heads, 2 KV heads, head_dim 8; weights large enough (init_std 0.3) that
// attention is far from uniform, so a wrong key, position or mask shows in the logits.
ModelConfig base_config() {
  ModelConfig m;
  m.vocab_size = 64;
  m.d_model = 24;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.head_dim = 8;
  m.ffn_hidden = 32;
  m.init_std = 0.3;
  m.attention.backend = "math";
  return m;
}

struct Variant {
  std::string name;
  std::function<void(ModelConfig&)> set;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

void gate(ModelConfig& m, const char* position) { m.attention.gate.position = position; }

std::vector<Variant> cache_variants() {
  return {
      {"GQA", [](ModelConfig&) {}},
      {"MHA", [](ModelConfig& m) { m.n_kv_heads = 4; }},
      {"MQA", [](ModelConfig& m) { m.n_kv_heads = 1; }},
      {"GQA_sdpa", [](ModelConfig& m) { m.attention.backend = "sdpa"; }},
      {"QkNorm", [](ModelConfig& m) { m.qk_norm = true; }},
      {"Window5", [](ModelConfig& m) { m.attention.window = 5; }},
      {"Window5_sdpa", [](ModelConfig& m) { m.attention.window = 5, m.attention.backend = "sdpa"; }},
      {"WindowPattern", [](ModelConfig& m) { m.n_layers = 3, m.attention.window_pattern = {0, 5, 3}; }},
      {"Alibi", [](ModelConfig& m) { m.position = "alibi"; }},
      {"Alibi_window4_sdpa", [](ModelConfig& m) { m.position = "alibi", m.attention.window = 4, m.attention.backend = "sdpa"; }},
      {"Alibi_6heads", [](ModelConfig& m) { m.position = "alibi", m.n_heads = 6, m.n_kv_heads = 3; }},
      {"NoPE", [](ModelConfig& m) { m.position = "none"; }},
      {"CocaStrict", [](ModelConfig& m) { m.attention.coca.mode = "strict"; }},
      {"CocaSlack", [](ModelConfig& m) { m.attention.coca.mode = "slack"; }},
      {"CocaStrict_window4_MQA", [](ModelConfig& m) { m.attention.coca.mode = "strict", m.attention.window = 4, m.n_kv_heads = 1; }},
      {"G1_elementwise", [](ModelConfig& m) { gate(m, "G1"); }},
      {"G1_headwise_bias_fused",
       [](ModelConfig& m) {
         gate(m, "G1"), m.attention.gate.granularity = "headwise", m.attention.gate.bias = true,
             m.attention.gate.fuse_q_proj = true;
       }},
      {"G1_input_self", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.input = "self"; }},
      {"G1_input_constant", [](ModelConfig& m) { gate(m, "G1"), m.attention.gate.input = "constant"; }},
      {"G2_head_shared", [](ModelConfig& m) { gate(m, "G2"), m.attention.gate.sharing = "head_shared"; }},
      {"G2_additive_silu",
       [](ModelConfig& m) { gate(m, "G2"), m.attention.gate.form = "additive", m.attention.gate.activation = "silu"; }},
      {"G3_elementwise", [](ModelConfig& m) { gate(m, "G3"); }},
      {"G3_coca_slack", [](ModelConfig& m) { gate(m, "G3"), m.attention.coca.mode = "slack"; }},
      {"G4_elementwise_qknorm", [](ModelConfig& m) { gate(m, "G4"), m.qk_norm = true; }},
      {"G5", [](ModelConfig& m) { gate(m, "G5"); }},
      {"OutputNorm", [](ModelConfig& m) { m.attention.output_norm = true; }},
      {"MoE",
       [](ModelConfig& m) {
         m.arch = "moe", m.moe.n_experts = 4, m.moe.top_k = 2, m.moe.shared_experts = 1, m.moe.shared_expert_gate = true,
         m.moe.z_loss_coef = 1e-3, m.moe.ffn_hidden = 16;
       }},
      {"MoE_every2_sigmoid_G1", [](ModelConfig& m) {
         m.arch = "moe", m.n_layers = 3, m.moe.every = 2, m.moe.n_experts = 4, m.moe.top_k = 1,
         m.moe.scoring = "sigmoid", gate(m, "G1");
       }},
      {"RopeLinear", [](ModelConfig& m) { m.rope.scaling = "linear", m.rope.factor = 3.0; }},
      {"RopeNtk", [](ModelConfig& m) { m.rope.scaling = "ntk", m.rope.factor = 3.0; }},
      {"RopeYarn",
       [](ModelConfig& m) { m.rope.base = 100.0, m.rope.scaling = "yarn", m.rope.factor = 4.0, m.rope.original_max_len = 6; }},
      {"RopeDynamicNtk_within_original_length",  // exact while the total length <= original_max_len
       [](ModelConfig& m) { m.rope.scaling = "dynamic_ntk", m.rope.factor = 2.0, m.rope.original_max_len = 64; }},
  };
}

ModelConfig config_of(const Variant& v) {
  ModelConfig m = base_config();
  v.set(m);
  return m;
}

// Weights from the seed, with norm weights and biases moved off their 1 / 0 init so they matter.
CausalLM make_model(const ModelConfig& cfg, uint64_t seed = 7) {
  at::manual_seed(seed);
  CausalLM model(cfg);
  {
    at::NoGradGuard g;
    for (auto& p : model->named_parameters()) {
      const std::string& n = p.key();
      if (n.find("norm") != std::string::npos || n.find(".bias") != std::string::npos) {
        p.value().add_(at::randn_like(p.value()) * 0.3);
      }
    }
  }
  model->eval();
  return model;
}

at::Tensor random_tokens(int64_t B, int64_t N, int64_t vocab, uint64_t seed = 11) {
  at::manual_seed(seed);
  return at::randint(0, vocab, {B, N}, at::kLong);
}

at::Tensor full_logits(CausalLM& model, const at::Tensor& tokens) {
  at::NoGradGuard g;
  return model->forward(tokens);
}

// Logits of cached decoding: the given chunk sizes, in order, fed through one cache.
at::Tensor cached_logits(CausalLM& model, const at::Tensor& tokens, const std::vector<int64_t>& chunks,
                         KVCache* keep = nullptr) {
  KVCache local(model->config());
  KVCache& cache = keep ? *keep : local;
  std::vector<at::Tensor> parts;
  int64_t at_pos = 0;
  for (int64_t c : chunks) {
    parts.push_back(model->forward_cached(tokens.narrow(1, at_pos, c), cache));
    at_pos += c;
    EXPECT_EQ(cache.length(), at_pos);
  }
  EXPECT_EQ(at_pos, tokens.size(1));
  return at::cat(parts, 1);
}

std::vector<int64_t> prefill_then_ones(int64_t prompt, int64_t total) {
  std::vector<int64_t> c{prompt};
  for (int64_t i = prompt; i < total; ++i) c.push_back(1);
  return c;
}

// fp32 on the CPU; the cached path multiplies the same numbers in differently shaped GEMMs,
// so differences are rounding only (observed ~1e-6 on logits of magnitude ~5).
constexpr double kTol = 2e-5;

class CachedDecoding : public ::testing::TestWithParam<Variant> {};

TEST_P(CachedDecoding, EqualsFullRecomputation) {
  const ModelConfig cfg = config_of(GetParam());
  CausalLM model = make_model(cfg);
  const int64_t B = 2, N = 23;  // longer than every window here: eviction happens
  const at::Tensor tokens = random_tokens(B, N, cfg.vocab_size);
  const at::Tensor full = full_logits(model, tokens);
  const double scale = std::max(1.0, full.abs().max().item<double>());

  // Context matters at the tolerance used: changing one earlier token moves the last logits.
  at::Tensor other = tokens.clone();
  other.select(1, N - 3).fill_((tokens[0][N - 3].item<int64_t>() + 1) % cfg.vocab_size);
  EXPECT_GT(max_abs_diff(full_logits(model, other).select(1, N - 1), full.select(1, N - 1)), 100 * kTol * scale);

  const at::Tensor one_by_one = cached_logits(model, tokens, prefill_then_ones(7, N));
  EXPECT_LE(max_abs_diff(one_by_one, full), kTol * scale) << "prefill 7, then one token at a time";
  const at::Tensor two_chunks = cached_logits(model, tokens, {9, 14});
  EXPECT_LE(max_abs_diff(two_chunks, full), kTol * scale) << "prefill in two chunks (the second longer than windows)";
  const at::Tensor from_empty = cached_logits(model, tokens, prefill_then_ones(1, N));
  EXPECT_LE(max_abs_diff(from_empty, full), kTol * scale) << "one token at a time from the start";
  EXPECT_FALSE(one_by_one.requires_grad());
}

TEST_P(CachedDecoding, GreedyGenerationIdenticalWithAndWithoutCache) {
  const ModelConfig cfg = config_of(GetParam());
  CausalLM model = make_model(cfg);
  const at::Tensor t = random_tokens(1, 6, cfg.vocab_size, 5);
  const std::vector<int32_t> prompt(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + 6);
  GenerateOptions o;
  o.max_new_tokens = 17;
  o.sampling.temperature = 0.0;
  const GenerateResult cached = generate(*model, prompt, o, at::kCPU, false);
  o.use_cache = false;
  const GenerateResult plain = generate(*model, prompt, o, at::kCPU, false);
  ASSERT_EQ(cached.tokens.size(), 17u);
  EXPECT_EQ(cached.tokens, plain.tokens);
  // and greedy means the argmax of the full forward over prompt + generated tokens
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  seq.insert(seq.end(), plain.tokens.begin(), plain.tokens.end());
  const at::Tensor all = at::tensor(seq, at::kLong).view({1, -1});
  const at::Tensor argmax = full_logits(model, all)[0].argmax(-1);
  for (size_t i = 0; i < plain.tokens.size(); ++i) {
    EXPECT_EQ(argmax[static_cast<int64_t>(prompt.size() + i - 1)].item<int64_t>(), plain.tokens[i]) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, CachedDecoding, ::testing::ValuesIn(cache_variants()),
                         [](const ::testing::TestParamInfo<Variant>& i) { return i.param.name; });

// Dynamic NTK's base depends on the total length, so beyond original_max_len keys cached under an
// older base differ from a recomputation (docs/attention.md). The reference for position t is
// the forward over tokens[0..t] (what decoding without a cache computes).
TEST(CachedDecodingDynamicNtk, ExactUpToTheOriginalLengthApproximateBeyond) {
  ModelConfig cfg = base_config();
  cfg.rope.scaling = "dynamic_ntk", cfg.rope.factor = 4.0, cfg.rope.original_max_len = 10;
  CausalLM model = make_model(cfg);
  const int64_t N = 20;
  const at::Tensor tokens = random_tokens(1, N, cfg.vocab_size);
  const at::Tensor cached = cached_logits(model, tokens, prefill_then_ones(4, N));
  double within = 0, beyond = 0;
  for (int64_t t = 0; t < N; ++t) {
    const at::Tensor ref = full_logits(model, tokens.narrow(1, 0, t + 1)).select(1, t);
    double& worst = t + 1 <= cfg.rope.original_max_len ? within : beyond;
    worst = std::max(worst, max_abs_diff(cached.select(1, t), ref));
  }
  EXPECT_LE(within, kTol * 10);
  EXPECT_GT(beyond, 1e-3) << "beyond L0 the cached keys keep their older base";
}

// ------------------------------------------------------------------ cache contents and memory

// Records what the attention core receives in each layer.
struct CoreInputs : ForwardObserver {
  std::vector<at::Tensor> k;
  void on_attention_core(int64_t layer, const at::Tensor&, const at::Tensor& keys, const at::Tensor&,
                         const AttentionMask&, double) override {
    if (static_cast<int64_t>(k.size()) <= layer) k.resize(static_cast<size_t>(layer) + 1);
    k[static_cast<size_t>(layer)] = keys.detach().clone();
  }
};

TEST(KVCache, StoresTheCoreKeysOncePerKvHeadAndWindowLayersOnlyTheirWindow) {
  for (const char* coca : {"off", "strict"}) {
    ModelConfig cfg = base_config();
    cfg.n_layers = 3;
    cfg.n_heads = 6, cfg.n_kv_heads = 2;  // GQA 3:1
    cfg.attention.window_pattern = {0, 5, 3};
    cfg.attention.coca.mode = coca;
    CausalLM model = make_model(cfg);
    const int64_t B = 2, N = 13, D = cfg.head_dim;
    const at::Tensor tokens = random_tokens(B, N, cfg.vocab_size);
    CoreInputs full;
    {
      at::NoGradGuard g;
      model->forward(tokens, &full);
    }
    KVCache cache(cfg);
    for (int64_t t = 0; t < N; ++t) {
      model->forward_cached(tokens.narrow(1, t, 1), cache);
      for (int64_t l = 0; l < cfg.n_layers; ++l) {
        const int64_t w = cfg.window_for_layer(l);
        EXPECT_EQ(cache.layer(l).size(), w > 0 ? std::min(t + 1, w) : t + 1) << coca << " layer " << l << " t " << t;
        if (w > 0) EXPECT_LE(cache.layer(l).capacity(), 2 * w) << "window layers stay bounded";
      }
    }
    int64_t bytes = 0;
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
      const LayerKVCache& lc = cache.layer(l);
      const int64_t kept = lc.size();
      ASSERT_EQ(lc.keys().sizes(), (std::vector<int64_t>{B, cfg.n_kv_heads, kept, D})) << "KV heads, not query heads";
      ASSERT_EQ(lc.values().sizes(), lc.keys().sizes());
      // The cached keys are what the core multiplies in a full forward (CoCA: K_eff), at the
      // same absolute positions: the last `kept` ones.
      EXPECT_LE(max_abs_diff(lc.keys(), full.k[static_cast<size_t>(l)].narrow(2, N - kept, kept)), 1e-5)
          << coca << " layer " << l;
      bytes += 2 * B * cfg.n_kv_heads * lc.capacity() * D * static_cast<int64_t>(sizeof(float));
    }
    EXPECT_EQ(cache.bytes(), bytes);
  }
}

TEST(KVCache, ReserveAllocatesOnceAndGrowthKeepsContents) {
  LayerKVCache reserved(0, 10);
  LayerKVCache growing(0, 0);
  const at::Tensor k = at::randn({1, 2, 10, 4}), v = at::randn({1, 2, 10, 4});
  for (int64_t t = 0; t < 10; ++t) {
    const auto [rk, rv] = reserved.append(k.narrow(2, t, 1), v.narrow(2, t, 1));
    EXPECT_EQ(reserved.capacity(), 10);
    const auto [gk, gv] = growing.append(k.narrow(2, t, 1), v.narrow(2, t, 1));
    EXPECT_TRUE(at::equal(gk, k.narrow(2, 0, t + 1)));
    EXPECT_TRUE(at::equal(gv, v.narrow(2, 0, t + 1)));
    EXPECT_TRUE(at::equal(rk, gk));
  }
  EXPECT_GE(growing.capacity(), 10);
  // A window layer returns the kept keys plus the new ones, then keeps only the window.
  LayerKVCache window(3);
  window.append(k.narrow(2, 0, 4), v.narrow(2, 0, 4));
  EXPECT_EQ(window.size(), 3);
  const auto [wk, wv] = window.append(k.narrow(2, 4, 2), v.narrow(2, 4, 2));
  EXPECT_TRUE(at::equal(wk, k.narrow(2, 1, 5)));  // positions 1..5: the window of position 4 starts at 2, of 5 at 3
  EXPECT_TRUE(at::equal(window.keys(), k.narrow(2, 3, 3)));
  EXPECT_TRUE(at::equal(window.values(), v.narrow(2, 3, 3)));
}

// ------------------------------------------------------------------ sampling

// p = (.1, .5, .05, .2, .15) by id.
at::Tensor five_logits() { return at::log(at::tensor({0.1, 0.5, 0.05, 0.2, 0.15}, at::kDouble)).to(at::kFloat); }

void expect_probs(const at::Tensor& got, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[static_cast<int64_t>(i)].item<double>(), want[i], 1e-6) << what << " id " << i;
}

TEST(Sampling, FiltersMatchHandComputedDistributions) {
  const at::Tensor l = five_logits();
  expect_probs(next_token_distribution(l, {1.0, 0, 1.0}), {0.1, 0.5, 0.05, 0.2, 0.15}, "plain");
  expect_probs(next_token_distribution(l, {0.0, 0, 1.0}), {0, 1, 0, 0, 0}, "temperature 0");
  expect_probs(next_token_distribution(l, {1.0, 2, 1.0}), {0, 0.5 / 0.7, 0, 0.2 / 0.7, 0}, "top-k 2");
  expect_probs(next_token_distribution(l, {1.0, 1, 1.0}), {0, 1, 0, 0, 0}, "top-k 1");
  // top-p: .5 (mass before 0) and .2 (before .5) kept at p = .6; .15 (before .7) is not
  expect_probs(next_token_distribution(l, {1.0, 0, 0.6}), {0, 0.5 / 0.7, 0, 0.2 / 0.7, 0}, "top-p .6");
  expect_probs(next_token_distribution(l, {1.0, 0, 0.75}), {0, 0.5 / 0.85, 0, 0.2 / 0.85, 0.15 / 0.85}, "top-p .75");
  expect_probs(next_token_distribution(l, {1.0, 0, 0.3}), {0, 1, 0, 0, 0}, "top-p below the largest");
  // top-k first, then top-p on the renormalised top-k: .5/.85 + .2/.85 = .82 >= .8 stops before .15
  expect_probs(next_token_distribution(l, {1.0, 3, 0.8}), {0, 0.5 / 0.7, 0, 0.2 / 0.7, 0}, "top-k 3 then top-p .8");
  // temperature T: p_i^(1/T) renormalised
  const std::vector<double> p{0.1, 0.5, 0.05, 0.2, 0.15};
  double z = 0;
  for (double x : p) z += std::sqrt(x);
  std::vector<double> t2;
  for (double x : p) t2.push_back(std::sqrt(x) / z);
  expect_probs(next_token_distribution(l, {2.0, 0, 1.0}), t2, "temperature 2");
}

TEST(Sampling, SeededDrawsFollowTheDistribution) {
  const at::Tensor probs = at::tensor({0.1, 0.0, 0.6, 0.3}, at::kDouble);
  std::mt19937_64 a(42), b(42);
  std::vector<int> counts(4, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const int32_t x = draw_token(probs, a);
    ASSERT_EQ(x, draw_token(probs, b)) << "same seed, same draws";
    ++counts[static_cast<size_t>(x)];
  }
  EXPECT_EQ(counts[1], 0) << "zero probability is never drawn";
  EXPECT_NEAR(counts[0] / double(n), 0.1, 0.01);
  EXPECT_NEAR(counts[2] / double(n), 0.6, 0.015);
  EXPECT_NEAR(counts[3] / double(n), 0.3, 0.015);
}

class Generation : public ::testing::Test {
 protected:
  ModelConfig cfg = base_config();
  CausalLM model = make_model(cfg);
  std::vector<int32_t> prompt{3, 14, 15, 9, 26};
  GenerateResult run(GenerateOptions o) { return generate(*model, prompt, o, at::kCPU, false); }
};

TEST_F(Generation, TopKOneEqualsGreedyAndSeededSamplingIsReproducible) {
  GenerateOptions greedy;
  greedy.max_new_tokens = 20;
  greedy.sampling.temperature = 0.0;
  GenerateOptions k1 = greedy;
  k1.sampling = {1.3, 1, 1.0};
  k1.seed = 99;
  EXPECT_EQ(run(k1).tokens, run(greedy).tokens);

  GenerateOptions s = greedy;
  s.sampling = {1.0, 0, 0.95};
  s.seed = 1;
  const GenerateResult a = run(s), b = run(s);
  EXPECT_EQ(a.tokens, b.tokens) << "same seed, same tokens";
  s.use_cache = false;
  EXPECT_EQ(run(s).tokens, a.tokens) << "and the same without the cache";
  s.use_cache = true;
  s.seed = 2;
  EXPECT_NE(run(s).tokens, a.tokens) << "another seed, other tokens (20 draws over ~64 ids)";
  EXPECT_NE(a.tokens, run(greedy).tokens) << "sampling is not greedy here";
}

TEST_F(Generation, StopsAtEosAndDrawsOnlyFromTheVocabularyLimit) {
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.sampling.temperature = 0.0;
  const std::vector<int32_t> free = run(o).tokens;
  ASSERT_EQ(free.size(), 12u);
  const int32_t eos = free[4];
  const auto first = std::find(free.begin(), free.end(), eos) - free.begin();
  o.eos = eos;
  const GenerateResult stopped = run(o);
  EXPECT_TRUE(stopped.stopped_at_eos);
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(free.begin(), free.begin() + first)) << "EOS is not returned";

  // With the limit below greedy's first pick, the first token is the argmax below the limit.
  const int32_t limit = std::max(free[0], 1);
  o.eos = -1;
  o.max_new_tokens = 1;
  o.vocab_limit = limit;
  const at::Tensor t = at::tensor(std::vector<int64_t>(prompt.begin(), prompt.end()), at::kLong).view({1, -1});
  const at::Tensor last = full_logits(model, t)[0][-1];
  EXPECT_EQ(run(o).tokens[0], last.narrow(0, 0, limit).argmax().item<int64_t>());
  for (double temp : {0.0, 5.0}) {
    o.sampling.temperature = temp;
    o.max_new_tokens = 30;
    for (int32_t x : run(o).tokens) EXPECT_LT(x, limit);
  }
}

// ------------------------------------------------------------------ passkey prompts

ByteTokenizer byte_tok;

// Splits a passkey prompt into its parts, independently of the implementation's own bookkeeping.
struct Parts {
  std::string prefix, needle, suffix;
};
Parts split_prompt(const std::string& text) {
  const std::string head = std::string(kPasskeyTask) + "\n", tail = "\n" + std::string(kPasskeyQuestion);
  EXPECT_EQ(text.compare(0, head.size(), head), 0) << "starts with the task line";
  EXPECT_GE(text.size(), head.size() + tail.size());
  EXPECT_EQ(text.compare(text.size() - tail.size(), tail.size(), tail), 0) << "ends with the question";
  const size_t n = text.find("\nThe passkey is ");
  EXPECT_NE(n, std::string::npos);
  const size_t n_end = text.find('\n', n + 1);
  Parts p;
  p.prefix = text.substr(head.size(), n - head.size());
  p.needle = text.substr(n + 1, n_end - n - 1);
  p.suffix = text.substr(n_end + 1, text.size() - tail.size() - n_end - 1);
  return p;
}

size_t longest_unit_chars(const PasskeyFiller& f) {
  size_t m = 0;
  for (const auto& u : f.units) m = std::max(m, u.size());
  return m;
}

TEST(PasskeyPrompt, FillerUnitsAndNeedleText) {
  const PasskeyFiller f = PasskeyFiller::repeated();
  ASSERT_EQ(f.units.size(), 5u);
  EXPECT_EQ(f.units[0], "The grass is green. ");
  EXPECT_EQ(f.units[4], "There and back again. ");
  std::string joined;
  for (const auto& u : f.units) joined += u;
  EXPECT_EQ(joined, std::string(kPasskeyFiller) + " ");
  EXPECT_EQ(passkey_needle("12345"), "The passkey is 12345. Remember it. 12345 is the passkey.");
  EXPECT_EQ(std::string(kPasskeyQuestion), "What is the passkey? The passkey is");

  const PasskeyFiller h = PasskeyFiller::from_text("One. Two! Three?  Four\nline two\n\n\nlast words");
  EXPECT_EQ(h.units, (std::vector<std::string>{"One. ", "Two! ", "Three?  ", "Four\n", "line two\n\n\n", "last words"}));
  // a 1000-byte unit without sentence ends is cut at whitespace, a 900-byte word at a UTF-8 boundary
  std::string words, word;
  for (int i = 0; i < 100; ++i) words += "abcdefghi ";
  for (int i = 0; i < 300; ++i) word += "\xC3\xA9" "a";  // 'é' + 'a', 3 bytes
  const PasskeyFiller cut = PasskeyFiller::from_text(words + "\n" + word);
  std::string back;
  for (const auto& u : cut.units) {
    EXPECT_LE(u.size(), 400u);
    EXPECT_NE(static_cast<unsigned char>(u[0]) & 0xC0, 0x80u) << "no unit starts inside a character";
    back += u;
  }
  EXPECT_EQ(back, words + "\n" + word);
  EXPECT_EQ(cut.units[0].back(), ' ');
}

TEST(PasskeyPrompt, DeterministicPerSeedDrawsInRange) {
  std::set<int64_t> keys;
  for (int64_t t = 0; t < 50; ++t) {
    const PasskeyDraw a = draw_passkey_trial(3, 1024, t, 5), b = draw_passkey_trial(3, 1024, t, 5);
    EXPECT_EQ(a.passkey, b.passkey);
    EXPECT_EQ(a.target_depth, b.target_depth);
    EXPECT_GE(a.passkey, 10000);
    EXPECT_LE(a.passkey, 99999);
    EXPECT_GE(a.target_depth, (t % 5) / 5.0);
    EXPECT_LT(a.target_depth, (t % 5 + 1) / 5.0);
    keys.insert(a.passkey);
  }
  EXPECT_GT(keys.size(), 45u);
  int differ = 0;
  for (int64_t t = 0; t < 10; ++t) differ += draw_passkey_trial(4, 1024, t, 5).passkey != draw_passkey_trial(3, 1024, t, 5).passkey;
  EXPECT_GE(differ, 9) << "another seed draws other passkeys";

  const PasskeyFiller f = PasskeyFiller::repeated();
  const PasskeyPrompt p = make_passkey_prompt(byte_tok, f, 700, 0.37, 48213);
  const PasskeyPrompt q = make_passkey_prompt(byte_tok, f, 700, 0.37, 48213);
  EXPECT_EQ(p.text, q.text);
  EXPECT_EQ(p.ids, q.ids);
  EXPECT_EQ(p.passkey, "48213");
  EXPECT_EQ(split_prompt(p.text).needle, passkey_needle("48213"));
  EXPECT_EQ(p.text.find("48213"), p.text.find("The passkey is 48213") + 15) << "the passkey only in the needle";
}

// Lengths: at most L tokens, and short of L by less than what one more filler unit would add.
// With bytes a unit is at most 22 tokens ("There and back again. "); depth within one unit.
TEST(PasskeyPrompt, RequestedLengthAndDepthWithBytes) {
  const PasskeyFiller f = PasskeyFiller::repeated();
  for (int64_t L : {300, 301, 517, 1024, 4096}) {
    for (double depth : {0.0, 0.1, 0.5, 0.93, 1.0}) {
      const PasskeyPrompt p = make_passkey_prompt(byte_tok, f, L, depth, 12345);
      const auto n = static_cast<int64_t>(p.ids.size());
      EXPECT_LE(n, L);
      EXPECT_GT(n, L - 22) << L << " " << depth;
      const Parts parts = split_prompt(p.text);
      const double filler = static_cast<double>(parts.prefix.size() + parts.suffix.size());
      const double measured = static_cast<double>(parts.prefix.size()) / filler;
      EXPECT_NEAR(measured, p.depth, 1e-12);
      EXPECT_LE(std::abs(measured - depth), 22.0 / filler) << L << " " << depth;
      // consecutive filler: prefix then suffix continue the repeated text
      std::string cyc;
      while (cyc.size() < parts.prefix.size() + parts.suffix.size() + 30) cyc += std::string(kPasskeyFiller) + " ";
      EXPECT_EQ(cyc.compare(0, parts.prefix.size(), parts.prefix), 0);
      const size_t next = parts.prefix.empty() ? 0 : parts.prefix.size() + 1;  // the trimmed space
      if (!parts.suffix.empty()) EXPECT_EQ(cyc.compare(next, parts.suffix.size(), parts.suffix), 0) << L << " " << depth;
    }
  }
  EXPECT_THROW(make_passkey_prompt(byte_tok, f, 200, 0.5, 12345), InputError);
}

TEST(PasskeyPrompt, HaystackTextIsUsedConsecutivelyAndWraps) {
  const std::string text = testing::make_corpus(3000);
  const PasskeyFiller f = PasskeyFiller::from_text(text);
  for (double depth : {0.05, 0.5, 0.8}) {
    const PasskeyPrompt p = make_passkey_prompt(byte_tok, f, 2000, depth, 55555);
    const Parts parts = split_prompt(p.text);
    EXPECT_EQ(text.compare(0, parts.prefix.size(), parts.prefix), 0) << "from the start of the file";
    const size_t s = text.find(parts.suffix.substr(0, 40), parts.prefix.size());
    EXPECT_NE(s, std::string::npos);
    EXPECT_LE(s, parts.prefix.size() + 2) << "the suffix continues where the prefix stopped";
    const double filler = static_cast<double>(parts.prefix.size() + parts.suffix.size());
    EXPECT_LE(std::abs(p.depth - depth), longest_unit_chars(f) / filler);
  }
  // longer than the text: it wraps around
  const PasskeyPrompt big = make_passkey_prompt(byte_tok, f, 8000, 0.5, 55555);
  EXPECT_GT(big.ids.size(), 7000u);
}

// The oracle reads the needle from the prompt's text, as a perfect copier would.
PasskeyDecoder oracle(const Tokenizer& tok, bool wrong) {
  return [&tok, wrong](const std::vector<int32_t>& ids) {
    const std::string text = tok.decode(ids);
    const size_t at = text.find("The passkey is ");
    std::string digits = text.substr(at + 15, 5);
    if (wrong) digits = std::to_string(10000 + (std::stoi(digits) - 10000 + 1) % 90000);
    return tok.encode(" " + digits + ". Remember");
  };
}

// The compact format: no task line, the needle "The passkey is NNNNN.", filler in word units,
// so a prompt fits a short training length and meets it to within one word.
Parts split_compact(const std::string& text) {
  const std::string tail = "\n" + std::string(kPasskeyQuestion);
  EXPECT_EQ(text.find(kPasskeyTask), std::string::npos) << "no task line";
  EXPECT_GE(text.size(), tail.size());
  EXPECT_EQ(text.compare(text.size() - tail.size(), tail.size(), tail), 0) << "ends with the question";
  const size_t n = text.find("\nThe passkey is ");
  EXPECT_NE(n, std::string::npos);
  const size_t n_end = text.find('\n', n + 1);
  return {text.substr(0, n), text.substr(n + 1, n_end - n - 1), text.substr(n_end + 1, text.size() - tail.size() - n_end - 1)};
}

std::string collapse_whitespace(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!space) out.push_back(c);
    else if (!out.empty() && out.back() != ' ') out.push_back(' ');
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// A directory used to open as an empty stream and was reported as "holds no text".
TEST(PasskeyPrompt, AHaystackFileIsReadWholeAndAnUnreadableOneIsNamed) {
  TempDir dir;
  auto error = [](const std::string& path) {
    try {
      PasskeyFiller::from_file(path, "--haystack");
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  for (const std::string& path : {dir.file("missing.txt"), dir.path()})
    EXPECT_EQ(error(path), "--haystack: cannot read '" + path + "'");
  EXPECT_EQ(error(testing::write_file(dir.file("blank.txt"), " \n\n")),
            "--haystack: '" + dir.file("blank.txt") + "' holds no text");
  const std::string text = "First words. Then more words.\n";
  const PasskeyFiller f = PasskeyFiller::from_file(testing::write_file(dir.file("h.txt"), text), "--haystack");
  EXPECT_EQ(f.source, dir.file("h.txt"));
  EXPECT_EQ(f.units, PasskeyFiller::from_text(text).units);
  EXPECT_FALSE(f.units.empty());
}

TEST(PasskeyPrompt, CompactFormatFitsShortLengthsToWithinOneWord) {
  const PasskeyFiller h = PasskeyFiller::from_text("One. Two! Three?  Four\nline two\n\n\nlast words").words();
  EXPECT_EQ(h.units, (std::vector<std::string>{"One. ", "Two! ", "Three?  ", "Four\n", "line ", "two\n\n\n", "last ", "words"}));
  EXPECT_EQ(parse_passkey_format("compact", "--format"), PasskeyFormat::compact);
  EXPECT_EQ(parse_passkey_format("landmark", "--format"), PasskeyFormat::landmark);
  EXPECT_THROW(parse_passkey_format("short", "--format"), InputError);

  const PasskeyFiller f = PasskeyFiller::repeated().words();
  ASSERT_EQ(f.units.size(), 19u);
  const size_t word = longest_unit_chars(f);  // "yellow. "
  EXPECT_EQ(word, 8u);
  std::string cyc;
  for (int i = 0; i < 40; ++i) cyc += std::string(kPasskeyFiller) + " ";
  cyc = collapse_whitespace(cyc);
  for (int64_t L : {72, 100, 128, 129, 256, 2048}) {
    for (double depth : {0.0, 0.3, 0.5, 1.0}) {
      const PasskeyPrompt p = make_passkey_prompt(byte_tok, f, L, depth, 48213, PasskeyFormat::compact);
      const auto n = static_cast<int64_t>(p.ids.size());
      EXPECT_LE(n, L);
      EXPECT_GT(n, L - static_cast<int64_t>(word)) << L << " " << depth;
      const Parts parts = split_compact(p.text);
      EXPECT_EQ(parts.needle, "The passkey is 48213.");
      EXPECT_EQ(p.text.find("48213"), p.text.rfind("48213")) << "the passkey only in the needle";
      const double filler = static_cast<double>(parts.prefix.size() + parts.suffix.size());
      EXPECT_NEAR(static_cast<double>(parts.prefix.size()) / filler, p.depth, 1e-12);
      EXPECT_LE(std::abs(p.depth - depth), static_cast<double>(word) / filler) << L << " " << depth;
      const std::string used = collapse_whitespace(parts.prefix + " " + parts.suffix);
      EXPECT_EQ(cyc.compare(0, used.size(), used), 0) << "the filler's words in order, from the first: " << p.text;
    }
  }
  // the landmark prompt does not fit 128 bytes; the compact one leaves most of it to filler
  EXPECT_THROW(make_passkey_prompt(byte_tok, PasskeyFiller::repeated(), 128, 0.5, 12345), InputError);
  EXPECT_THROW(make_passkey_prompt(byte_tok, f, 60, 0.5, 12345, PasskeyFormat::compact), InputError);
  // first_unit: the filler starts at that unit and goes on cyclically
  const PasskeyPrompt later = make_passkey_prompt(byte_tok, f, 128, 0.0, 12345, PasskeyFormat::compact, 25);
  EXPECT_EQ(split_compact(later.text).suffix.rfind("is blue. The sun", 0), 0u) << later.text;
}

TEST(PasskeyEval, CompactFormatOracleScoresAllAndTheJsonNamesTheFormat) {
  PasskeyOptions o;
  o.lengths = {128, 256, 1024};
  o.trials = 10;
  o.format = PasskeyFormat::compact;
  const PasskeyFiller f = PasskeyFiller::from_text(testing::make_corpus(5000)).words();
  const PasskeyResult good = run_passkey(byte_tok, f, o, oracle(byte_tok, false));
  const PasskeyResult bad = run_passkey(byte_tok, f, o, oracle(byte_tok, true));
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(good.lengths[i].accuracy(), 1.0);
    EXPECT_EQ(bad.lengths[i].accuracy(), 0.0);
    EXPECT_LE(good.lengths[i].prompt_tokens_max, o.lengths[i]);
  }
  EXPECT_EQ(passkey_json(good, o, {}, "")["format"], "compact");
  o.format = PasskeyFormat::landmark;
  EXPECT_EQ(passkey_json(good, o, {}, "")["format"], "landmark");
}

// The training text: samples of [min, max] tokens, each a compact prompt and its answer, the
// filler taken from the haystack's words in order across samples.
TEST(PasskeyCorpus, SamplesAreCompactPromptsAnsweredWithTheirPasskeyOverConsecutiveText) {
  const std::string text = testing::make_corpus(30000);
  const PasskeyFiller words = PasskeyFiller::from_text(text).words();
  PasskeyCorpusOptions o;
  o.min_tokens = 80;
  o.max_tokens = 128;
  o.tokens = 6000;
  o.seed = 3;
  std::ostringstream out;
  const PasskeyCorpusSummary s = write_passkey_corpus(byte_tok, words, o, out);
  const std::string corpus = out.str();
  EXPECT_EQ(s.tokens, static_cast<int64_t>(corpus.size())) << "bytes are tokens";
  EXPECT_GE(s.tokens, 6000);
  EXPECT_LT(s.tokens, 6000 + 128);
  EXPECT_EQ(s.skipped_units, 0);

  const std::string q = "\n" + std::string(kPasskeyQuestion);
  std::string filler;
  std::set<int64_t> lengths;
  std::set<std::string> keys;
  int64_t samples = 0, empty_prefix = 0, empty_suffix = 0;
  for (size_t at = 0; at < corpus.size();) {
    const size_t qa = corpus.find(q, at);
    ASSERT_NE(qa, std::string::npos);
    const size_t end = corpus.find('\n', qa + q.size()) + 1;
    const std::string sample = corpus.substr(at, end - at);
    const std::string answer = corpus.substr(qa + q.size(), end - qa - q.size());
    const Parts parts = split_compact(sample.substr(0, qa - at + q.size()));
    ASSERT_EQ(answer.size(), 8u) << answer;  // " NNNNN.\n"
    EXPECT_EQ(answer, passkey_corpus_answer(parts.needle.substr(15, 5)));
    EXPECT_EQ(parts.needle, "The passkey is " + answer.substr(1, 6));
    EXPECT_GT(sample.size(), 80u - 8) << "short of its drawn length by less than a word";
    EXPECT_LE(sample.size(), 128u);
    lengths.insert(static_cast<int64_t>(sample.size()));
    keys.insert(answer.substr(1, 5));
    empty_prefix += parts.prefix.empty();
    empty_suffix += parts.suffix.empty();
    filler += parts.prefix + " " + parts.suffix + " ";
    ++samples;
    at = end;
  }
  EXPECT_EQ(samples, s.samples);
  EXPECT_GT(lengths.size(), 20u) << "lengths drawn over [min, max]";
  EXPECT_GT(keys.size(), static_cast<size_t>(samples) - 3);
  EXPECT_GT(empty_prefix + empty_suffix, 0) << "needles at both ends too";
  EXPECT_LT(empty_prefix + empty_suffix, samples / 2) << "and mostly inside";
  const std::string used = collapse_whitespace(filler);
  EXPECT_EQ(collapse_whitespace(text).compare(0, used.size(), used), 0) << "the haystack's words in order";

  std::ostringstream again, other;
  write_passkey_corpus(byte_tok, words, o, again);
  EXPECT_EQ(again.str(), corpus);
  o.seed = 4;
  write_passkey_corpus(byte_tok, words, o, other);
  EXPECT_NE(other.str(), corpus);

  o.min_tokens = 40;  // the fixed text and the answer alone take 67 bytes
  EXPECT_THROW(write_passkey_corpus(byte_tok, words, o, other), InputError);
  o.min_tokens = 200;
  EXPECT_THROW(write_passkey_corpus(byte_tok, words, o, other), InputError);  // max < min
  o.min_tokens = 80;
  o.tokens = 0;
  EXPECT_THROW(write_passkey_corpus(byte_tok, words, o, other), InputError);
  // a word longer than a sample is passed over, not an error
  o.tokens = 500;
  std::ostringstream skipping;
  const PasskeyCorpusSummary k =
      write_passkey_corpus(byte_tok, PasskeyFiller::from_text(std::string(150, '-') + " " + text).words(), o, skipping);
  EXPECT_EQ(k.skipped_units, 1);
  EXPECT_EQ(skipping.str().find("---"), std::string::npos);
}

// Answers: the first run of digits.
TEST(PasskeyPrompt, FirstDigits) {
  EXPECT_EQ(first_digits(" 12345. Remember"), "12345");
  EXPECT_EQ(first_digits("12345"), "12345");
  EXPECT_EQ(first_digits(" 123456"), "123456");
  EXPECT_EQ(first_digits(" 12 345"), "12");
  EXPECT_EQ(first_digits(" the"), "");
}

TEST(PasskeyEval, OracleScoresAllWrongOracleNoneAndJsonHasTheDocumentedFields) {
  PasskeyOptions o;
  o.lengths = {300, 600, 1500};
  o.trials = 12;
  o.seed = 5;
  const PasskeyFiller f = PasskeyFiller::repeated();
  const PasskeyResult good = run_passkey(byte_tok, f, o, oracle(byte_tok, false));
  const PasskeyResult bad = run_passkey(byte_tok, f, o, oracle(byte_tok, true));
  ASSERT_EQ(good.lengths.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    const PasskeyLengthResult& g = good.lengths[i];
    EXPECT_EQ(g.length, o.lengths[i]);
    EXPECT_EQ(g.trials, 12);
    EXPECT_EQ(g.accuracy(), 1.0);
    EXPECT_EQ(bad.lengths[i].accuracy(), 0.0);
    EXPECT_LE(g.prompt_tokens_max, g.length);
    int64_t in_buckets = 0;
    ASSERT_EQ(g.by_depth.size(), 5u);
    for (size_t b = 0; b < 5; ++b) {
      EXPECT_DOUBLE_EQ(g.by_depth[b].depth_lo, b / 5.0);
      EXPECT_EQ(g.by_depth[b].correct, g.by_depth[b].trials);
      EXPECT_EQ(bad.lengths[i].by_depth[b].correct, 0);
      in_buckets += g.by_depth[b].trials;
    }
    EXPECT_EQ(in_buckets, 12);
  }
  EXPECT_EQ(good.samples.size(), 9u);
  EXPECT_TRUE(good.samples[0].correct);
  EXPECT_EQ(good.samples[0].answer.substr(1, 5), good.samples[0].passkey);

  const nlohmann::json j = passkey_json(good, o, {{"checkpoint", "x"}}, "");
  EXPECT_EQ(j["kind"], "eval_passkey");
  EXPECT_EQ(j["settings"]["checkpoint"], "x");
  EXPECT_EQ(j["trials"], 12);
  EXPECT_EQ(j["seed"], 5);
  EXPECT_TRUE(j["haystack"].is_null());
  ASSERT_EQ(j["results"].size(), 3u);
  for (const auto& r : j["results"]) {
    for (const char* k : {"length", "accuracy", "trials", "by_depth"}) EXPECT_TRUE(r.contains(k)) << k;
    ASSERT_EQ(r["by_depth"].size(), 5u);
    EXPECT_EQ(r["by_depth"][1]["depth_lo"], 0.2);
    EXPECT_EQ(r["by_depth"][4]["depth_hi"], 1.0);
    for (const auto& b : r["by_depth"]) {
      for (const char* k : {"depth_lo", "depth_hi", "accuracy", "trials"}) EXPECT_TRUE(b.contains(k)) << k;
    }
  }
  for (const auto& s : j["samples"]) {
    for (const char* k : {"length", "depth", "passkey", "answer", "correct"}) EXPECT_TRUE(s.contains(k)) << k;
    EXPECT_TRUE(s["passkey"].is_string());
  }
  // an empty bucket has accuracy null
  o.trials = 1;
  const nlohmann::json one = passkey_json(run_passkey(byte_tok, f, o, oracle(byte_tok, false)), o, {}, "/tmp/h.txt");
  int nulls = 0;
  for (const auto& b : one["results"][0]["by_depth"]) nulls += b["accuracy"].is_null();
  EXPECT_EQ(nulls, 4);
  EXPECT_EQ(one["haystack"], "/tmp/h.txt");
}

// SentencePiece merges across unit boundaries, so a unit's token count varies with its
// neighbours: the prompt is within L tokens and short of it by less than the largest unit's
// tokens plus 2.
TEST(PasskeyPrompt, RequestedLengthWithSentencePiece) {
  TempDir dir;
  std::string text = testing::make_corpus(20000);
  for (int i = 0; i < 50; ++i) text += std::string(kPasskeyFiller) + "\n" + kPasskeyTask + "\n";
  TokenizerTrainingOptions t;
  t.inputs = {write_file(dir.file("train.txt"), text)};
  t.vocab_size = 300;
  t.out_dir = dir.file("tok");
  t.threads = 1;
  train_tokenizer(t);
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(dir.file("tok"));
  for (const PasskeyFiller& f : {PasskeyFiller::repeated(), PasskeyFiller::from_text(testing::make_corpus(5000))}) {
    int64_t unit_tokens = 0;
    for (const auto& u : f.units) unit_tokens = std::max<int64_t>(unit_tokens, static_cast<int64_t>(tok->encode(u).size()));
    for (int64_t L : {400, 777, 3000}) {
      for (double depth : {0.0, 0.3, 0.9}) {
        const PasskeyPrompt p = make_passkey_prompt(*tok, f, L, depth, 24680);
        const auto n = static_cast<int64_t>(p.ids.size());
        EXPECT_LE(n, L);
        EXPECT_GT(n, L - unit_tokens - 2) << L << " " << depth;
        EXPECT_EQ(tok->decode(p.ids), p.text);
        const Parts parts = split_prompt(p.text);
        EXPECT_LE(std::abs(p.depth - depth), longest_unit_chars(f) / double(parts.prefix.size() + parts.suffix.size()));
      }
    }
  }
}

// ------------------------------------------------------------------ the commands, end to end

class Commands : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    const std::string corpus = write_file(dir_->file("corpus.txt"), testing::make_corpus(20000));
    const std::string config = write_file(dir_->file("c.yaml"),
                                          "model:\n  d_model: 32\n  n_layers: 2\n  n_heads: 2\n  n_kv_heads: 1\n"
                                          "  ffn_hidden: 64\n  attention:\n    window_pattern: [0, 16]\n"
                                          "data:\n  seq_len: 48\n"
                                          "train:\n  micro_batch: 4\n  steps: 8\n  log_every: 4\n  eval_every: 4\n"
                                          "  eval_batches: 1\n  threads: 1\n  device: cpu\n"
                                          "schedule:\n  warmup_steps: 2\nlog:\n  level: warn\n  file: false\n");
    TrainOptions o;
    o.run_dir = dir_->file("run");
    train(load_config(config, {"data.train=" + corpus}), o);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string run_dir() { return dir_->file("run"); }
  static TempDir* dir_;

  int sluice(const std::vector<std::string>& args) {
    out.str("");
    err.str("");
    return cli::run(args, {out, err});
  }
  std::ostringstream out, err;
};
TempDir* Commands::dir_ = nullptr;

TEST_F(Commands, GenerateGreedyWithAndWithoutCacheAndSeededSampling) {
  const std::vector<std::string> base = {"generate", "--ckpt", run_dir(), "--prompt", "the cat sat", "--max-new-tokens", "24"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    EXPECT_EQ(sluice(a), 0) << err.str();
    return out.str();
  };
  const std::string greedy = with({"--temperature", "0"});
  EXPECT_FALSE(greedy.empty());
  EXPECT_NE(err.str().find("tokens/s"), std::string::npos) << err.str();
  EXPECT_EQ(with({"--temperature", "0", "--no-cache"}), greedy);
  EXPECT_NE(err.str().find("no cache"), std::string::npos);
  const std::string s1 = with({"--seed", "3", "--top-p", "0.9"});
  EXPECT_EQ(with({"--seed", "3", "--top-p", "0.9"}), s1);
  EXPECT_EQ(with({"--seed", "3", "--top-p", "0.9", "--no-cache"}), s1);
  EXPECT_EQ(sluice({"generate", "--ckpt", run_dir(), "--prompt", "x", "--top-p", "0"}), 2);
  EXPECT_EQ(sluice({"generate", "--ckpt", run_dir(), "--prompt", "", "--temperature", "0"}), 2);
  EXPECT_NE(err.str().find("--prompt"), std::string::npos) << err.str();
}

TEST_F(Commands, PasskeyRunsEndToEndAndWritesTheDocumentedJson) {
  const std::string json_path = dir_->file("eval/passkey.json");
  ASSERT_EQ(sluice({"eval", "passkey", "--ckpt", run_dir(), "--lengths", "300,420", "--trials", "4", "--seed", "9",
                    "--out", json_path}),
            0)
      << err.str();
  EXPECT_NE(out.str().find("accuracy"), std::string::npos) << out.str();
  const nlohmann::json j = nlohmann::json::parse(read_file(json_path));
  EXPECT_EQ(j["kind"], "eval_passkey");
  EXPECT_EQ(j["trials"], 4);
  EXPECT_EQ(j["seed"], 9);
  EXPECT_TRUE(j["haystack"].is_null());
  EXPECT_EQ(j["settings"]["device"], "cpu");
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["length"], 300);
  EXPECT_EQ(j["results"][1]["trials"], 4);
  const double acc = j["results"][0]["accuracy"].get<double>();
  EXPECT_GE(acc, 0.0);  // whatever a tiny model manages
  EXPECT_LE(acc, 1.0);
  EXPECT_EQ(j["results"][0]["by_depth"].size(), 5u);
  EXPECT_EQ(j["samples"].size(), 6u);
  EXPECT_LE(j["results"][1]["prompt_tokens_max"].get<int64_t>(), 420);

  // the same seed gives the same answers; a haystack file is recorded
  const std::string again = dir_->file("eval/again.json");
  ASSERT_EQ(sluice({"eval", "passkey", "--ckpt", run_dir(), "--lengths", "300,420", "--trials", "4", "--seed", "9",
                    "--out", again}),
            0);
  EXPECT_EQ(nlohmann::json::parse(read_file(again))["samples"], j["samples"]);
  const std::string hay = write_file(dir_->file("hay.txt"), testing::make_corpus(4000));
  ASSERT_EQ(sluice({"eval", "passkey", "--ckpt", run_dir(), "--lengths", "400", "--trials", "2", "--haystack", hay,
                    "--depth-buckets", "2", "--out", again}),
            0)
      << err.str();
  const nlohmann::json h = nlohmann::json::parse(read_file(again));
  EXPECT_TRUE(h["haystack"].is_string());
  EXPECT_EQ(h["results"][0]["by_depth"].size(), 2u);

  EXPECT_EQ(sluice({"eval", "passkey", "--ckpt", run_dir(), "--lengths", "100", "--out", again}), 2);
  EXPECT_NE(err.str().find("--lengths"), std::string::npos) << err.str();
  EXPECT_EQ(sluice({"eval", "passkey", "--ckpt", run_dir(), "--lengths", "300,x", "--out", again}), 2);
  EXPECT_EQ(sluice({"eval", "passkey", "--ckpt", run_dir(), "--lengths", "300", "--haystack", dir_->file("none.txt"),
                    "--out", again}),
            2);
}

TEST_F(Commands, PasskeyCorpusWritesSamplesAndTheCompactEvalReadsThem) {
  const std::string hay = write_file(dir_->file("words.txt"), testing::make_corpus(8000));
  const std::string out_file = dir_->file("pk/corpus.txt");
  fs::create_directories(dir_->file("pk"));
  ASSERT_EQ(sluice({"data", "passkey-corpus", "--haystack", hay, "--tokens", "3000", "--min-length", "90",
                    "--max-length", "128", "--seed", "2", "--out", out_file}),
            0)
      << err.str();
  EXPECT_NE(out.str().find("samples"), std::string::npos) << out.str();
  const std::string corpus = read_file(out_file);
  EXPECT_GE(corpus.size(), 3000u);
  EXPECT_NE(corpus.find("What is the passkey? The passkey is "), std::string::npos);
  EXPECT_FALSE(fs::exists(out_file + ".tmp"));
  EXPECT_EQ(corpus.find("The grass is green."), std::string::npos);
  // without --haystack: the protocol's repeated filler, the text the compact evaluation uses by default
  const std::string repeated_file = dir_->file("pk/repeated.txt");
  ASSERT_EQ(sluice({"data", "passkey-corpus", "--tokens", "2000", "--min-length", "90", "--max-length", "128",
                    "--out", repeated_file}),
            0)
      << err.str();
  const std::string repeated = read_file(repeated_file);
  EXPECT_NE(repeated.find("The grass is green. The sky is blue."), std::string::npos);
  EXPECT_NE(repeated.find("What is the passkey? The passkey is "), std::string::npos);
  // refused: nothing written
  const std::string refused = dir_->file("pk/refused.txt");
  EXPECT_EQ(sluice({"data", "passkey-corpus", "--haystack", hay, "--tokens", "3000", "--min-length", "30",
                    "--out", refused}),
            2);
  EXPECT_NE(err.str().find("--min-length"), std::string::npos) << err.str();
  EXPECT_EQ(sluice({"data", "passkey-corpus", "--haystack", dir_->file("none.txt"), "--tokens", "10", "--out", refused}), 2);
  EXPECT_NE(err.str().find("--haystack"), std::string::npos) << err.str();
  EXPECT_FALSE(fs::exists(refused));
  EXPECT_FALSE(fs::exists(refused + ".tmp"));

  // the compact format fits the training length (48 here); the landmark one does not
  const std::string json_path = dir_->file("eval/compact.json");
  ASSERT_EQ(sluice({"eval", "passkey", "--ckpt", run_dir(), "--lengths", "96,192", "--trials", "3", "--format",
                    "compact", "--haystack", hay, "--out", json_path}),
            0)
      << err.str();
  const nlohmann::json j = nlohmann::json::parse(read_file(json_path));
  EXPECT_EQ(j["format"], "compact");
  EXPECT_LE(j["results"][0]["prompt_tokens_max"].get<int64_t>(), 96);
  EXPECT_GT(j["results"][0]["prompt_tokens_min"].get<int64_t>(), 80);
  EXPECT_EQ(sluice({"eval", "passkey", "--ckpt", run_dir(), "--lengths", "96", "--out", json_path}), 2);
  EXPECT_EQ(sluice({"eval", "passkey", "--ckpt", run_dir(), "--lengths", "96", "--format", "short", "--out", json_path}), 2);
  EXPECT_NE(err.str().find("--format"), std::string::npos) << err.str();
}

}  // namespace
}  // namespace sluice
