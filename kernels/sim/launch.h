// cuda_sim's host side (cuda_sim.h explains the emulator): launching a kernel body on the CPU
// and the global buffers it may read. Free of CUDA built-in shims, so any translation unit
// (one with ATen, say) can include it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace sluice::sim {

enum class Order { InOrder, Reversed, Shuffled };
enum class CopyTiming { AtIssue, AtWait };

struct Options {
  Order order = Order::InOrder;            // threads (and blocks) in index order, reversed, or shuffled
  CopyTiming copies = CopyTiming::AtWait;  // when a cp.async copy lands
  uint64_t seed = 1;                       // Order::Shuffled
};

struct LaunchShape {
  int grid = 1;     // blocks (1-D)
  int threads = 1;  // per block (1-D)
  int smem_bytes = 0;
};

// Runs `thread` once per thread of every block. Throws std::runtime_error on any check above.
void launch(const LaunchShape& shape, const Options& options, const std::function<void()>& thread);

// The global buffers cp.async may read, for the duration of a scope (nested scopes add).
class GlobalBuffers {
 public:
  GlobalBuffers() = default;
  GlobalBuffers(const GlobalBuffers&) = delete;
  GlobalBuffers& operator=(const GlobalBuffers&) = delete;
  ~GlobalBuffers();
  void add(const void* data, size_t bytes);

 private:
  std::vector<const void*> added_;
};

}  // namespace sluice::sim
