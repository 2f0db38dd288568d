// `sluice report`: fake run directories -> HTML page; structure, numbers, chart geometry
// (points checked against the rendered tick labels), bad input, and a headless Chromium render.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "report/report_page.h"
#include "report/run_data.h"
#include "report/svg_chart.h"
#include "report/text.h"
#include "shell_command.h"
#include "sluice/errors.h"
#include "test_util.h"

namespace sluice {
namespace {

namespace fs = std::filesystem;
using testing::run_sluice;
using testing::TempDir;
using testing::read_file;
using testing::write_file;

// ---------------------------------------------------------------- fake run directories

struct MetricsRow {
  int step;
  double loss, lr, tps;
};

// Loss curve of run A: NaN at step 30 (written as null, as nlohmann::json writes NaN).
double loss_a(int step) { return 2.0 + 6.0 * std::exp(-step / 40.0); }

std::string metrics_a() {
  std::string s;
  for (int step = 10; step <= 100; step += 10) {
    const std::string loss = step == 30 ? "null" : std::to_string(loss_a(step));
    s += "{\"step\":" + std::to_string(step) + ",\"loss\":" + loss + ",\"lr\":" + std::to_string(1e-3 * step / 100) +
         ",\"grad_norm\":1.0,\"tokens\":" + std::to_string(step * 1000) + ",\"tokens_per_s\":" +
         std::to_string(5000 + step) + ",\"elapsed_s\":1.0,\"data_wait_ms\":0.1,\"skipped_steps\":0}\n";
    if (step == 50 || step == 100) {  // evaluation lines: step and val_loss only
      s += "{\"step\":" + std::to_string(step) + ",\"val_loss\":" + std::to_string(step == 50 ? 3.9 : 3.4567) + "}\n";
    }
  }
  return s + "{\"step\":110,\"loss\":";  // a torn last line (run killed while writing)
}

const char* kConfigA =
    "# resolved by sluice\nrun:\n  name: a\nmodel:\n  arch: dense\n  d_model: 64\n  position: rope\n  rope:\n"
    "    base: 10000.0\n    scaling: none\n  attention:\n    backend: sdpa\n    gate:\n      position: g1\n";
const char* kConfigB =
    "model:\n  arch: moe\n  position: none\n  rope:\n    scaling: yarn\n  attention:\n    coca:\n      mode: full\n";

const char* kSummaryA =
    R"j({"steps": 100, "final_loss": 3.2109, "final_val_loss": 3.4567, "tokens_per_s": 5432.1, "params": 1234567,
        "device": "cpu (2 threads)"})j";
const char* kSummaryB = R"({"steps": 40, "final_loss": 4.5, "tokens_per_s": 812.0, "params": 2500000000, "device": "NVIDIA H100"})";

std::string ppl_json(const std::string& scaling, double base) {
  std::string r;
  for (int n : {512, 1024, 2048, 4096}) {
    if (!r.empty()) r += ",";
    r += "{\"seq_len\":" + std::to_string(n) + ",\"stride\":" + (n == 512 ? "null" : "256") +
         ",\"tokens\":12345,\"documents\":7,\"nll\":" + std::to_string(std::log(base * n / 512.0)) +
         ",\"ppl\":" + std::to_string(base * n / 512.0) + "}";
  }
  return "{\"kind\":\"eval_ppl\",\"settings\":{\"rope_scaling\":\"" + scaling + "\"},\"data\":\"x\",\"results\":[" + r + "]}";
}

const char* kPasskey = R"({"kind":"eval_passkey","settings":{},"trials":20,"seed":1,"results":[
  {"length":1024,"accuracy":0.85,"trials":20,"by_depth":[{"depth_lo":0.0,"depth_hi":0.5,"accuracy":1.0,"trials":10},
                                                        {"depth_lo":0.5,"depth_hi":1.0,"accuracy":0.7,"trials":10}]},
  {"length":4096,"accuracy":0.25,"trials":20,"by_depth":[{"depth_lo":0.0,"depth_hi":0.5,"accuracy":0.1,"trials":10},
                                                        {"depth_lo":0.5,"depth_hi":1.0,"accuracy":0.4,"trials":10}]}]})";

const char* kStatsA = R"({"kind":"stats_attention","settings":{},"sequences":8,"seq_len":512,
  "sink":{"query0_excluded":true,"per_layer":[0.41,0.52,0.08],"per_layer_head":[[0.4,0.42],[0.5,0.54],[0.1,0.06]],
          "mean":0.3367,"share_heads_over_half":0.25},
  "gates":{"per_layer":[
     {"mean":0.2,"std":0.1,"min":0.0,"max":0.9,"histogram":{"edges":[0,0.25,0.5,0.75,1.0],"counts":[60,20,10,10]}},
     {"mean":0.3,"std":0.1,"min":0.0,"max":1.0,"histogram":{"edges":[0,0.25,0.5,0.75,1.0],"counts":[20,60,10,10]}},
     {"mean":0.3,"std":0.1,"min":0.0,"max":1.0,"histogram":null}]},
  "sparsity":{"per_layer":[{"before":{"lt_1e-2":0.1,"lt_1e-3":0.01},"after":{"lt_1e-2":0.6,"lt_1e-3":0.3}}]},
  "activations":{"per_layer":[{"residual_max":10.5,"residual_mean":0.5,"attn_max":2.0,"attn_mean":0.1,"ffn_max":3.0,"ffn_mean":0.2},
                              {"residual_max":400.0,"residual_mean":0.7,"attn_max":2.5,"attn_mean":0.1,"ffn_max":350.0,"ffn_mean":0.3},
                              {"residual_max":410.0,"residual_mean":0.8,"attn_max":null,"ffn_max":4.0}]}})";

