// What `sluice report` reads from a run directory: config.yaml, summary.json, metrics.jsonl
// and the eval tools' result files eval/*.json (docs/report.md). Missing numbers are NaN and
// missing strings empty, so that the page shows "—" for them; only a missing directory or
// metrics.jsonl is an error.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace sluice::report {

struct Series {
  std::vector<double> x, y;
  bool empty() const { return x.empty(); }
};

// One eval_ppl result file: perplexity per evaluated length.
struct PplCurve {
  std::string file;          // file name inside eval/
  std::string rope_scaling;  // settings.rope_scaling as text ("" when absent)
  struct Point {
    double seq_len = NAN, stride = NAN, tokens = NAN, documents = NAN, nll = NAN, ppl = NAN;  // NaN when absent
  };
  std::vector<Point> points;
};

// One eval_passkey result file.
struct PasskeyEval {
  std::string file;
  double trials = NAN, seed = NAN;
  struct Bucket {
    double depth_lo = NAN, depth_hi = NAN, accuracy = NAN, trials = NAN;
  };
  struct Length {
    double length = NAN, accuracy = NAN, trials = NAN;
    std::vector<Bucket> by_depth;
  };
  std::vector<Length> results;
};

// One stats_attention result file.
struct AttentionStats {
  std::string file;
  double sequences = NAN, seq_len = NAN;
  bool query0_excluded = false;
  std::vector<double> sink_per_layer;  // probability on the first token, mean over heads and queries
  double sink_mean = NAN, share_heads_over_half = NAN;
  struct Gate {
    double mean = NAN, std = NAN, min = NAN, max = NAN;
    std::vector<double> edges, counts;  // histogram over [0, 1]; counts.size() == edges.size() - 1 when valid
  };
  std::vector<Gate> gates;  // per layer; empty: not a gated model (gates: null)
  struct Sparsity {
    double before_1e2 = NAN, before_1e3 = NAN, after_1e2 = NAN, after_1e3 = NAN;
  };
  std::vector<Sparsity> sparsity;  // per layer; empty when absent
  struct Activations {
    double residual_max = NAN, residual_mean = NAN, attn_max = NAN, attn_mean = NAN, ffn_max = NAN, ffn_mean = NAN;
  };
  std::vector<Activations> activations;  // per layer
};

struct RunData {
  std::string dir;   // as given on the command line
  std::string name;  // the directory's last component (made unique by the page)

  // summary.json (NaN / empty when absent)
  bool has_summary = false;
  double params = NAN, steps = NAN, final_loss = NAN, final_val_loss = NAN, tokens_per_s = NAN;
  std::string device;

  // config.yaml (empty when absent)
  bool has_config = false;
  std::string arch, position, rope_scaling, gate_position, coca_mode;

  // metrics.jsonl: one point per record holding the field (non-finite values kept as NaN)
  Series loss, val_loss, lr, tokens_per_s_curve;

  // eval/*.json, in file-name order
  std::vector<PplCurve> ppl;
  std::vector<PasskeyEval> passkey;
  std::vector<AttentionStats> attention;

  std::vector<std::string> warnings;  // unreadable or unknown files, skipped lines
};

// Reads one run directory. Throws InputError when `dir` is not a directory or has no
// metrics.jsonl; everything else that is missing or malformed becomes a warning.
RunData load_run(const std::string& dir);

}  // namespace sluice::report
