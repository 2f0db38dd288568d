#include "ablate/grid_report.h"

#include <filesystem>
#include <map>
#include <set>

#include "report/report_page.h"
#include "report/svg_chart.h"
#include "report/text.h"

namespace sluice::ablate {

namespace fs = std::filesystem;

std::string grid_section_html(const std::vector<RunResult>& results) {
  const auto rows = grouped_rows(results);
  std::string html = "<section id=\"grid\">\n<h2>Grid: variants</h2>\n<p class=\"note\">Per variant (and axis values): "
                     "finished runs (\"k of N\" while the grid is partly done), and the mean \u00b1 sample standard deviation over them "
                     "(from DIR/results.csv).</p>\n"
                     "<div class=\"scroll\">\n<table class=\"grid\">\n<thead><tr>";
  for (size_t i = 0; i < rows.front().size(); ++i)
    html += "<th" + std::string(i == 0 ? " class=\"text\"" : "") + ">" + report::escape(rows.front()[i]) + "</th>";
  html += "</tr></thead>\n<tbody>\n";
  for (size_t r = 1; r < rows.size(); ++r) {
    html += "<tr>";
    for (size_t i = 0; i < rows[r].size(); ++i)
      html += "<td" + std::string(i == 0 ? " class=\"text\"" : "") + ">" + report::escape(rows[r][i]) + "</td>";
    html += "</tr>\n";
  }
  html += "</tbody>\n</table>\n</div>\n";

  // Perplexity vs length: one curve per variant group, each point the mean over its runs.
  std::vector<std::string> order;
  std::map<std::string, std::map<int64_t, std::pair<double, int>>> sums;
  std::set<double> lengths;
  for (const RunResult& r : results) {
    if (!r.finished) continue;  // as the table: finished runs only
    std::string key = r.variant;
    for (const auto& [k, v] : r.axis_values) key += " " + k + "=" + v;
    if (!sums.count(key)) order.push_back(key);
    auto& group = sums[key];
    for (const auto& [len, ppl] : r.ppl) {
      group[len].first += ppl;
      ++group[len].second;
      lengths.insert(static_cast<double>(len));
    }
  }
  report::LineChart chart{"Perplexity vs length, mean per variant", {"sequence length (tokens, log scale)", true},
                          {"perplexity (log scale)", true}, {}};
  for (size_t i = 0; i < order.size(); ++i) {
    report::LineSeries s{order[i], report::palette(i), "", {}, {}};
    for (const auto& [len, sum] : sums[order[i]]) {
      s.x.push_back(static_cast<double>(len));
      s.y.push_back(sum.first / sum.second);
    }
    if (!s.x.empty()) chart.series.push_back(std::move(s));
  }
  if (!chart.series.empty()) {
    chart.x.ticks.assign(lengths.begin(), lengths.end());
    html += "<div class=\"charts\">\n" + report::line_chart_svg(chart) + "</div>\n";
  }
  html += "</section>\n";
  return html;
}

size_t write_grid_report(const std::vector<RunResult>& results, const std::string& out) {
  std::vector<std::string> dirs;
  std::error_code ec;
  for (const RunResult& r : results)
    if (fs::exists(fs::path(r.run_dir) / "metrics.jsonl", ec)) dirs.push_back(r.run_dir);
  if (dirs.empty()) return 0;
  report::write_report(dirs, out, {grid_section_html(results)});
  return dirs.size();
}

}  // namespace sluice::ablate
