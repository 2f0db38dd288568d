#include "eval/attention_stats.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <limits>

namespace sluice {

at::Tensor first_key_probability(const at::Tensor& q, const at::Tensor& k, const AttentionMask& mask, double scale,
                                 int64_t query_chunk) {
  at::NoGradGuard no_grad;
  const int64_t H = q.size(1), T = q.size(2), KV = k.size(1), S = k.size(2);
  const at::Tensor qf = q.to(at::kFloat);
  const at::Tensor kf = (H == KV ? k : k.repeat_interleave(H / KV, 1)).to(at::kFloat);  // [B, H, S, D]: linear in S
  const auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
  const at::Tensor kpos = at::arange(S, opts);
  std::vector<at::Tensor> out;
  for (int64_t t0 = 0; t0 < T; t0 += query_chunk) {
    const int64_t c = std::min(query_chunk, T - t0);
    at::Tensor scores = at::matmul(qf.narrow(2, t0, c), kf.transpose(-2, -1)) * scale;  // [B, H, c, S]
    const at::Tensor qpos = at::arange(S - T + t0, S - T + t0 + c, opts).unsqueeze(1);   // absolute positions
    if (mask.alibi_slopes.defined()) {
      // -m_h·(i - j), the same bias the cores add (alibi_bias), for this chunk's rows only
      scores = scores - mask.alibi_slopes.to(at::kFloat).view({H, 1, 1}) * (qpos - kpos.unsqueeze(0)).to(at::kFloat);
    }
    at::Tensor allowed = kpos.unsqueeze(0) <= qpos;
    if (mask.window > 0) allowed = allowed & (qpos - kpos.unsqueeze(0) < mask.window);
    if (mask.segments.defined()) {  // as allowed_positions: T == S, keys of the query's document only
      TORCH_CHECK(T == S && mask.segments.dim() == 2 && mask.segments.size(1) == T,
                  "first_key_probability: segments must be [B, T] with as many queries as keys");
      const at::Tensor seg = mask.segments.to(q.device());
      allowed = allowed & (seg.narrow(1, t0, c).unsqueeze(2) == seg.unsqueeze(1)).unsqueeze(1);  // [B, 1, c, S]
    }
    scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity());
    const at::Tensor lse = at::logsumexp(scores, -1);  // [B, H, c]
    out.push_back(at::exp(scores.select(-1, 0) - lse));
  }
  return at::cat(out, -1);
}

std::vector<at::Tensor> select_sequences(const TokenCorpus& corpus, int64_t seq_len, int64_t count, std::string& how) {
  struct Start {
    size_t segment;
    uint64_t offset;
  };
  std::vector<Start> docs, all;
  const auto L = static_cast<uint64_t>(seq_len);
  for (size_t s = 0; s < corpus.segments(); ++s) {
    const TokenSegment& seg = corpus.segment(s);
    for (uint64_t d = 0; d < seg.documents(); ++d) {
      const uint64_t begin = seg.doc_starts()[d];
      const uint64_t end = d + 1 < seg.documents() ? seg.doc_starts()[d + 1] : seg.size();
      if (end - begin >= L) docs.push_back({s, begin});
    }
    for (uint64_t o = 0; o + L <= seg.size(); o += L) all.push_back({s, o});
  }
  const bool by_docs = !docs.empty() && static_cast<int64_t>(docs.size()) >= std::min<int64_t>(count, static_cast<int64_t>(all.size()));
  const std::vector<Start>& pool = by_docs ? docs : all;
  how = by_docs ? "document starts" : "evenly spaced windows";
  std::vector<at::Tensor> out;
  const auto n = std::min<int64_t>(count, static_cast<int64_t>(pool.size()));
  for (int64_t i = 0; i < n; ++i) {
    const Start& st = pool[static_cast<size_t>(n > 1 ? i * (static_cast<int64_t>(pool.size()) - 1) / (n - 1) : 0)];
    at::Tensor t = at::empty({1, seq_len}, at::kLong);
    corpus.segment(st.segment).copy(st.offset, L, t.data_ptr<int64_t>());
    out.push_back(t);
  }
  return out;
}

