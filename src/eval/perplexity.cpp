#include "eval/perplexity.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "train/device.h"

namespace sluice {

std::vector<ScoringWindow> sliding_windows(int64_t n, int64_t window, int64_t stride) {
  std::vector<ScoringWindow> out;
  const int64_t targets = n - 1;
  int64_t scored = 0;  // targets 1..scored are done
  for (int64_t b = 0; scored < targets; b += stride) {
    const int64_t len = std::min(window, targets - b);
    out.push_back({b, len, scored - b});  // prediction i is for target b+1+i
    scored = b + len;
  }
  return out;
}

namespace {

// NLL sum over the scored predictions of windows that share one length.
double score_batch(EvalModel& m, const std::vector<const std::vector<int64_t>*>& docs,
                   const std::vector<ScoringWindow>& windows, int64_t max_chunk_elems) {
  const auto B = static_cast<int64_t>(windows.size());
  const int64_t L = windows.front().length;
  at::Tensor inputs = at::empty({B, L}, at::kLong), targets = at::empty({B, L}, at::kLong);
  at::Tensor mask = at::zeros({B, L}, at::kFloat);
  for (int64_t i = 0; i < B; ++i) {
    const ScoringWindow& w = windows[static_cast<size_t>(i)];
    const int64_t* src = docs[static_cast<size_t>(i)]->data() + w.begin;
    std::copy(src, src + L, inputs[i].data_ptr<int64_t>());
    std::copy(src + 1, src + L + 1, targets[i].data_ptr<int64_t>());
    mask[i].narrow(0, w.first_scored, L - w.first_scored).fill_(1.0);
  }
  int64_t first = L;
  for (const auto& w : windows) first = std::min(first, w.first_scored);
  AutocastScope autocast(m.device, m.bf16);
  const at::Tensor h = m.model->hidden(inputs.to(m.device));
  const int64_t V = m.config.model.vocab_size;
  const int64_t chunk = std::max<int64_t>(1, max_chunk_elems / (B * V));
  at::Tensor total = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(m.device));
  const at::Tensor tgt = targets.to(m.device), msk = mask.to(m.device);
  for (int64_t p = first; p < L; p += chunk) {
    const int64_t c = std::min(chunk, L - p);
    const at::Tensor logp = at::log_softmax(m.model->output_head(h.narrow(1, p, c)).to(at::kFloat), -1);
    const at::Tensor nll = -logp.gather(-1, tgt.narrow(1, p, c).unsqueeze(-1)).squeeze(-1);
    total += (nll * msk.narrow(1, p, c)).sum().to(at::kDouble);
  }
  return total.item<double>();
}

}  // namespace

PerplexityResult evaluate_perplexity(EvalModel& m, const TokenCorpus& corpus, int64_t window, int64_t stride,
                                     int64_t max_docs, int64_t batch, int64_t chunk) {
  at::NoGradGuard no_grad;
  PerplexityResult r;
  r.seq_len = window;
  r.stride = stride;
  const int64_t max_chunk_elems = chunk * std::max<int64_t>(1, batch) * m.config.model.vocab_size;
  std::vector<int64_t> doc;
  for (size_t s = 0; s < corpus.segments(); ++s) {
    const TokenSegment& seg = corpus.segment(s);
    for (uint64_t d = 0; d < seg.documents(); ++d) {
      if (max_docs > 0 && r.documents >= max_docs) return r;
      const uint64_t begin = seg.doc_starts()[d];
      const uint64_t end = d + 1 < seg.documents() ? seg.doc_starts()[d + 1] : seg.size();
      if (end - begin < 2) continue;
      doc.resize(end - begin);
      seg.copy(begin, end - begin, doc.data());
      ++r.documents;
      // Full-length windows of this document run `batch` at a time; a short tail runs alone.
      std::vector<ScoringWindow> pending;
      auto run = [&](const std::vector<ScoringWindow>& ws) {
        r.nll_sum += score_batch(m, std::vector<const std::vector<int64_t>*>(ws.size(), &doc), ws, max_chunk_elems);
      };
      for (const ScoringWindow& w : sliding_windows(static_cast<int64_t>(doc.size()), window, stride)) {
        r.tokens += w.length - w.first_scored;
        if (w.length != window) {
          run({w});
          continue;
        }
        pending.push_back(w);
        if (static_cast<int64_t>(pending.size()) == batch) {
          run(pending);
          pending.clear();
        }
      }
      if (!pending.empty()) run(pending);
    }
  }
  return r;
}

}  // namespace sluice
