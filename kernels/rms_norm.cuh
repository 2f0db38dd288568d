// Fused RMSNorm (+ residual add) kernels over rows of length d (the last dim), fp32 accumulation.
// The same code compiles with nvcc (kernels/rms_norm.cu, host API kernels/rms_norm.h) and under
// cuda_sim on the CPU (kernels/rms_norm_sim.cpp, which includes sim/cuda_sim.h first).
//
// Forward, per row (T the element type, W the weight's: T or float):
//   s = x + residual            rounded to T and written to residual_out (when a residual is given;
//                               else s = x)
//   rstd = 1 / sqrt(mean(s^2) + eps)                     fp32, saved per row
//   y = (s · rstd) · w          in fp32, rounded to T once
// Backward, given dy, s, w, rstd and optionally d_residual_out (the gradient reaching the
// residual-stream output s from its later uses):
//   xhat = s · rstd,  g = dy · w,  ds = rstd · (g - xhat · mean(g · xhat))  (+ d_residual_out)
//   dw = Σ_rows dy · xhat
// With the residual form dx = d_residual = ds.
//
// Layout: blocks of kThreads = 256 threads (8 warps). A row belongs to one warp when d <= 1024
// (8 rows per block), else to the whole block (one row per block); a row's sums are warp
// shuffles plus, for block rows, one shared-memory exchange between the warps. A thread owns
// the chunks t, t + G, t + 2G, ... of its row (G = threads per row; a chunk is 16 bytes of T
// when d is a multiple of 16 / sizeof(T) and every base is 16-byte aligned, else one element),
// and touches only those: the forward's second pass rereads the s it wrote itself.
//
// dw is deterministic, with no atomics: the backward runs a fixed grid of blocks, each looping
// over rows (row = block·R + group, then + grid·R), and each row group sums dy·xhat into its own
// fp32 row of the block's dynamic shared memory, each thread at the columns it owns. At the end a
// block adds its row groups in order into its row of an fp32 [blocks, d] workspace, and
// rms_norm_dw_kernel adds the blocks in order. Same grid, same bits, whatever the schedule.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

// The kernel's dynamic shared memory (fp32 dw accumulators).
#if defined(SLUICE_CUDA_SIM)
#define SLUICE_RMS_DYNAMIC_SMEM(name) unsigned char* name = ::sluice::sim::dynamic_smem()
#else
#define SLUICE_RMS_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace sluice::kernels::rms {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kWarpRowMaxD = 1024;  // up to this d a warp owns a row, above it the block

template <typename T, typename W>
struct FwdParams {
  const T* x;
  const T* residual;  // nullptr: no residual add
  const W* weight;    // [d]
  T* y;
  T* residual_out;  // s = x + residual; used iff residual
  float* rstd;      // [rows]
  int64_t rows;
  int d;
  float eps;
};

template <typename T, typename W>
struct BwdParams {
  const T* dy;
  const T* s;
  const W* weight;
  const float* rstd;
  const T* d_residual_out;  // nullptr: none
  T* ds;
  float* dw_partial;  // [gridDim.x, d], every element written
  int64_t rows;
  int d;
};

template <typename W>
struct DwParams {
  const float* partial;  // [blocks, d]
  W* dw;
  int blocks;
  int d;
};

// --- host-side plan, shared by the CUDA launcher and the sim launcher ---

struct Plan {
  int warps_per_row = 1;   // 1 or kWarps
  int rows_per_block = 1;  // kWarps / warps_per_row
  bool vectorized = false;
  int64_t fwd_blocks = 0;
  int bwd_blocks = 0;
  int bwd_smem_bytes = 0;  // rows_per_block fp32 rows of d
  int dw_blocks = 0;       // rms_norm_dw_kernel, kThreads columns each
};

// 16 bytes of T per access when d is a multiple of that and all bases are 16-byte aligned.
inline bool vec_ok(int64_t d, size_t elem_size, std::initializer_list<const void*> ptrs) {
  if (d % static_cast<int64_t>(16 / elem_size) != 0) return false;
  for (const void* p : ptrs)
    if (p != nullptr && reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
  return true;
}

// max_bwd_blocks: the backward's grid cap (blocks resident on the device; small in the sim so
// that blocks loop over rows).
inline Plan make_plan(int64_t rows, int64_t d, bool vectorized, int64_t max_bwd_blocks) {
  Plan p;
  p.warps_per_row = d <= kWarpRowMaxD ? 1 : kWarps;
  p.rows_per_block = kWarps / p.warps_per_row;
  p.vectorized = vectorized;
  p.fwd_blocks = (rows + p.rows_per_block - 1) / p.rows_per_block;
  const int64_t wanted = p.fwd_blocks < max_bwd_blocks ? p.fwd_blocks : max_bwd_blocks;
  p.bwd_blocks = static_cast<int>(wanted < 1 ? 1 : wanted);
  p.bwd_smem_bytes = static_cast<int>(p.rows_per_block * d * static_cast<int64_t>(sizeof(float)));
  p.dw_blocks = static_cast<int>((d + kThreads - 1) / kThreads);
  return p;
}

// f(warps_per_row, vec, flag) with each as a compile-time constant (std::integral_constant).
template <typename T, typename F>
void with_config(const Plan& plan, bool flag, const F& f) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  auto pick_flag = [&](auto wpr, auto vec) { flag ? f(wpr, vec, std::true_type{}) : f(wpr, vec, std::false_type{}); };
  auto pick_vec = [&](auto wpr) {
    plan.vectorized ? pick_flag(wpr, std::integral_constant<int, kVec>{})
                    : pick_flag(wpr, std::integral_constant<int, 1>{});
  };
  plan.warps_per_row == 1 ? pick_vec(std::integral_constant<int, 1>{})
                          : pick_vec(std::integral_constant<int, kWarps>{});
}

