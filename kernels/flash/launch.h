// One launcher per (head dim, element type) and, backward, tile, each defined in its own .cu
// (flash_fwd_hdim64_bf16.cu, flash_bwd_hdim128_bf16_tile1.cu, ...) so nvcc compiles the
// instantiations in parallel. The explicit specializations are declared here so the host API
// can call them without seeing the kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "flash/params.h"

namespace sluice::flash {

template <int kHeadDim, typename Element>
void run_flash_fwd(const FwdParams& params, cudaStream_t stream);

// Fills params.dsum (and, gated, dout_attn and dgate), then runs the key-tile kernel with tile
// kTile of bwd_tiles.h's list for the head dim and, unless params.deterministic_dq, writes
// params.dq from params.dq_accum, which must be zeroed.
template <int kHeadDim, typename Element, int kTile>
void run_flash_bwd(const BwdParams& params, cudaStream_t stream);

// After run_flash_bwd with params.deterministic_dq: dQ written to params.dq, each row summed
// in one fixed order (flash_bwd_dq_kernel.cuh).
template <int kHeadDim, typename Element>
void run_flash_bwd_dq(const BwdParams& params, cudaStream_t stream);

#define SLUICE_FLASH_DECLARE_FWD(D, E) \
  template <>                          \
  void run_flash_fwd<D, E>(const FwdParams& params, cudaStream_t stream);
#define SLUICE_FLASH_DECLARE_BWD(D, E, TILE) \
  template <>                                \
  void run_flash_bwd<D, E, TILE>(const BwdParams& params, cudaStream_t stream);
SLUICE_FLASH_DECLARE_FWD(64, __nv_bfloat16)
SLUICE_FLASH_DECLARE_FWD(64, __half)
SLUICE_FLASH_DECLARE_FWD(128, __nv_bfloat16)
SLUICE_FLASH_DECLARE_FWD(128, __half)
// One per tile of bwd_tiles.h: two at head dim 64, three at 128.
SLUICE_FLASH_DECLARE_BWD(64, __nv_bfloat16, 0)
SLUICE_FLASH_DECLARE_BWD(64, __nv_bfloat16, 1)
SLUICE_FLASH_DECLARE_BWD(64, __half, 0)
SLUICE_FLASH_DECLARE_BWD(64, __half, 1)
SLUICE_FLASH_DECLARE_BWD(128, __nv_bfloat16, 0)
SLUICE_FLASH_DECLARE_BWD(128, __nv_bfloat16, 1)
SLUICE_FLASH_DECLARE_BWD(128, __nv_bfloat16, 2)
SLUICE_FLASH_DECLARE_BWD(128, __half, 0)
SLUICE_FLASH_DECLARE_BWD(128, __half, 1)
SLUICE_FLASH_DECLARE_BWD(128, __half, 2)
#define SLUICE_FLASH_DECLARE_BWD_DQ(D, E) \
  template <>                           \
  void run_flash_bwd_dq<D, E>(const BwdParams& params, cudaStream_t stream);
SLUICE_FLASH_DECLARE_BWD_DQ(64, __nv_bfloat16)
SLUICE_FLASH_DECLARE_BWD_DQ(64, __half)
SLUICE_FLASH_DECLARE_BWD_DQ(128, __nv_bfloat16)
SLUICE_FLASH_DECLARE_BWD_DQ(128, __half)
#undef SLUICE_FLASH_DECLARE_BWD_DQ
#undef SLUICE_FLASH_DECLARE_FWD
#undef SLUICE_FLASH_DECLARE_BWD

}  // namespace sluice::flash
