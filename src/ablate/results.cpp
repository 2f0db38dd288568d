#include "ablate/results.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iterator>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "sluice/errors.h"
#include "sluice/fs.h"

namespace sluice::ablate {

namespace fs = std::filesystem;

namespace {

std::optional<nlohmann::json> read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// j[key] when j is an object holding it, else null: result files of older versions or of
// failed evaluations must not stop the table.
const nlohmann::json* member(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  const auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

std::optional<double> number(const nlohmann::json& j, const char* key) {
  const nlohmann::json* v = member(j, key);
  if (v == nullptr || !v->is_number()) return std::nullopt;
  return v->get<double>();
}

// Mean over layers of per_layer[i][key] (null layers skipped).
std::optional<double> layer_mean(const nlohmann::json& per_layer, const std::function<const nlohmann::json*(const nlohmann::json&)>& pick) {
  double sum = 0;
  int n = 0;
  if (!per_layer.is_array()) return std::nullopt;
  for (const auto& l : per_layer) {
    if (l.is_null()) continue;
    const nlohmann::json* v = pick(l);
    if (v == nullptr || !v->is_number()) continue;
    sum += v->get<double>();
    ++n;
  }
  if (n == 0) return std::nullopt;
  return sum / n;
}

void write_atomic(const fs::path& path, const std::string& text) {
  const std::string tmp = path.string() + ".tmp";
  write_file_synced(tmp, text);
  fs::rename(tmp, path);
}

std::string cell(const std::optional<double>& v) { return v ? fmt::format("{:.6g}", *v) : std::string(); }

}  // namespace

int64_t count_loss_spikes(const std::vector<double>& losses) {
  int64_t spikes = 0;
  double lowest = std::numeric_limits<double>::infinity();
  for (double l : losses) {
    if (!std::isfinite(l) || (std::isfinite(lowest) && l > 1.2 * lowest)) ++spikes;
    if (std::isfinite(l)) lowest = std::min(lowest, l);
  }
  return spikes;
}

RunResult read_run_result(const RunSpec& spec, const std::string& runs_dir) {
  RunResult r;
  r.name = spec.name;
  r.variant = spec.variant;
  r.seed = spec.seed;
  r.axis_values = spec.axis_values;
  const fs::path dir = fs::path(runs_dir) / spec.name;
  r.run_dir = dir.string();
  if (const auto s = read_json(dir / "summary.json"); s && s->is_object()) {
    r.finished = !s->value("stopped_by_signal", true) && s->value("steps", int64_t{-1}) == s->value("target_steps", int64_t{-2});
    r.params = number(*s, "params");
    r.tokens = number(*s, "tokens");
    r.final_loss = number(*s, "final_loss");
    r.final_val_loss = number(*s, "final_val_loss");
    r.tokens_per_s = number(*s, "tokens_per_s");
    r.skipped_steps = number(*s, "skipped_steps");
  }
  {
    std::ifstream in(dir / "metrics.jsonl");
    std::vector<double> losses;
    for (std::string line; std::getline(in, line);) {
      const nlohmann::json rec = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      const nlohmann::json* loss = member(rec, "loss");
      if (loss == nullptr) continue;
      losses.push_back(loss->is_number() ? loss->get<double>() : std::numeric_limits<double>::quiet_NaN());  // null: NaN
    }
    if (!losses.empty()) r.loss_spikes = static_cast<double>(count_loss_spikes(losses));
  }
  // result lists: [{"<x>": N, "<y>": value}, ...] -> {N: value}
  auto curve = [](const std::optional<nlohmann::json>& j, const char* x, const char* y, std::map<int64_t, double>& out) {
    const nlohmann::json* list = j ? member(*j, "results") : nullptr;
    if (list == nullptr || !list->is_array()) return;
    for (const auto& item : *list) {
      const nlohmann::json *k = member(item, x), *v = member(item, y);
      if (k && v && k->is_number_integer() && v->is_number()) out[k->get<int64_t>()] = v->get<double>();
    }
  };
  curve(read_json(dir / "eval" / "ppl.json"), "seq_len", "ppl", r.ppl);
  curve(read_json(dir / "eval" / "passkey.json"), "length", "accuracy", r.passkey);
  if (const auto st = read_json(dir / "eval" / "stats.json")) {
    if (const nlohmann::json* sink = member(*st, "sink")) r.first_token_attention = number(*sink, "mean");
    auto per_layer = [&](const char* section) -> const nlohmann::json* {
      const nlohmann::json* sec = member(*st, section);
      return sec ? member(*sec, "per_layer") : nullptr;
    };
    if (const nlohmann::json* g = per_layer("gates"))
      r.gate_mean = layer_mean(*g, [](const nlohmann::json& l) { return member(l, "mean"); });
    if (const nlohmann::json* sp = per_layer("sparsity"))
      r.gate_sparsity = layer_mean(*sp, [](const nlohmann::json& l) {
        const nlohmann::json* after = member(l, "after");
        return after ? member(*after, "lt_1e-2") : nullptr;
      });
    if (const nlohmann::json* act = per_layer("activations"); act && act->is_array()) {
      for (const auto& l : *act)
        if (const nlohmann::json* m = member(l, "residual_max"); m && m->is_number())
          r.max_activation = std::max(r.max_activation.value_or(0.0), m->get<double>());
    }
  }
  return r;
}

void write_results(const std::vector<RunResult>& results, const std::string& out_dir) {
  std::set<int64_t> ppl_lengths, passkey_lengths;
  std::set<std::string> axes;
  for (const auto& r : results) {
    for (const auto& kv : r.ppl) ppl_lengths.insert(kv.first);
    for (const auto& kv : r.passkey) passkey_lengths.insert(kv.first);
    for (const auto& kv : r.axis_values) axes.insert(kv.first);
  }
  auto opt = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  nlohmann::json all = nlohmann::json::array();
  for (const auto& r : results) {
    nlohmann::json ppl = nlohmann::json::object(), pk = nlohmann::json::object();
    for (const auto& [len, v] : r.ppl) ppl[std::to_string(len)] = v;
    for (const auto& [len, v] : r.passkey) pk[std::to_string(len)] = v;
    all.push_back({{"name", r.name},
                   {"variant", r.variant},
                   {"seed", r.seed >= 0 ? nlohmann::json(r.seed) : nlohmann::json(nullptr)},
                   {"axes", r.axis_values},
                   {"run_dir", r.run_dir},
                   {"finished", r.finished},
                   {"params", opt(r.params)},
                   {"tokens", opt(r.tokens)},
                   {"final_loss", opt(r.final_loss)},
                   {"final_val_loss", opt(r.final_val_loss)},
                   {"ppl", ppl},
                   {"passkey", pk},
                   {"first_token_attention", opt(r.first_token_attention)},
                   {"gate_mean", opt(r.gate_mean)},
                   {"gate_sparsity", opt(r.gate_sparsity)},
                   {"max_activation", opt(r.max_activation)},
                   {"loss_spikes", opt(r.loss_spikes)},
                   {"skipped_steps", opt(r.skipped_steps)},
                   {"tokens_per_s", opt(r.tokens_per_s)}});
  }
  write_atomic(fs::path(out_dir) / "results.json", all.dump(2) + "\n");

  std::ostringstream csv;
  csv << "variant,seed";
  for (const auto& a : axes) csv << "," << a;
  csv << ",params,tokens,final_loss,final_val_loss";
  for (int64_t l : ppl_lengths) csv << ",ppl_" << l;
  for (int64_t l : passkey_lengths) csv << ",passkey_" << l;
  csv << ",first_token_attention,gate_mean,gate_sparsity,max_activation,loss_spikes,skipped_steps,tokens_per_s,finished\n";
  for (const auto& r : results) {
    csv << r.variant << "," << (r.seed >= 0 ? std::to_string(r.seed) : std::string());
    for (const auto& a : axes) csv << "," << (r.axis_values.count(a) ? r.axis_values.at(a) : std::string());
    csv << "," << cell(r.params) << "," << cell(r.tokens) << "," << cell(r.final_loss) << "," << cell(r.final_val_loss);
    for (int64_t l : ppl_lengths) csv << "," << (r.ppl.count(l) ? cell(r.ppl.at(l)) : std::string());
    for (int64_t l : passkey_lengths) csv << "," << (r.passkey.count(l) ? cell(r.passkey.at(l)) : std::string());
    csv << "," << cell(r.first_token_attention) << "," << cell(r.gate_mean) << "," << cell(r.gate_sparsity) << ","
        << cell(r.max_activation) << "," << cell(r.loss_spikes) << "," << cell(r.skipped_steps) << ","
        << cell(r.tokens_per_s) << "," << (r.finished ? 1 : 0) << "\n";
  }
  write_atomic(fs::path(out_dir) / "results.csv", csv.str());
}

std::vector<std::vector<std::string>> grouped_rows(const std::vector<RunResult>& results) {
  // Groups: variant + axis values, in first-seen order.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const RunResult*>> groups;
  std::set<int64_t> ppl_lengths, passkey_lengths;
  for (const auto& r : results) {
    std::string key = r.variant;
    for (const auto& [k, v] : r.axis_values) key += " " + k + "=" + v;
    if (!groups.count(key)) order.push_back(key);
    groups[key].push_back(&r);
    for (const auto& kv : r.ppl) ppl_lengths.insert(kv.first);
    for (const auto& kv : r.passkey) passkey_lengths.insert(kv.first);
  }
  // mean ± sample std over the runs that have the value ("n/a" when none does).
  auto stat = [](const std::vector<const RunResult*>& g, const std::function<std::optional<double>(const RunResult&)>& f) {
    std::vector<double> v;
    for (const RunResult* r : g)
      if (auto x = f(*r)) v.push_back(*x);
    if (v.empty()) return std::string("n/a");
    double mean = 0;
    for (double x : v) mean += x;
    mean /= static_cast<double>(v.size());
    if (v.size() == 1) return fmt::format("{:.4g}", mean);
    double ss = 0;
    for (double x : v) ss += (x - mean) * (x - mean);
    return fmt::format("{:.4g} ± {:.2g}", mean, std::sqrt(ss / static_cast<double>(v.size() - 1)));
  };
  std::vector<std::string> header = {"variant", "runs", "val_loss", "train_loss"};
  for (int64_t l : ppl_lengths) header.push_back("ppl@" + std::to_string(l));
  for (int64_t l : passkey_lengths) header.push_back("passkey@" + std::to_string(l));
  header.insert(header.end(), {"sink", "gate_mean", "gate_sparsity", "max_act", "spikes"});
  std::vector<std::vector<std::string>> rows = {header};
  for (const auto& key : order) {
    // Statistics over the finished runs only: a run still training (or killed) has a partial
    // loss curve and no evaluations, and must not pass for a seed of a partly done grid.
    const auto& all = groups[key];
    std::vector<const RunResult*> g;
    std::copy_if(all.begin(), all.end(), std::back_inserter(g), [](const RunResult* r) { return r->finished; });
    const std::string runs = g.size() == all.size() ? std::to_string(g.size()) : fmt::format("{} of {}", g.size(), all.size());
    std::vector<std::string> row = {key, runs,
                                    stat(g, [](const RunResult& r) { return r.final_val_loss; }),
                                    stat(g, [](const RunResult& r) { return r.final_loss; })};
    for (int64_t l : ppl_lengths)
      row.push_back(stat(g, [l](const RunResult& r) { return r.ppl.count(l) ? std::optional<double>(r.ppl.at(l)) : std::nullopt; }));
    for (int64_t l : passkey_lengths)
      row.push_back(stat(g, [l](const RunResult& r) {
        return r.passkey.count(l) ? std::optional<double>(r.passkey.at(l)) : std::nullopt;
      }));
    row.push_back(stat(g, [](const RunResult& r) { return r.first_token_attention; }));
    row.push_back(stat(g, [](const RunResult& r) { return r.gate_mean; }));
    row.push_back(stat(g, [](const RunResult& r) { return r.gate_sparsity; }));
    row.push_back(stat(g, [](const RunResult& r) { return r.max_activation; }));
    row.push_back(stat(g, [](const RunResult& r) { return r.loss_spikes; }));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string summary_table(const std::vector<RunResult>& results) {
  const std::vector<std::vector<std::string>> rows = grouped_rows(results);
  const std::vector<std::string>& header = rows.front();
  // Column widths in code points (± is two bytes in UTF-8).
  auto width = [](const std::string& s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
  };
  std::vector<size_t> w(header.size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) w[i] = std::max(w[i], width(row[i]));
  std::ostringstream out;
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t i = 0; i < rows[r].size(); ++i)
      out << rows[r][i] << std::string(w[i] - width(rows[r][i]) + (i + 1 < rows[r].size() ? 2 : 0), ' ');
    out << "\n";
  }
  return out.str();
}

}  // namespace sluice::ablate
