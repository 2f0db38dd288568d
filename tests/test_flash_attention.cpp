// The flash-attention kernels behind the `fused` backend (kernels/flash/) against the `math`
// backend computed in fp32 from the same bf16/fp16 inputs: output, log-sum-exp, dQ, dK, dV over
// lengths 1, 17, 128, 1000 and 4096, batch 1 and 3, GQA ratios 1, 4 and 8, head dims 64 and
// 128, windows on and off, cached-decoding shapes (T < S), the fused G1 output gate
// (elementwise and headwise logits, with their gradient) and the fused ALiBi bias. Label gpu: every test skips
// without a CUDA device, without the kernels or below compute capability 8.0.
//
// Tolerances: see flash_reference.h (the per-element bounds of the fp32 reference).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "flash/bwd_tiles.h"
#include "flash_reference.h"
#include "model/alibi.h"
#include "model/fused_attention.h"
#include "model/fused_ops.h"
#include "sluice/attention.h"
#include "sluice/config.h"
#include "sluice/model.h"
#include "sluice/trainer.h"
#include "test_util.h"
#include "train/adamw.h"
#include "train/device.h"
#include "train/train_step.h"

namespace sluice {
namespace {

// Skips unless the fused kernels can run here (device, build, compute capability).
#define REQUIRE_FLASH()                                                                           \
  do {                                                                                            \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";                           \
    if (!fused_kernels_built()) GTEST_SKIP() << "built without CUDA kernels";                     \
    const at::Tensor probe = at::zeros({1, 1, 1, 64}, at::TensorOptions(at::kCUDA).dtype(at::kBFloat16)); \
    const std::string why = fused_attention_unsupported(probe, probe, probe, AttentionMask{});   \
    if (!why.empty()) GTEST_SKIP() << why;                                                        \
  } while (0)

using namespace flash_test;  // NOLINT: the shared cases, inputs and reference

Result run_fused(const Case& c, const Inputs& in, const AttentionMask& mask, double scale) {
  const at::Tensor q = in.qb.detach().requires_grad_(true);
  const at::Tensor k = in.kb.detach().requires_grad_(true);
  const at::Tensor v = in.vb.detach().requires_grad_(true);
  const at::Tensor g = in.gb.defined() ? in.gb.detach().requires_grad_(true) : at::Tensor();
  auto [out, lse] = fused_attention_with_lse(heads_view(q, c.bthd), heads_view(k, c.bthd), heads_view(v, c.bthd),
                                             mask, scale, g.defined() ? heads_view(g, true) : at::Tensor());
  out.backward(in.dout);
  return {out.detach(),
          lse,
          heads_view(q.grad(), c.bthd),
          heads_view(k.grad(), c.bthd),
          heads_view(v.grad(), c.bthd),
          g.defined() ? heads_view(g.grad(), true) : at::Tensor()};
}

// deterministic: the kernels run under DeterministicAlgorithmsScope (train/device.h, what
// train.deterministic sets: the fused backward then computes dQ with the deterministic dQ
// kernel, kernels/flash/flash_bwd_dq_kernel.cuh), twice, and dQ must be bitwise the same both
// times; the fp32 reference runs outside the scope, with the default kernels.
void check_case(const Case& c, bool check_grads, bool deterministic = false) {
  // LibTorch's default, pinned: a TF32 reference would be less precise than the bounds assume.
  at::globalContext().setAllowTF32CuBLAS(false);
  const Inputs in = make_inputs(c, 1234 + static_cast<uint64_t>(c.T * 7 + c.D + c.KV));
  AttentionMask mask;
  mask.window = c.window;
  if (c.docs) mask.segments = make_segments(c);
  if (c.alibi) mask.alibi_slopes = alibi_slopes_tensor(c.H, at::Device(at::kCUDA));
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
  ASSERT_EQ(fused_attention_unsupported(heads_view(in.qb, c.bthd), heads_view(in.kb, c.bthd),
                                        heads_view(in.vb, c.bthd), mask),
            "")
      << "the case must run the kernels, not a fallback";
  const std::string name = case_name(c);
  Result f;
  if (deterministic) {
    const DeterministicAlgorithmsScope on(true);
    f = run_fused(c, in, mask, scale);
    const Result again = run_fused(c, in, mask, scale);
    EXPECT_TRUE(at::equal(f.dq, again.dq)) << name << ": deterministic dQ differs between two runs";
  } else {
    f = run_fused(c, in, mask, scale);
  }
  const Expected x = expected(c, in, mask, scale, f.out);

  EXPECT_EQ(f.out.scalar_type(), c.dtype);
  EXPECT_EQ(f.lse.scalar_type(), at::kFloat);
  expect_within(f.out, x.ref.out, x.bound.out, name + " out");
  expect_within(f.lse, x.ref.lse, x.bound.lse, name + " lse");
  if (!check_grads) return;
  expect_within(f.dv, x.ref.dv, x.bound.dv, name + " dV");
  expect_within(f.dk, x.ref.dk, x.bound.dk, name + " dK");
  expect_within(f.dq, x.ref.dq, x.bound.dq, name + " dQ");
  if (c.gate == Gate::None) return;
  EXPECT_EQ(f.dg.scalar_type(), c.dtype);
  expect_within(f.dg, x.ref.dg, x.bound.dg, name + " dgate");
}

class FlashAttention : public ::testing::TestWithParam<Case> {};

TEST_P(FlashAttention, ForwardLseAndGradientsMatchMath) {
  REQUIRE_FLASH();
  check_case(GetParam(), /*check_grads=*/true);
}

// Training shapes (T == S): every length, batch, ratio, head dim and window in bf16; a
// cross-section in fp16; H = 8 query heads, so ratios 1, 4, 8 are KV = 8, 2, 1. Windows 37
// (inside one 64-key tile) and 200 (spanning tiles). Contiguous [B, H, T, D] inputs for odd
// lengths with batch 3, to cover both stride patterns.
std::vector<Case> training_cases() {
  std::vector<Case> cases;
  for (int64_t T : {1, 17, 128, 1000})
    for (int64_t B : {1, 3})
      for (int64_t ratio : {1, 4, 8})
        for (int64_t D : {64, 128})
          for (int64_t window : {0, 37, 200}) {
            const bool bthd = !(B == 3 && T % 2 == 1 && ratio == 4);
            cases.push_back({B, 8, 8 / ratio, T, T, D, window, at::kBFloat16, bthd});
          }
  for (int64_t T : {17, 1000})
    for (int64_t ratio : {1, 8})
      for (int64_t D : {64, 128})
        for (int64_t window : {0, 37}) cases.push_back({3, 8, 8 / ratio, T, T, D, window, at::kHalf, true});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Training, FlashAttention, ::testing::ValuesIn(training_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return case_name(i.param); });

// One long sequence: many key tiles per query tile, GQA 4:1, with and without a window.
INSTANTIATE_TEST_SUITE_P(Long, FlashAttention,
                         ::testing::Values(Case{1, 4, 1, 4096, 4096, 128, 0, at::kBFloat16},
                                           Case{1, 4, 1, 4096, 4096, 128, 600, at::kBFloat16}),
                         [](const ::testing::TestParamInfo<Case>& i) { return case_name(i.param); });

// The fused G1 gate (elementwise and headwise logits, head dims 64 and 128, windows on and off,
// GQA 4:1) in bf16 and fp16: an odd length inside one tile and one spanning 16 tiles, a decoding
// shape (T < S) and contiguous [B, H, T, D] q/k/v.
class FlashAttentionGated : public ::testing::TestWithParam<Case> {};

TEST_P(FlashAttentionGated, ForwardLseAndGradientsMatchMath) {
  REQUIRE_FLASH();
  check_case(GetParam(), /*check_grads=*/true);
}

std::vector<Case> gated_cases() {
  std::vector<Case> cases;
  for (Gate gate : {Gate::Elementwise, Gate::Headwise}) {
    for (int64_t T : {17, 1000})
      for (int64_t D : {64, 128})
        for (int64_t window : {0, 37}) cases.push_back({2, 8, 2, T, T, D, window, at::kBFloat16, true, gate});
    for (int64_t T : {17, 1000})
      for (int64_t D : {64, 128}) cases.push_back({2, 8, 2, T, T, D, 37, at::kHalf, true, gate});
    cases.push_back({2, 8, 2, 17, 1000, 64, 37, at::kBFloat16, true, gate});
    cases.push_back({3, 8, 2, 17, 17, 128, 0, at::kBFloat16, false, gate});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Gated, FlashAttentionGated, ::testing::ValuesIn(gated_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return case_name(i.param); });

// Documents packed in rows (data.respect_documents -> AttentionMask::segments -> the kernels'
// doc_start/doc_end): the reference masks with allowed_positions, which honours segments.
// Lengths inside one tile and spanning many, GQA 4:1 and 1:1, both head dims, windows, bf16
// and fp16, and with the fused G1 gate.
std::vector<Case> document_cases() {
  std::vector<Case> cases;
  for (int64_t T : {17, 1000})
    for (int64_t D : {64, 128})
      for (int64_t window : {0, 37}) {
        Case c{3, 8, 2, T, T, D, window, at::kBFloat16};
        c.docs = true;
        cases.push_back(c);
      }
  for (Case c : {Case{3, 8, 8, 1000, 1000, 128, 0, at::kHalf}, Case{3, 8, 8, 1000, 1000, 64, 200, at::kHalf},
                 Case{1, 4, 1, 4096, 4096, 128, 0, at::kBFloat16},
                 Case{3, 8, 2, 1000, 1000, 128, 0, at::kBFloat16, true, Gate::Elementwise},
                 Case{3, 8, 2, 1000, 1000, 64, 37, at::kBFloat16, false, Gate::Headwise}}) {
    c.docs = true;
    cases.push_back(c);
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Documents, FlashAttention, ::testing::ValuesIn(document_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return case_name(i.param); });

// ALiBi (AttentionMask::alibi_slopes -> the kernels' kAlibi): the reference adds alibi_bias.
// Slopes 2^-1..2^-8 over H = 8 heads (2^-2..2^-8 every other for 4), so the steepest head's
// softmax is nearly local and the flattest nearly uniform. One and many tiles, GQA 1:1, 4:1
// and 8:1, both head dims, windows, fp16, cached decoding (T < S: the query positions are
// offset), with documents, and with either G1 gate.
std::vector<Case> alibi_cases() {
  std::vector<Case> cases;
  for (int64_t T : {1, 17, 1000})
    for (int64_t ratio : {1, 4})
      for (int64_t D : {64, 128})
        for (int64_t window : {0, 37}) cases.push_back({T == 1000 ? 1 : 3, 8, 8 / ratio, T, T, D, window, at::kBFloat16});
  cases.push_back({3, 8, 1, 300, 300, 128, 200, at::kBFloat16, false});
  cases.push_back({2, 8, 2, 1000, 1000, 64, 0, at::kHalf});
  cases.push_back({2, 8, 8, 300, 300, 128, 37, at::kHalf});
  cases.push_back({2, 8, 2, 17, 1000, 64, 37, at::kBFloat16});
  cases.push_back({2, 4, 1, 150, 1000, 128, 0, at::kBFloat16});
  cases.push_back({1, 4, 1, 4096, 4096, 128, 0, at::kBFloat16});
  Case docs{3, 8, 2, 1000, 1000, 128, 37, at::kBFloat16};
  docs.docs = true;
  cases.push_back(docs);
  cases.push_back({2, 8, 2, 1000, 1000, 64, 0, at::kBFloat16, true, Gate::Elementwise});
  cases.push_back({2, 8, 2, 17, 17, 128, 37, at::kBFloat16, true, Gate::Headwise});
  for (Case& c : cases) c.alibi = true;
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Alibi, FlashAttention, ::testing::ValuesIn(alibi_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return case_name(i.param); });

// Logits that broadcast over batch and positions (gate input: constant) reach the kernels as a
// stride-0 expand: the same output and q/k/v gradients as the materialised logits, and the
// logits' gradient is the sum of the materialised one over batch and positions.
TEST(FlashAttentionGate, ExpandedLogitsMatchMaterialised) {
  REQUIRE_FLASH();
  for (Gate gate : {Gate::Elementwise, Gate::Headwise}) {
    const Case c{2, 4, 1, 100, 100, 64, 0, at::kBFloat16, true, gate};
    const Inputs in = make_inputs(c, 21);
    const int64_t W = gate == Gate::Headwise ? 1 : c.D;
    const at::Tensor g0 = (2 * at::randn({1, c.H, 1, W}, in.qb.options().dtype(at::kFloat))).to(c.dtype);
    std::vector<at::Tensor> outs, dvs, dgs;
    for (bool expanded : {true, false}) {
      const at::Tensor v = in.vb.detach().requires_grad_(true);
      const at::Tensor g = g0.clone().requires_grad_(true);
      const at::Tensor logits = expanded ? g : g.expand({c.B, c.H, c.T, W}).contiguous();
      auto [out, lse] = fused_attention_with_lse(heads_view(in.qb, true), heads_view(in.kb, true),
                                                 heads_view(v, true), {}, 0.125, logits);
      out.backward(in.dout);
      outs.push_back(out.detach());
      dvs.push_back(v.grad());
      dgs.push_back(g.grad());
    }
    EXPECT_TRUE(at::equal(outs[0], outs[1]));
    EXPECT_TRUE(at::equal(dvs[0], dvs[1]));
    // Both sum the same bf16 per-position gradients (fp32 accumulation, then one rounding).
    EXPECT_TRUE(at::allclose(dgs[0].to(at::kFloat), dgs[1].to(at::kFloat), 2 * unit_roundoff(c.dtype), 1e-6));
  }
}

// Gate logits whose last dimension is neither D nor 1 are refused (flash_api.cu, check_gate).
TEST(FlashAttentionGate, RejectsMisshapenLogits) {
  REQUIRE_FLASH();
  const Case c{1, 4, 2, 32, 32, 64, 0, at::kBFloat16};
  const Inputs in = make_inputs(c, 22);
  const at::Tensor q = heads_view(in.qb, true), k = heads_view(in.kb, true), v = heads_view(in.vb, true);
  const auto opts = in.qb.options();
  EXPECT_THROW(fused_attention_with_lse(q, k, v, {}, 0.1, at::zeros({1, 4, 32, 7}, opts)), c10::Error);
  EXPECT_NO_THROW(fused_attention_with_lse(q, k, v, {}, 0.1, at::zeros({1, 4, 32, 1}, opts)));
}

// Cached decoding: the T new queries are the last T of S keys (one token, a chunk shorter than
// a tile, a chunk of a few tiles), with and without a window.
class FlashAttentionDecode : public ::testing::TestWithParam<Case> {};

TEST_P(FlashAttentionDecode, ForwardMatchesMath) {
  REQUIRE_FLASH();
  check_case(GetParam(), /*check_grads=*/false);
}

// Not needed by training (T == S), but the backward handles T < S; checked separately so a
// failure here does not hide the forward's result.
TEST_P(FlashAttentionDecode, GradientsMatchMath) {
  REQUIRE_FLASH();
  check_case(GetParam(), /*check_grads=*/true);
}

std::vector<Case> decode_cases() {
  std::vector<Case> cases;
  for (int64_t T : {1, 17, 150})
    for (int64_t window : {0, 37})
      for (int64_t D : {64, 128}) cases.push_back({2, 8, 2, T, 1000, D, window, at::kBFloat16});
  cases.push_back({3, 4, 4, 1, 77, 64, 0, at::kHalf});
  cases.push_back({1, 8, 1, 5, 77, 128, 9, at::kHalf});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Decode, FlashAttentionDecode, ::testing::ValuesIn(decode_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return case_name(i.param); });

// The bounds are not vacuous: the reference with the window off by one, offered as the
// kernel's output, must violate the output bound.
TEST(FlashAttentionBounds, WrongWindowExceedsTheBound) {
  REQUIRE_FLASH();
  const Case c{1, 4, 2, 128, 128, 64, 37, at::kBFloat16};
  const Inputs in = make_inputs(c, 7);
  AttentionMask mask, wrong;
  mask.window = 37;
  wrong.window = 38;
  const double scale = 0.125;
  const at::Tensor off = make_attention_core("math")->forward(
      heads_view(in.qb, true).to(at::kFloat), heads_view(in.kb, true).to(at::kFloat),
      heads_view(in.vb, true).to(at::kFloat), wrong, scale);
  const Expected x = expected(c, in, mask, scale, off);
  EXPECT_GT(((off - x.ref.out).abs() - x.bound.out).max().item<double>(), 0.0);
}

// The same for ALiBi: the slopes of the neighbouring heads (an indexing slip) move the output
// out of its bound, and a log-sum-exp whose row part is one position off (the kernels add it to
// L separately; the output cannot see it) leaves the lse bound even for the flattest slope.
TEST(FlashAttentionBounds, WrongAlibiExceedsTheBound) {
  REQUIRE_FLASH();
  Case c{1, 8, 2, 128, 128, 64, 0, at::kBFloat16};
  c.alibi = true;
  const Inputs in = make_inputs(c, 8);
  AttentionMask mask, wrong;
  mask.alibi_slopes = alibi_slopes_tensor(c.H, at::Device(at::kCUDA));
  wrong.alibi_slopes = mask.alibi_slopes.roll(1);
  const double scale = 0.125;
  const at::Tensor q = heads_view(in.qb, true).to(at::kFloat), k = heads_view(in.kb, true).to(at::kFloat),
                   v = heads_view(in.vb, true).to(at::kFloat);
  const at::Tensor off = make_attention_core("math")->forward(q, k, v, wrong, scale);
  const Expected x = expected(c, in, mask, scale, off);
  EXPECT_GT(((off - x.ref.out).abs() - x.bound.out).max().item<double>(), 0.0);
  const at::Tensor lse_off = x.ref.lse - mask.alibi_slopes.view({1, -1, 1});
  EXPECT_GT(((lse_off - x.ref.lse).abs() - x.bound.lse).amin({0, 2}).min().item<double>(), 0.0);
}

// Forward: no atomics, fixed order, so two runs are bitwise equal. Backward: dK and dV are
// reduced in a fixed order per key tile (bitwise equal); dQ is accumulated with fp32
// atomicAdd across key tiles in an unspecified order, so it is NOT bitwise deterministic
// (docs/attention.md); it is only required to agree to fp32 rounding.
TEST(FlashAttentionDeterminism, ForwardBitwiseBackwardDkDvBitwiseDqToRounding) {
  REQUIRE_FLASH();
  const Case c{2, 8, 2, 1000, 1000, 128, 0, at::kBFloat16};
  const Inputs in = make_inputs(c, 11);
  AttentionMask mask;
  const Result a = run_fused(c, in, mask, 0.1), b = run_fused(c, in, mask, 0.1);
  EXPECT_TRUE(at::equal(a.out, b.out));
  EXPECT_TRUE(at::equal(a.lse, b.lse));
  EXPECT_TRUE(at::equal(a.dk, b.dk));
  EXPECT_TRUE(at::equal(a.dv, b.dv));
  // Two fp32 sums of the same ≤16 key-tile partials in different orders, then one bf16 cast:
  // at most one bf16 step apart.
  const at::Tensor dq_a = a.dq.to(at::kFloat), dq_b = b.dq.to(at::kFloat);
  EXPECT_LE(((dq_a - dq_b).abs() - 2 * unit_roundoff(c.dtype) * dq_b.abs()).max().item<double>(), 1e-6);
  std::cout << "dQ bitwise equal across two runs: " << (at::equal(a.dq, b.dq) ? "yes" : "no") << "\n";
}

// Row maxima that jump by more than the forward's lazy-rescaling slack part way through the
// key walk, and by less (probabilities up to ~2^7 against a stale reference max): Case::jumps.
// Both head dims and dtypes, and the gated head-dim-128 kernel (its own register allocation).
TEST(FlashAttentionSoftmax, RowMaximumJumpsMatchMath) {
  REQUIRE_FLASH();
  std::vector<Case> cases;
  for (int64_t D : {64, 128})
    for (at::ScalarType t : {at::kBFloat16, at::kHalf}) cases.push_back({2, 8, 2, 1000, 1000, D, 0, t});
  cases.push_back({2, 8, 2, 1000, 1000, 128, 0, at::kBFloat16, true, Gate::Elementwise});
  cases.push_back({1, 8, 2, 300, 1000, 64, 200, at::kHalf});  // decoding, a window
  for (Case c : cases) {
    c.jumps = true;
    SCOPED_TRACE(case_name(c));
    check_case(c, /*check_grads=*/true);
  }
}

// One case per feature at head dim D, for checks that repeat the suite's coverage on another
// code path: odd lengths, GQA 4:1 and 8:1, windows, fp16, decoding (T < S), both gates,
// documents and ALiBi.
std::vector<Case> feature_cases(int64_t D) {
  std::vector<Case> cases = {{3, 8, 2, 17, 17, D, 37, at::kBFloat16},
                             {1, 8, 1, 1000, 1000, D, 0, at::kBFloat16},
                             {2, 8, 8, 300, 300, D, 200, at::kHalf},
                             {2, 8, 2, 150, 1000, D, 37, at::kBFloat16},
                             {2, 8, 2, 1000, 1000, D, 37, at::kBFloat16, true, Gate::Elementwise},
                             {3, 8, 2, 300, 300, D, 0, at::kBFloat16, true, Gate::Headwise}};
  Case docs{3, 8, 2, 1000, 1000, D, 0, at::kBFloat16};
  docs.docs = true;
  Case alibi{2, 8, 2, 300, 300, D, 37, at::kBFloat16};
  alibi.alibi = true;
  cases.push_back(docs);
  cases.push_back(alibi);
  return cases;
}

// torch.use_deterministic_algorithms(True): dQ from the deterministic dQ kernel is bitwise the
// same over two runs and meets the reference bounds; everything else (out, lse, dK, dV, the
// gate's gradient) is bitwise what the default path computes, since only dQ's kernel changes.
// Both head dims, feature_cases.
TEST(FlashAttentionDeterminism, DeterministicAlgorithmsMakeDqBitwiseReproducible) {
  REQUIRE_FLASH();
  for (int64_t D : {64, 128}) {
    for (const Case& c : feature_cases(D)) {
      check_case(c, /*check_grads=*/true, /*deterministic=*/true);
      const Inputs in = make_inputs(c, 31);
      AttentionMask mask;
      mask.window = c.window;
      if (c.docs) mask.segments = make_segments(c);
      if (c.alibi) mask.alibi_slopes = alibi_slopes_tensor(c.H, at::Device(at::kCUDA));
      const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
      const Result plain = run_fused(c, in, mask, scale);
      Result det;
      {
        const DeterministicAlgorithmsScope on(true);
        det = run_fused(c, in, mask, scale);
      }
      const std::string name = case_name(c);
      EXPECT_TRUE(at::equal(det.out, plain.out)) << name;
      EXPECT_TRUE(at::equal(det.lse, plain.lse)) << name;
      EXPECT_TRUE(at::equal(det.dk, plain.dk)) << name;
      EXPECT_TRUE(at::equal(det.dv, plain.dv)) << name;
      if (c.gate != Gate::None) EXPECT_TRUE(at::equal(det.dg, plain.dg)) << name;
    }
  }
}

// SLUICE_FLASH_TILE_ORDER=sectioned (kernels/flash/tile_order.h) only reorders the blocks:
// every block computes what it computed in the plain order. So the forward and dK/dV are
// bitwise those of the plain order, dQ agrees to the rounding of its atomics, and the
// reference bounds hold, over causal, windowed, GQA, decoding, gated and document cases.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() { had_ ? setenv(name_, old_.c_str(), 1) : unsetenv(name_); }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

TEST(FlashAttentionTileOrder, SectionedOrderComputesWhatThePlainOrderComputes) {
  REQUIRE_FLASH();
  std::vector<Case> cases = {Case{3, 8, 2, 1000, 1000, 128, 0, at::kBFloat16},
                             Case{2, 16, 4, 2048, 2048, 64, 0, at::kBFloat16},
                             Case{3, 8, 8, 1000, 1000, 64, 200, at::kHalf},
                             Case{2, 8, 2, 17, 1000, 128, 37, at::kBFloat16},
                             Case{2, 8, 2, 1000, 1000, 128, 37, at::kBFloat16, true, Gate::Elementwise},
                             Case{2, 8, 2, 1000, 1000, 64, 0, at::kBFloat16, false, Gate::Headwise}};
  Case docs{3, 8, 2, 1000, 1000, 128, 0, at::kBFloat16};
  docs.docs = true;
  cases.push_back(docs);
  for (const Case& c : cases) {
    const Inputs in = make_inputs(c, 21);
    AttentionMask mask;
    mask.window = c.window;
    if (c.docs) mask.segments = make_segments(c);
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
    const Result plain = run_fused(c, in, mask, scale);
    Result sectioned;
    {
      const ScopedEnv order("SLUICE_FLASH_TILE_ORDER", "sectioned");
      sectioned = run_fused(c, in, mask, scale);
      check_case(c, /*check_grads=*/true);
    }
    const std::string name = case_name(c);
    EXPECT_TRUE(at::equal(plain.out, sectioned.out)) << name;
    EXPECT_TRUE(at::equal(plain.lse, sectioned.lse)) << name;
    EXPECT_TRUE(at::equal(plain.dk, sectioned.dk)) << name;
    EXPECT_TRUE(at::equal(plain.dv, sectioned.dv)) << name;
    if (c.gate != Gate::None) EXPECT_TRUE(at::equal(plain.dg, sectioned.dg)) << name;
    const at::Tensor dq_a = plain.dq.to(at::kFloat), dq_b = sectioned.dq.to(at::kFloat);
    EXPECT_LE(((dq_a - dq_b).abs() - 2 * unit_roundoff(c.dtype) * dq_b.abs()).max().item<double>(), 1e-6) << name;
  }
}

TEST(FlashAttentionTileOrder, RejectsAnUnknownOrder) {
  REQUIRE_FLASH();
  const Case c{1, 2, 1, 64, 64, 64, 0, at::kBFloat16};
  const Inputs in = make_inputs(c, 5);
  const ScopedEnv order("SLUICE_FLASH_TILE_ORDER", "lpt");
  try {
    run_fused(c, in, AttentionMask{}, 0.125);
    FAIL() << "an unknown SLUICE_FLASH_TILE_ORDER ran";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("SLUICE_FLASH_TILE_ORDER must be 'plain' or 'sectioned', got 'lpt'"),
              std::string::npos)
        << e.what();
  }
}

// The backend the model uses: the `fused` core runs the same kernels (bitwise the same output
// as fused_attention_with_lse) and is differentiable.
// The backward's smaller tiles (kernels/flash/bwd_tiles.h: what an A100 or an sm_86/sm_89 GPU
// runs, forced here with SLUICE_FLASH_BWD_TILE) meet the reference bounds as the default does,
// over odd lengths, GQA 4:1 and 8:1, windows, fp16, cached decoding, documents, ALiBi and both
// gates; and the default is the largest tile this device's shared memory takes (every larger
// one is refused with the shared-memory error).
TEST(FlashAttentionBwdTile, EveryTileMeetsTheBoundsAndTheDefaultIsTheLargestThatFits) {
  REQUIRE_FLASH();
  const at::Device device(at::kCUDA, 0);
  for (int64_t D : {64, 128}) {
    std::vector<std::string> tiles;  // the ones this device holds, largest first
    for (int i = 0; i < flash::bwd_tile_count(static_cast<int>(D)); ++i) {
      const std::string tile = flash::bwd_tile_name(flash::bwd_tile(static_cast<int>(D), i));
      const ScopedEnv env("SLUICE_FLASH_BWD_TILE", tile.c_str());
      try {
        EXPECT_EQ(fused_backward_tile(D, device), tile);
        tiles.push_back(tile);
      } catch (const std::exception& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("bytes of shared memory per block with that tile"), std::string::npos) << what;
        EXPECT_TRUE(tiles.empty()) << tile << " refused after a larger tile fitted: " << what;
        std::cout << "head dim " << D << ": tile " << tile << " does not fit this device\n";
      }
    }
    ASSERT_FALSE(tiles.empty()) << "no backward tile fits at head dim " << D;
    EXPECT_EQ(fused_backward_tile(D, device), tiles.front()) << "the default is the largest tile that fits";
    for (const std::string& tile : tiles) {
      const ScopedEnv env("SLUICE_FLASH_BWD_TILE", tile.c_str());
      for (const Case& c : feature_cases(D)) {
        SCOPED_TRACE("backward tile " + tile);
        check_case(c, /*check_grads=*/true);
      }
    }
  }
}

TEST(FusedBackend, CoreRunsTheKernels) {
  REQUIRE_FLASH();
  const Case c{2, 4, 2, 70, 70, 64, 0, at::kBFloat16};
  const Inputs in = make_inputs(c, 3);
  const auto core = make_attention_core("fused");
  EXPECT_STREQ(core->name(), "fused");
  const at::Tensor q = in.qb.detach().requires_grad_(true);
  const at::Tensor y = core->forward(heads_view(q, true), heads_view(in.kb, true), heads_view(in.vb, true), {}, 0.125);
  auto [y2, lse] = fused_attention_with_lse(heads_view(in.qb, true), heads_view(in.kb, true), heads_view(in.vb, true),
                                            {}, 0.125);
  EXPECT_TRUE(at::equal(y, y2));
  EXPECT_TRUE(y.transpose(1, 2).is_contiguous()) << "stored [B, T, H, D] so SelfAttention's transpose is free";
  y.backward(in.dout);
  ASSERT_TRUE(q.grad().defined());
  EXPECT_TRUE(q.grad().isfinite().all().item<bool>());
}

// What the kernels do not cover goes to sdpa, with the same result as the sdpa backend.
TEST(FusedBackend, FallsBackToSdpaOnCuda) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const auto opts = at::TensorOptions(at::kCUDA);
  struct Fallback {
    std::string what;
    at::ScalarType dtype;
    int64_t D;
    bool alibi;
  };
  for (const Fallback& f : {Fallback{"head dim 32", at::kBFloat16, 32, false}, Fallback{"fp32", at::kFloat, 64, false},
                            Fallback{"alibi, head dim 96", at::kBFloat16, 96, true}}) {
    at::manual_seed(5);
    const at::Tensor q = at::randn({2, 4, 33, f.D}, opts).to(f.dtype), k = at::randn({2, 2, 33, f.D}, opts).to(f.dtype),
                     v = at::randn({2, 2, 33, f.D}, opts).to(f.dtype);
    AttentionMask mask;
    if (f.alibi) mask.alibi_slopes = at::tensor({0.5f, 0.25f, 0.125f, 0.0625f}, opts);
    EXPECT_NE(fused_attention_unsupported(q, k, v, mask), "") << f.what;
    const at::Tensor fused = make_attention_core("fused")->forward(q, k, v, mask, 0.2);
    const at::Tensor sdpa = make_attention_core("sdpa")->forward(q, k, v, mask, 0.2);
    EXPECT_TRUE(at::equal(fused, sdpa)) << f.what;
  }
}

// The small model of the FusedBackend tests: head dim 64 (the kernels run), GQA 2:1, a
// windowed and a full layer.
ModelConfig small_fused_model() {
  ModelConfig m;
  m.vocab_size = 128;
  m.d_model = 128;
  m.n_layers = 2;
  m.n_heads = 2;
  m.n_kv_heads = 1;
  m.attention.window_pattern = {24, 0};
  return m;
}

// A G1-gated model (the gate then runs inside the kernels) against the same model on sdpa:
// loss and every parameter gradient of one bf16-autocast forward/backward, elementwise and
// headwise, one with the gate's projection fused into q_proj (strided logits) and a bias.
TEST(FusedBackend, G1GatedModelMatchesSdpa) {
  REQUIRE_FLASH();
  const c10::Device cuda(at::kCUDA);
  at::manual_seed(9);
  const at::Tensor tokens = at::randint(128, {2, 90}, at::kLong).to(cuda);
  struct GateCase {
    const char* granularity;
    bool fuse_q_proj;
  };
  for (const GateCase& gc : {GateCase{"elementwise", false}, GateCase{"headwise", false}, GateCase{"elementwise", true}}) {
    ModelConfig m = small_fused_model();
    m.attention.gate.position = "G1";
    m.attention.gate.granularity = gc.granularity;
    m.attention.gate.fuse_q_proj = gc.fuse_q_proj;
    m.attention.gate.bias = gc.fuse_q_proj;
    const std::string what = std::string(gc.granularity) + (gc.fuse_q_proj ? " fused q_proj" : "");
    std::vector<double> loss;
    std::vector<std::map<std::string, at::Tensor>> grads;
    for (const char* backend : {"sdpa", "fused"}) {
      m.attention.backend = backend;
      at::manual_seed(8);
      CausalLM model(m);
      model->to(cuda);
      at::Tensor l;
      {
        AutocastScope autocast(cuda, true);
        l = model->loss(tokens, tokens.roll(-1, 1));
      }
      l.backward();
      loss.push_back(l.item<double>());
      std::map<std::string, at::Tensor> g;
      for (const auto& p : model->named_parameters()) g[p.key()] = p.value().grad().to(at::kFloat);
      grads.push_back(g);
    }
    // As in ModelTrainsInBf16AndMatchesSdpa: bf16 roundings of the attention output (here one
    // rounding of O·σ(g) against sdpa's two) move the loss by far less than 0.02.
    EXPECT_NEAR(loss[0], loss[1], 0.02) << what;
    // Gradients: the same roundings, a few 2^-8 relative through two layers; a wrong gate
    // gradient or index would be off by O(1) in g_proj and everything upstream.
    for (const auto& [name, g_sdpa] : grads[0]) {
      const at::Tensor g_fused = grads[1].at(name);
      const double rel = (g_fused - g_sdpa).norm().item<double>() / (g_sdpa.norm().item<double>() + 1e-12);
      EXPECT_LT(rel, 0.05) << what << " " << name;
    }
  }
}

// A small model trains with the fused backend under bf16 autocast (head dim 64: the kernels
// run) and its first loss agrees with the sdpa backend's from the same initialisation.
// Also with ALiBi (model.position: alibi): the layers hand their slopes to the kernels, where
// sdpa adds the float bias.
TEST(FusedBackend, ModelTrainsInBf16AndMatchesSdpa) {
  REQUIRE_FLASH();
  for (const char* position : {"rope", "alibi"}) {
    SCOPED_TRACE(position);
    ModelConfig m = small_fused_model();
    m.position = position;
    const at::Tensor tokens = at::randint(128, {2, 90}, at::kLong);
    const c10::Device cuda(at::kCUDA);
    const Batch batch = to_device({tokens, tokens.roll(-1, 1)}, cuda);
    if (m.position == "alibi") {  // the kernels take these inputs (no fallback)
      AttentionMask mask;
      mask.alibi_slopes = alibi_slopes_tensor(m.n_heads, cuda);
      const at::Tensor probe = at::zeros({2, 2, 90, 64}, at::TensorOptions(cuda).dtype(at::kBFloat16));
      EXPECT_EQ(fused_attention_unsupported(probe, probe.narrow(1, 0, 1), probe.narrow(1, 0, 1), mask), "");
    }
    std::vector<double> first_loss;
    for (const char* backend : {"sdpa", "fused"}) {
      m.attention.backend = backend;
      at::manual_seed(8);
      CausalLM model(m);
      model->to(cuda);
      std::vector<std::pair<std::string, at::Tensor>> named;
      for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
      OptimConfig oc;
      AdamW opt(named, oc);
      TrainStep step(model, opt, 1.0, cuda, /*bf16=*/true);
      const double first = step.run({batch}, 1e-2).loss.item<double>();
      double last = first;
      for (int i = 0; i < 20; ++i) last = step.run({batch}, 1e-2).loss.item<double>();
      EXPECT_TRUE(std::isfinite(last)) << backend;
      EXPECT_LT(last, first - 0.5) << backend << ": overfitting one batch";
      first_loss.push_back(first);
    }
    // Same weights and tokens; the two kernels differ by bf16 rounding of the attention output
    // (a few 2^-8 relative), which moves a cross-entropy of ~ln 128 by far less than 0.02.
    EXPECT_NEAR(first_loss[0], first_loss[1], 0.02);
  }
}

// train.deterministic on the GPU (torch.use_deterministic_algorithms for the run): two runs of
// one config, `fused` attention (its deterministic dQ kernel) with GQA and a window under bf16
// autocast, give bitwise the same loss curve, and none of the model's CUDA operations stops the
// run for want of a deterministic implementation.
TEST(FusedBackend, TrainDeterministicReproducesTheLossCurveBitwise) {
  REQUIRE_FLASH();
  const testing::TempDir dir;
  const std::string corpus = testing::write_file(dir.file("corpus.txt"), testing::make_corpus(60000));
  const LoadedConfig cfg = load_config_text(
      "{}", "test",
      {"data.train=" + corpus, "model.d_model=128", "model.n_layers=2", "model.n_heads=2", "model.n_kv_heads=1",
       "model.ffn_hidden=256", "model.attention.backend=fused", "model.attention.window_pattern=[24, 0]",
       "data.seq_len=96", "train.micro_batch=4", "train.steps=12", "train.log_every=1", "train.eval_every=6",
       "train.eval_batches=2", "train.device=cuda", "train.deterministic=true", "log.level=warn"});
  std::vector<TrainSummary> runs;
  for (const char* name : {"a", "b"}) {
    TrainOptions opts;
    opts.run_dir = dir.file(name);
    runs.push_back(train(cfg, opts));
  }
  ASSERT_EQ(runs[0].logged_losses.size(), 12u);
  ASSERT_EQ(runs[1].logged_losses.size(), 12u);
  for (size_t i = 0; i < 12; ++i) EXPECT_EQ(runs[0].logged_losses[i], runs[1].logged_losses[i]) << "step " << i + 1;
  EXPECT_EQ(runs[0].final_val_loss, runs[1].final_val_loss);
  EXPECT_FALSE(at::globalContext().deterministicAlgorithms());
}

}  // namespace
}  // namespace sluice
