// Live (and peak) bytes of LibTorch's CPU allocator while installed: what a forward keeps for
// backward, what a step needs at its highest.
#pragma once
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace sluice::testing {

class CountingCPUAllocator : public c10::Allocator {
 public:
  CountingCPUAllocator() : base_(c10::GetDefaultCPUAllocator()) { c10::SetCPUAllocator(this, /*priority=*/100); }
  ~CountingCPUAllocator() override { c10::SetCPUAllocator(base_, /*priority=*/100); }
  c10::DataPtr allocate(size_t n) override {
    auto* block = new Block{base_->allocate(n), n, this};
    const int64_t now = live_ += static_cast<int64_t>(n);
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
    void* data = block->ptr.get();
    return {data, block, &release, block->ptr.device()};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
  int64_t live() const { return live_; }
  int64_t peak() const { return peak_; }
  void reset_peak() { peak_ = live_.load(); }

 private:
  struct Block {
    c10::DataPtr ptr;
    size_t bytes;
    CountingCPUAllocator* owner;
  };
  static void release(void* ctx) {
    auto* block = static_cast<Block*>(ctx);
    block->owner->live_ -= static_cast<int64_t>(block->bytes);
    delete block;
  }
  c10::Allocator* base_;
  std::atomic<int64_t> live_{0}, peak_{0};
};

}  // namespace sluice::testing
