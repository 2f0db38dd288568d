// What one finished run of an ablation grid measured, read back from its run directory
// (summary.json, metrics.jsonl, eval/*.json), and the grid's tables: results.json, results.csv
// and the mean ± std over seeds per variant.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ablate/grid.h"

namespace sluice::ablate {

struct RunResult {
  std::string name, variant;
  int64_t seed = -1;
  std::map<std::string, std::string> axis_values;
  std::string run_dir;
  bool finished = false;
  std::optional<double> params, tokens, final_loss, final_val_loss, tokens_per_s;
  std::map<int64_t, double> ppl;      // seq_len -> perplexity
  std::map<int64_t, double> passkey;  // length -> accuracy
  std::optional<double> first_token_attention;  // sink mean over layers
  std::optional<double> gate_mean;              // over layers
  std::optional<double> gate_sparsity;          // share of gated SDPA outputs below 1e-2, over layers
  std::optional<double> max_activation;         // max |residual| over layers
  // Training stability, from metrics.jsonl and summary.json: logged losses more than 20% above
  // the lowest logged loss before them, or not finite; updates skipped for non-finite gradients.
  std::optional<double> loss_spikes, skipped_steps;
};

// The count of loss spikes in a sequence of logged losses (the rule above).
int64_t count_loss_spikes(const std::vector<double>& logged_losses);

// Reads run `spec` under DIR/runs/<name>/ (missing files leave fields empty).
RunResult read_run_result(const RunSpec& spec, const std::string& runs_dir);

// results.json (one object per run) and results.csv (one row per run) under `out_dir`.
void write_results(const std::vector<RunResult>& results, const std::string& out_dir);

// Per variant (and axis values): the number of runs and the mean ± sample std over them of each
// measure; the first row is the header.
std::vector<std::vector<std::string>> grouped_rows(const std::vector<RunResult>& results);
// The same as an aligned text table.
std::string summary_table(const std::vector<RunResult>& results);

}  // namespace sluice::ablate
