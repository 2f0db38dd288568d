// Warp-level tensor-core primitives of the flash kernels: ldmatrix, mma.sync m16n8k16 and
// cp.async, as inline PTX (sm_80+). Fragment layouts (PTX ISA, "mma.m16n8k16"): with lane
// = 4g + t,
//   A 16x16 (4 regs of 2 elements): {row g, cols 2t..2t+1}, {row g+8, same}, {row g, cols
//     2t+8..}, {row g+8, cols 2t+8..};
//   B 16x8  (2 regs): {rows 2t..2t+1, col g}, {rows 2t+8.., col g};
//   C 16x8  (4 fp32): {row g, cols 2t, 2t+1}, {row g+8, cols 2t, 2t+1}.
// Two C tiles side by side (16 columns) hold exactly an A fragment's elements, so scores
// become the next product's A operand in registers (FlashAttention-2's trick).
//
// Under SLUICE_CUDA_SIM (kernels/sim/cuda_sim.h, CPU tests) each primitive calls the emulator
// instead of its PTX; nothing else in the kernels changes.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace sluice::flash {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
#if defined(SLUICE_CUDA_SIM)
  return sim::shared_address(p);
#else
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#endif
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, register i
// receives matrix i ({row lane/4, cols 2(lane%4)..+1}, or transposed with .trans).
// Addresses are shared-window byte addresses (smem_addr): 32-bit, cheap to offset.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
#if defined(SLUICE_CUDA_SIM)
  sim::ldmatrix_x4(r, addr, false);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
#if defined(SLUICE_CUDA_SIM)
  sim::ldmatrix_x4(r, addr, true);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

// c += a·b, fp32 accumulators.
template <typename E>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(SLUICE_CUDA_SIM)
  sim::mma_16816(c, a, b0, b1, std::is_same_v<E, __nv_bfloat16>);
#else
  if constexpr (std::is_same_v<E, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#endif
}

// Two fp32 values as one register of two E (lo in the low half: the lower column).
template <typename E>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<E, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}
template <typename E>
__device__ __forceinline__ float2 unpack2(uint32_t x) {
  if constexpr (std::is_same_v<E, __nv_bfloat16>) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&x));
  } else {
    return __half22float2(*reinterpret_cast<const __half2*>(&x));
  }
}

// 2^x with the MUFU unit and denormal results flushed to zero: what exp2f becomes under
// --use_fast_math (flash-attention's build), without making the whole file fast-math.
__device__ __forceinline__ float fast_exp2(float x) {
#if defined(SLUICE_CUDA_SIM)
  const float y = exp2f(x);
  return std::fpclassify(y) == FP_SUBNORMAL ? 0.f : y;
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#endif
}

// 16 bytes global -> shared (window address `dst`) without registers; src_bytes 0 zero-fills
// (no global read).
__device__ __forceinline__ void cp_async_16_to(uint32_t dst, const void* gmem, int src_bytes) {
#if defined(SLUICE_CUDA_SIM)
  sim::cp_async_16(dst, gmem, src_bytes);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
#endif
}
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  cp_async_16_to(smem_addr(smem), gmem, valid ? 16 : 0);
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(SLUICE_CUDA_SIM)
  sim::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(SLUICE_CUDA_SIM)
  sim::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// Rows row0.. row0+kRows-1 of a [n_rows, kCols] matrix (row stride in elements) into shared
// memory with row pitch kPitch, asynchronously; rows >= n_rows are zero-filled (padding must
// be finite: 0·NaN would poison the products) without reading global memory, and so are rows
// below 0 (one unsigned compare), which a zero-filled tile before the first row may have.
template <int kRows, int kCols, int kPitch, int kNThreads, typename E>
__device__ __forceinline__ void cp_async_rows(E* __restrict__ smem, const E* __restrict__ g, int64_t row_stride,
                                              int row0, int n_rows, int tid) {
  constexpr int kChunks = kCols / 8;  // 16 bytes each
  constexpr int kRowStep = kNThreads / kChunks;
  static_assert(kNThreads % kChunks == 0 && kRows % kRowStep == 0, "whole rounds of chunks per thread");
  // A thread keeps one column chunk and steps down the rows: one pointer, one increment.
  const int r0 = tid / kChunks, c = (tid % kChunks) * 8;
  const E* src = g + static_cast<int64_t>(row0 + r0) * row_stride + c;
  const uint32_t dst = smem_addr(smem + r0 * kPitch + c);
#pragma unroll
  for (int i = 0; i < kRows / kRowStep; ++i) {
    const bool valid = static_cast<unsigned>(row0 + r0 + i * kRowStep) < static_cast<unsigned>(n_rows);
    cp_async_16_to(dst + i * kRowStep * kPitch * 2, valid ? src : g, valid ? 16 : 0);
    src += kRowStep * row_stride;
  }
}

}  // namespace sluice::flash
