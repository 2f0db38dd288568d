// Collinear Constrained Attention (Zhu et al. 2023, "CoCA: Fusing Position Embedding with
// Collinear Constrained Attention", arXiv 2309.08646). k_proj becomes the magnitude projection
// t = ReLU(W_T x), one non-negative value per rotary pair (the pair (j, j+D/2) is averaged
// before the ReLU, as the official code does in the same rotate-half layout). Each key is
// collinear with the query within each pair, so
//   strict (paper Eq. 9):  score(m, n) = Σ_j t_{n,j}·|q_{m,j}|²·cos((m-n)θ_j)
//   slack (official code): score(m, n) = Σ_d q_{m,d}·RoPE(q, m)_d·RoPE(T, n)_d, T = [t, t]
// Both are written as ordinary attention on Q_eff·K_eff (O(N·d) memory, any AttentionCore);
// the caller multiplies by 1/sqrt(head_dim) as usual.
#pragma once
#include <ATen/core/Tensor.h>

#include "model/rope.h"

namespace sluice {

enum class CocaMode { Strict, Slack };

// t_raw [B, T, KV, D] (the k_proj output) -> t [B, T, KV, D/2] >= 0.
at::Tensor coca_magnitude(const at::Tensor& t_raw);
// K_eff [B, T, KV, D] from the k_proj output: what a KV cache stores (the official code caches
// RoPE(T) likewise). strict: t·(cos nθ, sin nθ); slack: RoPE([t, t], n).
at::Tensor coca_key(const at::Tensor& t_raw, const RotaryTables& tables, CocaMode mode);
// Q_eff [B, T, H, D]. strict: |q_j|²·(cos mθ, sin mθ) with |q_j|² = q_j² + q_{j+D/2}²;
// slack: q ⊙ RoPE(q, m).
at::Tensor coca_query(const at::Tensor& q, const RotaryTables& tables, CocaMode mode);

// coca_key and coca_query (defined with the other fused ops, src/model/fused_ops.cpp) run one
// fused CUDA kernel each way (kernels/coca.cu, with autograd) on GPU tensors when the kernels
// were built; these ATen compositions are the reference they are tested against
// (tests/test_gpu.cpp) and the CPU path.
at::Tensor coca_key_reference(const at::Tensor& t_raw, const RotaryTables& tables, CocaMode mode);
at::Tensor coca_query_reference(const at::Tensor& q, const RotaryTables& tables, CocaMode mode);

}  // namespace sluice
