// The attention core: softmax(q·kᵀ·scale + mask)·v for one layer, behind one interface
// so backends (math reference, ATen SDPA, fused CUDA kernels) are chosen by config.
// Projections, positions and gates live in SelfAttention around it.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

namespace sluice {

// Which keys each query may see. Queries are the last T of S key positions
// (T == S in training; T < S when decoding with a KV cache). Query i sees key j iff j <= i,
// i - j < window (when window > 0) and, when `segments` is defined,
// segments[b, i] == segments[b, j].
struct MaskCache;

struct AttentionMask {
  int64_t window = 0;  // 0: full causal; w > 0: query at position p sees keys p-w+1..p
  // ALiBi: fp32 [H] slopes m_h on q's device; the core adds -m_h·(i-j) to the score of query i
  // and key j. Undefined: no bias.
  at::Tensor alibi_slopes;
  // [B, T] int64 document index per position, nondecreasing along T; undefined = one document.
  // Only with T == S (training/evaluation without a KV cache).
  at::Tensor segments;
  // What the cores derive from this mask (dense masks, ALiBi biases, the kernels' document
  // bounds), computed on first use and shared by every copy of the mask: the decoder sets one
  // per forward, so its layers do not each rebuild them (and SDPA's backward keeps one copy, not
  // one per layer). Null: derived at every use. One forward at a time.
  std::shared_ptr<MaskCache> cache;
};

// Keyed by what a layer changes in its copy of the mask (the window) and what a core asks for.
struct MaskCache {
  std::map<int64_t, at::Tensor> allowed;                         // window -> allowed_positions
  std::map<std::pair<int64_t, int>, at::Tensor> alibi;           // (window, dtype) -> masked_alibi_bias
  at::Tensor doc_start, doc_end;                                 // document_bounds(segments)
};

class AttentionCore {
 public:
  virtual ~AttentionCore() = default;
  // q [B, H, T, D]; k, v [B, KV, S, D] with H % KV == 0 (GQA: query head h reads kv head
  // h / (H/KV)). Returns [B, H, T, D]. `scale` multiplies q·kᵀ.
  virtual at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionMask& mask, double scale) const = 0;
  virtual const char* name() const = 0;

  // The G1 output gate of gated attention, Y = O ⊙ σ(gate_logits): logits in the output's
  // layout, broadcastable to [B, H, T, D] with last dimension D (elementwise) or 1 (headwise).
  // A core that fuses the gate into its own kernels answers true for the inputs it can run;
  // SelfAttention then calls forward_gated instead of gating O with extra passes.
  virtual bool fuses_output_gate(const at::Tensor& /*q*/, const at::Tensor& /*k*/, const at::Tensor& /*v*/,
                                 const AttentionMask& /*mask*/) const {
    return false;
  }
  // forward(...) ⊙ σ(gate_logits), in the output's dtype. The default computes exactly that with
  // ATen ops (src/model/attention_core.cpp), so it is correct for every core and every input.
  virtual at::Tensor forward_gated(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const AttentionMask& mask, double scale, const at::Tensor& gate_logits) const;
};

// The factory: "math", "sdpa" or "fused" (src/model/fused_attention.h). Throws
// std::invalid_argument for others.
std::shared_ptr<AttentionCore> make_attention_core(const std::string& backend);
std::vector<std::string> attention_backends();

// Boolean [T, S] mask, true where query t (absolute position S-T+t) may attend key s; with
// mask.segments defined (then T == S) a [B, 1, T, S] mask that also requires the same segment.
// Both broadcast against scores [B, H, T, S]. With mask.cache set, computed once per window and
// then shared (callers must not write into it).
at::Tensor allowed_positions(int64_t T, int64_t S, const AttentionMask& mask, const at::Device& device);
// Per position, the half-open range [doc_start, doc_end) of positions in its document, from
// `segments` [B, T] (integer, on any device): int32 [B, T] each. A document is a maximal run of
// equal values along T, which for nondecreasing segments is "same segment value". So with
// segments, query i sees key j iff doc_start[b, i] <= j <= i (and the window allows it), and
// key j is seen by queries j <= i < doc_end[b, j]. Device ops only (no host sync).
std::tuple<at::Tensor, at::Tensor> document_bounds(const at::Tensor& segments);
// document_bounds(mask.segments), through mask.cache when it is set.
std::tuple<at::Tensor, at::Tensor> document_bounds(const AttentionMask& mask);
// FlashAttention's variable-length form: sequences packed back to back into one row of `total`
// positions, cu_seqlens = [0, l_0, l_0 + l_1, ..., total] (integer, nondecreasing, on any
// device). Returns segments [1, total] int64 (sequence index per position) for a mask over
// q/k/v viewed as [1, heads, total, D]; empty sequences are allowed. Device ops only.
at::Tensor segments_from_cu_seqlens(const at::Tensor& cu_seqlens, int64_t total);
// The ALiBi bias -m_h·(i-j), fp32 [H, T, S] (query i at absolute position S-T+t), on the slopes' device.
at::Tensor alibi_bias(int64_t T, int64_t S, const at::Tensor& slopes);
// What the cores add to the scores with ALiBi: alibi_bias, -inf where allowed_positions is false,
// in `dtype`: [H, T, S], or [B, H, T, S] with segments. Through mask.cache when it is set
// (computed once per window and dtype; callers must not write into it).
at::Tensor masked_alibi_bias(int64_t T, int64_t S, const AttentionMask& mask, const at::Device& device,
                             at::ScalarType dtype);

}  // namespace sluice
