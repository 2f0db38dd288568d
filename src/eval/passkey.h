// Passkey retrieval, the protocol of Landmark Attention (Mohtashami & Jaggi 2023) as used by
// CoCA: a 5-digit passkey hidden at some depth of irrelevant filler text, asked for at the
// end; the model answers by greedy decoding. Prompt construction is independent of the model
// (tests check it directly) and decoding sits behind PasskeyDecoder, so an oracle can stand in
// for a model. The protocol, exactly as implemented, is in docs/eval.md.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sluice/tokenizer.h"

namespace sluice {

struct EvalModel;

// Protocol text.
extern const char* const kPasskeyTask;      // the first line
extern const char* const kPasskeyFiller;    // the repeated filler (five sentences)
extern const char* const kPasskeyQuestion;  // the last line, answered by the continuation
// "The passkey is NNNNN. Remember it. NNNNN is the passkey."
std::string passkey_needle(const std::string& passkey);

// landmark: the protocol above (task line, needle said twice). compact: no task line and the
// needle "The passkey is NNNNN.", so that a prompt fits in a small model's short training
// length (1x and 2x of 128 tokens can then be evaluated) and a model can be trained on the
// same format (make_passkey_corpus); meant with word-sized filler units (PasskeyFiller::words).
enum class PasskeyFormat { landmark, compact };
// "landmark" / "compact"; anything else throws InputError naming `arg`.
PasskeyFormat parse_passkey_format(const std::string& s, const std::string& arg);
const char* passkey_format_name(PasskeyFormat f);

// Tokens greedily decoded for an answer: 5 digits and a space take at most 6 tokens in any
// tokenizer with a piece per digit (SentencePiece with byte fallback, bytes); 2 to spare.
constexpr int64_t kPasskeyAnswerTokens = 8;

// The text the filler is cut from: units (sentences or lines, each with its trailing
// whitespace), used in order and cyclically.
struct PasskeyFiller {
  std::vector<std::string> units;
  std::string source;  // the haystack file, empty for the protocol's filler

  // kPasskeyFiller's five sentences.
  static PasskeyFiller repeated();
  // Consecutive text of a file: split after '.', '!' or '?' followed by whitespace and after
  // each newline, units longer than 400 bytes cut at their last whitespace (or UTF-8 character
  // boundary) before 400 bytes. Throws InputError naming `arg` for a missing, empty or
  // non-UTF-8 file.
  static PasskeyFiller from_file(const std::string& path, const std::string& arg = "--haystack");
  static PasskeyFiller from_text(const std::string& text);
  // The same text with one unit per word: split after each run of whitespace, so a prompt's
  // length can be met to within one word (the compact format's short prompts).
  PasskeyFiller words() const;
};

struct PasskeyPrompt {
  std::string text;
  std::vector<int32_t> ids;  // text encoded, no special tokens
  std::string passkey;       // 5 digits
  double target_depth = 0.0;
  // Where the needle actually is: the share of the filler's characters before it.
  double depth = 0.0;
  int64_t filler_units = 0;  // N
  int64_t units_before = 0;  // k
};

// The prompt
//   TASK \n PREFIX \n NEEDLE \n SUFFIX \n QUESTION      (landmark)
//   PREFIX \n NEEDLE \n SUFFIX \n QUESTION             (compact: needle "The passkey is NNNNN.")
// where PREFIX is filler units s..s+k-1 and SUFFIX units s+k..s+N-1 (cyclic, trailing whitespace
// of each trimmed; s = first_unit, 0 for evaluation), N the largest count for which the prompt
// takes at most `length` tokens of `tok`, and k the unit boundary whose share of the N units'
// characters is closest to target_depth. Deterministic. Throws InputError naming --lengths when
// even one filler unit does not fit.
PasskeyPrompt make_passkey_prompt(const Tokenizer& tok, const PasskeyFiller& filler, int64_t length,
                                  double target_depth, int64_t passkey,
                                  PasskeyFormat format = PasskeyFormat::landmark, int64_t first_unit = 0);

// What trial `trial` at `length` draws, from (seed, length, trial) alone: the target depth uniform
// within bucket trial mod `buckets` (so the buckets get equal shares of the trials), and the
// passkey uniform in [10000, 99999].
struct PasskeyDraw {
  double target_depth;
  int64_t passkey;
};
PasskeyDraw draw_passkey_trial(uint64_t seed, int64_t length, int64_t trial, int64_t buckets);

// The first run of ASCII digits in `text` ("" when there is none): " 12345. The" -> "12345".
std::string first_digits(const std::string& text);

// Prompt ids -> generated ids (a model's greedy continuation, or an oracle in tests).
using PasskeyDecoder = std::function<std::vector<int32_t>(const std::vector<int32_t>& prompt)>;
// Greedy decoding of kPasskeyAnswerTokens tokens with the KV cache, stopping at EOS.
PasskeyDecoder model_passkey_decoder(EvalModel& m);

struct PasskeyOptions {
  std::vector<int64_t> lengths;
  int64_t trials = 20;
  uint64_t seed = 0;
  int64_t depth_buckets = 5;
  int64_t samples_per_length = 3;  // the first trials of each length are kept as samples
  PasskeyFormat format = PasskeyFormat::landmark;
};

struct PasskeySample {
  int64_t length = 0;
  double depth = 0.0;
  std::string passkey, answer;  // answer: the decoded continuation
  bool correct = false;
};

struct PasskeyBucket {
  double depth_lo = 0.0, depth_hi = 0.0;  // [lo, hi); the last bucket includes 1
  int64_t trials = 0, correct = 0;
};

struct PasskeyLengthResult {
  int64_t length = 0;
  int64_t trials = 0, correct = 0;
  int64_t prompt_tokens_min = 0, prompt_tokens_max = 0;
  std::vector<PasskeyBucket> by_depth;  // bucketed by the needle's actual depth
  double accuracy() const { return trials > 0 ? static_cast<double>(correct) / static_cast<double>(trials) : 0.0; }
};

struct PasskeyResult {
  std::vector<PasskeyLengthResult> lengths;
  std::vector<PasskeySample> samples;
};

// Runs every trial: a trial is correct when first_digits(decoded continuation) == the passkey.
PasskeyResult run_passkey(const Tokenizer& tok, const PasskeyFiller& filler, const PasskeyOptions& o,
                          const PasskeyDecoder& decode);

// The result file (docs/eval.md): kind eval_passkey, settings, trials, seed, haystack (path or
// null), results per length with by_depth buckets (accuracy null for an empty bucket), samples.
nlohmann::json passkey_json(const PasskeyResult& r, const PasskeyOptions& o, const nlohmann::json& settings,
                            const std::string& haystack);

}  // namespace sluice
