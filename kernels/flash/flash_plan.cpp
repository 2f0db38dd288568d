#include "flash/flash_plan.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>

#include "flash/bwd_tiles.h"

namespace sluice::kernels {

static_assert(flash::bwd_query_tiles_divide(kDqAccumRowMultiple), "dq_accum padding must cover every backward query tile");
namespace {

using flash::BwdParams;
using flash::FwdParams;

// The kernels load 16 bytes at a time: the last dimension contiguous, the base 16-byte
// aligned and every other stride a multiple of 8 elements (size-1 dimensions never step).
bool kernel_ready(const at::Tensor& t) {
  if (t.stride(3) != 1 || reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 != 0) return false;
  for (int d = 0; d < 3; ++d)
    if (t.size(d) > 1 && t.stride(d) % 8 != 0) return false;
  return true;
}

at::Tensor ready(const at::Tensor& t) { return kernel_ready(t) ? t : t.clone(at::MemoryFormat::Contiguous); }

// [B, heads, L, D] stored as [B, L, heads, D]: what SelfAttention transposes back for free.
at::Tensor empty_bthd(int64_t B, int64_t heads, int64_t L, int64_t D, const at::TensorOptions& opts) {
  return at::empty_strided({B, heads, L, D}, {L * heads * D, D, heads * D, 1}, opts);
}

void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window) {
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(), "flash attention: q, k, v must be on one device");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "flash attention: q, k, v must be [B, heads, L, D]");
  const at::ScalarType t = q.scalar_type();
  TORCH_CHECK(t == at::kBFloat16 || t == at::kHalf, "flash attention: dtype must be bf16 or fp16, got ", t);
  TORCH_CHECK(k.scalar_type() == t && v.scalar_type() == t, "flash attention: q, k, v must share one dtype");
  TORCH_CHECK(k.sizes() == v.sizes(), "flash attention: k ", k.sizes(), " and v ", v.sizes(), " differ");
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(3) == q.size(3), "flash attention: q ", q.sizes(),
              " does not match k ", k.sizes());
  TORCH_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0, "flash attention: ", q.size(1),
              " query heads are not a multiple of ", k.size(1), " kv heads");
  TORCH_CHECK(flash_head_dim_supported(q.size(3)), "flash attention: head dim must be 64 or 128, got ", q.size(3));
  TORCH_CHECK(q.size(2) <= k.size(2), "flash attention: more queries (", q.size(2), ") than keys (", k.size(2), ")");
  // The 1-D grids hold (tiles of at least 64 rows) x B·H blocks, int32 indices.
  TORCH_CHECK(k.size(2) <= std::numeric_limits<int32_t>::max() &&
                  (k.size(2) + 63) / 64 * q.size(0) * q.size(1) <= std::numeric_limits<int32_t>::max(),
              "flash attention: shape too large for the grid");
  TORCH_CHECK(window >= 0 && window <= std::numeric_limits<int32_t>::max(), "flash attention: bad window ", window);
}

// G1 gate logits: q's device and dtype, [B, H, T, D] or [B, H, T, 1] (D is 64 or 128, never 1).
void check_gate(const at::Tensor& gate, const at::Tensor& q) {
  TORCH_CHECK(gate.device() == q.device(), "flash attention: the gate logits must be on q's device ", q.device(),
              ", got ", gate.device());
  TORCH_CHECK(gate.scalar_type() == q.scalar_type(), "flash attention: the gate logits must have q's dtype ",
              q.scalar_type(), ", got ", gate.scalar_type());
  TORCH_CHECK(gate.dim() == 4 && gate.size(0) == q.size(0) && gate.size(1) == q.size(1) && gate.size(2) == q.size(2) &&
                  (gate.size(3) == q.size(3) || gate.size(3) == 1),
              "flash attention: the gate logits must be [B, H, T, D] (elementwise) or [B, H, T, 1] (headwise) for q ",
              q.sizes(), ", got ", gate.sizes());
}

// An elementwise gate is read 16 bytes at a time like q (kernel_ready; stride-0 broadcasts
// qualify); a headwise one element at a time.
at::Tensor gate_ready(const at::Tensor& g) {
  if (g.size(3) == 1) return g;
  return kernel_ready(g) ? g : g.contiguous();
}

void fill_gate(FwdParams& p, const at::Tensor& gate) {
  if (!gate.defined()) return;
  p.gate = gate.data_ptr();
  p.gate_batch_stride = gate.stride(0), p.gate_head_stride = gate.stride(1), p.gate_row_stride = gate.stride(2);
  p.gate_headwise = gate.size(3) == 1;
}

