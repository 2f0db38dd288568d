// data.respect_documents: documents packed into one window attend only within themselves.
// The mask (AttentionMask::segments) on every backend against explicit fp64 loops,
// document_bounds against a loop, a packed row against its documents run one by one, the
// loader's segments, and short training runs with the key on.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "data/prepare.h"
#include "data/token_corpus.h"
#include "data/window_loader.h"
#include "eval/attention_stats.h"
#include "model/alibi.h"
#include "model/fused_attention.h"
#include "sluice/attention.h"
#include "sluice/config.h"
#include "sluice/errors.h"
#include "sluice/model.h"
#include "sluice/trainer.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "tensor_test_util.h"

namespace sluice {
namespace {

using testing::TempDir;

using testing::max_abs_diff;

void expect_close(const at::Tensor& a, const at::Tensor& b, double tol, const std::string& what) {
  ASSERT_TRUE(a.defined() && b.defined()) << what;
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double diff = max_abs_diff(a, b);
  const double scale = std::max(1.0, b.to(at::kDouble).abs().max().item<double>());
  if (std::getenv("SLUICE_TEST_VERBOSE")) std::printf("%-50s diff %.3g scale %.3g\n", what.c_str(), diff, scale);
  EXPECT_LE(diff, tol * scale) << what << " (max |b| " << scale << ")";
}

at::Tensor rows(const std::vector<std::vector<int64_t>>& r) {
  std::vector<at::Tensor> out;
  for (const auto& v : r) out.push_back(at::tensor(v, at::kLong));
  return at::stack(out);
}

// Three rows of 10 positions: one document, several of different lengths, and documents of
// length 1 (the first, two in the middle and the last).
at::Tensor example_segments() {
  return rows({{0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 1, 1, 2, 2, 2, 2, 3}, {0, 1, 1, 1, 2, 3, 3, 3, 3, 4}});
}

// softmax over the keys query i may see (j <= i, i - j < window, same segment), ALiBi bias
// included, in fp64 with explicit loops.
at::Tensor reference_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& seg, int64_t window, const std::vector<double>& slopes,
                               double scale) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), group = H / k.size(1);
  const at::Tensor qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  at::Tensor out = at::zeros({B, H, T, D}, at::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i) {
        std::vector<int64_t> keys;
        std::vector<at::Tensor> sc;
        for (int64_t j = 0; j <= i; ++j) {
          if (window > 0 && i - j >= window) continue;
          if (seg[b][i].item<int64_t>() != seg[b][j].item<int64_t>()) continue;
          keys.push_back(j);
          at::Tensor s = (qd[b][h][i] * kd[b][h / group][j]).sum() * scale;
          if (!slopes.empty()) s = s - slopes[static_cast<size_t>(h)] * static_cast<double>(i - j);
          sc.push_back(s);
        }
        const at::Tensor p = at::softmax(at::stack(sc), 0);
        for (size_t n = 0; n < keys.size(); ++n) out[b][h][i] += p[static_cast<int64_t>(n)] * vd[b][h / group][keys[n]];
      }
  return out;
}