// Run B's statistics: no gates, no sparsity, fields missing or null all over.
const char* kStatsB = R"({"kind":"stats_attention","sequences":null,
  "sink":{"per_layer":[0.9,null,0.7],"mean":null},"gates":null,"sparsity":null,
  "activations":{"per_layer":[{"residual_max":5.0},{"residual_max":"big"},{}]}})";

class Report : public ::testing::Test {
 protected:
  TempDir tmp;
  std::string run_a = tmp.file("run-a"), run_b = tmp.file("run-b");
  std::string out = tmp.file("report.html");

  void SetUp() override {
    fs::create_directories(run_a + "/eval");
    write_file(run_a + "/metrics.jsonl", metrics_a());
    write_file(run_a + "/config.yaml", kConfigA);
    write_file(run_a + "/summary.json", kSummaryA);
    write_file(run_a + "/eval/ppl_none.json", ppl_json("none", 20.0));
    write_file(run_a + "/eval/ppl_yarn.json", ppl_json("yarn", 18.0));
    write_file(run_a + "/eval/passkey.json", kPasskey);
    write_file(run_a + "/eval/stats.json", kStatsA);
    write_file(run_a + "/eval/other.json", R"({"kind":"eval_something_new","x":1})");
    write_file(run_a + "/eval/notes.txt", "not json, not read");

    fs::create_directories(run_b + "/eval");
    write_file(run_b + "/metrics.jsonl",
               "{\"step\":20,\"loss\":5.0,\"lr\":0.002,\"tokens_per_s\":800}\n"
               "{\"step\":40,\"loss\":4.5,\"lr\":0.001,\"tokens_per_s\":Infinity}\n");  // invalid JSON line
    write_file(run_b + "/config.yaml", kConfigB);
    write_file(run_b + "/summary.json", kSummaryB);
    write_file(run_b + "/eval/stats.json", kStatsB);
  }

  std::string render(const std::vector<std::string>& dirs, report::ReportSummary* s = nullptr) {
    const report::ReportSummary r = report::write_report(dirs, out);
    if (s) *s = r;
    return read_file(out);
  }
};

// ---------------------------------------------------------------- minimal HTML parsing

// Every element opened is closed in order (void elements and self-closing tags aside).
std::string check_well_formed(const std::string& html) {
  static const std::set<std::string> kVoid = {"meta", "br", "hr", "img", "input", "link", "col", "wbr", "source"};
  std::vector<std::string> stack;
  size_t i = 0;
  while ((i = html.find('<', i)) != std::string::npos) {
    if (html.compare(i, 4, "<!--") == 0) {
      i = html.find("-->", i);
      if (i == std::string::npos) return "unterminated comment";
      continue;
    }
    const size_t end = html.find('>', i);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(i);
    const std::string tag = html.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.empty() || tag[0] == '!') continue;  // <!DOCTYPE html>
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) {
        return "</" + name + "> closes <" + (stack.empty() ? std::string("nothing") : stack.back()) + ">";
      }
      stack.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \n\t/"));
    if (tag.back() == '/' || kVoid.count(name)) continue;
    if (name == "style") {  // raw text up to </style>
      i = html.find("</style>", i);
      if (i == std::string::npos) return "unterminated <style>";
      i += 8;
      continue;
    }
    stack.push_back(name);
  }
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  return "";
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t i = text.find(what); i != std::string::npos; i = text.find(what, i + 1)) ++n;
  return n;
}

std::vector<std::string> svgs(const std::string& html) {
  std::vector<std::string> out;
  for (size_t i = html.find("<svg"); i != std::string::npos; i = html.find("<svg", i + 1)) {
    out.push_back(html.substr(i, html.find("</svg>", i) + 6 - i));
  }
  return out;
}

std::string svg_titled(const std::string& html, const std::string& title) {
  for (const std::string& s : svgs(html)) {
    if (s.find("<title>" + title + "</title>") != std::string::npos) return s;
  }
  ADD_FAILURE() << "no chart titled " << title;
  return "";
}

std::string attr(const std::string& tag, const std::string& name) {
  const std::string key = " " + name + "=\"";
  const size_t i = tag.find(key);
  if (i == std::string::npos) return "";
  const size_t start = i + key.size();
  return tag.substr(start, tag.find('"', start) - start);
}

double parse_tick(std::string label) {
  double scale = 1;
  if (!label.empty() && (label.back() == 'k' || label.back() == 'M' || label.back() == 'G')) {
    scale = label.back() == 'k' ? 1e3 : label.back() == 'M' ? 1e6 : 1e9;
    label.pop_back();
  }
  return std::stod(label) * scale;
}

// (value, pixel) of every tick label of one axis, as a reader sees it.
std::vector<std::pair<double, double>> ticks(const std::string& svg, const std::string& cls) {
  std::vector<std::pair<double, double>> out;
  const std::regex re("<text class=\"" + cls + "\"[^>]*>([^<]*)</text>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it) {
    const std::string tag = it->str(0);
    out.emplace_back(parse_tick((*it)[1]), std::stod(attr(tag, cls == "xtick" ? "x" : "y")));
  }
  return out;
}