void check_docs(const FlashDocuments& docs, const at::Tensor& q, const at::Tensor& k) {
  if (!docs.defined()) return;
  TORCH_CHECK(q.size(2) == k.size(2), "flash attention: document masking needs as many queries as keys, got ",
              q.size(2), " and ", k.size(2));
  for (const at::Tensor* t : {&docs.start, &docs.end}) {
    TORCH_CHECK(t->defined() && t->device() == q.device() && t->scalar_type() == at::kInt && t->dim() == 2 &&
                    t->size(0) == q.size(0) && t->size(1) == q.size(2) && t->stride(1) == 1,
                "flash attention: document bounds must be int32 [B, T] = [", q.size(0), ", ", q.size(2),
                "] on q's device with contiguous rows");
  }
  TORCH_CHECK(docs.start.stride(0) == docs.end.stride(0), "flash attention: document start and end need one row stride");
}

void check_alibi(const at::Tensor& slopes, const at::Tensor& q) {
  if (!slopes.defined()) return;
  TORCH_CHECK(slopes.device() == q.device() && slopes.scalar_type() == at::kFloat && slopes.dim() == 1 &&
                  slopes.size(0) == q.size(1) && slopes.is_contiguous(),
              "flash attention: ALiBi slopes must be contiguous fp32 [", q.size(1), "] (one per query head) on ",
              q.device(), ", got ", slopes.scalar_type(), " ", slopes.sizes(), " on ", slopes.device());
}

void fill_docs(FwdParams& p, const FlashDocuments& docs) {
  if (!docs.defined()) return;
  p.doc_start = docs.start.data_ptr<int>();
  p.doc_end = docs.end.data_ptr<int>();
  p.doc_batch_stride = docs.start.stride(0);
}

void fill_fwd(FwdParams& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
              const at::Tensor& lse, int64_t window, double scale) {
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.o = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.q_batch_stride = q.stride(0), p.q_head_stride = q.stride(1), p.q_row_stride = q.stride(2);
  p.k_batch_stride = k.stride(0), p.k_head_stride = k.stride(1), p.k_row_stride = k.stride(2);
  p.v_batch_stride = v.stride(0), p.v_head_stride = v.stride(1), p.v_row_stride = v.stride(2);
  p.o_batch_stride = out.stride(0), p.o_head_stride = out.stride(1), p.o_row_stride = out.stride(2);
  p.batch = static_cast<int>(q.size(0));
  p.heads = static_cast<int>(q.size(1));
  p.kv_heads = static_cast<int>(k.size(1));
  p.seqlen_q = static_cast<int>(q.size(2));
  p.seqlen_k = static_cast<int>(k.size(2));
  // A window of S or more hides nothing (positions differ by at most S - 1); as 0 it also keeps
  // the kernels' position arithmetic far from int overflow.
  p.window = window >= k.size(2) ? 0 : static_cast<int>(window);
  p.scale = static_cast<float>(scale);
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
}

}  // namespace

FlashForwardPlan plan_flash_forward(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                    int64_t window, double scale, const at::Tensor& gate_in, const FlashDocuments& docs,
                                    const at::Tensor& alibi_slopes) {
  check_qkv(q_in, k_in, v_in, window);
  check_docs(docs, q_in, k_in);
  check_alibi(alibi_slopes, q_in);
  if (gate_in.defined()) check_gate(gate_in, q_in);
  FlashForwardPlan plan;
  plan.q = ready(q_in), plan.k = ready(k_in), plan.v = ready(v_in);
  plan.gate = gate_in.defined() ? gate_ready(gate_in) : at::Tensor();
  const at::Tensor& q = plan.q;
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  plan.out = empty_bthd(B, H, T, D, q.options());
  plan.lse = at::empty({B, H, T}, q.options().dtype(at::kFloat));
  if (plan.empty()) return plan;
  FwdParams& p = plan.params;
  fill_fwd(p, q, plan.k, plan.v, plan.out, plan.lse, window, scale);
  fill_gate(p, plan.gate);
  fill_docs(p, docs);
  if (alibi_slopes.defined()) p.alibi_slopes = alibi_slopes.data_ptr<float>();
  return plan;
}

