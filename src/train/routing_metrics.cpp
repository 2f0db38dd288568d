#include "train/routing_metrics.h"

#include <fmt/format.h>

#include <algorithm>

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

}  // namespace sluice
