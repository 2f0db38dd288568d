#include "eval/generate.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "model/kv_cache.h"
#include "train/device.h"

namespace sluice {

at::Tensor next_token_distribution(const at::Tensor& logits, const SamplingOptions& s) {
  const at::Tensor x = logits.detach().reshape({-1}).to(at::kCPU).to(at::kDouble);
  const int64_t V = x.size(0);
  at::Tensor out = at::zeros({V}, at::kDouble);
  if (s.temperature <= 0.0) {
    out[x.argmax().item<int64_t>()] = 1.0;
    return out;
  }
  const at::Tensor p = at::softmax(x / s.temperature, 0);
  // Stable descending sort: among equal probabilities the lower id comes first.
  const auto [sorted, order] = at::sort(p, /*stable=*/true, /*dim=*/0, /*descending=*/true);
  int64_t keep = s.top_k > 0 ? std::min(s.top_k, V) : V;
  if (s.top_p < 1.0) {
    const double* sp = sorted.data_ptr<double>();
    double total = 0.0;
    for (int64_t i = 0; i < keep; ++i) total += sp[i];
    double before = 0.0;  // mass of the more likely tokens kept so far
    int64_t n = 0;
    while (n < keep && before < s.top_p * total) before += sp[n++];
    keep = std::max<int64_t>(n, 1);
  }
  const at::Tensor kept = sorted.narrow(0, 0, keep);
  out.index_put_({order.narrow(0, 0, keep)}, kept / kept.sum());
  return out;
}

int32_t draw_token(const at::Tensor& probs, std::mt19937_64& rng) {
  const at::Tensor p = probs.to(at::kDouble).contiguous();
  const double* v = p.data_ptr<double>();
  const int64_t V = p.numel();
  double total = 0.0;
  for (int64_t i = 0; i < V; ++i) total += v[i];
  // 53 random bits -> u in [0, 1), the same on every platform (std::uniform_real_distribution is not).
  const double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0);
  const double target = u * total;
  double cum = 0.0;
  int64_t last = -1;
  for (int64_t i = 0; i < V; ++i) {
    if (v[i] <= 0.0) continue;
    cum += v[i];
    last = i;
    if (cum > target) return static_cast<int32_t>(i);
  }
  if (last < 0) throw std::invalid_argument("draw_token: the distribution has no mass");
  return static_cast<int32_t>(last);  // rounding left target at the very top
}

GenerateResult generate(CausalLMImpl& model, const std::vector<int32_t>& prompt, const GenerateOptions& o,
                        const c10::Device& device, bool bf16) {
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt has no tokens");
  using clock = std::chrono::steady_clock;
  at::NoGradGuard no_grad;
  AutocastScope autocast(device, bf16);
  std::mt19937_64 rng(o.seed);
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  auto ids = [&](size_t from) {
    const std::vector<int64_t> part(seq.begin() + static_cast<std::ptrdiff_t>(from), seq.end());
    return at::tensor(part, at::kLong).view({1, -1}).to(device);
  };
  KVCache cache(model.config(), static_cast<int64_t>(prompt.size()) + o.max_new_tokens);
  // Logits [V] of the token after `seq`, given that seq[0, done) is already in the cache.
  auto next_logits = [&](size_t done) -> at::Tensor {
    if (o.use_cache) return model.forward_cached(ids(done), cache)[0][-1];
    const at::Tensor h = model.hidden(ids(0));
    return model.output_head(h.narrow(1, h.size(1) - 1, 1))[0][0];
  };
  auto pick = [&](const at::Tensor& logits) -> int32_t {
    at::Tensor l = logits.to(at::kFloat);
    if (o.vocab_limit > 0 && o.vocab_limit < l.size(0)) l = l.narrow(0, 0, o.vocab_limit);
    if (o.sampling.temperature <= 0.0) return static_cast<int32_t>(l.argmax().item<int64_t>());  // no V-sized copy
    return draw_token(next_token_distribution(l, o.sampling), rng);
  };

  GenerateResult r;
  if (o.max_new_tokens <= 0) return r;
  const auto t0 = clock::now();
  auto t_prefill = t0;
  at::Tensor logits = next_logits(0);
  size_t done = seq.size();
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    const int32_t tok = pick(logits);  // the one host sync per step
    if (step == 0) t_prefill = clock::now();
    if (o.eos >= 0 && tok == o.eos) {
      r.stopped_at_eos = true;
      break;
    }
    r.tokens.push_back(tok);
    seq.push_back(tok);
    if (step + 1 == o.max_new_tokens) break;
    logits = next_logits(done);
    done = seq.size();
  }
  const auto t_end = clock::now();
  r.prefill_seconds = std::chrono::duration<double>(t_prefill - t0).count();
  r.decode_seconds = std::chrono::duration<double>(t_end - t_prefill).count();
  return r;
}

GenerateResult generate(EvalModel& m, const std::vector<int32_t>& prompt, GenerateOptions o) {
  o.eos = m.tokenizer->specials().eos;
  o.vocab_limit = m.tokenizer->vocab_size();
  return generate(*m.model, prompt, o, m.device, m.bf16);
}

}  // namespace sluice