// (a) math, sdpa and fused (its sdpa fallback on the CPU) against the fp64 loops, forward, and
// against math for the gradients of q, k and v; GQA 4:2, windows, ALiBi. fp32 against fp64 on
// scores of order 1 over at most 10 keys: rounding stays near 1e-6.
TEST(DocumentMask, BackendsMatchExplicitLoopsWithWindowsGqaAndAlibi) {
  at::manual_seed(41);
  const int64_t H = 4, KV = 2, D = 8;
  const at::Tensor seg = example_segments();
  const int64_t B = seg.size(0), T = seg.size(1);
  const at::Tensor q0 = at::randn({B, H, T, D}), k0 = at::randn({B, KV, T, D}), v0 = at::randn({B, KV, T, D});
  const at::Tensor dy = at::randn({B, H, T, D});
  for (int64_t window : {int64_t{0}, int64_t{3}})
    for (bool alibi : {false, true}) {
      AttentionMask mask;
      mask.window = window;
      mask.segments = seg;
      if (alibi) mask.alibi_slopes = alibi_slopes_tensor(H, at::kCPU);
      const std::string what = "window=" + std::to_string(window) + (alibi ? " alibi" : "");
      const at::Tensor ref = reference_attention(q0, k0, v0, seg, window, alibi ? alibi_slopes(H) : std::vector<double>{}, 0.35);
      std::vector<std::vector<at::Tensor>> grads;
      for (const std::string backend : {"math", "sdpa", "fused"}) {
        const at::Tensor q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true),
                         v = v0.clone().requires_grad_(true);
        const at::Tensor y = make_attention_core(backend)->forward(q, k, v, mask, 0.35);
        expect_close(y, ref, 2e-5, backend + " forward " + what);
        (y * dy).sum().backward();
        grads.push_back({q.grad(), k.grad(), v.grad()});
      }
      for (size_t b = 1; b < grads.size(); ++b)
        for (size_t g = 0; g < 3; ++g)
          expect_close(grads[b][g], grads[0][g], 1e-5, std::string(b == 1 ? "sdpa" : "fused") + " grad " + "qkv"[g] + " " + what);
      // the reference path of the fused backend (log-sum-exp for the sink statistics) honours it too
      const auto [out, lse] = fused_attention_with_lse(q0, k0, v0, mask, 0.35);
      expect_close(out, ref, 2e-5, "with_lse " + what);
    }
  // one document everywhere is plain causal attention, and the fused backend names the reason it falls back
  AttentionMask one, none;
  one.segments = at::zeros({B, T}, at::kLong);
  for (const std::string backend : {"math", "sdpa"})
    expect_close(make_attention_core(backend)->forward(q0, k0, v0, one, 0.35),
                 make_attention_core(backend)->forward(q0, k0, v0, none, 0.35), 1e-6, backend + " one document");
  // the mask needs as many queries as keys
  EXPECT_THROW(make_attention_core("math")->forward(q0.narrow(2, T - 2, 2), k0, v0, one, 0.35), c10::Error);
}

// (c) document_bounds against a loop: single document, length-1 documents, values that do
// not start at 0, a row of one position; int32, and the mask it describes equals the core's.
TEST(DocumentBounds, MatchLoopAndDescribeTheMask) {
  std::vector<at::Tensor> cases = {example_segments(), rows({{5, 5, 7, 7, 7, 9}, {0, 1, 2, 3, 4, 5}}), rows({{3}, {0}})};
  for (const at::Tensor& seg : cases) {
    const auto [start, end] = document_bounds(seg);
    ASSERT_EQ(start.scalar_type(), at::kInt);
    ASSERT_EQ(end.scalar_type(), at::kInt);
    ASSERT_EQ(start.sizes(), seg.sizes());
    const int64_t B = seg.size(0), T = seg.size(1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        int64_t lo = t, hi = t + 1;
        while (lo > 0 && seg[b][lo - 1].item<int64_t>() == seg[b][t].item<int64_t>()) --lo;
        while (hi < T && seg[b][hi].item<int64_t>() == seg[b][t].item<int64_t>()) ++hi;
        EXPECT_EQ(start[b][t].item<int>(), lo) << "row " << b << " t " << t;
        EXPECT_EQ(end[b][t].item<int>(), hi) << "row " << b << " t " << t;
      }
    AttentionMask mask;
    mask.segments = seg;
    const at::Tensor allowed = allowed_positions(T, T, mask, at::kCPU);  // [B, 1, T, T]
    const at::Tensor j = at::arange(T, at::kLong).view({1, 1, T}), i = at::arange(T, at::kLong).view({1, T, 1});
    const at::Tensor from_bounds = (j >= start.to(at::kLong).unsqueeze(2)) & (j <= i);
    EXPECT_TRUE(at::equal(allowed.squeeze(1), from_bounds));
  }
  const auto [s0, e0] = document_bounds(at::zeros({2, 0}, at::kLong));
  EXPECT_EQ(s0.sizes(), at::IntArrayRef({2, 0}));
}

