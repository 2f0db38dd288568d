// One launcher per (head dim, element type), each defined in its own .cu
// (flash_fwd_hdim64_bf16.cu, ...) so nvcc compiles the instantiations in parallel. The
// explicit specializations are declared here so the host API can call them without seeing
// the kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "flash/params.h"

namespace sluice::flash {

template <int kHeadDim, typename Element>
void run_flash_fwd(const FwdParams& params, cudaStream_t stream);

// Fills params.dsum (and, gated, dout_attn and dgate), then runs the key-tile kernel;
// params.dq_accum must be zeroed.
template <int kHeadDim, typename Element>
void run_flash_bwd(const BwdParams& params, cudaStream_t stream);

#define SLUICE_FLASH_DECLARE(D, E)                                   \
  template <>                                                        \
  void run_flash_fwd<D, E>(const FwdParams& params, cudaStream_t stream); \
  template <>                                                        \
  void run_flash_bwd<D, E>(const BwdParams& params, cudaStream_t stream);
SLUICE_FLASH_DECLARE(64, __nv_bfloat16)
SLUICE_FLASH_DECLARE(64, __half)
SLUICE_FLASH_DECLARE(128, __nv_bfloat16)
SLUICE_FLASH_DECLARE(128, __half)
#undef SLUICE_FLASH_DECLARE

}  // namespace sluice::flash
