#include <ATen/ATen.h>

#include <functional>
#include <limits>
#include <map>
#include <stdexcept>
#include <tuple>

#include "model/fused_attention.h"
#include "sluice/attention.h"

namespace sluice {

namespace {

// A MaskCache entry for `key` made for T queries and S keys on `device`; null if there is none.
template <typename Key>
const at::Tensor* cached(const std::map<Key, at::Tensor>& entries, const Key& key, int64_t T, int64_t S,
                         const at::Device& device) {
  const auto hit = entries.find(key);
  if (hit == entries.end() || hit->second.device() != device || hit->second.size(-2) != T ||
      hit->second.size(-1) != S)
    return nullptr;
  return &hit->second;
}

}  // namespace

at::Tensor allowed_positions(int64_t T, int64_t S, const AttentionMask& mask, const at::Device& device) {
  MaskCache* cache = mask.cache.get();
  if (cache != nullptr) {
    if (const at::Tensor* hit = cached(cache->allowed, mask.window, T, S, device)) return *hit;
  }
  auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor qpos = at::arange(S - T, S, opts).unsqueeze(1);  // [T, 1] absolute positions
  const at::Tensor kpos = at::arange(0, S, opts).unsqueeze(0);      // [1, S]
  at::Tensor allowed = kpos <= qpos;
  if (mask.window > 0) allowed = allowed & (qpos - kpos < mask.window);
  if (mask.segments.defined()) {
    const at::Tensor& seg = mask.segments;
    TORCH_CHECK(T == S, "attention: document segments need as many queries as keys (no KV cache), got T=", T,
                " S=", S);
    TORCH_CHECK(seg.dim() == 2 && seg.size(1) == T, "attention: segments must be [B, T] with T=", T, ", got ",
                seg.sizes());
    const at::Tensor s = seg.to(device);
    allowed = allowed & (s.unsqueeze(2) == s.unsqueeze(1)).unsqueeze(1);  // [B, 1, T, S]
  }
  if (cache != nullptr) cache->allowed[mask.window] = allowed;
  return allowed;
}

std::tuple<at::Tensor, at::Tensor> document_bounds(const at::Tensor& segments) {
  TORCH_CHECK(segments.dim() == 2, "document_bounds: segments must be [B, T], got ", segments.sizes());
  const int64_t B = segments.size(0), T = segments.size(1);
  const auto i32 = segments.options().dtype(at::kInt);
  if (T == 0) return {at::empty({B, 0}, i32), at::empty({B, 0}, i32)};
  const auto i64 = segments.options().dtype(at::kLong);
  const at::Tensor pos = at::arange(T, i64).unsqueeze(0).expand({B, T});
  // change[b, t]: positions t and t+1 lie in different documents
  const at::Tensor change = segments.narrow(1, 1, T - 1) != segments.narrow(1, 0, T - 1);
  const at::Tensor edge = at::ones({B, 1}, segments.options().dtype(at::kBool));
  const at::Tensor first = at::cat({edge, change}, 1);  // a document starts at t
  const at::Tensor last = at::cat({change, edge}, 1);   // a document ends at t
  // The latest start at or before t, and the earliest end at or after t (scans, no sync).
  const at::Tensor start = std::get<0>(at::cummax(at::where(first, pos, at::zeros_like(pos)), 1));
  const at::Tensor end_rev = std::get<0>(at::cummin(at::where(last, pos + 1, at::full_like(pos, T)).flip({1}), 1));
  return {start.to(at::kInt), end_rev.flip({1}).to(at::kInt)};
}

std::tuple<at::Tensor, at::Tensor> document_bounds(const AttentionMask& mask) {
  MaskCache* cache = mask.cache.get();
  if (cache == nullptr) return document_bounds(mask.segments);
  if (!cache->doc_start.defined() || cache->doc_start.device() != mask.segments.device()) {
    std::tie(cache->doc_start, cache->doc_end) = document_bounds(mask.segments);
  }
  return {cache->doc_start, cache->doc_end};
}

at::Tensor segments_from_cu_seqlens(const at::Tensor& cu_seqlens, int64_t total) {
  TORCH_CHECK(cu_seqlens.dim() == 1 && cu_seqlens.numel() >= 1,
              "segments_from_cu_seqlens: cu_seqlens must be 1-D [n_sequences + 1], got ", cu_seqlens.sizes());
  TORCH_CHECK(total >= 0, "segments_from_cu_seqlens: total must be >= 0, got ", total);
  // Sequence index of position t = number of sequence ends <= t (ends are cu_seqlens[1:]).
  const at::Tensor pos = at::arange(total, cu_seqlens.options().dtype(at::kLong));
  const at::Tensor ends = cu_seqlens.narrow(0, 1, cu_seqlens.numel() - 1).to(at::kLong).contiguous();
  return at::searchsorted(ends, pos, /*out_int32=*/false, /*right=*/true).unsqueeze(0);
}

at::Tensor alibi_bias(int64_t T, int64_t S, const at::Tensor& slopes) {
  auto opts = at::TensorOptions().dtype(at::kFloat).device(slopes.device());
  const at::Tensor distance = at::arange(S - T, S, opts).unsqueeze(1) - at::arange(0, S, opts).unsqueeze(0);  // i - j
  return -slopes.to(at::kFloat).view({-1, 1, 1}) * distance;
}

at::Tensor masked_alibi_bias(int64_t T, int64_t S, const AttentionMask& mask, const at::Device& device,
                             at::ScalarType dtype) {
  MaskCache* cache = mask.cache.get();
  const std::pair<int64_t, int> key{mask.window, static_cast<int>(dtype)};
  if (cache != nullptr) {
    if (const at::Tensor* hit = cached(cache->alibi, key, T, S, device)) return *hit;
  }
  const at::Tensor bias = alibi_bias(T, S, mask.alibi_slopes.to(device))
                              .masked_fill(allowed_positions(T, S, mask, device).logical_not(),
                                           -std::numeric_limits<float>::infinity())
                              .to(dtype);
  if (cache != nullptr) cache->alibi[key] = bias;
  return bias;
}

at::Tensor AttentionCore::forward_gated(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const AttentionMask& mask, double scale, const at::Tensor& gate_logits) const {
  // The same ops as GateImpl::apply at G1 (scores cast to the output's dtype, then one product),
  // so a core without a fused gate gives what the unfused path gives.
  const at::Tensor o = forward(q, k, v, mask, scale);
  return o * at::sigmoid(gate_logits).to(o.scalar_type());
}

namespace {

// The reference: explicit scores, fp32 softmax, KV heads repeated to match query heads.
class MathAttention final : public AttentionCore {
 public:
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                     double scale) const override {
    const int64_t H = q.size(1), KV = k.size(1), T = q.size(2), S = k.size(2);
    at::Tensor kk = k, vv = v;
    if (H != KV) {
      kk = k.repeat_interleave(H / KV, /*dim=*/1);
      vv = v.repeat_interleave(H / KV, /*dim=*/1);
    }
    at::Tensor scores = at::matmul(q, kk.transpose(-2, -1)).to(at::kFloat) * scale;
    if (mask.alibi_slopes.defined()) {
      scores = scores + masked_alibi_bias(T, S, mask, q.device(), at::kFloat);  // -inf where hidden
    } else {
      scores = scores.masked_fill(allowed_positions(T, S, mask, q.device()).logical_not(),
                                  -std::numeric_limits<float>::infinity());
    }
    const at::Tensor probs = at::softmax(scores, -1).to(v.scalar_type());
    return at::matmul(probs, vv);
  }
  const char* name() const override { return "math"; }
};

// ATen's fused SDPA: flash / cuDNN / memory-efficient kernels on GPU, GQA without copies.
class SdpaAttention final : public AttentionCore {
 public:
  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                     double scale) const override {
    const int64_t T = q.size(2), S = k.size(2);
    const bool gqa = q.size(1) != k.size(1);
    if (mask.alibi_slopes.defined()) {
      // A float mask carries the bias; SDPA wants it in q's dtype, [H, T, S] broadcast over the
      // batch, or [B, H, T, S] with document segments.
      at::Tensor bias = masked_alibi_bias(T, S, mask, q.device(), q.scalar_type());
      if (bias.dim() == 3) bias = bias.unsqueeze(0);
      return at::scaled_dot_product_attention(q, k, v, bias, 0.0, false, scale, gqa);
    }
    if (mask.window == 0 && T == S && !mask.segments.defined()) {
      return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, 0.0, /*is_causal=*/true, scale, gqa);
    }
    // is_causal aligns the diagonal top-left; windows, cached decoding and document segments
    // need the explicit mask ([T, S], or [B, 1, T, S] with segments).
    return at::scaled_dot_product_attention(q, k, v, allowed_positions(T, S, mask, q.device()), 0.0, false, scale,
                                            gqa);
  }
  const char* name() const override { return "sdpa"; }
};

const std::map<std::string, std::function<std::shared_ptr<AttentionCore>()>>& registry() {
  static const std::map<std::string, std::function<std::shared_ptr<AttentionCore>()>> r = {
      {"math", [] { return std::make_shared<MathAttention>(); }},
      {"sdpa", [] { return std::make_shared<SdpaAttention>(); }},
      {"fused", [] { return make_fused_attention_core(); }},  // flash kernels, sdpa where they do not apply
  };
  return r;
}

}  // namespace

std::shared_ptr<AttentionCore> make_attention_core(const std::string& backend) {
  const auto it = registry().find(backend);
  if (it == registry().end()) throw std::invalid_argument("unknown attention backend '" + backend + "'");
  return it->second();
}

std::vector<std::string> attention_backends() {
  std::vector<std::string> names;
  for (const auto& kv : registry()) names.push_back(kv.first);
  return names;
}

}  // namespace sluice