AttentionStatsObserver::AttentionStatsObserver(int64_t n_layers, int64_t histogram_bins)
    : layers_(static_cast<size_t>(n_layers)), bins_(histogram_bins) {}

void AttentionStatsObserver::on_attention_core(int64_t layer, const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& /*v*/, const AttentionMask& mask, double scale) {
  // The sink is key 0 of a row holding one document; `sluice stats attention` never packs documents.
  TORCH_CHECK(!mask.segments.defined(), "attention statistics: rows packing several documents are not supported");
  Layer& l = layers_[static_cast<size_t>(layer)];
  const at::Tensor p = first_key_probability(q, k, mask, scale);  // [B, H, T]
  if (p.size(2) < 2) return;
  // Query 0 sees only key 0 (p = 1 by construction): it says nothing about sinks.
  const at::Tensor sum = p.narrow(2, 1, p.size(2) - 1).to(at::kDouble).sum(at::IntArrayRef{0, 2});  // [H]
  l.sink_sum = l.sink_sum.defined() ? l.sink_sum + sum : sum;
  l.sink_count += static_cast<double>(p.size(0) * (p.size(2) - 1));
}

void AttentionStatsObserver::on_gate_scores(int64_t layer, const at::Tensor& scores) {
  at::NoGradGuard no_grad;
  saw_gates_ = true;
  Layer& l = layers_[static_cast<size_t>(layer)];
  const at::Tensor s = scores.detach().to(at::kDouble);
  const at::Tensor m = at::stack({s.sum(), (s * s).sum(), s.min(), s.max(), at::full({}, static_cast<double>(s.numel()), s.options()),
                                  (s < 0).sum().to(at::kDouble), (s > 1).sum().to(at::kDouble)});
  const at::Tensor hist = at::histc(s, bins_, 0.0, 1.0);
  if (!l.gate_moments.defined()) {
    l.gate_moments = m;
    l.gate_hist = hist;
  } else {
    const at::Tensor prev = l.gate_moments;
    l.gate_moments = at::stack({prev[0] + m[0], prev[1] + m[1], at::minimum(prev[2], m[2]), at::maximum(prev[3], m[3]),
                                prev[4] + m[4], prev[5] + m[5], prev[6] + m[6]});
    l.gate_hist = l.gate_hist + hist;
  }
}

void AttentionStatsObserver::on_attention_output(int64_t layer, const at::Tensor& before, const at::Tensor& after) {
  at::NoGradGuard no_grad;
  if (!before.is_same(after)) saw_gate_change_ = true;
  Layer& l = layers_[static_cast<size_t>(layer)];
  const at::Tensor b = before.detach().abs(), a = after.detach().abs();
  const at::Tensor v = at::stack({(b < 1e-2).sum(), (b < 1e-3).sum(), (a < 1e-2).sum(), (a < 1e-3).sum()}).to(at::kDouble);
  const at::Tensor row = at::cat({v, at::full({1}, static_cast<double>(b.numel()), v.options())});
  l.sparsity = l.sparsity.defined() ? l.sparsity + row : row;
}

void AttentionStatsObserver::on_block_output(int64_t layer, const at::Tensor& attn, const at::Tensor& ffn,
                                             const at::Tensor& residual) {
  at::NoGradGuard no_grad;
  Layer& l = layers_[static_cast<size_t>(layer)];
  std::vector<at::Tensor> v;
  for (const at::Tensor* t : {&residual, &attn, &ffn}) {
    const at::Tensor a = t->detach().abs().to(at::kDouble);
    v.push_back(a.max());
    v.push_back(a.sum());
  }
  v.push_back(at::full({}, static_cast<double>(residual.numel()), v[0].options()));
  const at::Tensor row = at::stack(v);
  if (!l.act.defined()) {
    l.act = row;
  } else {
    const at::Tensor p = l.act;
    l.act = at::stack({at::maximum(p[0], row[0]), p[1] + row[1], at::maximum(p[2], row[2]), p[3] + row[3],
                       at::maximum(p[4], row[4]), p[5] + row[5], p[6] + row[6]});
  }
}

