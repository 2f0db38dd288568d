#include "eval/passkey.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <random>

#include "data/utf8.h"
#include "eval/eval_model.h"
#include "eval/generate.h"
#include "sluice/errors.h"
#include "sluice/fs.h"

namespace sluice {

const char* const kPasskeyTask =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you "
    "about the important information there.";
const char* const kPasskeyFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const char* const kPasskeyQuestion = "What is the passkey? The passkey is";

std::string passkey_needle(const std::string& passkey) {
  return "The passkey is " + passkey + ". Remember it. " + passkey + " is the passkey.";
}

PasskeyFormat parse_passkey_format(const std::string& s, const std::string& arg) {
  if (s == "landmark") return PasskeyFormat::landmark;
  if (s == "compact") return PasskeyFormat::compact;
  throw InputError(arg + ": expected landmark or compact, got '" + s + "'");
}

const char* passkey_format_name(PasskeyFormat f) { return f == PasskeyFormat::compact ? "compact" : "landmark"; }

namespace {

constexpr size_t kMaxUnitBytes = 400;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::string rtrim(std::string s) {
  while (!s.empty() && is_space(s.back())) s.pop_back();
  return s;
}

// Appends `u`, cut into pieces of at most kMaxUnitBytes; whitespace-only text joins the previous unit.
void push_unit(std::vector<std::string>& units, std::string u) {
  while (u.size() > kMaxUnitBytes) {
    size_t cut = 0;
    for (size_t i = kMaxUnitBytes; i-- > 1;) {
      if (is_space(u[i - 1])) {
        cut = i;
        break;
      }
    }
    if (cut == 0) {  // no whitespace: the last UTF-8 character boundary
      cut = kMaxUnitBytes;
      while (cut > 1 && (static_cast<unsigned char>(u[cut]) & 0xC0) == 0x80) --cut;
    }
    units.push_back(u.substr(0, cut));
    u.erase(0, cut);
  }
  if (u.empty()) return;
  if (rtrim(u).empty() && !units.empty()) {
    units.back() += u;
    return;
  }
  units.push_back(std::move(u));
}

const std::string& unit(const PasskeyFiller& f, int64_t i) {
  return f.units[static_cast<size_t>(i % static_cast<int64_t>(f.units.size()))];
}

// Filler units a..b-1 (cyclic), trailing whitespace trimmed.
std::string filler_text(const PasskeyFiller& f, int64_t a, int64_t b) {
  std::string s;
  for (int64_t i = a; i < b; ++i) s += unit(f, i);
  return rtrim(std::move(s));
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

double unit_interval(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0); }

}  // namespace

PasskeyFiller PasskeyFiller::from_text(const std::string& text) {
  PasskeyFiller f;
  size_t start = 0, i = 0;
  const size_t n = text.size();
  while (i < n) {
    size_t end = 0;
    if (text[i] == '\n') {
      end = i + 1;
    } else if ((text[i] == '.' || text[i] == '!' || text[i] == '?') && i + 1 < n && is_space(text[i + 1])) {
      size_t j = i + 1;
      while (j < n && is_space(text[j]) && text[j] != '\n') ++j;
      if (j < n && text[j] == '\n') ++j;
      end = j;
    }
    if (end > 0) {
      push_unit(f.units, text.substr(start, end - start));
      start = i = end;
    } else {
      ++i;
    }
  }
  if (start < n) push_unit(f.units, text.substr(start));
  return f;
}

PasskeyFiller PasskeyFiller::repeated() {
  PasskeyFiller f = from_text(std::string(kPasskeyFiller) + " ");
  return f;
}

PasskeyFiller PasskeyFiller::from_file(const std::string& path, const std::string& arg) {
  const std::optional<std::string> read = read_whole_file(path);
  if (!read) throw InputError(arg + ": cannot read '" + path + "'");
  const std::string& text = *read;
  if (rtrim(text).empty()) throw InputError(arg + ": '" + path + "' holds no text");
  const uint64_t bad = find_invalid_utf8(text);
  if (bad != Utf8Validator::npos) throw InputError(fmt::format("{}: '{}' is not UTF-8 (byte {})", arg, path, bad));
  PasskeyFiller f = from_text(text);
  f.source = path;
  return f;
}

PasskeyFiller PasskeyFiller::words() const {
  PasskeyFiller f;
  f.source = source;
  for (const std::string& u : units) {
    size_t start = 0;
    for (size_t i = 0; i < u.size(); ++i) {
      if (is_space(u[i]) && (i + 1 == u.size() || !is_space(u[i + 1]))) {
        push_unit(f.units, u.substr(start, i + 1 - start));
        start = i + 1;
      }
    }
    if (start < u.size()) push_unit(f.units, u.substr(start));
  }
  return f;
}

PasskeyPrompt make_passkey_prompt(const Tokenizer& tok, const PasskeyFiller& filler, int64_t length,
                                  double target_depth, int64_t passkey, PasskeyFormat format, int64_t first_unit) {
  if (filler.units.empty()) throw InputError("passkey: the filler has no text");
  PasskeyPrompt p;
  p.passkey = std::to_string(passkey);
  p.target_depth = target_depth;
  const bool compact = format == PasskeyFormat::compact;
  const std::string head = compact ? std::string() : std::string(kPasskeyTask) + "\n";
  const std::string needle = "\n" + (compact ? "The passkey is " + p.passkey + "." : passkey_needle(p.passkey)) + "\n";
  const std::string tail = "\n" + std::string(kPasskeyQuestion);
  // k: the unit boundary whose share of the filler's characters is closest to the target, so the
  // needle's depth is within half a unit of it whatever the units' lengths.
  auto before = [&](int64_t n) {
    std::vector<double> cum(static_cast<size_t>(n) + 1, 0.0);
    for (int64_t i = 0; i < n; ++i) {
      cum[static_cast<size_t>(i) + 1] = cum[static_cast<size_t>(i)] + static_cast<double>(unit(filler, first_unit + i).size());
    }
    const double want = target_depth * cum.back();
    const auto it = std::lower_bound(cum.begin(), cum.end(), want);
    int64_t k = it - cum.begin();
    if (k > 0 && (k > n || want - cum[static_cast<size_t>(k) - 1] <= cum[static_cast<size_t>(k)] - want)) --k;
    return k;
  };
  auto build = [&](int64_t n) {
    const int64_t k = before(n);
    return head + filler_text(filler, first_unit, first_unit + k) + needle + filler_text(filler, first_unit + k, first_unit + n) + tail;
  };
  std::map<int64_t, int64_t> measured;  // filler units -> prompt tokens
  auto tokens = [&](int64_t n) {
    auto it = measured.find(n);
    if (it == measured.end()) it = measured.emplace(n, static_cast<int64_t>(tok.encode(build(n)).size())).first;
    return it->second;
  };
  auto fits = [&](int64_t n) { return tokens(n) <= length; };
  if (!fits(1)) {
    throw InputError(fmt::format("--lengths: {} tokens is too short for a passkey prompt (one filler unit already "
                                 "takes {} tokens)", length, tokens(1)));
  }
  // Find N with fits(N) and !fits(N + 1), starting from a guess at the tokens per unit.
  const int64_t probe = std::min<int64_t>(static_cast<int64_t>(filler.units.size()), 32) + 1;
  const double per_unit = std::max(1e-3, static_cast<double>(tokens(probe) - tokens(1)) / static_cast<double>(probe - 1));
  const int64_t guess = std::max<int64_t>(1, 1 + static_cast<int64_t>(static_cast<double>(length - tokens(1)) / per_unit));
  int64_t lo = 1, hi = 0;  // fits(lo); !fits(hi) once hi > lo
  int64_t step = std::max<int64_t>(1, guess / 64);
  if (fits(guess)) {
    lo = guess;
    for (;; step *= 2) {
      if (!fits(lo + step)) {
        hi = lo + step;
        break;
      }
      lo += step;
    }
  } else {
    hi = guess;
    for (;; step *= 2) {
      const int64_t c = std::max<int64_t>(1, hi - step);
      if (fits(c)) {
        lo = c;
        break;
      }
      hi = c;
    }
  }
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  p.filler_units = lo;
  p.units_before = before(lo);
  p.text = build(lo);
  p.ids = tok.encode(p.text);
  const double pre = static_cast<double>(filler_text(filler, first_unit, first_unit + p.units_before).size());
  const double post = static_cast<double>(filler_text(filler, first_unit + p.units_before, first_unit + lo).size());
  p.depth = pre + post > 0 ? pre / (pre + post) : 0.0;
  return p;
}

PasskeyDraw draw_passkey_trial(uint64_t seed, int64_t length, int64_t trial, int64_t buckets) {
  std::mt19937_64 rng(splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(length)) ^ static_cast<uint64_t>(trial)));
  PasskeyDraw d;
  const int64_t b = trial % std::max<int64_t>(1, buckets);
  d.target_depth = (static_cast<double>(b) + unit_interval(rng)) / static_cast<double>(std::max<int64_t>(1, buckets));
  d.passkey = 10000 + static_cast<int64_t>(rng() % 90000);
  return d;
}

