// DIR/report.html of an ablation grid: `sluice report` over every run directory, with a Grid
// section after its Summary: the per-variant table (mean ± std over seeds) and perplexity
// against length per variant (the mean over its runs).
#pragma once
#include <string>
#include <vector>

#include "ablate/results.h"

namespace sluice::ablate {

// The Grid section's HTML (exposed for tests).
std::string grid_section_html(const std::vector<RunResult>& results);

// Writes `out` (atomically) from the runs that have a metrics.jsonl; returns how many.
size_t write_grid_report(const std::vector<RunResult>& results, const std::string& out);

}  // namespace sluice::ablate
