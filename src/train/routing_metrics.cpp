#include "train/routing_metrics.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "train/parallel.h"

namespace sluice {

void add_routing_metrics(nlohmann::json& record, const std::vector<MoELayerStats>& stats) {
  if (stats.empty()) return;
  nlohmann::json layer, lo, hi, cv, dropped, entropy;
  for (const MoELayerStats& s : stats) {
    layer.push_back(s.layer);
    lo.push_back(s.load_min);
    hi.push_back(s.load_max);
    cv.push_back(s.load_cv);
    dropped.push_back(s.dropped);
    entropy.push_back(s.router_entropy);
  }
  record["moe_layer"] = layer;
  record["moe_load_min"] = lo;
  record["moe_load_max"] = hi;
  record["moe_load_cv"] = cv;
  record["moe_dropped"] = dropped;
  record["moe_router_entropy"] = entropy;
}

std::string routing_summary(const std::vector<MoELayerStats>& stats) {
  if (stats.empty()) return "";
  double cv_sum = 0, entropy_sum = 0;
  int64_t dropped = 0, lo = stats[0].load_min, hi = stats[0].load_max;
  const MoELayerStats* worst = &stats[0];
  for (const MoELayerStats& s : stats) {
    cv_sum += s.load_cv;
    entropy_sum += s.router_entropy;
    dropped += s.dropped;
    lo = std::min(lo, s.load_min);
    hi = std::max(hi, s.load_max);
    if (s.load_cv > worst->load_cv) worst = &s;
  }
  const auto n = static_cast<double>(stats.size());
  return fmt::format("moe: load cv mean {:.3f} max {:.3f} (layer {}) | tokens/expert {}..{} | dropped {} | "
                     "entropy {:.3f} | gemm {}",
                     cv_sum / n, worst->load_cv, worst->layer, lo, hi, dropped, entropy_sum / n, stats[0].gemm);
}

void sum_routing_stats(std::vector<MoELayerStats>& stats, Parallel& parallel) {
  if (parallel.world_size() == 1 || stats.empty()) return;
  const int64_t E = static_cast<int64_t>(stats[0].expert_tokens.size());
  at::Tensor packed = at::zeros({static_cast<int64_t>(stats.size()), E + 3}, at::kDouble);
  for (size_t i = 0; i < stats.size(); ++i) {
    double* row = packed[static_cast<int64_t>(i)].data_ptr<double>();
    for (int64_t e = 0; e < E; ++e) row[e] = static_cast<double>(stats[i].expert_tokens[static_cast<size_t>(e)]);
    row[E] = static_cast<double>(stats[i].dropped);
    row[E + 1] = stats[i].router_entropy * static_cast<double>(stats[i].tokens);
    row[E + 2] = static_cast<double>(stats[i].tokens);
  }
  parallel.sum_(packed);
  for (size_t i = 0; i < stats.size(); ++i) {
    const double* row = packed[static_cast<int64_t>(i)].data_ptr<double>();
    MoELayerStats& s = stats[i];
    double sum = 0, sq = 0;
    for (int64_t e = 0; e < E; ++e) {
      const auto c = static_cast<int64_t>(row[e]);
      s.expert_tokens[static_cast<size_t>(e)] = c;
      s.load_min = e == 0 ? c : std::min(s.load_min, c);
      s.load_max = e == 0 ? c : std::max(s.load_max, c);
      sum += row[e];
      sq += row[e] * row[e];
    }
    const double mean = sum / static_cast<double>(E);
    s.load_cv = mean > 0 ? std::sqrt(std::max(0.0, sq / static_cast<double>(E) - mean * mean)) / mean : 0.0;
    s.dropped = static_cast<int64_t>(row[E]);
    s.tokens = static_cast<int64_t>(row[E + 2]);
    s.router_entropy = s.tokens > 0 ? row[E + 1] / row[E + 2] : 0.0;
  }
}

}  // namespace sluice
