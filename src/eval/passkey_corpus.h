// Training text for the passkey task: the compact prompts of eval/passkey.h, each followed by
// its answer, cut one after another from a haystack's consecutive words. A model trained on it
// (mixed into or instead of plain text: the filler IS plain text) learns to retrieve a passkey
// within its training length; `sluice eval passkey --format compact` then asks at longer
// lengths whether that retrieval extrapolates.
#pragma once
#include <cstdint>
#include <ostream>

#include "eval/passkey.h"

namespace sluice {

struct PasskeyCorpusOptions {
  int64_t min_tokens = 96;   // a sample's length in tokens (prompt + answer), drawn uniformly
  int64_t max_tokens = 128;  // in [min_tokens, max_tokens]
  int64_t tokens = 0;        // stop once the samples hold at least this many tokens
  uint64_t seed = 0;         // of lengths, depths and passkeys
};

struct PasskeyCorpusSummary {
  int64_t samples = 0, tokens = 0;
  int64_t filler_units = 0;   // words of the haystack used (consecutively, wrapping around)
  int64_t skipped_units = 0;  // words too long for a sample, passed over
};

// The answer that follows a sample's prompt: " NNNNN.\n" (the next sample starts after it).
std::string passkey_corpus_answer(const std::string& passkey);

// Writes samples `PROMPT ANSWER` (compact format, filler units used in order from the first)
// to `out` until opts.tokens is reached. A sample of L tokens is a prompt of at most
// L - tokens(answer) tokens. Deterministic in (tokenizer, filler, opts). Throws InputError
// naming --min-length/--max-length/--tokens for bad values or a length no prompt fits in.
PasskeyCorpusSummary write_passkey_corpus(const Tokenizer& tok, const PasskeyFiller& words,
                                          const PasskeyCorpusOptions& opts, std::ostream& out);

}  // namespace sluice