FlashBackwardPlan plan_flash_backward(const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in,
                                      const at::Tensor& v_in, const at::Tensor& out_in, const at::Tensor& lse,
                                      int64_t window, double scale, const at::Tensor& gate_in,
                                      const FlashDocuments& docs, const at::Tensor& alibi_slopes, bool deterministic) {
  check_qkv(q_in, k_in, v_in, window);
  check_docs(docs, q_in, k_in);
  check_alibi(alibi_slopes, q_in);
  if (gate_in.defined()) check_gate(gate_in, q_in);
  TORCH_CHECK(dout_in.sizes() == q_in.sizes() && out_in.sizes() == q_in.sizes(),
              "flash attention backward: dout and out must be shaped like q ", q_in.sizes());
  TORCH_CHECK(dout_in.scalar_type() == q_in.scalar_type() && out_in.scalar_type() == q_in.scalar_type(),
              "flash attention backward: dout and out must have q's dtype");
  TORCH_CHECK(dout_in.device() == q_in.device() && out_in.device() == q_in.device() && lse.device() == q_in.device(),
              "flash attention backward: all tensors on q's device");
  const int64_t B = q_in.size(0), H = q_in.size(1), T = q_in.size(2), D = q_in.size(3);
  const int64_t KV = k_in.size(1), S = k_in.size(2);
  TORCH_CHECK(lse.scalar_type() == at::kFloat && lse.is_contiguous() && lse.sizes() == at::IntArrayRef({B, H, T}),
              "flash attention backward: lse must be contiguous fp32 [B, H, T]");
  FlashBackwardPlan plan;
  plan.q = ready(q_in), plan.k = ready(k_in), plan.v = ready(v_in), plan.out = ready(out_in);
  plan.dout = ready(dout_in);
  plan.gate = gate_in.defined() ? gate_ready(gate_in) : at::Tensor();
  const at::Tensor& q = plan.q;
  const at::Tensor& gate = plan.gate;

  plan.dq = empty_bthd(B, H, T, D, q.options());
  plan.dk = empty_bthd(B, KV, S, D, q.options());
  plan.dv = empty_bthd(B, KV, S, D, q.options());
  // Shaped like the gate, stored [B, T, H, W] like the logits SelfAttention passes.
  if (gate.defined()) plan.dgate = empty_bthd(B, H, T, gate.size(3), q.options());
  if (plan.empty()) {
    plan.dq.zero_(), plan.dk.zero_(), plan.dv.zero_();
    if (plan.dgate.defined()) plan.dgate.zero_();
    return plan;
  }
  const int64_t dq_rows = (T + kDqAccumRowMultiple - 1) / kDqAccumRowMultiple * kDqAccumRowMultiple;
  // Deterministic: the dQ kernel computes dQ, no accumulation buffer.
  if (!deterministic) plan.dq_accum = at::zeros({B, H, dq_rows, D}, q.options().dtype(at::kFloat));
  plan.dsum = at::empty({B, H, T}, q.options().dtype(at::kFloat));

  BwdParams& p = plan.params;
  fill_fwd(p, q, plan.k, plan.v, plan.out, lse, window, scale);
  const at::Tensor& dout = plan.dout;
  p.dout = dout.data_ptr();
  p.do_batch_stride = dout.stride(0), p.do_head_stride = dout.stride(1), p.do_row_stride = dout.stride(2);
  p.dsum = plan.dsum.data_ptr<float>();
  p.dq_accum = deterministic ? nullptr : plan.dq_accum.data_ptr<float>();
  p.dq_accum_rows = static_cast<int>(dq_rows);
  const at::Tensor &dq = plan.dq, &dk = plan.dk, &dv = plan.dv;
  p.dq = dq.data_ptr();
  p.dq_batch_stride = dq.stride(0), p.dq_head_stride = dq.stride(1), p.dq_row_stride = dq.stride(2);
  p.deterministic_dq = deterministic;
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  p.dk_batch_stride = dk.stride(0), p.dk_head_stride = dk.stride(1), p.dk_row_stride = dk.stride(2);
  p.dv_batch_stride = dv.stride(0), p.dv_head_stride = dv.stride(1), p.dv_row_stride = dv.stride(2);
  if (gate.defined()) {  // dout_attn: dY ⊙ σ(g), the attention's own dO
    fill_gate(p, gate);
    plan.dout_attn = empty_bthd(B, H, T, D, q.options());
    const at::Tensor &doa = plan.dout_attn, &dgate = plan.dgate;
    p.dout_attn = doa.data_ptr();
    p.doa_batch_stride = doa.stride(0), p.doa_head_stride = doa.stride(1), p.doa_row_stride = doa.stride(2);
    p.dgate = dgate.data_ptr();
    p.dgate_batch_stride = dgate.stride(0), p.dgate_head_stride = dgate.stride(1),
    p.dgate_row_stride = dgate.stride(2);
  }
  fill_docs(p, docs);
  if (alibi_slopes.defined()) p.alibi_slopes = alibi_slopes.data_ptr<float>();
  return plan;
}

}  // namespace sluice::kernels