// The pixel a value should be at, read off the first and last tick labels of the axis.
double from_ticks(const std::vector<std::pair<double, double>>& t, double v, bool log) {
  EXPECT_GE(t.size(), 2u);
  if (t.size() < 2) return NAN;
  auto f = [log](double x) { return log ? std::log10(x) : x; };
  const auto& [v0, p0] = t.front();
  const auto& [v1, p1] = t.back();
  return p0 + (f(v) - f(v0)) / (f(v1) - f(v0)) * (p1 - p0);
}

std::vector<std::pair<double, double>> polyline(const std::string& svg, const std::string& series) {
  std::vector<std::pair<double, double>> pts;
  const std::regex re("<polyline class=\"series\" data-series=\"([^\"]*)\"[^>]* points=\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it) {
    if ((*it)[1] != series) continue;
    std::stringstream ss((*it)[2]);
    std::string pair;
    while (ss >> pair) {
      const size_t comma = pair.find(',');
      pts.emplace_back(std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1)));
    }
  }
  return pts;
}

// Text of the cells of the table row whose first cell contains `key`.
std::vector<std::string> row_cells(const std::string& table, const std::string& key) {
  const std::regex row("<tr>(.*?)</tr>");
  const std::regex cell("<t[dh][^>]*>(.*?)</t[dh]>");
  const std::regex tag("<[^>]*>");
  for (auto r = std::sregex_iterator(table.begin(), table.end(), row); r != std::sregex_iterator(); ++r) {
    const std::string inner = (*r)[1];
    std::vector<std::string> cells;
    for (auto c = std::sregex_iterator(inner.begin(), inner.end(), cell); c != std::sregex_iterator(); ++c) {
      cells.push_back(std::regex_replace(std::string((*c)[1]), tag, ""));
    }
    if (!cells.empty() && cells[0] == key) return cells;
  }
  return {};
}

std::string section(const std::string& html, const std::string& id) {
  const size_t i = html.find("<section id=\"" + id + "\"");
  if (i == std::string::npos) return "";
  return html.substr(i, html.find("</section>", i) - i);
}

// ---------------------------------------------------------------- tests

TEST_F(Report, WellFormedWithOneSvgPerChart) {
  report::ReportSummary s;
  const std::string html = render({run_a, run_b}, &s);
  EXPECT_EQ(check_well_formed(html), "");
  // training 4 + perplexity 1 + passkey 1 + sink 1 + gate histogram 1 (run A) + activations 3
  EXPECT_EQ(s.charts, 11u);
  EXPECT_EQ(count_of(html, "<svg"), 11u);
  EXPECT_EQ(count_of(html, "</svg>"), 11u);
  for (const char* title : {"Training loss", "Validation loss", "Learning rate", "Throughput",
                            "Perplexity vs evaluated length", "Passkey retrieval accuracy",
                            "First-token attention (attention sink) per layer", "Gate scores: run-a",
                            "Residual stream max |h| after each block", "Attention output max |h|", "FFN output max |h|"}) {
    EXPECT_FALSE(svg_titled(html, title).empty()) << title;
  }
  for (const char* id : {"summary", "training", "perplexity", "passkey", "attention-sink", "gates", "activations"}) {
    EXPECT_NE(html.find("<section id=\"" + std::string(id) + "\""), std::string::npos) << id;
  }
  // Warnings: unknown kind, torn metrics line, bad JSON line of run B; notes.txt is not read.
  EXPECT_NE(html.find("unknown kind &#39;eval_something_new&#39;, ignored"), std::string::npos);
  EXPECT_NE(html.find("metrics.jsonl:13: not a metrics record"), std::string::npos);
  EXPECT_NE(html.find("run-b/metrics.jsonl:2: not a metrics record"), std::string::npos);
  EXPECT_EQ(html.find("notes.txt"), std::string::npos);
  EXPECT_EQ(s.warnings.size(), 3u);
}

TEST_F(Report, SelfContainedNoNetworkNoScripts) {
  const std::string html = render({run_a, run_b});
  EXPECT_EQ(count_of(html, "http"), count_of(html, "xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_EQ(count_of(html, "xmlns=\"http://www.w3.org/2000/svg\""), 11u);
  for (const char* banned : {"<script", "@import", "url(", " src=", "<link", "@font-face"}) {
    EXPECT_EQ(html.find(banned), std::string::npos) << banned;
  }
}

TEST_F(Report, SummaryTableHasTheRunsNumbers) {
  const std::string html = render({run_a, run_b});
  const std::string table = section(html, "summary");
  const std::vector<std::string> header = row_cells(table, "run");
  const std::vector<std::string> expected_header = {"run", "parameters", "steps", "final train loss",
                                                    "final val loss", "tokens/s", "device", "gate", "CoCA",
                                                    "position", "RoPE scaling", "arch", "mean sink p"};
  EXPECT_EQ(header, expected_header);
  const std::vector<std::string> a = {"run-a", "1.23M", "100", "3.2109", "3.4567", "5432", "cpu (2 threads)",
                                      "g1", "\u2014", "rope", "none", "dense", "0.337"};
  EXPECT_EQ(row_cells(table, "run-a"), a);
  // Run B: no final_val_loss in its summary and no val_loss records; sink mean null.
  const std::vector<std::string> b = {"run-b", "2.50G", "40", "4.5000", "\u2014", "812", "NVIDIA H100",
                                      "\u2014", "full", "none", "yarn", "moe", "\u2014"};
  EXPECT_EQ(row_cells(table, "run-b"), b);
}

