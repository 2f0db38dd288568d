// Builds batches on a background thread so the device does not wait for data: batches
// start, start+1, ... are made ahead (up to `depth`) in pinned memory and copied to the
// device asynchronously when taken.
#pragma once
#include <c10/core/Device.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "data/batch.h"

namespace sluice {

class Prefetcher {
 public:
  Prefetcher(std::function<Batch(uint64_t)> make, uint64_t start, int depth, c10::Device device);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // The next batch, on the device. Rethrows an exception of the background thread.
  Batch next();
  // Index of the batch next() returns next: the loader state a checkpoint saves.
  uint64_t next_index() const { return next_; }
  // Seconds next() spent waiting since the last call (the loader's cost per step).
  double take_wait_seconds();

 private:
  std::function<Batch(uint64_t)> make_;
  uint64_t next_;
  size_t depth_;
  c10::Device device_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread worker_;
  double waited_ = 0.0;
  void run(uint64_t first);
};

}  // namespace sluice
