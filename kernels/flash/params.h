// Arguments of the flash-attention kernels: raw pointers and element strides, so q/k/v can be
// the transposed views SelfAttention passes ([B, heads, T, D] over [B, T, heads, D] memory)
// without copies. The last dimension is contiguous; every other stride is in elements and a
// multiple of 8 (16-byte vector loads), which the host API (flash_api.cu) guarantees.
#pragma once
#include <cstdint>

#include "flash/tile_order.h"

namespace sluice::flash {

struct FwdParams {
  const void* q;  // [B, H, T, D]
  const void* k;  // [B, KV, S, D]
  const void* v;  // [B, KV, S, D]
  void* o;        // [B, H, T, D]
  float* lse;     // [B, H, T] contiguous, natural log
  int64_t q_batch_stride, q_head_stride, q_row_stride;
  int64_t k_batch_stride, k_head_stride, k_row_stride;
  int64_t v_batch_stride, v_head_stride, v_row_stride;
  int64_t o_batch_stride, o_head_stride, o_row_stride;
  int batch, heads, kv_heads;  // heads % kv_heads == 0: query head h reads kv head h / (heads / kv_heads)
  int seqlen_q, seqlen_k;      // T <= S: queries are the last T of the S key positions
  int window;                  // 0: full causal; w > 0: query at position p sees keys p-w+1..p
  float scale;                 // multiplies q·k
  float scale_log2;            // scale·log2(e): the kernels exponentiate with exp2
  // Documents packed in a row (T == S only): query i sees key j only if j >= doc_start[i];
  // doc_end[j] (one past the last position of key j's document) bounds the backward's query
  // walk. int32 [B, T] with row stride doc_batch_stride; null: one document per row.
  const int* doc_start = nullptr;
  const int* doc_end = nullptr;
  int64_t doc_batch_stride = 0;
  // ALiBi (Press et al. 2022): query head h adds -alibi_slopes[h]·(i - j) to the (scaled) score
  // of query position i and key j. fp32 [H]; null: no bias (the kernels' kAlibi flag).
  const float* alibi_slopes = nullptr;
  // The G1 output gate (gate.cuh): o = softmax(q·kᵀ)·v ⊙ σ(gate); lse stays the ungated one.
  const void* gate = nullptr;  // G1 logits in q's dtype; null: ungated
  int64_t gate_batch_stride = 0, gate_row_stride = 0, gate_head_stride = 0;  // elements; headwise: gate [B, T, H] (no d), else [B, T, H, D] with d contiguous
  bool gate_headwise = false;  // one logit per (b, t, h), broadcast over D
  // Block order (tile_order.h). The host API picks plain or sectioned (sectioned_order); the
  // launcher fills `order` for each kernel's own tiles and groups.
  bool sectioned_order = false;
  TileOrder order;
};

struct BwdParams : FwdParams {
  const void* dout;     // [B, H, T, D], strides below
  float* dsum;          // [B, H, T] contiguous fp32 scratch: D_i = rowsum(dO ⊙ O) = rowsum(dY ⊙ Y), written by the preprocess kernel
  float* dq_accum;      // [B, H, dq_accum_rows, D] contiguous fp32, zeroed: Σ dS·K, added atomically by the key-tile kernel (null under deterministic dQ)
  int dq_accum_rows;    // T rounded up to a multiple of every backward query tile: rows past T take the tiles' zero padding
  void* dq;             // [B, H, T, D] in q's dtype, strides below: scale·dq_accum (flash_bwd_convert_dq.cuh)
  int64_t dq_batch_stride, dq_head_stride, dq_row_stride;
  // Deterministic dQ: the key-tile kernel skips dQ (its kDq flag) and the dQ kernel
  // (flash_bwd_dq_kernel.cuh) writes dq, each row summed in one fixed order.
  bool deterministic_dq = false;
  void* dk;             // [B, KV, S, D], strides below
  void* dv;             // [B, KV, S, D], strides below
  int64_t do_batch_stride, do_head_stride, do_row_stride;
  int64_t dk_batch_stride, dk_head_stride, dk_row_stride;
  int64_t dv_batch_stride, dv_head_stride, dv_row_stride;
  // Gated (gate != nullptr; o and dout are then Y = O ⊙ σ(g) and dY): the preprocess kernel
  // (flash_bwd_preprocess.cuh) writes dO = dY ⊙ σ(g), which the main kernel reads as its dout,
  // and the gate's gradient dgate, shaped and strided like the gate.
  void* dout_attn = nullptr;  // [B, H, T, D], q's dtype
  int64_t doa_batch_stride = 0, doa_head_stride = 0, doa_row_stride = 0;
  void* dgate = nullptr;      // q's dtype
  int64_t dgate_batch_stride = 0, dgate_row_stride = 0, dgate_head_stride = 0;
};

// The parameters with dout the attention's own dO: gated, dY ⊙ σ(g) (dout_attn, which the
// preprocess kernel wrote); ungated, dout itself.
inline BwdParams with_attention_dout(const BwdParams& p) {
  BwdParams pm = p;
  if (p.gate != nullptr) {
    pm.dout = p.dout_attn;
    pm.do_batch_stride = p.doa_batch_stride, pm.do_head_stride = p.doa_head_stride, pm.do_row_stride = p.doa_row_stride;
  }
  return pm;
}

}  // namespace sluice::flash
