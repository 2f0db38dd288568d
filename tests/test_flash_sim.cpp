// The flash-attention kernels' own CUDA code, run on the CPU by cuda_sim (kernels/sim/), against
// the fp32 math reference with the GPU suite's per-element bounds (flash_reference.h): output,
// log-sum-exp, dQ, dK, dV and the gate's gradient, through the host API's real parameter code
// (flash_plan.h) and launch.cuh's launch sequence (flash/sim_launch.h). Small shapes (the
// emulation runs each block's threads as fibers) that still reach every code path: several
// query and key tiles, lengths that are not tile multiples, GQA, windows inside and across
// tiles, decoding (T < S), documents, ALiBi, both gates, fp16, every backward tile, the
// deterministic dQ kernel and the sectioned block order. Schedules vary (threads in order,
// reversed, shuffled; cp.async copies landing at issue or at the wait), so a missing barrier
// or wait shows up as a wrong result, and the emulator itself fails a launch on an access
// outside shared memory or the registered global buffers, a divergent warp or a deadlock.
//
// What it cannot show: speed, fast-math approximation error (ex2/rcp are exact here), memory
// ordering beyond barriers. Label cpu: runs in CI, which has nvcc but no GPU.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "flash/flash_plan.h"
#include "flash/sim_launch.h"
#include "flash_reference.h"
#include "sim/launch.h"

