// launch.cuh's launch sequence on cuda_sim. Every feature set's kernel is instantiated (as in
// launch.cuh's tables), so the sim runs exactly the variants the GPU does.
#include "sim/cuda_sim.h"  // first: it defines SLUICE_CUDA_SIM for the kernel headers

#include "flash/sim_launch.h"

#include <stdexcept>
#include <string>
#include <type_traits>

#include "flash/flash_bwd_convert_dq.cuh"
#include "flash/flash_bwd_dq_kernel.cuh"
#include "flash/flash_bwd_kernel.cuh"
#include "flash/flash_bwd_preprocess.cuh"
#include "flash/flash_fwd_kernel.cuh"
#include "flash/grid.h"
#include "flash/tile_order.h"
#include "flash/traits.h"

namespace sluice::flash::sim_run {
namespace {

// f(std::bool_constant<a>, std::bool_constant<b>, std::bool_constant<c>): runtime flags as
// template arguments.
template <typename F>
void with_flags(bool a, bool b, bool c, const F& f) {
  auto pick_c = [&](auto A, auto B) { c ? f(A, B, std::true_type{}) : f(A, B, std::false_type{}); };
  auto pick_b = [&](auto A) { b ? pick_c(A, std::true_type{}) : pick_c(A, std::false_type{}); };
  a ? pick_b(std::true_type{}) : pick_b(std::false_type{});
}

// launch_order's plan for a small imaginary device (Config::sectioned_resident_blocks).
TileOrder order_for(const Config& c, const TileGrid& g) {
  if (c.sectioned_resident_blocks <= 0) return TileOrder{g.tiles, g.groups, 1};
  // An L2 budget of 4 groups' bytes: sections of several groups even at tiny shapes.
  return plan_tile_order(g.tiles, g.groups, g.group_bytes, c.sectioned_resident_blocks, 4 * g.group_bytes);
}

template <int D, typename E>
void forward_for(const FwdParams& params, const Config& c) {
  using Traits = FwdTraits<D, E>;
  FwdParams p = params;
  const bool gated = p.gate != nullptr;
  p.order = order_for(c, fwd_grid<Traits>(p));
  const sim::LaunchShape shape{p.order.tiles * p.order.groups, Traits::kNThreads,
                               gated ? Traits::kSmemBytesGated : Traits::kSmemBytes};
  with_flags(p.doc_start != nullptr, gated, p.alibi_slopes != nullptr, [&](auto docs, auto gate, auto alibi) {
    sim::launch(shape, c.options, [&] { flash_fwd_kernel<Traits, docs(), gate(), alibi()>(p); });
  });
}

template <int D, typename E, int kTile>
void backward_for(const BwdParams& p, const Config& c) {
  using Traits = BwdTraits<D, E, kTile>;
  constexpr int kThreads = 256;
  constexpr int kRowsPerBlock = kThreads / (D / 8);
  const int64_t n_rows = static_cast<int64_t>(p.batch) * p.heads * p.seqlen_q;
  const sim::LaunchShape rows{static_cast<int>((n_rows + kRowsPerBlock - 1) / kRowsPerBlock), kThreads, 0};
  const bool gated = p.gate != nullptr;
  sim::launch(rows, c.options, [&] {
    gated ? flash_bwd_preprocess_kernel<E, D, true>(p) : flash_bwd_preprocess_kernel<E, D, false>(p);
  });

  BwdParams pm = with_attention_dout(p);
  pm.order = order_for(c, bwd_grid<Traits>(p));
  const sim::LaunchShape shape{pm.order.tiles * pm.order.groups, Traits::kNThreads, Traits::kSmemBytes};
  with_flags(p.doc_start != nullptr, p.alibi_slopes != nullptr, !p.deterministic_dq,
             [&](auto docs, auto alibi, auto dq) {
               sim::launch(shape, c.options, [&] { flash_bwd_kernel<Traits, docs(), alibi(), dq()>(pm); });
             });

  if (!p.deterministic_dq) {
    sim::launch(rows, c.options, [&] { flash_bwd_convert_dq_kernel<E, D>(p); });
    return;
  }
  using DqTraits = BwdDqTraits<D, E>;
  BwdParams pd = with_attention_dout(p);
  pd.order = order_for(c, bwd_dq_grid<DqTraits>(p));
  const sim::LaunchShape dq_shape{pd.order.tiles * pd.order.groups, DqTraits::kNThreads, DqTraits::kSmemBytes};
  with_flags(p.doc_start != nullptr, p.alibi_slopes != nullptr, false, [&](auto docs, auto alibi, auto) {
    sim::launch(dq_shape, c.options, [&] { flash_bwd_dq_kernel<DqTraits, docs(), alibi()>(pd); });
  });
}

template <int D, typename E>
void backward_tile(const BwdParams& p, const Config& c) {
  if (c.bwd_tile == 0) return backward_for<D, E, 0>(p, c);
  if (c.bwd_tile == 1) return backward_for<D, E, 1>(p, c);
  if constexpr (bwd_tile_count(D) > 2) {
    if (c.bwd_tile == 2) return backward_for<D, E, 2>(p, c);
  }
  throw std::invalid_argument("flash sim: no backward tile " + std::to_string(c.bwd_tile) + " at head dim " +
                              std::to_string(D));
}

void check(const Config& c) {
  if (c.head_dim != 64 && c.head_dim != 128)
    throw std::invalid_argument("flash sim: head dim must be 64 or 128, got " + std::to_string(c.head_dim));
}

}  // namespace

void forward(const FwdParams& p, const Config& c) {
  check(c);
  if (c.bf16) {
    c.head_dim == 64 ? forward_for<64, __nv_bfloat16>(p, c) : forward_for<128, __nv_bfloat16>(p, c);
  } else {
    c.head_dim == 64 ? forward_for<64, __half>(p, c) : forward_for<128, __half>(p, c);
  }
}

void backward(const BwdParams& p, const Config& c) {
  check(c);
  if (c.bf16) {
    c.head_dim == 64 ? backward_tile<64, __nv_bfloat16>(p, c) : backward_tile<128, __nv_bfloat16>(p, c);
  } else {
    c.head_dim == 64 ? backward_tile<64, __half>(p, c) : backward_tile<128, __half>(p, c);
  }
}

}  // namespace sluice::flash::sim_run