// With a mask cache (what the decoder sets per forward) the derived masks and ALiBi biases are
// computed once per window (and dtype) and shared by copies of the mask; they equal the uncached
// ones, and a mask without a cache derives them afresh at every use.
TEST(MaskCache, DerivedMasksAreComputedOncePerWindowAndMatch) {
  const at::Tensor seg = example_segments();
  const int64_t B = seg.size(0), T = seg.size(1), H = 3;
  for (const bool with_segments : {true, false}) {
    AttentionMask cached;
    if (with_segments) cached.segments = seg;
    cached.alibi_slopes = at::tensor({0.5f, 0.25f, 0.125f});
    cached.cache = std::make_shared<MaskCache>();
    AttentionMask uncached = cached;
    uncached.cache = nullptr;
    for (int64_t window : {0, 3, 0, 3}) {
      AttentionMask layer = cached;  // what each SelfAttention does: copy, then set its window
      layer.window = uncached.window = window;
      const at::Tensor a = allowed_positions(T, T, layer, at::kCPU);
      EXPECT_TRUE(at::equal(a, allowed_positions(T, T, uncached, at::kCPU))) << "window " << window;
      EXPECT_EQ(a.data_ptr(), allowed_positions(T, T, layer, at::kCPU).data_ptr()) << "window " << window;
      EXPECT_NE(allowed_positions(T, T, uncached, at::kCPU).data_ptr(),
                allowed_positions(T, T, uncached, at::kCPU).data_ptr());
      for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
        const at::Tensor bias = masked_alibi_bias(T, T, layer, at::kCPU, dtype);
        EXPECT_EQ(bias.scalar_type(), dtype);
        EXPECT_EQ(bias.sizes(), with_segments ? at::IntArrayRef({B, H, T, T}) : at::IntArrayRef({H, T, T}));
        EXPECT_TRUE(at::equal(bias, masked_alibi_bias(T, T, uncached, at::kCPU, dtype)));
        EXPECT_EQ(bias.data_ptr(), masked_alibi_bias(T, T, layer, at::kCPU, dtype).data_ptr());
        // the definition: the bias where allowed, -inf elsewhere
        const at::Tensor expect = alibi_bias(T, T, cached.alibi_slopes)
                                      .masked_fill(a.logical_not(), -std::numeric_limits<float>::infinity())
                                      .to(dtype);
        EXPECT_TRUE(at::equal(bias, expect)) << "window " << window;
      }
    }
    EXPECT_EQ(cached.cache->allowed.size(), 2u);
    EXPECT_EQ(cached.cache->alibi.size(), 4u);
    EXPECT_NE(cached.cache->allowed.at(0).data_ptr(), cached.cache->allowed.at(3).data_ptr());
  }
  AttentionMask cached;
  cached.segments = seg;
  cached.cache = std::make_shared<MaskCache>();
  const auto [s1, e1] = document_bounds(cached);
  const auto [s2, e2] = document_bounds(cached);
  const auto [s0, e0] = document_bounds(seg);
  EXPECT_EQ(s1.data_ptr(), s2.data_ptr());
  EXPECT_EQ(e1.data_ptr(), e2.data_ptr());
  EXPECT_TRUE(at::equal(s1, s0));
  EXPECT_TRUE(at::equal(e1, e0));
}

