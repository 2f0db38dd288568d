// Token-level perplexity, also with the sliding-window protocol of Press et al. (ALiBi) as
// used by the CoCA paper. For a document x_0..x_{n-1} the targets are x_1..x_{n-1}. A
// window starting at b feeds x[b, b+N) and predicts x[b+1, b+N]; windows start at
// b = 0, S, 2S, ...; the first window scores all its predictions, later ones only their last
// S (the ones no earlier window scored), so every target is scored exactly once with at least
// N−S tokens of context (except near the start). S = N is the non-overlapping case.
#pragma once
#include <cstdint>
#include <vector>

#include "data/token_corpus.h"
#include "eval/eval_model.h"

namespace sluice {

struct ScoringWindow {
  int64_t begin;        // first input token
  int64_t length;       // inputs x[begin, begin + length) predict targets x[begin+1, begin+length]
  int64_t first_scored; // predictions [first_scored, length) are scored
};

// The windows for a document of n tokens (empty when n < 2).
std::vector<ScoringWindow> sliding_windows(int64_t n, int64_t window, int64_t stride);

struct PerplexityResult {
  int64_t seq_len = 0, stride = 0;
  int64_t tokens = 0;     // targets scored
  int64_t documents = 0;
  double nll_sum = 0.0;   // natural log
  double nll() const { return tokens > 0 ? nll_sum / static_cast<double>(tokens) : 0.0; }
};

// Sums the NLL of every target of the corpus' documents (the first `max_docs` when > 0),
// batching full windows `batch` at a time; logits are formed `chunk` positions at a time so
// memory grows linearly with the window length.
PerplexityResult evaluate_perplexity(EvalModel& m, const TokenCorpus& corpus, int64_t window, int64_t stride,
                                     int64_t max_docs, int64_t batch = 4, int64_t chunk = 1024);

}  // namespace sluice
