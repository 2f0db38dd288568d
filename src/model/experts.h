// The routed experts of one MoE layer: E SwiGLU MLPs stored as stacked 3-D parameters so one
// grouped GEMM can run all of them. Slice e of each tensor is, bit for bit, the HF per-expert
// weight `experts.{e}.{gate,up,down}_proj.weight` ([out, in]); docs/moe.md has the trade-off.
#pragma once
#include <torch/nn/module.h>

#include <string>

namespace sluice {

enum class ExpertGemm {
  Grouped,  // at::_grouped_mm: one launch per projection, no host sync (CUTLASS on sm90+, bf16)
  Loop,     // one matmul per expert on its contiguous slice; reads the row counts on the host
};

// The dtype the expert matmuls run in: the autocast dtype when autocast is on for x's device,
// else x's dtype. Both GEMM paths cast explicitly so they compute the same thing.
at::ScalarType expert_compute_dtype(const at::Tensor& x);
// `setting` is model.moe.gemm: "grouped", "loop", or "auto" = Grouped for bf16 on a CUDA
// device of compute capability 9.x or 10.x with 16-byte aligned rows, else Loop.
ExpertGemm choose_expert_gemm(const std::string& setting, const at::Device& device, at::ScalarType dtype,
                              int64_t d_model, int64_t hidden);
const char* expert_gemm_name(ExpertGemm g);

class ExpertsImpl : public torch::nn::Module {
 public:
  ExpertsImpl(int64_t n_experts, int64_t d_model, int64_t hidden);
  // x [M, d_model] rows sorted by expert; counts [E] int64 rows per expert (sums to M).
  // Returns down_e(silu(gate_e(x)) ⊙ up_e(x)) per row, [M, d_model] in the compute dtype.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& counts, ExpertGemm gemm) const;
  // Keeps experts [first, first + count) of the stacks (the same parameter tensors, resized).
  void keep(int64_t first, int64_t count);

  at::Tensor gate_proj, up_proj;  // [E, hidden, d_model]
  at::Tensor down_proj;           // [E, d_model, hidden]
};
TORCH_MODULE(Experts);

}  // namespace sluice
