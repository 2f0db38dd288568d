// Autoregressive generation: prefill the prompt, then one token at a time, with a KV cache
// (model/kv_cache.h) or by recomputing the whole sequence each step. Temperature 0 is greedy
// (argmax); otherwise temperature, then top-k, then top-p (nucleus) filter the distribution,
// and a seeded generator of our own draws from it, so the same seed gives the same tokens.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <random>
#include <vector>

#include "eval/eval_model.h"
#include "sluice/model.h"

namespace sluice {

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy
  int64_t top_k = 0;         // keep the k most likely tokens; 0: all
  double top_p = 1.0;        // keep the most likely tokens until their mass reaches p; 1: all
};

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  SamplingOptions sampling;
  uint64_t seed = 0;
  bool use_cache = true;
  int32_t eos = -1;         // stop when this token is drawn (it is not returned); -1: never
  int64_t vocab_limit = 0;  // only ids < vocab_limit are drawn (the tokenizer's vocabulary); 0: all
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // the new tokens, EOS excluded
  bool stopped_at_eos = false;
  double prefill_seconds = 0.0;  // the prompt's forward
  double decode_seconds = 0.0;   // every later step
};

// The distribution the next token is drawn from: logits [V] (any float dtype/device) ->
// probabilities [V] fp64 on the CPU. Temperature 0 puts all mass on the argmax (the first
// one on ties). Otherwise softmax(logits / T), then only the top_k largest kept (ties at the
// k-th value broken by index), then in decreasing order of probability each token is kept
// while the mass of the tokens before it is < top_p, then renormalised.
at::Tensor next_token_distribution(const at::Tensor& logits, const SamplingOptions& s);

// Inverse-CDF draw from `probs` [V] fp64 CPU with one uniform number from `rng`.
int32_t draw_token(const at::Tensor& probs, std::mt19937_64& rng);

// Generates up to o.max_new_tokens tokens after `prompt` (non-empty), batch size 1, under
// bf16 autocast when `bf16`. The model is used as it is (call eval() first).
GenerateResult generate(CausalLMImpl& model, const std::vector<int32_t>& prompt, const GenerateOptions& o,
                        const c10::Device& device, bool bf16);
// Same with the evaluation model's device and precision; o.eos and o.vocab_limit are set to
// the tokenizer's EOS and vocabulary size (the model's may be rounded up past it).
GenerateResult generate(EvalModel& m, const std::vector<int32_t>& prompt, GenerateOptions o);

}  // namespace sluice