// The decoder hands every layer the same cache, a new one per forward: one ALiBi bias serves
// all layers (what each one computes from it is checked above and by the ALiBi tests).
TEST(MaskCache, DecoderSharesOneCachePerForward) {
  struct Caches : ForwardObserver {
    std::vector<std::shared_ptr<MaskCache>> seen;  // kept alive past the forward
    void on_attention_core(int64_t, const at::Tensor&, const at::Tensor&, const at::Tensor&, const AttentionMask& m,
                           double) override {
      seen.push_back(m.cache);
    }
  };
  const at::Tensor seg = example_segments();
  const at::Tensor tokens = at::randint(64, seg.sizes(), at::kLong);
  for (const std::string backend : {"math", "sdpa"}) {
    ModelConfig cfg;
    cfg.vocab_size = 64, cfg.d_model = 32, cfg.n_layers = 3, cfg.n_heads = 4, cfg.n_kv_heads = 2, cfg.ffn_hidden = 64;
    cfg.attention.backend = backend;
    cfg.position = "alibi";
    at::manual_seed(3);
    CausalLM model(cfg);
    at::NoGradGuard no_grad;
    Caches first, second;
    model->forward(tokens, &first, seg);
    model->forward(tokens, &second, seg);
    ASSERT_EQ(first.seen.size(), 3u);
    EXPECT_NE(first.seen[0], nullptr);
    EXPECT_EQ(first.seen[1], first.seen[0]);
    EXPECT_EQ(first.seen[2], first.seen[0]);
    ASSERT_EQ(second.seen.size(), 3u);
    EXPECT_NE(second.seen[0], first.seen[0]);
    EXPECT_EQ(first.seen[0]->alibi.size(), 1u) << "one bias for the three layers";
  }
}

// first_key_probability (attention statistics) honours segments like the cores, and the
// statistics observer refuses rows that pack documents.
TEST(DocumentMask, FirstKeyProbabilityHonoursSegments) {
  at::manual_seed(42);
  const at::Tensor seg = example_segments();
  const int64_t B = seg.size(0), T = seg.size(1);
  const at::Tensor q = at::randn({B, 4, T, 8}), k = at::randn({B, 2, T, 8});
  AttentionMask mask;
  mask.segments = seg;
  const at::Tensor p = first_key_probability(q, k, mask, 0.35, /*query_chunk=*/3);
  const at::Tensor scores = at::matmul(q, k.repeat_interleave(2, 1).transpose(-2, -1)) * 0.35;
  const at::Tensor probs = at::softmax(scores.masked_fill(allowed_positions(T, T, mask, at::kCPU).logical_not(), -INFINITY), -1);
  expect_close(p, probs.select(-1, 0), 1e-6, "p(q, 0)");
  EXPECT_EQ(p[2][0][1].item<float>(), 0.0f);  // query 1 of row 2 is in the second document
  AttentionStatsObserver obs(1);
  EXPECT_THROW(obs.on_attention_core(0, q, k, k, mask, 0.35), c10::Error);
}

// The loader gives each input position the document of its target: a document's EOS opens the
// next one. Docs with EOS: [0, 4) [4, 5) [5, 8) [8, 20): the second is an empty text (EOS only).
TEST(DocumentLoader, SegmentsFollowTheTargets) {
  auto corpus = std::make_shared<const TokenCorpus>(
      TokenCorpus::from_documents({{10, 11, 12}, {}, {13, 14}, {15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25}}, 99));
  LoaderOptions o;
  o.seq_len = 9;
  o.batch = 1;
  o.shuffle = false;
  o.segments = true;
  const WindowLoader l(corpus, o, "t");
  const Batch b = l.batch(0);  // tokens 0..9: inputs 0..8, targets 1..9
  EXPECT_TRUE(at::equal(b.inputs[0], at::tensor({10, 11, 12, 99, 99, 13, 14, 99, 15}, at::kLong)));
  // targets 11 12 99 | 99 | 13 14 99 | 15 16: an EOS as input opens the next document
  EXPECT_TRUE(at::equal(b.segments[0], at::tensor({0, 0, 0, 1, 2, 2, 2, 3, 3}, at::kLong)))
      << b.segments;
  const Batch c = l.batch(1);  // tokens 9..18, inside the last document
  EXPECT_EQ(c.segments.max().item<int64_t>(), 0);
}