TEST_F(Report, UnfinishedRunTakesSummaryValuesFromMetrics) {
  fs::remove(run_a + "/summary.json");
  const std::string html = render({run_a});
  const std::vector<std::string> a = row_cells(section(html, "summary"), "run-a");
  ASSERT_EQ(a.size(), 13u);
  EXPECT_EQ(a[1], "\u2014");                     // params unknown
  EXPECT_EQ(a[2], "100");                        // last logged step
  EXPECT_EQ(a[3], report::fixed(loss_a(100), 4));  // last logged loss
  EXPECT_EQ(a[4], "3.4567");                     // last val_loss record
  EXPECT_EQ(a[5], "\u2014");
  EXPECT_NE(html.find("summary.json: missing"), std::string::npos);
}

// Every point of the training-loss polyline (log y) sits where the axis labels say it
// should; the NaN point is skipped.
TEST_F(Report, LossPointsMatchTheAxes) {
  const std::string html = render({run_a, run_b});
  const std::string svg = svg_titled(html, "Training loss");
  const auto xt = ticks(svg, "xtick"), yt = ticks(svg, "ytick");
  const auto pts = polyline(svg, "run-a");
  std::vector<int> steps;
  for (int step = 10; step <= 100; step += 10) {
    if (step != 30) steps.push_back(step);
  }
  ASSERT_EQ(pts.size(), steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const double loss = std::stod(std::to_string(loss_a(steps[i])));  // as written to metrics.jsonl
    EXPECT_NEAR(pts[i].first, from_ticks(xt, steps[i], false), 0.02) << "step " << steps[i];
    EXPECT_NEAR(pts[i].second, from_ticks(yt, loss, true), 0.02) << "step " << steps[i];
  }
  // Both ends of the data lie inside the plot area.
  for (const auto& [x, y] : pts) {
    EXPECT_GE(x, report::Layout::kLeft);
    EXPECT_LE(x, report::Layout::kWidth - report::Layout::kRight);
    EXPECT_GE(y, report::Layout::kTop);
    EXPECT_LE(y, report::Layout::kTop + report::Layout::kPlotHeight);
  }
  const auto b = polyline(svg, "run-b");
  ASSERT_EQ(b.size(), 1u);  // its line 2 is not valid JSON (Infinity), so only step 20 remains
  EXPECT_NEAR(b[0].first, from_ticks(xt, 20, false), 0.02);
  EXPECT_NEAR(b[0].second, from_ticks(yt, 5.0, true), 0.02);
  EXPECT_NE(svg.find("<circle class=\"marker\" data-series=\"run-b\""), std::string::npos);  // one point: a dot
}

TEST_F(Report, LinearAndLogLengthAxes) {
  const std::string html = render({run_a});
  const std::string lr = svg_titled(html, "Learning rate");
  const auto pts = polyline(lr, "run-a");
  ASSERT_EQ(pts.size(), 10u);
  EXPECT_NEAR(pts[4].second, from_ticks(ticks(lr, "ytick"), 5e-4, false), 0.02);
  EXPECT_NEAR(pts[4].first, from_ticks(ticks(lr, "xtick"), 50, false), 0.02);

  // Perplexity: log x with the evaluated lengths as ticks, log y; one curve per file.
  const std::string ppl = svg_titled(html, "Perplexity vs evaluated length");
  const auto xt = ticks(ppl, "xtick");
  ASSERT_EQ(xt.size(), 4u);
  EXPECT_EQ(xt[0].first, 512);
  EXPECT_EQ(xt[3].first, 4096);
  EXPECT_NEAR(xt[1].second - xt[0].second, xt[3].second - xt[2].second, 0.02);  // doublings equally spaced
  const auto none = polyline(ppl, "run-a \u00b7 rope_scaling=none");
  const auto yarn = polyline(ppl, "run-a \u00b7 rope_scaling=yarn");
  ASSERT_EQ(none.size(), 4u);
  ASSERT_EQ(yarn.size(), 4u);
  EXPECT_NEAR(none[2].first, xt[2].second, 0.02);
  EXPECT_NEAR(none[2].second, from_ticks(ticks(ppl, "ytick"), 80.0, true), 0.05);
  EXPECT_NEAR(yarn[0].second, from_ticks(ticks(ppl, "ytick"), 18.0, true), 0.05);

  // Passkey accuracy on a fixed [0, 1] axis.
  const std::string pk = svg_titled(html, "Passkey retrieval accuracy");
  const auto yt = ticks(pk, "ytick");
  EXPECT_EQ(yt.front().first, 0.0);
  EXPECT_EQ(yt.back().first, 1.0);
  const auto acc = polyline(pk, "run-a");
  ASSERT_EQ(acc.size(), 2u);
  EXPECT_NEAR(acc[1].second, from_ticks(yt, 0.25, false), 0.02);
}