// --- device side ---

__host__ __device__ __forceinline__ float to_f(float v) { return v; }
__host__ __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__host__ __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__host__ __device__ __forceinline__ T from_f(float v);
template <>
__host__ __device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__host__ __device__ __forceinline__ __half from_f<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__host__ __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// N elements moved as one access (16-byte alignment at most: a Vec<float, 8> of fp32 weights
// beside 8 bf16 values is two 16-byte loads).
template <typename T, int N>
struct alignas(sizeof(T) * N > 16 ? 16 : sizeof(T) * N) Vec {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Vec<T, N> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, N>*>(p);
}

// A 16-byte store as one st.global.v4 (the compiler split plain struct stores of 2-byte types
// into 4-byte ones, kernels/pack.cuh); a plain store elsewhere and in the sim.
template <typename T, int N>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, N>& v) {
#if !defined(SLUICE_CUDA_SIM)
  if constexpr (sizeof(T) * N == 16) {
    uint32_t w[4];
    memcpy(w, &v, 16);
    asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "r"(w[0]), "r"(w[1]), "r"(w[2]), "r"(w[3])
                 : "memory");
    return;
  }
#endif
  *reinterpret_cast<Vec<T, N>*>(p) = v;
}

// Sum of v over the row's threads: warp shuffles, then (block rows) the warps' sums through
// shared memory in warp order. Every thread of the row gets the same bits. `red` is
// [2][kWarps] and `parity` alternates between consecutive calls: one barrier per call, since a
// warp writing red[p] for call n + 2 has passed call n + 1's barrier, which every warp reaches
// only after reading call n's red[p].
template <int kWarpsPerRow>
__device__ __forceinline__ float row_sum(float v, float (&red)[2][kWarps], int parity) {
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  if constexpr (kWarpsPerRow == 1) {
    return v;
  } else {
    const int warp = static_cast<int>(threadIdx.x) / 32;
    if (threadIdx.x % 32 == 0) red[parity][warp] = v;
    __syncthreads();
    const int first = warp / kWarpsPerRow * kWarpsPerRow;
    float total = 0.f;
#pragma unroll
    for (int i = 0; i < kWarpsPerRow; ++i) total += red[parity][first + i];
    return total;
  }
}

template <typename T, typename W, int kWarpsPerRow, int kVec, bool kResidual>
__global__ void __launch_bounds__(kThreads) rms_norm_fwd_kernel(const FwdParams<T, W> p) {
  __shared__ float red[2][kWarps];
  constexpr int kRowThreads = kWarpsPerRow * 32;
  constexpr int kRowsPerBlock = kWarps / kWarpsPerRow;
  using VT = Vec<T, kVec>;
  using VW = Vec<W, kVec>;
  const int t = static_cast<int>(threadIdx.x) % kRowThreads;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + static_cast<int>(threadIdx.x) / kRowThreads;
  if (row >= p.rows) return;  // a whole warp (warp rows) or the whole block (block rows)
  const int n_chunks = p.d / kVec;
  const int64_t base = row * p.d;

  float sum_sq = 0.f;
  for (int c = t; c < n_chunks; c += kRowThreads) {
    const int64_t i = base + static_cast<int64_t>(c) * kVec;
    VT sv = load_vec<T, kVec>(p.x + i);
    if constexpr (kResidual) {
      const VT rv = load_vec<T, kVec>(p.residual + i);
#pragma unroll
      for (int v = 0; v < kVec; ++v) sv.v[v] = from_f<T>(to_f(sv.v[v]) + to_f(rv.v[v]));
      store_vec<T, kVec>(p.residual_out + i, sv);
    }
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
      const float f = to_f(sv.v[v]);
      sum_sq += f * f;
    }
  }
  const float rstd = 1.0f / sqrtf(row_sum<kWarpsPerRow>(sum_sq, red, 0) / static_cast<float>(p.d) + p.eps);
  if (t == 0) p.rstd[row] = rstd;

  const T* s = kResidual ? p.residual_out : p.x;  // this thread's own chunks: no barrier needed
  for (int c = t; c < n_chunks; c += kRowThreads) {
    const int64_t i = base + static_cast<int64_t>(c) * kVec;
    const VT sv = load_vec<T, kVec>(s + i);
    const VW wv = load_vec<W, kVec>(p.weight + static_cast<int64_t>(c) * kVec);
    VT yv;
#pragma unroll
    for (int v = 0; v < kVec; ++v) yv.v[v] = from_f<T>(to_f(sv.v[v]) * rstd * to_f(wv.v[v]));
    store_vec<T, kVec>(p.y + i, yv);
  }
}