// --- a packed row equals its documents run one by one ---------------------------------------------

ModelConfig tiny_model(const std::string& backend) {
  ModelConfig m;
  m.vocab_size = 64;
  m.d_model = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.ffn_hidden = 64;
  m.attention.backend = backend;
  return m;
}

// Per-token cross-entropy [B, T] (fp32).
at::Tensor token_losses(CausalLM& model, const at::Tensor& in, const at::Tensor& tgt, const at::Tensor& seg = {}) {
  const at::Tensor logits = model->forward(in, nullptr, seg);
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), tgt.reshape({-1}), {}, at::Reduction::None)
      .view(in.sizes());
}

// (b) Two rows, each packing documents A and B (in both orders), through the loader. With their
// segments every per-token loss equals the loss of the same token in its document run alone
// (EOS-opened, from position 0): the mask removes the other document exactly (its keys get
// probability 0), and RoPE makes a document's scores depend on position differences only, so the
// remaining difference is fp32 rounding of the rotated q, k at other absolute positions and of
// other summation lengths: measured 2.4e-6 (math) and 3.3e-6 (sdpa) on losses near ln 64 = 4.2;
// the bound 2e-5 leaves a factor 6, while the cross-document attention the mask removes changes
// these losses by 3.8 (checked against a floor of 1e-2: without segments the second document's
// losses differ).
TEST(DocumentModel, PackedRowEqualsDocumentsRunAlone) {
  const int32_t eos = 63;
  const std::vector<int32_t> A = {5, 9, 2, 44, 17, 8, 30}, Bd = {12, 3, 3, 50, 21, 7, 19, 40, 1, 26, 11};
  for (const std::string backend : {"math", "sdpa"}) {
    at::manual_seed(43);
    ModelConfig cfg = tiny_model(backend);
    cfg.init_std = 0.3;  // large weights: attention far from uniform, so cross-document context shows
    CausalLM model(cfg);
    model->eval();
    at::NoGradGuard no_grad;
    // corpus A B B A (each with its EOS), windows of L + 1 = |A| + |B| + 2 tokens starting at
    // multiples of L: row 0 is A EOS B EOS, row 1 is EOS B EOS A (A's EOS is the next window's)
    auto corpus = std::make_shared<const TokenCorpus>(TokenCorpus::from_documents({A, Bd, Bd, A}, eos));
    LoaderOptions o;
    o.seq_len = static_cast<int64_t>(A.size() + Bd.size() + 1);
    o.batch = 2;
    o.shuffle = false;
    o.segments = true;
    const Batch batch = WindowLoader(corpus, o, "t").batch(0);
    const at::Tensor packed = token_losses(model, batch.inputs, batch.targets, batch.segments);
    const at::Tensor unmasked = token_losses(model, batch.inputs, batch.targets);

    // one document alone: inputs [EOS?] + doc, targets doc[1:] + EOS (+ next first token)
    auto alone = [&](const at::Tensor& in, const at::Tensor& tgt) {
      return token_losses(model, in.unsqueeze(0), tgt.unsqueeze(0))[0];
    };
    double worst = 0.0, cross = 0.0;
    for (int64_t r = 0; r < 2; ++r) {
      const at::Tensor seg = batch.segments[r];
      const int64_t n0 = (seg == 0).sum().item<int64_t>();  // positions of the first document
      const int64_t T = seg.size(0);
      ASSERT_EQ(seg.max().item<int64_t>(), 1) << backend;
      const at::Tensor first = alone(batch.inputs[r].narrow(0, 0, n0), batch.targets[r].narrow(0, 0, n0));
      const at::Tensor second = alone(batch.inputs[r].narrow(0, n0, T - n0), batch.targets[r].narrow(0, n0, T - n0));
      EXPECT_EQ(batch.inputs[r][n0].item<int64_t>(), eos) << "the second document opens with the first one's EOS";
      worst = std::max({worst, max_abs_diff(packed[r].narrow(0, 0, n0), first),
                        max_abs_diff(packed[r].narrow(0, n0, T - n0), second)});
      // the first document sees nothing else anyway; the second does without the mask
      EXPECT_LE(max_abs_diff(unmasked[r].narrow(0, 0, n0), first), 2e-5) << backend;
      cross = std::max(cross, max_abs_diff(unmasked[r].narrow(0, n0, T - n0), second));
    }
    if (std::getenv("SLUICE_TEST_VERBOSE")) std::printf("%s: masked %.3g, unmasked %.3g\n", backend.c_str(), worst, cross);
    EXPECT_LE(worst, 2e-5) << backend;
    EXPECT_GT(cross, 1e-2) << backend << ": without segments the second document must see the first";
  }
}

