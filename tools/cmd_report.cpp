// `sluice report RUN_DIR... --out report.html`
#include <CLI/CLI.hpp>
#include <ostream>

#include "cli.h"
#include "report/report_page.h"

namespace sluice::cli {

void add_report_command(CLI::App& app, Io io) {
  struct Args {
    std::vector<std::string> runs;
    std::string out;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "report", "Compare run directories in one self-contained HTML page (inline SVG charts; docs/report.md).");
  cmd->add_option("RUN_DIR", args->runs, "run directories (metrics.jsonl, summary.json, config.yaml, eval/*.json)")
      ->required();
  cmd->add_option("--out", args->out, "the HTML file to write (replaced atomically)")->required();
  cmd->callback([args, io] {
    const report::ReportSummary s = report::write_report(args->runs, args->out);
    for (const std::string& w : s.warnings) io.err << "warning: " << w << "\n";
    io.out << "report: " << args->out << " (" << s.runs << (s.runs == 1 ? " run, " : " runs, ") << s.charts
           << " charts";
    if (!s.omitted.empty()) io.out << "; " << s.omitted.size() << " parts without data left out";
    io.out << ")\n";
  });
}

}  // namespace sluice::cli
