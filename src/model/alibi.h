// ALiBi (Press et al. 2022, "Train Short, Test Long"): no position embedding; each head h adds
// -m_h·(i-j) to the score of query i and key j. The attention cores add the bias when
// AttentionMask::alibi_slopes is set.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace sluice {

// m_h = 2^(-8h/n), h = 1..n, for n a power of two. Otherwise the paper's code rule: the slopes
// of the largest power of two p < n, then every other slope of 2p, until n are taken.
std::vector<double> alibi_slopes(int64_t n_heads);

// The slopes as an fp32 [n_heads] tensor on `device`.
at::Tensor alibi_slopes_tensor(int64_t n_heads, const at::Device& device);

}  // namespace sluice
