// The launcher templates behind launch.h; included only by the per-instantiation .cu files.
#pragma once
#include <c10/cuda/CUDAException.h>

#include "flash/flash_bwd_kernel.cuh"
#include "flash/flash_bwd_preprocess.cuh"
#include "flash/flash_fwd_kernel.cuh"
#include "flash/launch.h"
#include "flash/traits.h"

namespace sluice::flash {

template <typename Traits>
void launch_fwd(const FwdParams& p, cudaStream_t stream) {
  const bool docs = p.doc_start != nullptr, gated = p.gate != nullptr;
  auto kernel = docs ? (gated ? &flash_fwd_kernel<Traits, true, true> : &flash_fwd_kernel<Traits, true, false>)
                     : (gated ? &flash_fwd_kernel<Traits, false, true> : &flash_fwd_kernel<Traits, false, false>);
  const int smem = gated ? Traits::kSmemBytesGated : Traits::kSmemBytes;
  // More than the default 48 KiB of dynamic shared memory must be opted into per kernel.
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid((p.seqlen_q + Traits::kBlockM - 1) / Traits::kBlockM, p.heads, p.batch);
  kernel<<<grid, Traits::kNThreads, smem, stream>>>(p);
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
  BwdParams pm = p;
  if (gated) {
    pm.dout = p.dout_attn;
    pm.do_batch_stride = p.doa_batch_stride, pm.do_head_stride = p.doa_head_stride, pm.do_row_stride = p.doa_row_stride;
  }
  auto kernel = p.doc_start != nullptr ? &flash_bwd_kernel<Traits, true> : &flash_bwd_kernel<Traits, false>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kSmemBytes));
  const dim3 grid((p.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN, p.kv_heads, p.batch);
  kernel<<<grid, Traits::kNThreads, Traits::kSmemBytes, stream>>>(pm);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sluice::flash
