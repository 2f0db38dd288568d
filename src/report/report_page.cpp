#include "report/report_page.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "report/svg_chart.h"
#include "report/text.h"
#include "sluice/errors.h"

namespace sluice::report {

namespace fs = std::filesystem;

namespace {

const char* const kStyle = R"css(
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #222;
       margin: 0 auto; padding: 16px 20px 40px; max-width: 1200px; background: #fafafa; font-size: 14px; }
h1 { font-size: 22px; margin: 4px 0 2px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
p.meta, p.note { color: #666; margin: 4px 0 10px; }
ul.runs { list-style: none; padding: 0; margin: 8px 0; }
ul.runs li { margin: 2px 0; }
.swatch { display: inline-block; width: 14px; height: 10px; margin-right: 6px; vertical-align: baseline; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 12px; color: #555; }
.charts { display: flex; flex-wrap: wrap; gap: 14px; }
svg.chart { border: 1px solid #ddd; background: #fff; }
table { border-collapse: collapse; margin: 6px 0 12px; background: #fff; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; font-weight: 600; white-space: normal; }
td.text, th.text { text-align: left; }
td.run { white-space: normal; overflow-wrap: anywhere; min-width: 160px; max-width: 360px; }
.scroll { overflow-x: auto; max-width: 100%; }
table.heat td { text-align: center; min-width: 56px; }
.small { font-size: 12px; color: #666; }
ul.notes { color: #555; }
)css";

std::string td(const std::string& value, bool text = false) {
  return std::string(text ? "<td class=\"text\">" : "<td>") + escape(value.empty() ? kMissing : value) + "</td>";
}

std::string th(const std::string& value, bool text = false) {
  return std::string(text ? "<th class=\"text\">" : "<th>") + escape(value) + "</th>";
}

std::string run_cell(const std::string& name, const std::string& color) {
  return "<td class=\"text run\"><span class=\"swatch\" style=\"background:" + escape(color) + "\"></span>" + escape(name) +
         "</td>";
}

// A page under construction: sections, charts counted, omissions noted.
struct Page {
  std::string html;
  ReportSummary summary;

  void chart(const std::string& svg) {
    html += svg;
    ++summary.charts;
  }
  void omit(const std::string& what, const std::string& why) { summary.omitted.push_back(what + ": " + why); }
};

struct Run {
  const RunData* data;
  std::string name, color;
  size_t style = 0;  // dash pattern: runs beyond the palette's 10 colours differ by dashes

  // The dash of this run's k-th result file of one kind.
  std::string dash(size_t k = 0) const { return dash_pattern(style + k); }
};

// Names shown on the page: the directory name, or the path given when two runs share it.
std::vector<Run> name_runs(const std::vector<RunData>& runs) {
  std::map<std::string, int> seen;
  for (const RunData& r : runs) ++seen[r.name];
  std::vector<Run> out;
  std::set<std::string> used;
  for (size_t i = 0; i < runs.size(); ++i) {
    std::string name = seen[runs[i].name] > 1 ? runs[i].dir : runs[i].name;
    for (int k = 2; used.count(name); ++k) name = (seen[runs[i].name] > 1 ? runs[i].dir : runs[i].name) + " (" + std::to_string(k) + ")";
    used.insert(name);
    out.push_back({&runs[i], name, palette(i), i / 10});
  }
  return out;
}

// The series label for the k-th of n result files of one run.
std::string file_label(const Run& run, const std::string& file, size_t n) {
  return n > 1 ? run.name + " \u00b7 " + file : run.name;
}

bool any_finite(const Series& s) {
  return std::any_of(s.y.begin(), s.y.end(), [](double v) { return std::isfinite(v); });
}

double first_sink_mean(const RunData& r) {
  for (const AttentionStats& a : r.attention) {
    if (std::isfinite(a.sink_mean)) return a.sink_mean;
  }
  return NAN;
}

std::string header(const std::vector<Run>& runs) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M UTC", &tm);
  std::string s = "<header>\n<h1>Sluice report</h1>\n<p class=\"meta\">" + std::to_string(runs.size()) +
                  (runs.size() == 1 ? " run" : " runs") + " \u00b7 generated " + stamp + " by sluice " SLUICE_VERSION +
                  "</p>\n<ul class=\"runs\">\n";
  for (const Run& r : runs) {
    s += "<li><span class=\"swatch\" style=\"background:" + escape(r.color) + "\"></span>" + escape(r.name) +
         " <code>" + escape(r.data->dir) + "</code></li>\n";
  }
  return s + "</ul>\n</header>\n";
}

void summary_section(Page& page, const std::vector<Run>& runs) {
  std::string& h = page.html;
  h += "<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"scroll\">\n<table class=\"summary\">\n<thead><tr>";
  for (const char* c : {"run"}) h += th(c, true);
  for (const char* c : {"parameters", "steps", "final train loss", "final val loss", "tokens/s"}) h += th(c);
  for (const char* c : {"device", "gate", "CoCA", "position", "RoPE scaling", "arch"}) h += th(c, true);
  h += th("mean sink p") + "</tr></thead>\n<tbody>\n";
  for (const Run& r : runs) {
    const RunData& d = *r.data;
    h += "<tr>" + run_cell(r.name, r.color) + "<td title=\"" + escape(fixed(d.params, 0)) + "\">" +
         escape(count(d.params)) + "</td>" + td(fixed(d.steps, 0)) + td(fixed(d.final_loss, 4)) +
         td(fixed(d.final_val_loss, 4)) + td(fixed(d.tokens_per_s, 0)) + td(d.device, true) +
         td(d.gate_position, true) + td(d.coca_mode, true) + td(d.position, true) + td(d.rope_scaling, true) +
         td(d.arch, true) + td(fixed(first_sink_mean(d), 3)) + "</tr>\n";
  }
  h += "</tbody>\n</table>\n</div>\n<p class=\"note\">Final losses and tokens/s from summary.json (the last metrics.jsonl "
       "records when a run has none); tokens/s is the whole run's average. Gate, CoCA, position, RoPE scaling and "
       "arch from config.yaml (model.attention.gate.position, model.attention.coca.mode, model.position, "
       "model.rope.scaling, model.arch). Mean sink p: the first stats_attention result of the run.</p>\n</section>\n";
}

void training_section(Page& page, const std::vector<Run>& runs) {
  struct Curve {
    const char* title;
    const char* y_label;
    bool log;
    Series RunData::*series;
    const char* field;
  };
  const Curve curves[] = {{"Training loss", "loss (nats/token, log scale)", true, &RunData::loss, "loss"},
                          {"Validation loss", "val loss (nats/token, log scale)", true, &RunData::val_loss, "val_loss"},
                          {"Learning rate", "learning rate", false, &RunData::lr, "lr"},
                          {"Throughput", "tokens/s", false, &RunData::tokens_per_s_curve, "tokens_per_s"}};
  std::string charts;
  Page inner;
  for (const Curve& c : curves) {
    LineChart chart{c.title, {"step"}, {c.y_label, c.log}, {}};
    chart.x.min = 0.0;
    bool any = false;
    for (const Run& r : runs) {
      const Series& s = r.data->*c.series;
      any = any || any_finite(s);
      chart.series.push_back({r.name, r.color, r.dash(), s.x, s.y});
    }
    if (any) {
      inner.chart(line_chart_svg(chart));
    } else {
      page.omit(std::string("chart \"") + c.title + "\"", std::string("no run has finite '") + c.field +
                                                              "' values in metrics.jsonl");
    }
  }
  if (inner.summary.charts == 0) {
    page.omit("section Training", "no run has loss, val_loss, lr or tokens_per_s records in metrics.jsonl");
    return;
  }
  page.html += "<section id=\"training\">\n<h2>Training</h2>\n<p class=\"note\">From metrics.jsonl: one point per "
               "logged interval (training loss is the interval's mean; tokens/s excludes evaluation and "
               "checkpointing).</p>\n<div class=\"charts\">\n" +
               inner.html + "</div>\n</section>\n";
  page.summary.charts += inner.summary.charts;
}

// Lengths as tick values when there are few distinct ones (powers of two read best).
std::vector<double> length_ticks(const std::set<double>& lengths) {
  if (lengths.size() > 12) return {};
  return {lengths.begin(), lengths.end()};
}

void perplexity_section(Page& page, const std::vector<Run>& runs) {
  LineChart chart{"Perplexity vs evaluated length", {"sequence length (tokens, log scale)", true},
                  {"perplexity (log scale)", true}, {}};
  std::set<double> lengths;
  std::string table;
  for (const Run& r : runs) {
    const auto& curves = r.data->ppl;
    std::map<std::string, int> label_uses;
    for (const PplCurve& c : curves) ++label_uses[c.rope_scaling];
    for (size_t k = 0; k < curves.size(); ++k) {
      const PplCurve& c = curves[k];
      std::string label = r.name + " \u00b7 rope_scaling=" + (c.rope_scaling.empty() ? kMissing : c.rope_scaling);
      if (label_uses[c.rope_scaling] > 1) label += " \u00b7 " + c.file;
      LineSeries s{label, r.color, r.dash(k), {}, {}};
      for (const PplCurve::Point& p : c.points) {
        s.x.push_back(p.seq_len);
        s.y.push_back(p.ppl);
        if (std::isfinite(p.seq_len) && p.seq_len > 0) lengths.insert(p.seq_len);
        table += "<tr>" + run_cell(label, r.color) + td(c.file, true) + td(fixed(p.seq_len, 0)) +
                 td(fixed(p.stride, 0)) + td(fixed(p.tokens, 0)) + td(fixed(p.documents, 0)) + td(fixed(p.nll, 4)) +
                 td(fixed(p.ppl, 3)) + "</tr>\n";
      }
      chart.series.push_back(std::move(s));
    }
  }
  if (chart.series.empty()) {
    page.omit("section Perplexity", "no run has eval/*.json of kind eval_ppl (sluice eval ppl)");
    return;
  }
  chart.x.ticks = length_ticks(lengths);
  page.html += "<section id=\"perplexity\">\n<h2>Perplexity vs length</h2>\n<p class=\"note\">From eval/*.json of kind "
               "eval_ppl: token-level perplexity exp(mean NLL) per evaluated length; one curve per result file "
               "(colour: run, dash: file). Stride \u2014 means non-overlapping windows.</p>\n<div class=\"charts\">\n";
  page.chart(line_chart_svg(chart));
  page.html += "</div>\n<table class=\"ppl\">\n<thead><tr>" + th("curve", true) + th("file", true) + th("seq_len") +
               th("stride") + th("tokens") + th("documents") + th("NLL") + th("perplexity") +
               "</tr></thead>\n<tbody>\n" + table + "</tbody>\n</table>\n</section>\n";
}

std::string heat_color(double accuracy) {
  if (!std::isfinite(accuracy)) return "#f4f4f4";
  const double a = std::clamp(accuracy, 0.0, 1.0);
  char buf[48];
  std::snprintf(buf, sizeof buf, "hsl(%.0f, 65%%, %.0f%%)", 120.0 * a, 78.0);
  return buf;
}

void passkey_section(Page& page, const std::vector<Run>& runs) {
  LineChart chart{"Passkey retrieval accuracy", {"context length (tokens, log scale)", true}, {"accuracy"}, {}};
  chart.y.min = 0.0;
  chart.y.max = 1.0;
  std::set<double> lengths;
  std::string tables;
  for (const Run& r : runs) {
    const auto& evals = r.data->passkey;
    for (size_t k = 0; k < evals.size(); ++k) {
      const PasskeyEval& e = evals[k];
      const std::string label = file_label(r, e.file, evals.size());
      LineSeries s{label, r.color, r.dash(k), {}, {}};
      // Depth buckets as columns: the union over lengths, by their lower edge.
      std::map<std::pair<double, double>, int> buckets;
      for (const PasskeyEval::Length& l : e.results) {
        s.x.push_back(l.length);
        s.y.push_back(l.accuracy);
        if (std::isfinite(l.length) && l.length > 0) lengths.insert(l.length);
        for (const PasskeyEval::Bucket& b : l.by_depth) buckets[{b.depth_lo, b.depth_hi}] = 0;
      }
      chart.series.push_back(std::move(s));
      tables += "<h3><span class=\"swatch\" style=\"background:" + escape(r.color) + "\"></span>" + escape(label) +
                " <span class=\"small\">(" + escape(e.file) + "; " + escape(fixed(e.trials, 0)) + " trials per length, seed " +
                escape(fixed(e.seed, 0)) + ")</span></h3>\n<table class=\"heat\">\n<thead><tr>" + th("length") +
                th("accuracy");
      for (const auto& [edge, unused] : buckets) {
        tables += th("depth " + fixed(edge.first, 2) + "\u2013" + fixed(edge.second, 2));
      }
      tables += "</tr></thead>\n<tbody>\n";
      for (const PasskeyEval::Length& l : e.results) {
        tables += "<tr>" + td(fixed(l.length, 0)) + "<td style=\"background:" + heat_color(l.accuracy) + "\">" +
                  escape(fixed(l.accuracy, 2)) + "</td>";
        for (const auto& [edge, unused] : buckets) {
          const PasskeyEval::Bucket* found = nullptr;
          for (const PasskeyEval::Bucket& b : l.by_depth) {
            if (b.depth_lo == edge.first && b.depth_hi == edge.second) found = &b;
          }
          const double acc = found ? found->accuracy : NAN;
          tables += "<td style=\"background:" + heat_color(acc) + "\"" +
                    (found ? " title=\"" + escape(fixed(found->trials, 0)) + " trials\"" : std::string()) + ">" +
                    escape(fixed(acc, 2)) + "</td>";
        }
        tables += "</tr>\n";
      }
      tables += "</tbody>\n</table>\n";
    }
  }
  if (chart.series.empty()) {
    page.omit("section Passkey", "no run has eval/*.json of kind eval_passkey (sluice eval passkey)");
    return;
  }
  chart.x.ticks = length_ticks(lengths);
  page.html += "<section id=\"passkey\">\n<h2>Passkey retrieval</h2>\n<p class=\"note\">From eval/*.json of kind "
               "eval_passkey: share of trials whose greedy continuation equals the hidden 5-digit passkey, per context "
               "length, and per depth of the needle in the context (0 = start, 1 = end).</p>\n<div class=\"charts\">\n";
  page.chart(line_chart_svg(chart));
  page.html += "</div>\n" + tables + "</section>\n";
}

std::vector<std::string> layer_names(size_t n) {
  std::vector<std::string> names;
  for (size_t i = 0; i < n; ++i) names.push_back(std::to_string(i));
  return names;
}

void sink_section(Page& page, const std::vector<Run>& runs) {
  BarChart chart{"First-token attention (attention sink) per layer", "layer", {"attention probability on token 0"}, {}, {}};
  size_t layers = 0;
  std::string table;
  for (const Run& r : runs) {
    const auto& stats = r.data->attention;
    for (const AttentionStats& a : stats) {
      const std::string label = file_label(r, a.file, stats.size());
      table += "<tr>" + run_cell(label, r.color) + td(a.file, true) + td(fixed(a.sequences, 0)) +
               td(fixed(a.seq_len, 0)) + td(a.sink_per_layer.empty() ? "" : a.query0_excluded ? "yes" : "no") +
               td(fixed(a.sink_mean, 4)) + td(fixed(a.share_heads_over_half, 3)) + "</tr>\n";
      if (a.sink_per_layer.empty()) continue;
      layers = std::max(layers, a.sink_per_layer.size());
      chart.series.push_back({label, r.color, a.sink_per_layer});
    }
  }
  if (chart.series.empty()) {
    page.omit("section Attention sink", "no run has stats_attention results with sink.per_layer (sluice stats attention)");
    return;
  }
  chart.categories = layer_names(layers);
  page.html += "<section id=\"attention-sink\">\n<h2>Attention sink</h2>\n<p class=\"note\">From eval/*.json of kind "
               "stats_attention: the attention probability on the first token, averaged over heads and query positions "
               "(query 0, which can only attend to itself, excluded when stated), per layer.</p>\n<div class=\"charts\">\n";
  page.chart(bar_chart_svg(chart));
  page.html += "</div>\n<table class=\"sink\">\n<thead><tr>" + th("run", true) + th("file", true) + th("sequences") +
               th("seq_len") + th("query 0 excluded") + th("mean sink p") + th("share of heads > 0.5") +
               "</tr></thead>\n<tbody>\n" + table + "</tbody>\n</table>\n</section>\n";
}

// The gate-score histogram averaged over layers: each layer's counts as fractions, then the
// mean. Layers whose edges differ from the first layer's are left out (and said so).
bool mean_histogram(const AttentionStats& a, std::vector<double>& edges, std::vector<double>& fractions,
                    size_t& used) {
  used = 0;
  for (const AttentionStats::Gate& g : a.gates) {
    if (g.edges.size() < 2 || g.counts.size() + 1 != g.edges.size()) continue;
    double total = 0;
    for (double c : g.counts) total += std::isfinite(c) ? c : 0;
    if (!(total > 0)) continue;
    if (used == 0) {
      edges = g.edges;
      fractions.assign(g.counts.size(), 0.0);
    } else if (g.edges != edges) {
      continue;
    }
    for (size_t i = 0; i < g.counts.size(); ++i) fractions[i] += (std::isfinite(g.counts[i]) ? g.counts[i] : 0) / total;
    ++used;
  }
  for (double& f : fractions) f /= static_cast<double>(std::max<size_t>(used, 1));
  return used > 0;
}

void gates_section(Page& page, const std::vector<Run>& runs) {
  std::string body;
  size_t charts = 0;
  bool any = false;
  for (const Run& r : runs) {
    const auto& stats = r.data->attention;
    for (const AttentionStats& a : stats) {
      if (a.gates.empty() && a.sparsity.empty()) continue;
      any = true;
      const std::string label = file_label(r, a.file, stats.size());
      body += "<h3><span class=\"swatch\" style=\"background:" + escape(r.color) + "\"></span>" + escape(label) + "</h3>\n";
      std::vector<double> edges, fractions;
      size_t used = 0;
      if (mean_histogram(a, edges, fractions, used)) {
        Histogram h{"Gate scores: " + label, {"gate score"}, {"fraction (mean over layers)"}, edges, fractions, r.color};
        body += "<div class=\"charts\">\n" + histogram_svg(h) + "</div>\n";
        ++charts;
        if (used < a.gates.size()) {
          body += "<p class=\"note\">Histogram over " + std::to_string(used) + " of " + std::to_string(a.gates.size()) +
                  " layers (the others have no histogram or different bin edges).</p>\n";
        }
      }
      body += "<table class=\"gates\">\n<thead><tr>" + th("layer") + th("gate mean") + th("std") + th("min") + th("max") +
              th("|y|<1e-2 before") + th("after") + th("|y|<1e-3 before") + th("after") + "</tr></thead>\n<tbody>\n";
      for (size_t l = 0; l < std::max(a.gates.size(), a.sparsity.size()); ++l) {
        const AttentionStats::Gate g = l < a.gates.size() ? a.gates[l] : AttentionStats::Gate{};
        const AttentionStats::Sparsity s = l < a.sparsity.size() ? a.sparsity[l] : AttentionStats::Sparsity{};
        body += "<tr>" + td(std::to_string(l)) + td(fixed(g.mean, 4)) + td(fixed(g.std, 4)) + td(fixed(g.min, 4)) +
                td(fixed(g.max, 4)) + td(fixed(s.before_1e2, 3)) + td(fixed(s.after_1e2, 3)) +
                td(fixed(s.before_1e3, 3)) + td(fixed(s.after_1e3, 3)) + "</tr>\n";
      }
      body += "</tbody>\n</table>\n";
    }
  }
  if (!any) {
    page.omit("section Gates", "no run has stats_attention results with gates or sparsity (only gated models have them)");
    return;
  }
  page.html += "<section id=\"gates\">\n<h2>Gate scores</h2>\n<p class=\"note\">From eval/*.json of kind "
               "stats_attention (gated models): the distribution of gate scores over [0, 1] (each layer's histogram "
               "as fractions, averaged over layers), and per layer the gate statistics and the share of attention "
               "output values with |y| below 1e-2 and 1e-3 before and after gating.</p>\n" +
               body + "</section>\n";
  page.summary.charts += charts;
}

void activations_section(Page& page, const std::vector<Run>& runs) {
  struct Quantity {
    const char* title;
    double AttentionStats::Activations::*field;
  };
  const Quantity quantities[] = {{"Residual stream max |h| after each block", &AttentionStats::Activations::residual_max},
                                 {"Attention output max |h|", &AttentionStats::Activations::attn_max},
                                 {"FFN output max |h|", &AttentionStats::Activations::ffn_max}};
  Page inner;
  for (const Quantity& q : quantities) {
    LineChart chart{q.title, {"layer"}, {"max |h| (log scale)", true}, {}};
    bool any = false;
    size_t layers = 0;
    for (const Run& r : runs) {
      const auto& stats = r.data->attention;
      for (size_t k = 0; k < stats.size(); ++k) {
        const AttentionStats& a = stats[k];
        if (a.activations.empty()) continue;
        LineSeries s{file_label(r, a.file, stats.size()), r.color, r.dash(k), {}, {}};
        for (size_t l = 0; l < a.activations.size(); ++l) {
          s.x.push_back(static_cast<double>(l));
          s.y.push_back(a.activations[l].*q.field);
          any = any || std::isfinite(s.y.back());
        }
        layers = std::max(layers, a.activations.size());
        chart.series.push_back(std::move(s));
      }
    }
    if (!any) continue;
    if (layers <= 16) {
      for (size_t l = 0; l < layers; ++l) chart.x.ticks.push_back(static_cast<double>(l));
    }
    inner.chart(line_chart_svg(chart));
  }
  if (inner.summary.charts == 0) {
    page.omit("section Activations", "no run has stats_attention results with activations.per_layer");
    return;
  }
  page.html += "<section id=\"activations\">\n<h2>Activation magnitudes</h2>\n<p class=\"note\">From eval/*.json of kind "
               "stats_attention: per layer, the largest |value| of the residual stream after the block and of the "
               "attention and FFN outputs (\"massive activations\").</p>\n<div class=\"charts\">\n" +
               inner.html + "</div>\n</section>\n";
  page.summary.charts += inner.summary.charts;
}

void notes_section(Page& page, const std::vector<Run>& runs) {
  std::vector<std::string> warnings;
  for (const Run& r : runs) {
    for (const std::string& w : r.data->warnings) warnings.push_back(w);
  }
  page.summary.warnings = warnings;
  if (page.summary.omitted.empty() && warnings.empty()) return;
  page.html += "<section id=\"notes\">\n<h2>Notes</h2>\n<ul class=\"notes\">\n";
  for (const std::string& o : page.summary.omitted) page.html += "<li class=\"omitted\">Not shown: " + escape(o) + "</li>\n";
  for (const std::string& w : warnings) page.html += "<li class=\"warning\">" + escape(w) + "</li>\n";
  page.html += "</ul>\n</section>\n";
}

}  // namespace

std::string render_report(const std::vector<RunData>& data, ReportSummary* summary,
                          const std::vector<std::string>& extra_sections) {
  const std::vector<Run> runs = name_runs(data);
  Page page;
  page.summary.runs = runs.size();
  page.html = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Sluice report</title>\n"
              "<style>" + std::string(kStyle) + "</style>\n</head>\n<body>\n" + header(runs) + "<main>\n";
  summary_section(page, runs);
  for (const std::string& section : extra_sections) {
    page.html += section;
    for (size_t at = section.find("<svg"); at != std::string::npos; at = section.find("<svg", at + 4)) ++page.summary.charts;
  }
  training_section(page, runs);
  perplexity_section(page, runs);
  passkey_section(page, runs);
  sink_section(page, runs);
  gates_section(page, runs);
  activations_section(page, runs);
  notes_section(page, runs);
  page.html += "</main>\n</body>\n</html>\n";
  if (summary) *summary = page.summary;
  return page.html;
}

ReportSummary write_report(const std::vector<std::string>& run_dirs, const std::string& out,
                           const std::vector<std::string>& extra_sections) {
  if (run_dirs.empty()) throw InputError("RUN_DIR: at least one run directory is required");
  if (out.empty()) throw InputError("--out: a file name is required");
  std::error_code ec;
  const fs::path out_path(out);
  const fs::path parent = out_path.parent_path().empty() ? fs::path(".") : out_path.parent_path();
  if (!fs::is_directory(parent, ec)) throw InputError("--out: folder '" + parent.string() + "' does not exist");
  if (fs::is_directory(out_path, ec)) throw InputError("--out: '" + out + "' is a directory");
  std::vector<RunData> runs;
  for (const std::string& dir : run_dirs) runs.push_back(load_run(dir));

  ReportSummary summary;
  const std::string html = render_report(runs, &summary, extra_sections);
  const std::string tmp = out + ".tmp." + std::to_string(getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw InputError("--out: cannot write '" + tmp + "'");
    f << html;
    f.flush();
    if (!f) {
      f.close();
      fs::remove(tmp, ec);
      throw std::runtime_error("write failed: " + tmp);
    }
  }
  fs::rename(tmp, out_path, ec);
  if (ec) {
    const std::string why = ec.message();
    fs::remove(tmp, ec);
    throw InputError("--out: cannot rename '" + tmp + "' to '" + out + "': " + why);
  }
  return summary;
}

}  // namespace sluice::report
