#include "data/prefetcher.h"

#include <ATen/ATen.h>

#include <chrono>

namespace sluice {

namespace {

Batch pinned(Batch b) {
  auto pin = [](const at::Tensor& t) { return t.defined() ? t.pin_memory() : t; };
  return {pin(b.inputs), pin(b.targets), pin(b.segments)};
}

}  // namespace

Prefetcher::Prefetcher(std::function<Batch(uint64_t)> make, uint64_t start, int depth, c10::Device device)
    : make_(std::move(make)), next_(start), depth_(static_cast<size_t>(depth)), device_(device) {
  if (depth_ > 0) worker_ = std::thread([this, start] { run(start); });
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void Prefetcher::run(uint64_t first) {
  for (uint64_t k = first;; ++k) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || ready_.size() < depth_; });
      if (stop_) return;
    }
    Batch b;
    try {
      b = make_(k);
      if (!device_.is_cpu()) b = pinned(std::move(b));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    ready_.push_back(std::move(b));
    cv_.notify_all();
  }
}

Batch Prefetcher::next() {
  const auto t0 = std::chrono::steady_clock::now();
  Batch b;
  if (depth_ == 0) {
    b = make_(next_);
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !ready_.empty() || error_; });
    if (ready_.empty()) std::rethrow_exception(error_);
    b = std::move(ready_.front());
    ready_.pop_front();
    cv_.notify_all();
  }
  ++next_;
  waited_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return device_.is_cpu() ? b : to_device(b, device_);
}

double Prefetcher::take_wait_seconds() {
  const double w = waited_;
  waited_ = 0.0;
  return w;
}

}  // namespace sluice