TEST_F(Report, TablesAndBarsCarryTheEvalNumbers) {
  const std::string html = render({run_a, run_b});
  // perplexity table: run, file, seq_len, stride (null -> —), tokens, documents, nll, ppl
  const std::string ppl = section(html, "perplexity");
  EXPECT_NE(ppl.find("<td>512</td><td>\u2014</td><td>12345</td><td>7</td><td>2.9957</td><td>20.000</td>"),
            std::string::npos);
  // passkey heat-map: per length and depth bucket
  const std::vector<std::string> row = row_cells(section(html, "passkey"), "4096");
  EXPECT_EQ(row, (std::vector<std::string>{"4096", "0.25", "0.10", "0.40"}));
  // sink bars: one per layer with a finite value (run B's layer 1 is null)
  const std::string sink = svg_titled(html, "First-token attention (attention sink) per layer");
  EXPECT_EQ(count_of(sink, "<rect class=\"bar\" data-series=\"run-a\""), 3u);
  EXPECT_EQ(count_of(sink, "<rect class=\"bar\" data-series=\"run-b\""), 2u);
  EXPECT_NE(sink.find("data-series=\"run-a\" data-value=\"0.52\""), std::string::npos);
  // gate histogram: layers 0 and 1 averaged as fractions (layer 2 has no histogram)
  const std::string gates = svg_titled(html, "Gate scores: run-a");
  EXPECT_EQ(count_of(gates, "<rect class=\"bar\""), 4u);
  for (const char* v : {"data-value=\"0.4\"", "data-value=\"0.1\""}) EXPECT_NE(gates.find(v), std::string::npos) << v;
  EXPECT_NE(section(html, "gates").find("over 2 of 3 layers"), std::string::npos);
  const std::vector<std::string> layer0 = row_cells(section(html, "gates"), "0");
  EXPECT_EQ(layer0, (std::vector<std::string>{"0", "0.2000", "0.1000", "0.0000", "0.9000", "0.100", "0.600", "0.010",
                                               "0.300"}));
  // activations: null and missing values are skipped, not drawn at 0
  EXPECT_EQ(polyline(svg_titled(html, "Attention output max |h|"), "run-a").size(), 2u);
  EXPECT_EQ(polyline(svg_titled(html, "Residual stream max |h| after each block"), "run-b").size(), 1u);
}

TEST_F(Report, SectionsWithoutDataAreOmitted) {
  ASSERT_TRUE(remove_tree(run_a + "/eval"));
  fs::remove(run_a + "/metrics.jsonl");
  write_file(run_a + "/metrics.jsonl", "{\"step\":10,\"loss\":3.0,\"lr\":0.001}\n{\"step\":20,\"loss\":2.5,\"lr\":0.001}\n");
  report::ReportSummary s;
  const std::string html = render({run_a}, &s);
  EXPECT_EQ(check_well_formed(html), "");
  EXPECT_EQ(s.charts, 2u);  // training loss and learning rate
  EXPECT_EQ(count_of(html, "<svg"), 2u);
  for (const char* id : {"perplexity", "passkey", "attention-sink", "gates", "activations"}) {
    EXPECT_EQ(html.find("<section id=\"" + std::string(id) + "\""), std::string::npos) << id;
  }
  for (const char* note : {"Not shown: section Perplexity", "Not shown: section Passkey", "Not shown: section Gates",
                           "Not shown: chart &quot;Validation loss&quot;", "Not shown: chart &quot;Throughput&quot;"}) {
    EXPECT_NE(html.find(note), std::string::npos) << note;
  }
}

TEST_F(Report, BadInputWritesNothing) {
  write_file(out, "previous");
  EXPECT_THROW(render({run_a, tmp.file("missing")}), InputError);
  fs::create_directories(tmp.file("empty"));
  try {
    render({tmp.file("empty")});
    ADD_FAILURE() << "no InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(tmp.file("empty")), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("metrics.jsonl"), std::string::npos) << e.what();
  }
  EXPECT_THROW(report::write_report({run_a}, tmp.file("no/such/dir/r.html")), InputError);
  EXPECT_EQ(read_file(out), "previous");
  for (const auto& e : fs::directory_iterator(tmp.path())) {
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
  }
}

TEST_F(Report, CommandLineExitCodes) {
  const std::string log = tmp.file("log.txt");
  EXPECT_EQ(run_sluice("report " + run_a + " " + run_b + " --out " + out, log), 0) << read_file(log);
  EXPECT_NE(read_file(log).find("report: " + out + " (2 runs, 11 charts)"), std::string::npos) << read_file(log);
  EXPECT_NE(read_file(log).find("warning: "), std::string::npos);
  EXPECT_TRUE(fs::exists(out));

  const std::string out2 = tmp.file("r2.html");
  EXPECT_EQ(run_sluice("report " + run_a + " " + tmp.file("nope") + " --out " + out2, log), 2);
  EXPECT_NE(read_file(log).find(tmp.file("nope")), std::string::npos) << read_file(log);
  fs::create_directories(tmp.file("no-metrics"));
  EXPECT_EQ(run_sluice("report " + tmp.file("no-metrics") + " --out " + out2, log), 2);
  EXPECT_NE(read_file(log).find("metrics.jsonl"), std::string::npos) << read_file(log);
  EXPECT_EQ(run_sluice("report " + run_a, log), 2);  // --out is required
  EXPECT_FALSE(fs::exists(out2));
}

