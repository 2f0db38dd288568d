// MoE routing statistics (CausalLMImpl::routing_stats) as metrics.jsonl fields and a log line.
// In the trainer, at log time:
//     const auto routing = model->routing_stats();   // one device sync for all layers
//     add_routing_metrics(rec, routing);             // no-op for dense models
//     if (!routing.empty()) log::info(routing_summary(routing));
// and from TrainStep::Result, when defined: rec["aux_loss"], rec["z_loss"].
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "sluice/model.h"

namespace sluice {

// Adds per-layer arrays, index-aligned with "moe_layer": moe_layer, moe_load_min,
// moe_load_max (assignments per expert), moe_load_cv, moe_dropped, moe_router_entropy.
void add_routing_metrics(nlohmann::json& record, const std::vector<MoELayerStats>& stats);

// "moe: load cv mean 0.12 max 0.31 (layer 5) | tokens/expert 812..1490 | dropped 0 | entropy 1.93 | gemm grouped"
std::string routing_summary(const std::vector<MoELayerStats>& stats);

}  // namespace sluice

namespace sluice {
class Parallel;
// Sums the statistics over the ranks (counts, drops, tokens; the entropy weighted by tokens)
// and recomputes the derived fields, so every rank holds the global batch's statistics.
// Every rank calls it with the same layers.
void sum_routing_stats(std::vector<MoELayerStats>& stats, Parallel& parallel);
}  // namespace sluice
