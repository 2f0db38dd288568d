// `sluice stats attention`: statistics gathered by a ForwardObserver during ordinary forward
// passes (no second pass):
//   - attention sink: p(q, 0), the attention probability of query q on the first key, per layer
//     and head, averaged over queries q >= 1 (query 0 can only attend to key 0). Computed from
//     the log-sum-exp of each query's scores, p(q, 0) = exp(s(q, 0) - L_q), with queries in
//     chunks, so memory is O(chunk · S) instead of the O(S²) attention matrix;
//   - gate scores per layer (mean, std, min, max, histogram over [0, 1]) and the share of SDPA
//     outputs with |y| < 1e-2 and < 1e-3 before and after the G1 gate;
//   - activation magnitudes per layer: max |h| and mean |h| of the residual stream after the
//     block, of the attention branch output and of the FFN branch output.
#pragma once
#include <ATen/core/Tensor.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/token_corpus.h"
#include "sluice/forward_observer.h"

namespace sluice {

// p(q, 0) for every query: [B, H, T] fp32. q [B, H, T, D], k [B, KV, S, D] as the core sees
// them, with the core's mask (causal, window, ALiBi, document segments: 0 for queries outside
// key 0's document) and scale.
at::Tensor first_key_probability(const at::Tensor& q, const at::Tensor& k, const AttentionMask& mask, double scale,
                                 int64_t query_chunk = 256);

// `count` sequences of `seq_len` tokens: document starts when enough documents are that long
// (spread evenly over them), else windows spread evenly over the token stream. `how` says which.
std::vector<at::Tensor> select_sequences(const TokenCorpus& corpus, int64_t seq_len, int64_t count, std::string& how);

class AttentionStatsObserver final : public ForwardObserver {
 public:
  explicit AttentionStatsObserver(int64_t n_layers, int64_t histogram_bins = 20);
  void on_attention_core(int64_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const AttentionMask& mask, double scale) override;
  void on_gate_scores(int64_t layer, const at::Tensor& scores) override;
  void on_attention_output(int64_t layer, const at::Tensor& before_gate, const at::Tensor& after_gate) override;
  void on_block_output(int64_t layer, const at::Tensor& attn_out, const at::Tensor& ffn_out,
                       const at::Tensor& residual) override;
  // The "sink", "gates", "sparsity" and "activations" sections of the result JSON.
  nlohmann::json to_json() const;

 private:
  struct Layer {
    at::Tensor sink_sum;  // [H] sum of p(q, 0) over queries q >= 1 (fp64, device)
    double sink_count = 0;
    at::Tensor gate_moments;  // [sum, sum², min, max, count, below 0, above 1] fp64
    at::Tensor gate_hist;     // [bins] fp64
    at::Tensor sparsity;      // [before<1e-2, before<1e-3, after<1e-2, after<1e-3, count] fp64
    at::Tensor act;           // [res max, res sum, attn max, attn sum, ffn max, ffn sum, count] fp64
  };
  std::vector<Layer> layers_;
  int64_t bins_;
  bool saw_gates_ = false, saw_gate_change_ = false;
};

}  // namespace sluice