// Dynamic shared memory: kRowsPerBlock fp32 rows of d (Plan::bwd_smem_bytes).
template <typename T, typename W, int kWarpsPerRow, int kVec, bool kDResidual>
__global__ void __launch_bounds__(kThreads) rms_norm_bwd_kernel(const BwdParams<T, W> p) {
  __shared__ float red[2][kWarps];
  SLUICE_RMS_DYNAMIC_SMEM(smem);
  constexpr int kRowThreads = kWarpsPerRow * 32;
  constexpr int kRowsPerBlock = kWarps / kWarpsPerRow;
  using VT = Vec<T, kVec>;
  using VW = Vec<W, kVec>;
  const int t = static_cast<int>(threadIdx.x) % kRowThreads;
  const int group = static_cast<int>(threadIdx.x) / kRowThreads;
  const int n_chunks = p.d / kVec;
  float* const acc = reinterpret_cast<float*>(smem);
  float* const my_acc = acc + static_cast<int64_t>(group) * p.d;  // this row group's dw sums
  for (int c = t; c < n_chunks; c += kRowThreads)
#pragma unroll
    for (int v = 0; v < kVec; ++v) my_acc[c * kVec + v] = 0.f;

  const float inv_d = 1.0f / static_cast<float>(p.d);
  // The loop is uniform over a row group's threads (a warp, or the block for block rows).
  int parity = 0;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + group; row < p.rows;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock, parity ^= 1) {
    const int64_t base = row * p.d;
    const float rstd = p.rstd[row];
    float dot = 0.f;  // Σ dy·w·s
    for (int c = t; c < n_chunks; c += kRowThreads) {
      const int64_t i = base + static_cast<int64_t>(c) * kVec;
      const VT dyv = load_vec<T, kVec>(p.dy + i), sv = load_vec<T, kVec>(p.s + i);
      const VW wv = load_vec<W, kVec>(p.weight + static_cast<int64_t>(c) * kVec);
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        const float dy = to_f(dyv.v[v]), s = to_f(sv.v[v]);
        dot += dy * to_f(wv.v[v]) * s;
        my_acc[c * kVec + v] += dy * (s * rstd);
      }
    }
    const float mean_gx = rstd * row_sum<kWarpsPerRow>(dot, red, parity) * inv_d;  // mean(g·xhat)
    for (int c = t; c < n_chunks; c += kRowThreads) {
      const int64_t i = base + static_cast<int64_t>(c) * kVec;
      const VT dyv = load_vec<T, kVec>(p.dy + i), sv = load_vec<T, kVec>(p.s + i);
      const VW wv = load_vec<W, kVec>(p.weight + static_cast<int64_t>(c) * kVec);
      VT dsv;
      if constexpr (kDResidual) {
        const VT rv = load_vec<T, kVec>(p.d_residual_out + i);
#pragma unroll
        for (int v = 0; v < kVec; ++v) {
          const float g = to_f(dyv.v[v]) * to_f(wv.v[v]), xhat = to_f(sv.v[v]) * rstd;
          dsv.v[v] = from_f<T>(rstd * (g - xhat * mean_gx) + to_f(rv.v[v]));
        }
      } else {
#pragma unroll
        for (int v = 0; v < kVec; ++v) {
          const float g = to_f(dyv.v[v]) * to_f(wv.v[v]), xhat = to_f(sv.v[v]) * rstd;
          dsv.v[v] = from_f<T>(rstd * (g - xhat * mean_gx));
        }
      }
      store_vec<T, kVec>(p.ds + i, dsv);
    }
  }

  __syncthreads();  // every row group's sums written
  for (int col = static_cast<int>(threadIdx.x); col < p.d; col += kThreads) {
    float total = 0.f;
#pragma unroll
    for (int g = 0; g < kRowsPerBlock; ++g) total += acc[static_cast<int64_t>(g) * p.d + col];
    p.dw_partial[static_cast<int64_t>(blockIdx.x) * p.d + col] = total;
  }
}

// dw[col] = Σ_blocks partial[block][col], blocks in order; one thread per column.
template <typename W>
__global__ void __launch_bounds__(kThreads) rms_norm_dw_kernel(const DwParams<W> p) {
  const int col = static_cast<int>(blockIdx.x) * kThreads + static_cast<int>(threadIdx.x);
  if (col >= p.d) return;
  float total = 0.f;
  for (int b = 0; b < p.blocks; ++b) total += p.partial[static_cast<int64_t>(b) * p.d + col];
  p.dw[col] = from_f<W>(total);
}

}  // namespace sluice::kernels::rms