namespace sluice {
namespace {

using namespace flash_test;  // NOLINT: the shared cases, inputs and reference
namespace sim_run = flash::sim_run;

// cp.async may read anywhere in a tensor's storage (the kernels index views of it).
void add_storage(sim::GlobalBuffers& buffers, const at::Tensor& t) {
  if (t.defined()) buffers.add(t.storage().data(), t.storage().nbytes());
}

struct SimSetup {
  sim_run::Config config;
  bool deterministic = false;
};

Result run_sim(const Case& c, const Inputs& in, const AttentionMask& mask, double scale, const SimSetup& s) {
  const at::Tensor q = heads_view(in.qb, c.bthd), k = heads_view(in.kb, c.bthd), v = heads_view(in.vb, c.bthd);
  const at::Tensor gate = in.gb.defined() ? heads_view(in.gb, true) : at::Tensor();
  kernels::FlashDocuments docs;
  if (mask.segments.defined()) std::tie(docs.start, docs.end) = document_bounds(mask.segments);
  const at::Tensor slopes = mask.alibi_slopes;
  sim_run::Config config = s.config;
  config.head_dim = static_cast<int>(c.D);
  config.bf16 = c.dtype == at::kBFloat16;

  kernels::FlashForwardPlan f = kernels::plan_flash_forward(q, k, v, c.window, scale, gate, docs, slopes);
  {
    sim::GlobalBuffers buffers;
    for (const at::Tensor* t : {&f.q, &f.k, &f.v, &f.gate}) add_storage(buffers, *t);
    sim_run::forward(f.params, config);
  }
  kernels::FlashBackwardPlan b = kernels::plan_flash_backward(in.dout, q, k, v, f.out, f.lse, c.window, scale, gate,
                                                              docs, slopes, s.deterministic);
  {
    sim::GlobalBuffers buffers;
    for (const at::Tensor* t : {&b.q, &b.k, &b.v, &b.out, &b.dout, &b.gate, &b.dout_attn}) add_storage(buffers, *t);
    sim_run::backward(b.params, config);
  }
  return {f.out, f.lse, b.dq, b.dk, b.dv, b.dgate};
}

void check_sim_case(const Case& c, const SimSetup& s) {
  at::globalContext().setAllowTF32CuBLAS(false);
  const Inputs in = make_inputs(c, 1234 + static_cast<uint64_t>(c.T * 7 + c.D + c.KV), at::kCPU);
  AttentionMask mask;
  mask.window = c.window;
  if (c.docs) mask.segments = make_segments(c, at::kCPU);
  if (c.alibi) mask.alibi_slopes = alibi_slopes_tensor(c.H, at::Device(at::kCPU));
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
  Result r;
  ASSERT_NO_THROW(r = run_sim(c, in, mask, scale, s));
  const Expected x = expected(c, in, mask, scale, r.out);
  const std::string name = case_name(c);
  expect_within(r.out, x.ref.out, x.bound.out, name + " out");
  expect_within(r.lse, x.ref.lse, x.bound.lse, name + " lse");
  expect_within(r.dv, x.ref.dv, x.bound.dv, name + " dV");
  expect_within(r.dk, x.ref.dk, x.bound.dk, name + " dK");
  expect_within(r.dq, x.ref.dq, x.bound.dq, name + " dQ");
  if (c.gate != Gate::None) expect_within(r.dg, x.ref.dg, x.bound.dg, name + " dgate");
}

// Head dims 64 and 128 (one forward tiling and two or three backward tiles each).
class FlashSim : public ::testing::TestWithParam<int64_t> {};

// One case per feature, default schedule: threads in order, copies landing at their wait.
TEST_P(FlashSim, FeaturesMatchMath) {
  const int64_t D = GetParam();
  std::vector<Case> cases = {
      {1, 4, 2, 17, 17, D, 0, at::kBFloat16},            // one partial tile, GQA 2:1
      // GQA 3:1, 51 rows: the backward's row kernels (preprocess, dQ conversion) end mid-warp
      {1, 3, 1, 17, 17, D, 0, at::kBFloat16},
      {1, 2, 1, 200, 200, D, 0, at::kBFloat16},          // several query and key tiles, MQA
      {2, 2, 2, 130, 130, D, 37, at::kHalf, false},      // window inside a tile, fp16, [B, H, T, D]
      // Decoding (T < S), a window across tiles that ends the backward's query walk one row past
      // a query-tile edge (last key 127 + 52 - (S - T) = 129 = 1 mod 64): an off-by-one there
      // changes how many query tiles it visits.
      {1, 4, 1, 150, 200, D, 52, at::kBFloat16},
      {2, 8, 1, 1, 77, D, 0, at::kHalf},                 // one query per row (decoding a token), GQA 8:1
      {3, 8, 1, 65, 65, D, 9, at::kBFloat16},            // batch 3, GQA 8:1, one row past a tile
      {1, 2, 1, 130, 130, D, 0, at::kBFloat16, true, Gate::Elementwise},
      {1, 3, 3, 33, 33, D, 0, at::kHalf, true, Gate::Headwise},  // 99 rows: mid-warp again
  };
  Case docs{2, 2, 1, 140, 140, D, 0, at::kBFloat16};  // row 1: length-1 documents, tile edges
  docs.docs = true;
  Case alibi{1, 4, 2, 130, 130, D, 37, at::kBFloat16};
  alibi.alibi = true;
  Case jumps{1, 2, 1, 200, 200, D, 0, at::kBFloat16};  // row maxima past the lazy rescaling's slack
  jumps.jumps = true;
  cases.insert(cases.end(), {docs, alibi, jumps});
  for (const Case& c : cases) {
    SCOPED_TRACE(case_name(c));
    check_sim_case(c, SimSetup{});
  }
}

// Races: a missing barrier or cp.async wait reads stale or half-landed shared memory in one of
// these schedules (copies landing early catch a copy issued into a buffer still being read;
// landing late, a read before the wait).
TEST_P(FlashSim, SchedulesAgree) {
  const int64_t D = GetParam();
  Case gated{1, 2, 1, 130, 130, D, 37, at::kBFloat16, true, Gate::Elementwise};
  Case docs{2, 2, 1, 140, 140, D, 0, at::kBFloat16};
  docs.docs = true;
  for (const Case& c : {gated, docs}) {
    for (sim::Order order : {sim::Order::Reversed, sim::Order::Shuffled})
      for (sim::CopyTiming copies : {sim::CopyTiming::AtIssue, sim::CopyTiming::AtWait}) {
        SimSetup s;
        s.config.options = {order, copies, 7};
        SCOPED_TRACE(case_name(c) + " order " + std::to_string(static_cast<int>(order)) + " copies " +
                     std::to_string(static_cast<int>(copies)));
        check_sim_case(c, s);
      }
  }
}

// Every backward tile of bwd_tiles.h (the GPU picks by shared memory), the deterministic dQ
// kernel, and the sectioned block order.
TEST_P(FlashSim, BackwardTilesDeterministicDqAndSectionedOrder) {
  const int64_t D = GetParam();
  Case c{1, 4, 2, 150, 150, D, 0, at::kBFloat16};
  // Window 66: key tiles' query walks end one row past a query-tile edge (last key 63 or 127,
  // + 66 = 1 mod 64), for every tile size.
  Case windowed{1, 2, 1, 300, 300, D, 66, at::kBFloat16, true, Gate::Headwise};
  const int tiles = D == 64 ? 2 : 3;
  for (int tile = 1; tile < tiles; ++tile) {
    SimSetup s;
    s.config.bwd_tile = tile;
    SCOPED_TRACE("backward tile " + std::to_string(tile));
    check_sim_case(c, s);
    check_sim_case(windowed, s);
  }
  SimSetup deterministic;
  deterministic.deterministic = true;
  SCOPED_TRACE("deterministic dQ");
  check_sim_case(c, deterministic);
  check_sim_case(windowed, deterministic);
  SimSetup sectioned;
  sectioned.config.sectioned_resident_blocks = 3;
  Case many{2, 4, 2, 200, 200, D, 0, at::kBFloat16};  // 8 groups: several sections
  SCOPED_TRACE("sectioned order");
  check_sim_case(many, sectioned);
}

INSTANTIATE_TEST_SUITE_P(HeadDims, FlashSim, ::testing::Values(64, 128),
                         [](const ::testing::TestParamInfo<int64_t>& i) { return "D" + std::to_string(i.param); });

}  // namespace
}  // namespace sluice