// Segments are refused with a KV cache (decoding never packs documents) and must match tokens.
TEST(DocumentModel, SegmentsMustMatchTokens) {
  at::manual_seed(44);
  CausalLM model(tiny_model("math"));
  const at::Tensor tokens = at::randint(64, {2, 6}, at::kLong);
  EXPECT_THROW(model->forward(tokens, nullptr, at::zeros({2, 5}, at::kLong)), c10::Error);
}

// --- configuration and training ------------------------------------------------------------------

TEST(DocumentConfig, ChangingTheKeyOnResumeIsRefused) {
  Config a;
  Config b = a;
  EXPECT_FALSE(a.data.respect_documents);
  b.data.respect_documents = true;
  const ConfigDiff d = diff_for_resume(a, b);
  ASSERT_EQ(d.incompatible.size(), 1u);
  EXPECT_EQ(d.incompatible[0], "data.respect_documents: false -> true");
}

class DocumentTrain : public ::testing::Test {
 protected:
  TempDir dir;
  std::string data = prepare();

  // Short documents (10 to 100 bytes) so that most windows of 32 tokens pack several.
  std::string prepare() const {
    const std::string text = testing::make_corpus(40000);
    std::string joined;
    size_t at = 0;
    for (int i = 0; at < text.size(); ++i) {
      const size_t n = 10 + static_cast<size_t>(i * 37 % 91);
      std::string doc = text.substr(at, n);
      for (char& c : doc)
        if (c == '\n') c = ' ';
      joined += doc + "\n\n";
      at += n;
    }
    PrepareOptions p;
    p.tokenizer = "byte";
    p.inputs = {testing::write_file(dir.file("docs.txt"), joined)};
    p.out_dir = dir.file("ds");
    p.val_fraction = 0.1;
    p.documents = "blank-lines";
    p.workers = 1;
    p.progress = false;
    prepare_shards(p);
    return p.out_dir;
  }
  TrainSummary run(const std::string& name, const std::vector<std::string>& extra, int64_t stop_after = 0) const {
    std::vector<std::string> sets = {"data.train=" + data, "model.d_model=32", "model.n_layers=2",
                                     "model.n_heads=2", "model.n_kv_heads=1", "model.ffn_hidden=64",
                                     "data.seq_len=32", "train.micro_batch=8", "train.steps=12",
                                     "train.log_every=1", "train.eval_every=6", "train.eval_batches=2",
                                     "schedule.warmup_steps=2", "optim.lr=3e-3", "train.threads=1",
                                     "train.device=cpu", "log.level=warn"};
    sets.insert(sets.end(), extra.begin(), extra.end());
    TrainOptions opts;
    opts.run_dir = dir.file(name);
    opts.stop_after = stop_after;
    return train(load_config_text("{}", "test", sets), opts);
  }
};