nlohmann::json AttentionStatsObserver::to_json() const {
  auto host = [](const at::Tensor& t) { return t.to(at::kCPU).to(at::kDouble).contiguous(); };
  nlohmann::json sink = {{"query0_excluded", true}};
  nlohmann::json per_layer = nlohmann::json::array(), per_layer_head = nlohmann::json::array();
  double total = 0, heads = 0, over_half = 0;
  for (const Layer& l : layers_) {
    if (!l.sink_sum.defined()) {
      per_layer.push_back(nullptr);
      per_layer_head.push_back(nullptr);
      continue;
    }
    const at::Tensor mean = host(l.sink_sum) / l.sink_count;
    std::vector<double> h(mean.data_ptr<double>(), mean.data_ptr<double>() + mean.numel());
    double sum = 0;
    for (double x : h) {
      sum += x;
      over_half += x > 0.5;
    }
    heads += static_cast<double>(h.size());
    per_layer_head.push_back(h);
    per_layer.push_back(sum / static_cast<double>(h.size()));
    total += sum / static_cast<double>(h.size());
  }
  const auto n_layers = static_cast<double>(layers_.size());
  sink["per_layer"] = per_layer;
  sink["per_layer_head"] = per_layer_head;
  sink["mean"] = heads > 0 ? nlohmann::json(total / n_layers) : nlohmann::json(nullptr);
  sink["share_heads_over_half"] = heads > 0 ? nlohmann::json(over_half / heads) : nlohmann::json(nullptr);
  sink["definition"] = "p(q,0) = exp(s(q,0) - logsumexp_j s(q,j)), averaged over queries q >= 1, sequences and heads";

  nlohmann::json out = {{"sink", sink}, {"gates", nullptr}, {"sparsity", nullptr}};
  if (saw_gates_) {
    nlohmann::json g = nlohmann::json::array();
    for (const Layer& l : layers_) {
      if (!l.gate_moments.defined()) {
        g.push_back(nullptr);
        continue;
      }
      const at::Tensor m = host(l.gate_moments);
      const double* p = m.data_ptr<double>();
      const double n = p[4], mean = p[0] / n;
      const at::Tensor hist = host(l.gate_hist);
      std::vector<double> edges;
      for (int64_t i = 0; i <= bins_; ++i) edges.push_back(static_cast<double>(i) / static_cast<double>(bins_));
      g.push_back({{"mean", mean},
                   {"std", std::sqrt(std::max(0.0, p[1] / n - mean * mean))},
                   {"min", p[2]},
                   {"max", p[3]},
                   {"count", n},
                   {"below_0", p[5]},
                   {"above_1", p[6]},
                   {"histogram",
                    {{"edges", edges},
                     {"counts", std::vector<double>(hist.data_ptr<double>(), hist.data_ptr<double>() + hist.numel())}}}});
    }
    out["gates"] = {{"per_layer", g}};
  }
  if (saw_gates_ || saw_gate_change_) {
    nlohmann::json sp = nlohmann::json::array();
    for (const Layer& l : layers_) {
      if (!l.sparsity.defined()) {
        sp.push_back(nullptr);
        continue;
      }
      const at::Tensor s = host(l.sparsity);
      const double* p = s.data_ptr<double>();
      sp.push_back({{"before", {{"lt_1e-2", p[0] / p[4]}, {"lt_1e-3", p[1] / p[4]}}},
                    {"after", {{"lt_1e-2", p[2] / p[4]}, {"lt_1e-3", p[3] / p[4]}}}});
    }
    out["sparsity"] = {{"per_layer", sp}, {"definition", "share of SDPA output values with |y| below the threshold, before and after the G1 gate"}};
  }
  nlohmann::json act = nlohmann::json::array();
  for (const Layer& l : layers_) {
    if (!l.act.defined()) {
      act.push_back(nullptr);
      continue;
    }
    const at::Tensor a = host(l.act);
    const double* p = a.data_ptr<double>();
    act.push_back({{"residual_max", p[0]}, {"residual_mean", p[1] / p[6]}, {"attn_max", p[2]}, {"attn_mean", p[3] / p[6]},
                   {"ffn_max", p[4]}, {"ffn_mean", p[5] / p[6]}});
  }
  out["activations"] = {{"per_layer", act}};
  return out;
}

}  // namespace sluice
