// Tensors -> flash kernel parameters (params.h): the shape, dtype and layout checks, the
// kernel-ready copies, the outputs and scratch buffers, and the filled FwdParams/BwdParams.
// Plain ATen, no CUDA calls, so the same code serves the GPU host API (flash_api.cu, which
// adds the device checks and launches) and the CPU emulation of the kernels
// (tests/test_flash_sim.cpp, on CPU tensors).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "flash/flash_api.h"
#include "flash/params.h"

namespace sluice::kernels {

// dq_accum's rows are padded to a multiple of every backward query tile (each divides this), so
// a tile's rows past T exist (flash_bwd_kernel.cuh).
constexpr int64_t kDqAccumRowMultiple = 128;

struct FlashForwardPlan {
  at::Tensor q, k, v, gate;  // as the kernels read them (copies where the inputs were not kernel-ready)
  at::Tensor out, lse;       // flash_forward's results, unwritten
  flash::FwdParams params{};  // everything but the block order (sectioned_order: false)
  bool empty() const { return out.numel() == 0; }
};
FlashForwardPlan plan_flash_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window,
                                    double scale, const at::Tensor& gate, const FlashDocuments& docs,
                                    const at::Tensor& alibi_slopes);

struct FlashBackwardPlan {
  at::Tensor q, k, v, out, dout, gate;  // as the kernels read them
  at::Tensor dq, dk, dv, dgate;         // flash_backward's results: unwritten, or zeroed when empty()
  at::Tensor dq_accum, dsum, dout_attn;  // scratch (dq_accum zeroed; undefined under deterministic dQ)
  flash::BwdParams params{};
  // Nothing to launch (B, H, T or S is 0; KV > 0 and D is 64 or 128).
  bool empty() const { return dq.numel() == 0 || dk.numel() == 0; }
};
FlashBackwardPlan plan_flash_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse, int64_t window,
                                      double scale, const at::Tensor& gate, const FlashDocuments& docs,
                                      const at::Tensor& alibi_slopes, bool deterministic);

}  // namespace sluice::kernels