std::string first_digits(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c >= '0' && c <= '9') {
      out.push_back(c);
    } else if (!out.empty()) {
      break;
    }
  }
  return out;
}

PasskeyDecoder model_passkey_decoder(EvalModel& m) {
  return [&m](const std::vector<int32_t>& prompt) {
    GenerateOptions o;
    o.max_new_tokens = kPasskeyAnswerTokens;
    o.sampling.temperature = 0.0;
    o.use_cache = true;
    return generate(m, prompt, o).tokens;
  };
}

PasskeyResult run_passkey(const Tokenizer& tok, const PasskeyFiller& filler, const PasskeyOptions& o,
                          const PasskeyDecoder& decode) {
  PasskeyResult r;
  const int64_t B = std::max<int64_t>(1, o.depth_buckets);
  for (int64_t length : o.lengths) {
    PasskeyLengthResult lr;
    lr.length = length;
    for (int64_t b = 0; b < B; ++b) {
      lr.by_depth.push_back({static_cast<double>(b) / static_cast<double>(B),
                             static_cast<double>(b + 1) / static_cast<double>(B), 0, 0});
    }
    for (int64_t t = 0; t < o.trials; ++t) {
      const PasskeyDraw d = draw_passkey_trial(o.seed, length, t, B);
      const PasskeyPrompt p = make_passkey_prompt(tok, filler, length, d.target_depth, d.passkey, o.format);
      const std::string answer = tok.decode(decode(p.ids));
      const bool correct = first_digits(answer) == p.passkey;
      const auto n = static_cast<int64_t>(p.ids.size());
      lr.prompt_tokens_min = t == 0 ? n : std::min(lr.prompt_tokens_min, n);
      lr.prompt_tokens_max = std::max(lr.prompt_tokens_max, n);
      ++lr.trials;
      lr.correct += correct;
      const int64_t bucket = std::min<int64_t>(B - 1, static_cast<int64_t>(std::floor(p.depth * static_cast<double>(B))));
      ++lr.by_depth[static_cast<size_t>(bucket)].trials;
      lr.by_depth[static_cast<size_t>(bucket)].correct += correct;
      if (t < o.samples_per_length) r.samples.push_back({length, p.depth, p.passkey, answer, correct});
    }
    r.lengths.push_back(std::move(lr));
  }
  return r;
}