TEST_F(Report, TextIsEscaped) {
  const std::string odd = tmp.file("run <b>&\"q\"'");
  fs::create_directories(odd + "/eval");
  write_file(odd + "/metrics.jsonl", "{\"step\":1,\"loss\":2.0}\n");
  write_file(odd + "/config.yaml", "model:\n  arch: \"<script>alert(1)</script>\"\n");
  write_file(odd + "/eval/p.json", ppl_json("<i>yarn</i>", 10.0));
  const std::string html = render({odd});
  EXPECT_EQ(check_well_formed(html), "");
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_EQ(html.find("<i>"), std::string::npos);
  EXPECT_NE(html.find("run &lt;b&gt;&amp;&quot;q&quot;&#39;"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("rope_scaling=&lt;i&gt;yarn&lt;/i&gt;"), std::string::npos);
}

TEST_F(Report, RunsWithTheSameNameAreToldApart) {
  const std::string other = tmp.file("copy/run-a");
  fs::create_directories(other);
  write_file(other + "/metrics.jsonl", "{\"step\":1,\"loss\":2.0}\n");
  const std::string html = render({run_a, other});
  const std::string svg = svg_titled(html, "Training loss");
  EXPECT_EQ(polyline(svg, run_a).size(), 9u);
  EXPECT_EQ(polyline(svg, other).size(), 1u);
}

// ---------------------------------------------------------------- chart primitives

TEST(ReportChart, OnePointNonFiniteAndManySeries) {
  report::LineChart chart{"t", {"x"}, {"y", true}, {}};
  chart.series.push_back({"one", "#000", "", {5}, {2}});
  chart.series.push_back({"gaps", "#111", "", {1, 2, 3, 4, 5, 6}, {1, NAN, INFINITY, -1, 0, 3}});  // log y: -1, 0 skipped
  chart.series.push_back({"none", "#222", "", {1, 2}, {NAN, NAN}});
  const std::string svg = report::line_chart_svg(chart);
  EXPECT_EQ(check_well_formed(svg), "");
  const auto one = polyline(svg, "one");
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(count_of(svg, "<circle class=\"marker\" data-series=\"one\""), 1u);
  const auto gaps = polyline(svg, "gaps");
  ASSERT_EQ(gaps.size(), 2u);
  EXPECT_NEAR(gaps[0].first, from_ticks(ticks(svg, "xtick"), 1, false), 0.02);
  EXPECT_NEAR(gaps[1].first, from_ticks(ticks(svg, "xtick"), 6, false), 0.02);
  EXPECT_NEAR(gaps[1].second, from_ticks(ticks(svg, "ytick"), 3, true), 0.02);
  EXPECT_TRUE(polyline(svg, "none").empty());
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);

  // A single value: the axis still has a range and ticks.
  report::LineChart single{"s", {"x"}, {"y"}, {{"p", "#000", "", {7}, {3}}}};
  const std::string s1 = report::line_chart_svg(single);
  EXPECT_GE(ticks(s1, "xtick").size(), 2u);
  EXPECT_GE(ticks(s1, "ytick").size(), 2u);
  const auto p = polyline(s1, "p");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NEAR(p[0].second, from_ticks(ticks(s1, "ytick"), 3, false), 0.02);

  // No finite value at all: a note instead of a line, no crash.
  report::LineChart empty{"e", {"x"}, {"y", true}, {{"p", "#000", "", {1}, {NAN}}}};
  EXPECT_NE(report::line_chart_svg(empty).find("no finite values"), std::string::npos);

  // 25 series: 25 lines, a legend entry each, the legend wraps (the chart grows).
  report::LineChart many{"m", {"x"}, {"y"}, {}};
  for (int i = 0; i < 25; ++i) {
    many.series.push_back({"series number " + std::to_string(i), report::palette(i), report::dash_pattern(i / 10),
                           {0, 1, 2}, {double(i), i + 1.0, i + 0.5}});
  }
  const std::string m = report::line_chart_svg(many);
  EXPECT_EQ(count_of(m, "<polyline class=\"series\""), 25u);
  EXPECT_EQ(count_of(m, ">series number "), 25u);  // legend labels
  const std::regex height("height=\"([0-9.]+)\"");
  std::smatch hm;
  ASSERT_TRUE(std::regex_search(m, hm, height));
  EXPECT_GT(std::stod(hm[1]), report::Layout::kTop + report::Layout::kPlotHeight + report::Layout::kBottom + 5 * 18);
}

