// `sluice report`: one self-contained HTML page (inline CSS and SVG, no scripts, no network)
// comparing run directories; see docs/report.md for the sections and their inputs.
#pragma once
#include <string>
#include <vector>

#include "report/run_data.h"

namespace sluice::report {

struct ReportSummary {
  size_t runs = 0;
  size_t charts = 0;                   // <svg> elements on the page
  std::vector<std::string> omitted;    // sections left out for lack of data, with why
  std::vector<std::string> warnings;   // from reading the runs
};

// The page for already loaded runs (a pure function: tests render without files).
// `extra_sections`: finished <section> markup from the caller (text escaped there), placed after
// the Summary, e.g. `sluice ablate`'s per-variant table and curves.
std::string render_report(const std::vector<RunData>& runs, ReportSummary* summary = nullptr,
                          const std::vector<std::string>& extra_sections = {});

// Loads every run, renders the page and writes it to `out` atomically (temporary file, then
// rename). Throws InputError (missing run directory or metrics.jsonl, unwritable --out)
// before anything is written.
ReportSummary write_report(const std::vector<std::string>& run_dirs, const std::string& out,
                           const std::vector<std::string>& extra_sections = {});

}  // namespace sluice::report
