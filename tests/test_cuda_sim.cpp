// cuda_sim (kernels/sim/): the emulator's collectives, cp.async timing and its checks, on
// small hand-written kernels. test_flash_sim.cpp runs the real kernels on it.
#include "sim/cuda_sim.h"  // first: the CUDA built-ins for the kernels below

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "flash/mma.cuh"

namespace sluice {
namespace {

// The launch fails with a message containing `what`.
void expect_failure(const sim::LaunchShape& shape, const std::function<void()>& kernel, const std::string& what) {
  try {
    sim::launch(shape, sim::Options{}, kernel);
    ADD_FAILURE() << "expected a failure containing '" << what << "'";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(CudaSim, ShuffleVoteAndBarrierSeeEveryThread) {
  std::vector<float> swapped(64), votes(64);
  std::vector<int> seen(64);
  int arrived = 0;
  for (sim::Order order : {sim::Order::InOrder, sim::Order::Reversed, sim::Order::Shuffled}) {
    arrived = 0;
    sim::launch({1, 64, 0}, {order, sim::CopyTiming::AtWait, 3}, [&] {
      const int tid = static_cast<int>(threadIdx.x);
      swapped[tid] = __shfl_xor_sync(0xffffffffu, static_cast<float>(tid), 5);
      votes[tid] = __any_sync(0xffffffffu, tid == 40) ? 1.f : 0.f;
      ++arrived;
      __syncthreads();
      seen[tid] = arrived;  // every thread arrived before any passed the barrier
    });
    for (int i = 0; i < 64; ++i) {
      EXPECT_EQ(swapped[i], static_cast<float>(i ^ 5));
      EXPECT_EQ(votes[i], i >= 32 ? 1.f : 0.f);  // lane 8 of warp 1 only
      EXPECT_EQ(seen[i], 64);
    }
  }
}

// Exited threads drop out of barriers and collectives, as in CUDA (the flash backward's row
// kernels return early by whole rows, then shuffle within rows under a full mask); a shuffle
// reading an exited lane gets NaN bits.
TEST(CudaSim, ExitedThreadsDropOut) {
  std::vector<float> got(32, 0.f);
  sim::launch({1, 32, 0}, sim::Options{}, [&] {
    const int tid = static_cast<int>(threadIdx.x);
    if (tid < 16) return;
    got[tid] = __shfl_xor_sync(0xffffffffu, static_cast<float>(tid), tid < 24 ? 1 : 16);
    __syncthreads();
  });
  for (int i = 16; i < 24; ++i) EXPECT_EQ(got[i], static_cast<float>(i ^ 1));
  for (int i = 24; i < 32; ++i) EXPECT_TRUE(std::isnan(got[i])) << i;  // lane i ^ 16 < 16 exited
}

// A copy lands at issue or only at the wait that covers its group, as the options say.
TEST(CudaSim, CpAsyncLandsWhenTheOptionsSay) {
  alignas(16) static unsigned char src[32];
  for (int i = 0; i < 32; ++i) src[i] = static_cast<unsigned char>(i + 1);
  sim::GlobalBuffers buffers;
  buffers.add(src, sizeof src);
  for (sim::CopyTiming copies : {sim::CopyTiming::AtIssue, sim::CopyTiming::AtWait}) {
    unsigned char before_wait = 0, after_first = 0, after_all = 0;
    sim::launch({1, 1, 32}, {sim::Order::InOrder, copies, 1}, [&] {
      unsigned char* smem = sim::dynamic_smem();
      flash::cp_async_16(smem, src, true);
      flash::cp_async_commit();
      flash::cp_async_16(smem + 16, src + 16, true);
      flash::cp_async_commit();
      before_wait = smem[0];
      flash::cp_async_wait<1>();  // the first group only
      after_first = smem[16];
      flash::cp_async_wait<0>();
      after_all = smem[16];
    });
    const bool at_issue = copies == sim::CopyTiming::AtIssue;
    EXPECT_EQ(before_wait, at_issue ? 1 : 0xFF);  // shared memory starts as NaN bytes
    EXPECT_EQ(after_first, at_issue ? 17 : 0xFF);
    EXPECT_EQ(after_all, 17);
  }
}

TEST(CudaSim, ReportsCopiesOutsideBuffersAndSharedMemory) {
  alignas(16) static unsigned char src[32];
  sim::GlobalBuffers buffers;
  buffers.add(src, 16);
  auto copy = [](const void* from, uint32_t to) {
    return [=] {
      flash::cp_async_16_to(to, from, 16);
      flash::cp_async_commit();
      flash::cp_async_wait<0>();
    };
  };
  expect_failure({1, 1, 64}, copy(src + 16, 0), "outside every registered global buffer");
  expect_failure({1, 1, 64}, copy(src, 64), "outside the launch's 64 bytes of dynamic shared memory");
  expect_failure({1, 1, 64}, copy(src, 8), "misaligned");
  sim::launch({1, 1, 64}, sim::Options{}, copy(src, 48));  // in bounds: fine
}

TEST(CudaSim, ReportsCopiesNeverWaitedFor) {
  expect_failure({1, 1, 16}, [] {
    flash::cp_async_16_to(0, nullptr, 0);  // a zero-fill reads nothing, but still lands later
    flash::cp_async_commit();
  }, "never waited for");
}

TEST(CudaSim, ReportsDivergentWarpsAndDeadlocks) {
  expect_failure({1, 32, 0}, [] {
    if (threadIdx.x < 16) __syncwarp();
    else (void)__any_sync(0xffffffffu, true);
  }, "divergent warp");
  expect_failure({1, 64, 0}, [] {
    if (threadIdx.x == 33) __syncwarp();  // its warp's other lanes wait at the block barrier
    else __syncthreads();
  }, "deadlock");
  expect_failure({1, 1, 0}, [] { __trap(); }, "__trap()");
}

}  // namespace
}  // namespace sluice
