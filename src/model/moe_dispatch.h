// Token dispatch for MoE layers, in two steps that an expert-parallel all-to-all can later
// sit between: `dispatch` gathers each token once per selected expert into rows sorted by
// expert (one stable argsort, so every expert owns a contiguous slice), `combine` puts the
// expert outputs back in token order and sums them with the routing weights. No per-expert
// boolean masks over all tokens; nothing here synchronises with the GPU.
#pragma once
#include <ATen/core/Tensor.h>

namespace sluice {

// Assignment a = j·N + n is token n's j-th choice (slot-major). Sorting the assignments by
// expert with a stable sort keeps, inside each expert's slice, all first choices before all
// second choices and tokens in order: the priority the capacity policy drops by.
struct DispatchPlan {
  int64_t n_tokens = 0, top_k = 0, n_experts = 0;
  int64_t sequence_length = 0;  // tokens per sequence (the layer's input is [B, T, d]); 0 = n_tokens
  at::Tensor order;    // [N·k] int64: the assignment j·N + n of each expert-sorted row
  at::Tensor expert;   // [N·k] int64: the expert of each sorted row (nondecreasing)
  at::Tensor token;    // [N·k] int64: source token of each expert-sorted row
  at::Tensor inverse;  // [N·k] int64: sorted row of assignment a
  at::Tensor counts;   // [E] int64: rows per expert, dropped rows included (they are zero rows)
  at::Tensor kept;     // [N·k] bool per sorted row; undefined when dropless
};

// ceil(factor · N · k / E): assignments one expert may take per micro-batch (factor > 0).
int64_t expert_capacity(double factor, int64_t n_tokens, int64_t top_k, int64_t n_experts);

// expert [N, k] int64 from the router; capacity 0 = dropless, else rows of an expert beyond
// the first `capacity` (in the priority order above) are marked dropped.
DispatchPlan plan_dispatch(const at::Tensor& expert, int64_t n_experts, int64_t capacity);

// For rows sorted by expert (`row_expert` nondecreasing, `counts` [E] rows per expert): true
// for the first `capacity` rows of each expert, the ones capacity dropping keeps.
at::Tensor capacity_mask(const at::Tensor& row_expert, const at::Tensor& counts, int64_t capacity);

// x [N, d] -> [N·k, d] rows sorted by expert. Dropped rows are zero: an expert maps a zero
// row to zero (SwiGLU without biases), so a dropped assignment adds nothing to the output
// and receives and passes no gradient.
at::Tensor dispatch(const at::Tensor& x, const DispatchPlan& plan);

// rows [N·k, d] (expert outputs in dispatch order), weight [N, k] -> [N, d]:
// y_n = Σ_j weight[n, j] · rows[inverse[j·N + n]], in the promoted dtype of rows and weight.
at::Tensor combine(const at::Tensor& rows, const at::Tensor& weight, const DispatchPlan& plan);

}  // namespace sluice
