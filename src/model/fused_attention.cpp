#include "model/fused_attention.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/custom_function.h>

#include <limits>
#include <mutex>
#include <optional>
#include <set>

#include "sluice/log.h"

#ifdef SLUICE_HAVE_CUDA_KERNELS
#include "flash/flash_api.h"
#endif

namespace sluice {
namespace {

// One warning per distinct reason and process: the fallback is taken on every layer and step.
void warn_fallback_once(const std::string& reason) {
  static std::mutex mu;
  static std::set<std::string> seen;
  const std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(reason).second) {
    log::warn(fmt::format("attention backend 'fused': {}; using 'sdpa' for these inputs", reason));
  }
}

#ifdef SLUICE_HAVE_CUDA_KERNELS

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// PyTorch's switch for bitwise-reproducible kernels, read as SDPA's flash backward reads it:
// torch.use_deterministic_algorithms(True) (at::globalContext().setDeterministicAlgorithms)
// runs the deterministic dQ kernel; with warn_only the default kernels run and a warning says so.
bool deterministic_backward() {
  const at::Context& ctx = at::globalContext();
  if (!ctx.deterministicAlgorithms()) return false;
  if (!ctx.deterministicAlgorithmsWarnOnly()) return true;
  static std::once_flag warned;
  std::call_once(warned, [] {
    log::warn(
        "attention backend 'fused': the default backward's dQ is not deterministic (fp32 atomics); "
        "deterministic algorithms are on with warn_only, so it runs anyway (without warn_only a "
        "deterministic dQ kernel runs)");
  });
  return false;
}

// Outputs (out, lse); lse is not differentiable (nothing upstream of the sink statistics needs
// its gradient). With G1 gate logits, out = O ⊙ σ(gate) and only out is saved: the backward
// needs O only as dY ⊙ O ⊙ σ(g) = dY ⊙ Y (kernels/flash/flash_bwd_preprocess.cuh).
struct FlashAttentionFunction : public torch::autograd::Function<FlashAttentionFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::optional<at::Tensor>& gate, int64_t window, double scale,
                               const std::optional<at::Tensor>& doc_start, const std::optional<at::Tensor>& doc_end,
                               const std::optional<at::Tensor>& alibi_slopes) {
    const at::Tensor g = gate.value_or(at::Tensor());
    const kernels::FlashDocuments docs{doc_start.value_or(at::Tensor()), doc_end.value_or(at::Tensor())};
    const at::Tensor slopes = alibi_slopes.value_or(at::Tensor());
    auto [out, lse] = kernels::flash_forward(q, k, v, window, scale, g, docs, slopes);
    ctx->save_for_backward({q, k, v, out, lse, g, docs.start, docs.end, slopes});
    ctx->saved_data["window"] = window;
    ctx->saved_data["scale"] = scale;
    ctx->mark_non_differentiable({lse});
    return {out, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const bool deterministic = deterministic_backward();
    auto [dq, dk, dv, dgate] = kernels::flash_backward(grads[0], s[0], s[1], s[2], s[3], s[4],
                                                       ctx->saved_data["window"].toInt(),
                                                       ctx->saved_data["scale"].toDouble(), s[5],
                                                       kernels::FlashDocuments{s[6], s[7]}, s[8], deterministic);
    return {dq, dk, dv, dgate, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// The kernels' autograd function for these inputs; gate undefined: ungated.
variable_list apply_flash(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& gate,
                          const AttentionMask& mask, double scale) {
  std::optional<at::Tensor> g, doc_start, doc_end, slopes;
  if (gate.defined()) g = gate;
  if (mask.alibi_slopes.defined()) slopes = mask.alibi_slopes.to(q.device(), at::kFloat).contiguous();
  if (mask.segments.defined()) {  // documents packed in rows: per-position bounds, no host sync
    auto [start, end] = document_bounds(mask);  // once per forward (the decoder's mask cache)
    doc_start = start, doc_end = end;
  }
  return FlashAttentionFunction::apply(q, k, v, g, mask.window, scale, doc_start, doc_end, slopes);
}

// The G1 logits as the kernels take them: q's dtype and the full [B, H, T, D or 1] shape (an
// expand of input-constant logits costs nothing; autograd sums its gradient back).
at::Tensor kernel_gate(const at::Tensor& q, const at::Tensor& gate_logits) {
  return gate_logits.to(q.scalar_type()).expand({q.size(0), q.size(1), q.size(2), gate_logits.size(-1)});
}

#endif

class FusedAttention final : public AttentionCore {
 public:
  FusedAttention() : fallback_(make_attention_core("sdpa")) {}

  at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                     double scale) const override {
    const std::string why = fused_attention_unsupported(q, k, v, mask);
    if (!why.empty()) {
      warn_fallback_once(why);
      return fallback_->forward(q, k, v, mask, scale);
    }
#ifdef SLUICE_HAVE_CUDA_KERNELS
    return apply_flash(q, k, v, at::Tensor(), mask, scale)[0];
#else
    return fallback_->forward(q, k, v, mask, scale);  // unreachable: unsupported without kernels
#endif
  }

  bool fuses_output_gate(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const AttentionMask& mask) const override {
    return fused_attention_unsupported(q, k, v, mask).empty();
  }

  // The gate in the forward kernel's epilogue; anything the kernels do not take gets the
  // unfused default (sdpa, then ATen's sigmoid and product).
  at::Tensor forward_gated(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                           double scale, const at::Tensor& gate_logits) const override {
#ifdef SLUICE_HAVE_CUDA_KERNELS
    if (fuses_output_gate(q, k, v, mask)) {
      return apply_flash(q, k, v, kernel_gate(q, gate_logits), mask, scale)[0];
    }
#endif
    return AttentionCore::forward_gated(q, k, v, mask, scale, gate_logits);
  }

  const char* name() const override { return "fused"; }

 private:
  std::shared_ptr<AttentionCore> fallback_;
};

}  // namespace

std::shared_ptr<AttentionCore> make_fused_attention_core() { return std::make_shared<FusedAttention>(); }

std::string fused_attention_unsupported(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const AttentionMask& mask) {
#ifndef SLUICE_HAVE_CUDA_KERNELS
  (void)q, (void)k, (void)v, (void)mask;
  return "built without CUDA kernels (no nvcc)";
#else
  if (!q.is_cuda()) return "tensors on " + q.device().str() + ", the kernels are CUDA only";
  const at::ScalarType t = q.scalar_type();
  if ((t != at::kBFloat16 && t != at::kHalf) || k.scalar_type() != t || v.scalar_type() != t)
    return fmt::format("dtype {} (the kernels take bf16 or fp16)", c10::toString(t));
  if (!kernels::flash_head_dim_supported(q.size(-1)) || k.size(-1) != q.size(-1))
    return fmt::format("head dim {} (the kernels take 64 or 128)", q.size(-1));
  if (q.size(2) > k.size(2)) return "more queries than keys";
  if (!kernels::flash_device_supported(q.device())) return "compute capability below 8.0";
  return "";
#endif
}

std::string fused_backward_tile(int64_t head_dim, const at::Device& device) {
#ifdef SLUICE_HAVE_CUDA_KERNELS
  return kernels::flash_backward_tile(head_dim, device);
#else
  (void)head_dim, (void)device;
  return "";
#endif
}

std::tuple<at::Tensor, at::Tensor> attention_with_lse_reference(const at::Tensor& q, const at::Tensor& k,
                                                                const at::Tensor& v, const AttentionMask& mask,
                                                                double scale, const at::Tensor& gate_logits) {
  const int64_t H = q.size(1), KV = k.size(1), T = q.size(2), S = k.size(2);
  const at::ScalarType ct = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor kk = H == KV ? k : k.repeat_interleave(H / KV, 1);
  const at::Tensor vv = H == KV ? v : v.repeat_interleave(H / KV, 1);
  at::Tensor scores = at::matmul(q.to(ct), kk.to(ct).transpose(-2, -1)) * scale;
  if (mask.alibi_slopes.defined()) {
    scores = scores + masked_alibi_bias(T, S, mask, q.device(), at::kFloat);  // -inf where hidden
  } else {
    scores = scores.masked_fill(allowed_positions(T, S, mask, q.device()).logical_not(),
                                -std::numeric_limits<float>::infinity());
  }
  const at::Tensor lse = at::logsumexp(scores, -1);
  const at::Tensor probs = at::exp(scores - lse.unsqueeze(-1));
  at::Tensor out = at::matmul(probs, vv.to(ct));
  if (gate_logits.defined()) out = out * at::sigmoid(gate_logits.to(ct));  // one rounding, as the kernel
  return {out.to(v.scalar_type()), lse.detach()};
}

std::tuple<at::Tensor, at::Tensor> fused_attention_with_lse(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v, const AttentionMask& mask,
                                                            double scale, const at::Tensor& gate_logits) {
  const std::string why = fused_attention_unsupported(q, k, v, mask);
  if (!why.empty()) return attention_with_lse_reference(q, k, v, mask, scale, gate_logits);
#ifdef SLUICE_HAVE_CUDA_KERNELS
  const variable_list r =
      apply_flash(q, k, v, gate_logits.defined() ? kernel_gate(q, gate_logits) : at::Tensor(), mask, scale);
  return {r[0], r[1]};
#else
  return attention_with_lse_reference(q, k, v, mask, scale, gate_logits);
#endif
}

}  // namespace sluice
