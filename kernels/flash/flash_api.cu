#include "flash/flash_api.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "flash/bwd_tiles.h"
#include "flash/flash_plan.h"
#include "flash/launch.h"

namespace sluice::kernels {

namespace {

using flash::BwdParams;
using flash::FwdParams;

// The host API's own checks; flash_plan.cpp checks the rest.
void check_device(const at::Tensor& q) {
  TORCH_CHECK(q.is_cuda(), "flash attention: q, k, v must be on a CUDA device, got ", q.device());
  TORCH_CHECK(flash_device_supported(q.device()), "flash attention: needs compute capability 8.0 or newer");
}

// SLUICE_FLASH_TILE_ORDER: `plain` (default) or `sectioned`, the kernels' block order
// (tile_order.h). An A/B switch until the sectioned order is measured on a GPU; read at every
// call so one process (a test, a benchmark) can run both.
bool sectioned_order_from_env() {
  const char* value = std::getenv("SLUICE_FLASH_TILE_ORDER");
  const std::string order = value != nullptr ? value : "";
  TORCH_CHECK(order.empty() || order == "plain" || order == "sectioned",
              "SLUICE_FLASH_TILE_ORDER must be 'plain' or 'sectioned', got '", order, "'");
  return order == "sectioned";
}

void run_fwd(const FwdParams& p, int64_t D, at::ScalarType t, cudaStream_t s) {
  if (t == at::kBFloat16) {
    D == 64 ? flash::run_flash_fwd<64, __nv_bfloat16>(p, s) : flash::run_flash_fwd<128, __nv_bfloat16>(p, s);
  } else {
    D == 64 ? flash::run_flash_fwd<64, __half>(p, s) : flash::run_flash_fwd<128, __half>(p, s);
  }
}

// The backward tile (bwd_tiles.h) for head dim D on `device`: SLUICE_FLASH_BWD_TILE ("64x64")
// if set, else the largest whose shared memory the device grants one block. Read at every call,
// so one process (a test, a benchmark) can run every tile.
int bwd_tile_index(int64_t D, const at::Device& device) {
  const int index = device.index() < 0 ? at::cuda::current_device() : device.index();
  const int max_smem = static_cast<int>(at::cuda::getDeviceProperties(index)->sharedMemPerBlockOptin);
  const char* requested = std::getenv("SLUICE_FLASH_BWD_TILE");
  std::string error;
  const int tile = flash::choose_bwd_tile(static_cast<int>(D), max_smem, requested != nullptr ? requested : "", &error);
  TORCH_CHECK(tile >= 0, error);
  return tile;
}

static_assert(flash::bwd_tile_count(64) == 2 && flash::bwd_tile_count(128) == 3,
              "each tile of bwd_tiles.h needs its declaration (launch.h), .cu file and branch below");

template <int D, typename E>
void run_bwd_tile(const BwdParams& p, int tile, cudaStream_t s) {
  if (tile == 0) return flash::run_flash_bwd<D, E, 0>(p, s);
  if (tile == 1) return flash::run_flash_bwd<D, E, 1>(p, s);
  if constexpr (flash::bwd_tile_count(D) > 2) {
    if (tile == 2) return flash::run_flash_bwd<D, E, 2>(p, s);
  }
  TORCH_CHECK(false, "flash attention backward: no tile ", tile, " at head dim ", D);  // choose_bwd_tile never returns one
}

void run_bwd(const BwdParams& p, int64_t D, at::ScalarType t, int tile, cudaStream_t s) {
  if (t == at::kBFloat16) {
    D == 64 ? run_bwd_tile<64, __nv_bfloat16>(p, tile, s) : run_bwd_tile<128, __nv_bfloat16>(p, tile, s);
  } else {
    D == 64 ? run_bwd_tile<64, __half>(p, tile, s) : run_bwd_tile<128, __half>(p, tile, s);
  }
}

void run_bwd_dq(const BwdParams& p, int64_t D, at::ScalarType t, cudaStream_t s) {
  if (t == at::kBFloat16) {
    D == 64 ? flash::run_flash_bwd_dq<64, __nv_bfloat16>(p, s) : flash::run_flash_bwd_dq<128, __nv_bfloat16>(p, s);
  } else {
    D == 64 ? flash::run_flash_bwd_dq<64, __half>(p, s) : flash::run_flash_bwd_dq<128, __half>(p, s);
  }
}

}  // namespace

std::string flash_backward_tile(int64_t head_dim, const at::Device& device) {
  TORCH_CHECK(device.is_cuda() && flash_head_dim_supported(head_dim),
              "flash attention: backward tiles exist for head dims 64 and 128 on CUDA devices");
  return flash::bwd_tile_name(flash::bwd_tile(static_cast<int>(head_dim), bwd_tile_index(head_dim, device)));
}

bool flash_device_supported(const at::Device& device) {
  return device.is_cuda() && at::cuda::getDeviceProperties(device.index() < 0 ? at::cuda::current_device()
                                                                             : device.index())
                                     ->major >= 8;
}

std::tuple<at::Tensor, at::Tensor> flash_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 int64_t window, double scale, const at::Tensor& gate,
                                                 const FlashDocuments& docs, const at::Tensor& alibi_slopes) {
  check_device(q);
  const c10::cuda::CUDAGuard guard(q.device());
  FlashForwardPlan plan = plan_flash_forward(q, k, v, window, scale, gate, docs, alibi_slopes);
  if (plan.empty()) return {plan.out, plan.lse};
  plan.params.sectioned_order = sectioned_order_from_env();
  run_fwd(plan.params, q.size(3), q.scalar_type(), at::cuda::getCurrentCUDAStream());
  return {plan.out, plan.lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> flash_backward(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, int64_t window, double scale, const at::Tensor& gate, const FlashDocuments& docs,
    const at::Tensor& alibi_slopes, bool deterministic) {
  check_device(q);
  const c10::cuda::CUDAGuard guard(q.device());
  const int tile = bwd_tile_index(q.size(3), q.device());
  FlashBackwardPlan plan = plan_flash_backward(dout, q, k, v, out, lse, window, scale, gate, docs, alibi_slopes,
                                               deterministic);
  if (!plan.empty()) {
    plan.params.sectioned_order = sectioned_order_from_env();
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    const int64_t D = q.size(3);
    run_bwd(plan.params, D, q.scalar_type(), tile, stream);
    if (deterministic) run_bwd_dq(plan.params, D, q.scalar_type(), stream);
  }
  return {plan.dq, plan.dk, plan.dv, plan.dgate};
}

}  // namespace sluice::kernels