// (e) The trainer with the key on: finite, falling loss and validation; the same run with the
// key off starts from the same weights and batches, so a different first loss shows that the
// segments reach the attention.
TEST_F(DocumentTrain, TrainsWithDocumentsRespected) {
  const TrainSummary on = run("on", {"data.respect_documents=true"});
  ASSERT_EQ(on.logged_losses.size(), 12u);
  for (double l : on.logged_losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_LT(on.logged_losses.back(), on.logged_losses.front() - 0.5);
  EXPECT_TRUE(std::isfinite(on.final_val_loss));
  const TrainSummary off = run("off", {});
  EXPECT_NE(on.logged_losses.front(), off.logged_losses.front());
  EXPECT_NE(on.final_val_loss, off.final_val_loss);
  // the resolved config records the key
  EXPECT_NE(testing::read_file(dir.file("on/config.yaml")).find("respect_documents: true"), std::string::npos);
}

// Segments are a pure function of the window, so a resumed run repeats the straight one bitwise;
// resuming with the key changed is refused before anything is written.
TEST_F(DocumentTrain, ResumeReproducesTheStraightRunAndTheKeyIsFixed) {
  const std::vector<std::string> on = {"data.respect_documents=true"};
  const TrainSummary straight = run("straight", on);
  EXPECT_TRUE(run("resumed", on, /*stop_after=*/5).stopped_by_signal);
  const TrainSummary resumed = run("resumed", on);
  EXPECT_EQ(resumed.resumed_from_step, 5);
  ASSERT_EQ(resumed.logged_losses.size(), 7u);
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(resumed.logged_losses[i], straight.logged_losses[5 + i]) << "step " << 6 + i;
  EXPECT_EQ(resumed.final_val_loss, straight.final_val_loss);

  run("changed", on, /*stop_after=*/3);
  try {
    run("changed", {});
    FAIL() << "resuming without data.respect_documents was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("data.respect_documents: true -> false"), std::string::npos) << e.what();
  }
}

// FlashAttention's cu_seqlens form: segments for sequences packed back to back, against a loop
// (empty sequences included), and attention over the packed row equals each sequence alone.
TEST(Documents, SegmentsFromCuSeqlensMatchLoopAndSeparateAttention) {
  const std::vector<int64_t> lens = {3, 0, 5, 1, 0, 7};
  std::vector<int64_t> cu = {0};
  for (int64_t l : lens) cu.push_back(cu.back() + l);
  const int64_t total = cu.back();
  const at::Tensor seg = segments_from_cu_seqlens(at::tensor(cu, at::kInt), total);
  ASSERT_EQ(seg.sizes(), at::IntArrayRef({1, total}));
  std::vector<int64_t> want;
  for (size_t s = 0; s < lens.size(); ++s)
    for (int64_t k = 0; k < lens[s]; ++k) want.push_back(static_cast<int64_t>(s));
  EXPECT_TRUE(at::equal(seg, at::tensor(want, at::kLong).unsqueeze(0)));

  at::manual_seed(5);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor q = at::randn({1, 4, total, 8}, f64), k = at::randn({1, 2, total, 8}, f64),
                   v = at::randn({1, 2, total, 8}, f64);
  AttentionMask mask;
  mask.segments = seg;
  const at::Tensor packed = make_attention_core("math")->forward(q, k, v, mask, 0.3);
  for (size_t s = 0; s < lens.size(); ++s) {
    if (lens[s] == 0) continue;
    auto part = [&](const at::Tensor& x) { return x.narrow(2, cu[s], lens[s]); };
    const at::Tensor alone = make_attention_core("math")->forward(part(q), part(k), part(v), AttentionMask{}, 0.3);
    // The math core takes its softmax in fp32 (attention_core.cpp): agreement to fp32 rounding
    // of O(1) values; a sequence seeing its neighbours would be off by O(0.1).
    EXPECT_LE((part(packed) - alone).abs().max().item<double>(), 1e-5) << "sequence " << s;
  }
  EXPECT_THROW(segments_from_cu_seqlens(at::zeros({2, 2}, at::kInt), 4), c10::Error);
}

}  // namespace
}  // namespace sluice