nlohmann::json passkey_json(const PasskeyResult& r, const PasskeyOptions& o, const nlohmann::json& settings,
                            const std::string& haystack) {
  using json = nlohmann::json;
  json results = json::array();
  for (const PasskeyLengthResult& l : r.lengths) {
    json buckets = json::array();
    for (const PasskeyBucket& b : l.by_depth) {
      buckets.push_back({{"depth_lo", b.depth_lo},
                         {"depth_hi", b.depth_hi},
                         {"accuracy", b.trials > 0 ? json(static_cast<double>(b.correct) / static_cast<double>(b.trials))
                                                   : json(nullptr)},
                         {"trials", b.trials}});
    }
    results.push_back({{"length", l.length},
                       {"accuracy", l.accuracy()},
                       {"trials", l.trials},
                       {"correct", l.correct},
                       {"prompt_tokens_min", l.prompt_tokens_min},
                       {"prompt_tokens_max", l.prompt_tokens_max},
                       {"by_depth", buckets}});
  }
  json samples = json::array();
  for (const PasskeySample& s : r.samples) {
    samples.push_back({{"length", s.length}, {"depth", s.depth}, {"passkey", s.passkey}, {"answer", s.answer},
                       {"correct", s.correct}});
  }
  return {{"kind", "eval_passkey"},
          {"settings", settings},
          {"trials", o.trials},
          {"seed", o.seed},
          {"haystack", haystack.empty() ? json(nullptr) : json(haystack)},
          {"depth_buckets", o.depth_buckets},
          {"answer_tokens", kPasskeyAnswerTokens},
          {"format", passkey_format_name(o.format)},
          {"protocol", std::string(o.format == PasskeyFormat::compact
                                       ? "compact passkey retrieval (docs/eval.md): filler words, needle 'The passkey "
                                         "is NNNNN.'"
                                       : "Landmark/CoCA passkey retrieval (docs/eval.md): task line, filler, needle") +
                           " at the depth of the filler, filler, question; at most `length` tokens; greedy "
                           "continuation of answer_tokens tokens; correct when its first run of digits equals the "
                           "passkey"},
          {"results", results},
          {"samples", samples}};
}

}  // namespace sluice