TEST(ReportChart, BarsAndHistogramHeights) {
  report::BarChart bars{"b", "layer", {"p"}, {"0", "1", "2"}, {{"r", "#000", {0.5, NAN, 0.25}}}};
  const std::string svg = report::bar_chart_svg(bars);
  EXPECT_EQ(check_well_formed(svg), "");
  EXPECT_EQ(count_of(svg, "<rect class=\"bar\""), 2u);
  // The top of the 0.5 bar is where the y ticks put 0.5; its bottom at 0.
  const auto yt = ticks(svg, "ytick");
  const size_t i = svg.find("<rect class=\"bar\"");
  const std::string rect = svg.substr(i, svg.find('>', i) - i);
  EXPECT_NEAR(std::stod(attr(rect, "y")), from_ticks(yt, 0.5, false), 0.02);
  EXPECT_NEAR(std::stod(attr(rect, "y")) + std::stod(attr(rect, "height")), from_ticks(yt, 0.0, false), 0.02);

  report::Histogram h{"h", {"score"}, {"fraction"}, {0, 0.5, 1.0}, {0.75, 0.25}, "#000"};
  const std::string hs = report::histogram_svg(h);
  const auto xt = ticks(hs, "xtick");
  const size_t j = hs.find("<rect class=\"bar\"");
  const std::string first = hs.substr(j, hs.find('>', j) - j);
  EXPECT_NEAR(std::stod(attr(first, "x")), from_ticks(xt, 0.0, false), 0.02);
  EXPECT_NEAR(std::stod(attr(first, "y")), from_ticks(ticks(hs, "ytick"), 0.75, false), 0.02);
  // mismatched sizes do not crash
  report::Histogram bad{"h", {"score"}, {"fraction"}, {0, 1}, {0.5, 0.5, 0.5}, "#000"};
  EXPECT_EQ(count_of(report::histogram_svg(bad), "<rect class=\"bar\""), 1u);
}

TEST(ReportChart, Ticks) {
  const std::vector<double> linear = report::axis_ticks(0, 1, false);
  ASSERT_EQ(linear.size(), 6u);
  for (size_t i = 0; i < linear.size(); ++i) EXPECT_NEAR(linear[i], 0.2 * i, 1e-12);
  EXPECT_EQ(report::axis_ticks(0.5, 2000, true), (std::vector<double>{1, 10, 100, 1000}));
  EXPECT_EQ(report::axis_ticks(0.5, 200, true), (std::vector<double>{0.5, 1, 2, 5, 10, 20, 50, 100, 200}));
  const std::vector<double> many = report::axis_ticks(1e-3, 1e9, true);
  EXPECT_LE(many.size(), 7u);
  EXPECT_EQ(many.front(), 1e-3);
  EXPECT_EQ(report::axis_ticks(11.9, 163, true), (std::vector<double>{20, 50, 100}));
  const std::vector<double> inside = report::axis_ticks(3.1, 7.9, true);  // narrow: linear steps
  EXPECT_EQ(inside, (std::vector<double>{4, 5, 6, 7}));
}

TEST(ReportText, FormatsAndEscapes) {
  EXPECT_EQ(report::escape("a<b>&\"c\"'"), "a&lt;b&gt;&amp;&quot;c&quot;&#39;");
  EXPECT_EQ(report::tick_label(2000), "2k");
  EXPECT_EQ(report::tick_label(1500), "1.5k");
  EXPECT_EQ(report::tick_label(512), "512");
  EXPECT_EQ(report::tick_label(1024), "1024");
  EXPECT_EQ(report::tick_label(1250), "1.25k");
  EXPECT_EQ(report::tick_label(12345), "12345");
  EXPECT_EQ(report::tick_label(0.25), "0.25");
  EXPECT_EQ(report::tick_label(5e-4), "5e-4");
  EXPECT_EQ(report::tick_label(2e6), "2M");
  EXPECT_EQ(report::count(1234567), "1.23M");
  EXPECT_EQ(report::count(NAN), "\u2014");
  EXPECT_EQ(report::fixed(INFINITY, 2), "\u2014");
  EXPECT_EQ(report::short_number(0.000123), "1.23e-4");
}

// ---------------------------------------------------------------- headless Chromium

