// Fused sigmoid gate (the G1 gate after a non-fused attention core, docs/attention.md): one
// elementwise kernel each way instead of ATen's sigmoid, product and (headwise) reduction.
// The same code compiles with nvcc (kernels/gate_mul.cu, host API kernels/gate_mul.h) and under
// cuda_sim on the CPU (kernels/gate_mul_sim.cpp, which includes sim/cuda_sim.h first).
//
// y has n elements, z has n / width: one gate logit per group of `width` consecutive elements of
// y, z index = i / width. width = 1 is the elementwise gate (z shaped like y), width = D the
// headwise gate (y [..., H, D], z [..., H]). With s = sigmoid(z[i / width]) in fp32:
//   forward   out[i] = y[i] · s
//   backward  dy[i]  = dout[i] · s
//             dz[g]  = Σ_{i in group g} dout[i] · y[i] · s · (1 - s)
// Math in fp32 (s = 1 / (1 + exp(-z)), IEEE exp and division), each output rounded once to T
// (fp32, fp16 or bf16; every tensor of one type).
//
// Layout: blocks of kThreads = 256 threads, one thread per chunk (16 bytes of T when the plan is
// vectorised, else one element). The forward, and the backward when width = 1, map chunk k to
// elements [k·V, (k+1)·V). The headwise backward gives each group to kGroupThreads consecutive
// lanes (1, 8 or 32, by the group's chunk count): lane t takes the group's chunks t, t + G, ...,
// sums its dz terms in that order, and the lanes' sums meet in a shuffle butterfly; lane 0
// writes dz[g]. A fixed order, no atomics: dz is bitwise the same whatever the schedule.
// Vectorised when n (and width, unless it is 1) is a multiple of V = 16 / sizeof(T) and every
// base that is read or written in chunks is 16-byte aligned; a chunk then lies in one group.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "rms_norm.cuh"  // Vec, load_vec, store_vec, to_f, from_f, vec_ok (16-byte accesses)

namespace sluice::kernels::gate {

using rms::from_f;
using rms::load_vec;
using rms::store_vec;
using rms::to_f;
using rms::Vec;

constexpr int kThreads = 256;

template <typename T>
struct FwdParams {
  const T* y;  // [n]
  const T* z;  // [n / width]
  T* out;      // [n]
  int64_t n;
  int64_t width;
};

template <typename T>
struct BwdParams {
  const T* dout;  // [n]
  const T* y;     // [n]
  const T* z;     // [n / width]
  T* dy;          // [n]
  T* dz;          // [n / width]
  int64_t n;
  int64_t width;
};

// --- host-side plan, shared by the CUDA launcher and the sim launcher ---

struct Plan {
  int vec = 1;             // elements per chunk: 1 or 16 / sizeof(T)
  int group_threads = 1;   // headwise backward: lanes per group (1, 8 or 32)
  int64_t fwd_blocks = 0;  // forward, and the elementwise backward: a thread per chunk
  int64_t bwd_blocks = 0;  // headwise backward: group_threads threads per group
};

// Lanes per group for a group of `chunks` chunks: one thread for a few, 8 lanes up to 31 (4 or
// fewer chunks each), a warp above.
inline int group_threads_for(int64_t chunks) { return chunks < 4 ? 1 : (chunks < 32 ? 8 : 32); }

// `vectorized`: the caller's alignment check (vec_ok below) passed.
inline Plan make_plan(int64_t n, int64_t width, int elem_size, bool vectorized) {
  Plan p;
  p.vec = vectorized ? 16 / elem_size : 1;
  const int64_t chunks = n / p.vec;
  p.fwd_blocks = (chunks + kThreads - 1) / kThreads;
  if (width > 1) {
    p.group_threads = group_threads_for(width / p.vec);
    const int64_t threads = n / width * p.group_threads;
    p.bwd_blocks = (threads + kThreads - 1) / kThreads;
  } else {
    p.bwd_blocks = p.fwd_blocks;
  }
  return p;
}

// 16-byte chunks: n and width (unless 1) multiples of V, and `ptrs` (the bases accessed in
// chunks: y-like tensors, and z-like ones when width is 1) 16-byte aligned.
inline bool vec_ok(int64_t n, int64_t width, size_t elem_size, std::initializer_list<const void*> ptrs) {
  const int64_t v = static_cast<int64_t>(16 / elem_size);
  if (width != 1 && width % v != 0) return false;
  return rms::vec_ok(n, elem_size, ptrs);
}

// --- device side ---

__host__ __device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

// kElementwise: width is 1 and z is read in chunks like y.
template <typename T, int kVec, bool kElementwise>
__global__ void __launch_bounds__(kThreads) gate_mul_fwd_kernel(const FwdParams<T> p) {
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kThreads + static_cast<int>(threadIdx.x);
  const int64_t i = chunk * kVec;
  if (i >= p.n) return;
  const Vec<T, kVec> yv = load_vec<T, kVec>(p.y + i);
  Vec<T, kVec> ov;
  if constexpr (kElementwise) {
    const Vec<T, kVec> zv = load_vec<T, kVec>(p.z + i);
#pragma unroll
    for (int v = 0; v < kVec; ++v) ov.v[v] = from_f<T>(to_f(yv.v[v]) * sigmoid(to_f(zv.v[v])));
  } else {
    const float s = sigmoid(to_f(p.z[i / p.width]));  // the chunk lies in one group
#pragma unroll
    for (int v = 0; v < kVec; ++v) ov.v[v] = from_f<T>(to_f(yv.v[v]) * s);
  }
  store_vec<T, kVec>(p.out + i, ov);
}

// width = 1: dz has an element per element of y.
template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads) gate_mul_bwd_elementwise_kernel(const BwdParams<T> p) {
  const int64_t chunk = static_cast<int64_t>(blockIdx.x) * kThreads + static_cast<int>(threadIdx.x);
  const int64_t i = chunk * kVec;
  if (i >= p.n) return;
  const Vec<T, kVec> dv = load_vec<T, kVec>(p.dout + i), yv = load_vec<T, kVec>(p.y + i),
                     zv = load_vec<T, kVec>(p.z + i);
  Vec<T, kVec> dyv, dzv;
#pragma unroll
  for (int v = 0; v < kVec; ++v) {
    const float s = sigmoid(to_f(zv.v[v])), d = to_f(dv.v[v]);
    dyv.v[v] = from_f<T>(d * s);
    dzv.v[v] = from_f<T>(d * to_f(yv.v[v]) * s * (1.0f - s));
  }
  store_vec<T, kVec>(p.dy + i, dyv);
  store_vec<T, kVec>(p.dz + i, dzv);
}

