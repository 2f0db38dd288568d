#include "model/experts.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <cuda_runtime_api.h>

#include <vector>

#include "model/fused_ops.h"

namespace sluice {

namespace {

int compute_capability_major(const at::Device& device) {
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device.index() < 0 ? 0 : device.index()) !=
      cudaSuccess) {
    return 0;
  }
  return major;
}

at::Tensor grouped_swiglu(const at::Tensor& x, const at::Tensor& offsets, const at::Tensor& wg, const at::Tensor& wu,
                          const at::Tensor& wd) {
  // _grouped_mm multiplies row slice e of x by mat2[e] ([in, out]); the stored weights are
  // [out, in], so pass transposed views (column-major operands, no copy).
  const at::Tensor g = at::_grouped_mm(x, wg.transpose(1, 2), offsets);
  const at::Tensor u = at::_grouped_mm(x, wu.transpose(1, 2), offsets);
  return at::_grouped_mm(swiglu(g, u), wd.transpose(1, 2), offsets);
}

at::Tensor loop_swiglu(const at::Tensor& x, const at::Tensor& counts, const at::Tensor& wg, const at::Tensor& wu,
                       const at::Tensor& wd) {
  const at::Tensor host = counts.to(at::kCPU);  // the one host sync of this path
  const int64_t* n = host.data_ptr<int64_t>();
  std::vector<at::Tensor> out;
  int64_t start = 0;
  for (int64_t e = 0; e < host.numel(); ++e) {
    if (n[e] == 0) continue;
    const at::Tensor xe = x.narrow(0, start, n[e]);
    out.push_back(at::linear(swiglu(at::linear(xe, wg[e]), at::linear(xe, wu[e])), wd[e]));
    start += n[e];
  }
  // No rows at all (an expert-parallel rank nobody sent tokens to): the same ops on the empty
  // input, so every weight still gets its (zero) gradient, as in one process.
  if (out.empty()) return at::linear(swiglu(at::linear(x, wg[0]), at::linear(x, wu[0])), wd[0]);
  return out.size() == 1 ? out[0] : at::cat(out, 0);
}

}  // namespace

at::ScalarType expert_compute_dtype(const at::Tensor& x) {
  const c10::DeviceType t = x.device().type();
  return at::autocast::is_autocast_enabled(t) ? at::autocast::get_autocast_dtype(t) : x.scalar_type();
}

ExpertGemm choose_expert_gemm(const std::string& setting, const at::Device& device, at::ScalarType dtype,
                              int64_t d_model, int64_t hidden) {
  if (setting == "grouped") return ExpertGemm::Grouped;
  if (setting == "loop") return ExpertGemm::Loop;
  // ATen's CUTLASS grouped GEMM exists for bf16 on sm90 / sm100; elsewhere (or in fp32)
  // _grouped_mm is itself a loop that copies the offsets to the host, so the plain loop loses
  // nothing there.
  const bool aligned = d_model % 8 == 0 && hidden % 8 == 0;
  const int cc = device.is_cuda() ? compute_capability_major(device) : 0;
  const bool fast = dtype == at::kBFloat16 && aligned && (cc == 9 || cc == 10);
  return fast ? ExpertGemm::Grouped : ExpertGemm::Loop;
}

const char* expert_gemm_name(ExpertGemm g) { return g == ExpertGemm::Grouped ? "grouped" : "loop"; }

ExpertsImpl::ExpertsImpl(int64_t n_experts, int64_t d_model, int64_t hidden) {
  gate_proj = register_parameter("gate_proj", at::empty({n_experts, hidden, d_model}));
  up_proj = register_parameter("up_proj", at::empty({n_experts, hidden, d_model}));
  down_proj = register_parameter("down_proj", at::empty({n_experts, d_model, hidden}));
}

void ExpertsImpl::keep(int64_t first, int64_t count) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(first >= 0 && count > 0 && first + count <= gate_proj.size(0), "keep(", first, ", ", count, ") of ",
              gate_proj.size(0), " experts");
  for (at::Tensor* p : {&gate_proj, &up_proj, &down_proj}) p->set_data(p->narrow(0, first, count).clone());
}

at::Tensor ExpertsImpl::forward(const at::Tensor& x, const at::Tensor& counts, ExpertGemm gemm) const {
  const at::ScalarType dt = expert_compute_dtype(x);
  // Explicit casts instead of autocast's, so both paths see identical operands.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const at::Tensor xc = x.to(dt), wg = gate_proj.to(dt), wu = up_proj.to(dt), wd = down_proj.to(dt);
  if (gemm == ExpertGemm::Grouped) return grouped_swiglu(xc, counts.cumsum(0).to(at::kInt), wg, wu, wd);
  return loop_swiglu(xc, counts, wg, wu, wd);
}

}  // namespace sluice