// An 8-bit RGB(A) PNG decoded to RGB pixels (what Chromium's --screenshot writes).
struct Image {
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

uint32_t be32(const std::string& s, size_t i) {
  return (uint32_t(uint8_t(s[i])) << 24) | (uint32_t(uint8_t(s[i + 1])) << 16) | (uint32_t(uint8_t(s[i + 2])) << 8) |
         uint32_t(uint8_t(s[i + 3]));
}

bool decode_png(const std::string& file, Image& img, std::string& why) {
  if (file.size() < 8 || file.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) return why = "not a PNG", false;
  std::string idat;
  int color = -1, depth = -1, interlace = -1;
  for (size_t i = 8; i + 8 <= file.size();) {
    const uint32_t len = be32(file, i);
    const std::string type = file.substr(i + 4, 4);
    if (i + 12 + len > file.size()) return why = "truncated chunk", false;
    if (type == "IHDR") {
      img.width = be32(file, i + 8);
      img.height = be32(file, i + 12);
      depth = uint8_t(file[i + 16]);
      color = uint8_t(file[i + 17]);
      interlace = uint8_t(file[i + 20]);
    } else if (type == "IDAT") {
      idat += file.substr(i + 8, len);
    }
    i += 12 + len;
  }
  if (depth != 8 || (color != 2 && color != 6) || interlace != 0) {
    return why = "unsupported PNG (depth " + std::to_string(depth) + ", colour type " + std::to_string(color) + ")", false;
  }
  const size_t bpp = color == 6 ? 4 : 3, stride = img.width * bpp;
  std::vector<uint8_t> raw(img.height * (stride + 1));
  uLongf raw_len = raw.size();
  if (uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) != Z_OK ||
      raw_len != raw.size()) {
    return why = "inflate failed", false;
  }
  std::vector<uint8_t> prev(stride, 0), cur(stride);
  img.rgb.resize(size_t(img.width) * img.height * 3);
  for (uint32_t y = 0; y < img.height; ++y) {
    const uint8_t filter = raw[y * (stride + 1)];
    const uint8_t* in = &raw[y * (stride + 1) + 1];
    for (size_t x = 0; x < stride; ++x) {
      const int a = x >= bpp ? cur[x - bpp] : 0, b = prev[x], c = x >= bpp ? prev[x - bpp] : 0;
      int pred = 0;
      switch (filter) {
        case 0: pred = 0; break;
        case 1: pred = a; break;
        case 2: pred = b; break;
        case 3: pred = (a + b) / 2; break;
        case 4: {
          const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
          pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default: return why = "bad filter", false;
      }
      cur[x] = uint8_t(in[x] + pred);
    }
    for (uint32_t x = 0; x < img.width; ++x) {
      for (int k = 0; k < 3; ++k) img.rgb[(size_t(y) * img.width + x) * 3 + k] = cur[x * bpp + k];
    }
    std::swap(prev, cur);
  }
  return true;
}

// Pixels within `tol` of the colour #rrggbb in every channel.
size_t pixels_near(const Image& img, const std::string& hex, int tol) {
  const int r = std::stoi(hex.substr(1, 2), nullptr, 16), g = std::stoi(hex.substr(3, 2), nullptr, 16),
            b = std::stoi(hex.substr(5, 2), nullptr, 16);
  size_t n = 0;
  for (size_t i = 0; i + 2 < img.rgb.size(); i += 3) {
    n += std::abs(img.rgb[i] - r) <= tol && std::abs(img.rgb[i + 1] - g) <= tol && std::abs(img.rgb[i + 2] - b) <= tol;
  }
  return n;
}

bool have_chromium() { return std::system("command -v chromium >/dev/null 2>&1") == 0; }

// Runs headless Chromium on `page` with its own profile; returns its stderr (console messages).
std::string chromium(const std::string& flags, const std::string& page, const TempDir& tmp, const std::string& tag) {
  const std::string log = tmp.file(tag + ".stderr"), dom = tmp.file(tag + ".dom");
  const std::string cmd = testing::redirected(
      "timeout 120 chromium --headless --no-sandbox --disable-gpu --enable-logging=stderr --v=0 --user-data-dir=" +
          testing::shell_quote(tmp.file(tag + ".profile")) + " " + flags + " " + testing::shell_quote("file://" + page),
      dom, log);
  const int status = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd << "\n" << read_file(log);
  return read_file(log) + read_file(dom);
}

std::vector<std::string> console_errors(const std::string& log) {
  std::vector<std::string> errors;
  std::stringstream ss(log);
  for (std::string line; std::getline(ss, line);) {
    if (line.find("Uncaught") != std::string::npos || line.find("ERROR:CONSOLE") != std::string::npos ||
        (line.find(":CONSOLE") != std::string::npos && line.find("Failed to load resource") != std::string::npos)) {
      errors.push_back(line);
    }
  }
  return errors;
}

TEST_F(Report, RendersInHeadlessChromium) {
  if (!have_chromium()) GTEST_SKIP() << "chromium is not installed (Debian package `chromium`; scripts/setup.sh installs it)";
  render({run_a, run_b});

  // The detector sees a broken page's console error (so that an empty list below means something).
  const std::string broken = write_file(tmp.file("broken.html"), "<!DOCTYPE html><html><body><script>nope()</script></body></html>");
  EXPECT_FALSE(console_errors(chromium("--dump-dom", broken, tmp, "broken")).empty());

  const std::string dom = chromium("--dump-dom", out, tmp, "dom");
  EXPECT_TRUE(console_errors(dom).empty()) << console_errors(dom)[0];
  EXPECT_EQ(count_of(dom, "<svg"), 11u);  // Chromium parsed every chart

  const std::string png = tmp.file("report.png"), blank_png = tmp.file("blank.png");
  const std::string shot = chromium("--screenshot=" + png + " --window-size=1200,3000 --hide-scrollbars", out, tmp, "shot");
  EXPECT_TRUE(console_errors(shot).empty()) << console_errors(shot)[0];
  const std::string blank = write_file(tmp.file("blank.html"), "<!DOCTYPE html><html><body></body></html>");
  chromium("--screenshot=" + blank_png + " --window-size=1200,3000 --hide-scrollbars", blank, tmp, "blank");

  ASSERT_TRUE(fs::exists(png));
  const std::string bytes = read_file(png);
  EXPECT_GT(bytes.size(), 2 * read_file(blank_png).size()) << "screenshot hardly differs from an empty page's";
  Image img;
  std::string why;
  ASSERT_TRUE(decode_png(bytes, img, why)) << why;
  EXPECT_EQ(img.width, 1200u);
  EXPECT_EQ(img.height, 3000u);
  // Both runs' colours are drawn (lines, bars, swatches), and the page is not one colour.
  EXPECT_GT(pixels_near(img, report::palette(0), 10), 2000u);
  EXPECT_GT(pixels_near(img, report::palette(1), 10), 1000u);
  size_t white = pixels_near(img, "#ffffff", 2) + pixels_near(img, "#fafafa", 2);
  EXPECT_LT(white, size_t(img.width) * img.height * 97 / 100);
}

}  // namespace
}  // namespace sluice
