#include "eval/passkey_corpus.h"

#include <fmt/format.h>

#include <random>

#include "sluice/errors.h"

namespace sluice {

std::string passkey_corpus_answer(const std::string& passkey) { return " " + passkey + ".\n"; }

PasskeyCorpusSummary write_passkey_corpus(const Tokenizer& tok, const PasskeyFiller& words,
                                          const PasskeyCorpusOptions& o, std::ostream& out) {
  if (o.min_tokens < 1 || o.max_tokens < o.min_tokens) {
    throw InputError(fmt::format("--min-length/--max-length: expected 1 <= min <= max, got {} and {}", o.min_tokens,
                                 o.max_tokens));
  }
  if (o.tokens < 1) throw InputError(fmt::format("--tokens: expected a positive count, got {}", o.tokens));
  if (words.units.empty()) throw InputError("--haystack: the haystack has no text");
  const int64_t answer_tokens = static_cast<int64_t>(tok.encode(passkey_corpus_answer("10000")).size());
  // The shortest sample must hold the prompt's fixed text, one word of filler and the answer.
  try {
    make_passkey_prompt(tok, PasskeyFiller::from_text("a"), o.min_tokens - answer_tokens, 0.5, 10000,
                        PasskeyFormat::compact);
  } catch (const InputError& e) {
    throw InputError(fmt::format("--min-length: {} tokens cannot hold a sample: its answer takes {} tokens and its "
                                 "prompt's fixed text the rest ({})", o.min_tokens, answer_tokens, e.what()));
  }
  std::mt19937_64 rng(o.seed ^ 0x70A55CE7C0A9D5ull);
  std::uniform_int_distribution<int64_t> length(o.min_tokens, o.max_tokens);
  std::uniform_real_distribution<double> depth(0.0, 1.0);
  std::uniform_int_distribution<int64_t> key(10000, 99999);
  PasskeyCorpusSummary s;
  const auto U = static_cast<int64_t>(words.units.size());
  int64_t next = 0;  // first filler unit of the next sample
  while (s.tokens < o.tokens) {
    const int64_t L = length(rng);
    const double d = depth(rng);
    const int64_t k = key(rng);
    // A word too long for this sample's prompt (a line of dashes, a URL) is passed over; a
    // haystack made only of such words cannot make samples.
    PasskeyPrompt p;
    for (int64_t tries = 0;; ++tries) {
      if (tries >= U) throw InputError("--haystack: no word of it fits in a sample of --max-length tokens");
      try {
        p = make_passkey_prompt(tok, words, L - answer_tokens, d, k, PasskeyFormat::compact, next);
        break;
      } catch (const InputError&) {
        ++next;
        ++s.skipped_units;
      }
    }
    const std::string text = p.text + passkey_corpus_answer(p.passkey);
    out << text;
    next += p.filler_units;
    s.filler_units += p.filler_units;
    s.tokens += static_cast<int64_t>(tok.encode(text).size());
    ++s.samples;
  }
  return s;
}

}  // namespace sluice