// width > 1: kGroupThreads consecutive lanes per group (a divisor of 32, so a warp holds whole
// groups). Lanes of groups past the end stay for the shuffles (every lane of a warp takes part)
// and touch no memory.
template <typename T, int kVec, int kGroupThreads>
__global__ void __launch_bounds__(kThreads) gate_mul_bwd_grouped_kernel(const BwdParams<T> p) {
  static_assert(32 % kGroupThreads == 0, "groups must tile a warp");
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + static_cast<int>(threadIdx.x);
  const int64_t group = thread / kGroupThreads;
  const int t = static_cast<int>(thread % kGroupThreads);
  const bool active = group < p.n / p.width;
  if constexpr (kGroupThreads == 1) {
    if (!active) return;  // no collective below
  }
  float acc = 0.f;
  if (active) {
    const float s = sigmoid(to_f(p.z[group])), ds = s * (1.0f - s);
    const int64_t chunks = p.width / kVec, base = group * p.width;
    for (int64_t c = t; c < chunks; c += kGroupThreads) {
      const int64_t i = base + c * kVec;
      const Vec<T, kVec> dv = load_vec<T, kVec>(p.dout + i), yv = load_vec<T, kVec>(p.y + i);
      Vec<T, kVec> dyv;
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        const float d = to_f(dv.v[v]);
        dyv.v[v] = from_f<T>(d * s);
        acc += d * to_f(yv.v[v]) * ds;
      }
      store_vec<T, kVec>(p.dy + i, dyv);
    }
  }
  if constexpr (kGroupThreads > 1) {
#pragma unroll
    for (int m = kGroupThreads / 2; m >= 1; m >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, m);
  }
  if (active && t == 0) p.dz[group] = from_f<T>(acc);
}

// f(vec) with the chunk width as a compile-time constant (std::integral_constant).
template <typename T, typename F>
void with_vec(const Plan& plan, const F& f) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  plan.vec == 1 ? f(std::integral_constant<int, 1>{}) : f(std::integral_constant<int, kVec>{});
}

// f(group_threads) as a compile-time constant.
template <typename F>
void with_group_threads(const Plan& plan, const F& f) {
  switch (plan.group_threads) {
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 8:
      return f(std::integral_constant<int, 8>{});
    default:
      return f(std::integral_constant<int, 32>{});
  }
}

}  // namespace sluice::kernels::gate
