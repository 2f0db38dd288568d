// Wall-clock timing of GPU work for the benchmarks: `warmup` untimed calls, a device
// synchronisation, then the mean over `iters` calls up to the next synchronisation.
#pragma once
#include <torch/cuda.h>

#include <chrono>
#include <cstdint>
#include <functional>

namespace sluice::bench {

inline double time_ms(const std::function<void()>& fn, int64_t warmup, int64_t iters) {
  for (int64_t i = 0; i < warmup; ++i) fn();
  torch::cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; ++i) fn();
  torch::cuda::synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
         static_cast<double>(iters);
}

}  // namespace sluice::bench
