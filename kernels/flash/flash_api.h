// Host API of the flash-attention kernels (kernels/flash/), used by the `fused` attention
// backend (src/model/fused_attention.cpp). Shapes follow AttentionCore: q [B, H, T, D],
// k and v [B, KV, S, D] with H % KV == 0 (GQA without copies), queries being the last T of
// the S key positions; any strides with a contiguous last dimension.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <tuple>

namespace sluice::kernels {

constexpr bool flash_head_dim_supported(int64_t d) { return d == 64 || d == 128; }
// The kernels use bf16 WMMA: compute capability 8.0 or newer.
bool flash_device_supported(const at::Device& device);

// Causal attention with an optional sliding window (0 = none): (out, lse) with out
// [B, H, T, D] in q's dtype (stored as [B, T, H, D], so out.transpose(1, 2) is contiguous) and
// lse fp32 [B, H, T], the natural log of Σ_j exp(scale·q·k_j) over the visible keys.
// bf16/fp16, head dim 64 or 128.
// `gate` (optional; undefined: ungated) applies the G1 output gate of gated attention in the
// kernel's epilogue: out = O ⊙ σ(gate), one rounding. Logits in q's dtype and layout,
// [B, H, T, D] (elementwise) or [B, H, T, 1] (headwise), any strides (zero ones from expand
// too). lse stays that of the ungated attention.
// `docs` (optional; T == S only): documents packed in each row, int32 [B, T] `start` (first
// position of each position's document) and `end` (one past its last); query i then sees key
// j only if j >= start[i]. Both nondecreasing along T (document_bounds, sluice/attention.h).
// `alibi_slopes` (optional): fp32 [H] on q's device; head h adds -slopes[h]·(i - j) to the
// scaled score of query position i and key j (sluice/attention.h AttentionMask), lse included.
struct FlashDocuments {
  at::Tensor start, end;
  bool defined() const { return start.defined(); }
};
std::tuple<at::Tensor, at::Tensor> flash_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 int64_t window, double scale, const at::Tensor& gate = {},
                                                 const FlashDocuments& docs = {}, const at::Tensor& alibi_slopes = {});

// (dq, dk, dv, dgate) for the gradient dout of flash_forward's out; out, lse and gate as it took
// and returned them (gated: out is the gated Y, the only output saved). dgate is shaped like
// gate, undefined when ungated. dk, dv and dgate are bitwise deterministic. dq is not by default
// (fp32 atomics from the key-tile blocks); `deterministic` computes it in a third kernel that
// sums each row in one fixed order (flash_bwd_dq_kernel.cuh), at the cost of recomputing the
// scores and dP once more.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> flash_backward(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, int64_t window, double scale, const at::Tensor& gate = {},
    const FlashDocuments& docs = {}, const at::Tensor& alibi_slopes = {}, bool deterministic = false);

// The backward's tile, "queries x keys" (bwd_tiles.h), that flash_backward runs at this head
// dim on `device`: SLUICE_FLASH_BWD_TILE if set, else the largest whose shared memory the device
// grants one block. Throws what flash_backward would when the requested tile does not fit.
std::string flash_backward_tile(int64_t head_dim, const at::Device& device);

}  // namespace sluice::kernels
