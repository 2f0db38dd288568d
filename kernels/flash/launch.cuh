// The launcher templates behind launch.h; included only by the per-instantiation .cu files.
#pragma once
#include <c10/cuda/CUDAException.h>

#include "flash/flash_bwd_convert_dq.cuh"
#include "flash/flash_bwd_dq_kernel.cuh"
#include "flash/flash_bwd_kernel.cuh"
#include "flash/flash_bwd_preprocess.cuh"
#include "flash/flash_fwd_kernel.cuh"
#include "flash/grid.h"
#include "flash/launch.h"
#include "flash/traits.h"

namespace sluice::flash {

// L2 the sectioned order lets one section's groups fill: a third of the H100's 50 MB (A100:
// 40 MB), leaving room for the outputs and the other streams of the step.
constexpr int64_t kTileOrderL2Budget = 16ll << 20;

// p.order for a launch of `kernel` over `grid`: the plain order, or sections sized to the blocks
// the device keeps in flight.
template <typename Kernel>
TileOrder launch_order(bool sectioned, Kernel kernel, int threads, int smem, const TileGrid& grid) {
  if (!sectioned) return TileOrder{grid.tiles, grid.groups, 1};
  int device = 0, sms = 0, per_sm = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  return plan_tile_order(grid.tiles, grid.groups, grid.group_bytes, sms * (per_sm > 0 ? per_sm : 1),
                         kTileOrderL2Budget);
}

// The instantiation for one feature set: [docs][gated][alibi] (forward), [docs][alibi][dq]
// (backward; dq false under deterministic dQ).
template <typename Traits>
auto fwd_kernel_for(bool docs, bool gated, bool alibi) {
  using Kernel = decltype(&flash_fwd_kernel<Traits, false, false, false>);
  constexpr Kernel kTable[2][2][2] = {
      {{&flash_fwd_kernel<Traits, false, false, false>, &flash_fwd_kernel<Traits, false, false, true>},
       {&flash_fwd_kernel<Traits, false, true, false>, &flash_fwd_kernel<Traits, false, true, true>}},
      {{&flash_fwd_kernel<Traits, true, false, false>, &flash_fwd_kernel<Traits, true, false, true>},
       {&flash_fwd_kernel<Traits, true, true, false>, &flash_fwd_kernel<Traits, true, true, true>}}};
  return kTable[docs][gated][alibi];
}

template <typename Traits>
auto bwd_kernel_for(bool docs, bool alibi, bool dq) {
  using Kernel = decltype(&flash_bwd_kernel<Traits, false, false, true>);
  constexpr Kernel kTable[2][2][2] = {
      {{&flash_bwd_kernel<Traits, false, false, false>, &flash_bwd_kernel<Traits, false, false, true>},
       {&flash_bwd_kernel<Traits, false, true, false>, &flash_bwd_kernel<Traits, false, true, true>}},
      {{&flash_bwd_kernel<Traits, true, false, false>, &flash_bwd_kernel<Traits, true, false, true>},
       {&flash_bwd_kernel<Traits, true, true, false>, &flash_bwd_kernel<Traits, true, true, true>}}};
  return kTable[docs][alibi][dq];
}

template <typename Traits>
auto bwd_dq_kernel_for(bool docs, bool alibi) {
  using Kernel = decltype(&flash_bwd_dq_kernel<Traits, false, false>);
  constexpr Kernel kTable[2][2] = {
      {&flash_bwd_dq_kernel<Traits, false, false>, &flash_bwd_dq_kernel<Traits, false, true>},
      {&flash_bwd_dq_kernel<Traits, true, false>, &flash_bwd_dq_kernel<Traits, true, true>}};
  return kTable[docs][alibi];
}

template <typename Traits>
void launch_fwd(const FwdParams& params, cudaStream_t stream) {
  FwdParams p = params;
  const bool gated = p.gate != nullptr;
  auto kernel = fwd_kernel_for<Traits>(p.doc_start != nullptr, gated, p.alibi_slopes != nullptr);
  const int smem = gated ? Traits::kSmemBytesGated : Traits::kSmemBytes;
  // More than the default 48 KiB of dynamic shared memory must be opted into per kernel.
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  p.order = launch_order(p.sectioned_order, kernel, Traits::kNThreads, smem, fwd_grid<Traits>(p));
  kernel<<<p.order.tiles * p.order.groups, Traits::kNThreads, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename Traits>
void launch_bwd(const BwdParams& p, cudaStream_t stream) {
  using E = typename Traits::Element;
  constexpr int kThreads = 256;
  constexpr int kRowsPerBlock = kThreads / (Traits::kHeadDim / 8);  // kHeadDim / 8 lanes per row
  const int64_t n_rows = static_cast<int64_t>(p.batch) * p.heads * p.seqlen_q;
  const bool gated = p.gate != nullptr;
  auto preprocess = gated ? &flash_bwd_preprocess_kernel<E, Traits::kHeadDim, true>
                          : &flash_bwd_preprocess_kernel<E, Traits::kHeadDim, false>;
  preprocess<<<static_cast<unsigned>((n_rows + kRowsPerBlock - 1) / kRowsPerBlock), kThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // Gated: the attention's own gradient dO = dY ⊙ σ(g) is what the main kernel differentiates.
  BwdParams pm = with_attention_dout(p);
  auto kernel = bwd_kernel_for<Traits>(p.doc_start != nullptr, p.alibi_slopes != nullptr, !p.deterministic_dq);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kSmemBytes));
  pm.order = launch_order(p.sectioned_order, kernel, Traits::kNThreads, Traits::kSmemBytes, bwd_grid<Traits>(p));
  kernel<<<pm.order.tiles * pm.order.groups, Traits::kNThreads, Traits::kSmemBytes, stream>>>(pm);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  if (!p.deterministic_dq) {  // else launch_bwd_dq writes dq
    flash_bwd_convert_dq_kernel<E, Traits::kHeadDim>
        <<<static_cast<unsigned>((n_rows + kRowsPerBlock - 1) / kRowsPerBlock), kThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// After launch_bwd (dsum and, gated, dout_attn written): dQ into p.dq, deterministically.
template <typename Traits>
void launch_bwd_dq(const BwdParams& p, cudaStream_t stream) {
  BwdParams pm = with_attention_dout(p);
  auto kernel = bwd_dq_kernel_for<Traits>(p.doc_start != nullptr, p.alibi_slopes != nullptr);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kSmemBytes));
  pm.order = launch_order(p.sectioned_order, kernel, Traits::kNThreads, Traits::kSmemBytes, bwd_dq_grid<Traits>(p));
  kernel<<<pm.order.tiles * pm.order.groups, Traits::kNThreads, Traits::kSmemBytes, stream>>>(pm);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sluice::flash
