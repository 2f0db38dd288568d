// The flash-attention tests' cases, inputs and fp32 reference with per-element error bounds,
// shared by the GPU suite (test_flash_attention.cpp) and the CPU emulation of the kernels
// (test_flash_sim.cpp). Inputs are made on the device each suite asks for.
//
// Tolerances: elementwise bounds computed per element by the test, |got - ref| <= bound, each a
// first-order sum of the error sources below, doubled (margin for second-order terms, such as
// rounding an already perturbed value, and for summation orders we do not model). u is the unit
// roundoff of the input type (bf16 has 8 significant bits, u = 2^-8; fp16 11, u = 2^-11);
// γ(n) = n·2^-24 bounds the relative error of an n-term fp32 sum against the sum of |terms|.
// P, dP, dS, D are the reference's (fp32), |x| elementwise absolute values.
//   scores: kernel and reference each accumulate D products in fp32 (tensor cores / cuBLAS), so
//        a score differs by at most E_i = 2·γ(D)·scale·max_j Σ_d|q_id||k_jd| in row i; each p_ij
//        then by a relative 2·E_i (numerator and normaliser).
//   out: the kernel rounds P̃ = exp(s - m) before P̃·V (u·Σ_j p_j|v_j|: outputs are convex
//        combinations of v, so errors scale with |v|) and rounds the result (u·|o|); plus
//        (2·E + γ(S))·Σ_j p_j|v_j|.
//   lse: fp32 only: E_i + γ(S) (the sum of exponentials) + 2^-24·|L|.
//   dV = Σ_i P_ij·dO_i: P rounded (u·Σ_i P_ij|dO_i|), the result rounded (u·|dV|), P's
//        recomputation (2·E_i) and the fp32 sum over T·G terms (γ(T·G)).
//   dS = P ⊙ (dP - D): the kernel rounds dS (u·|dS|); its D_i = rowsum(dO ⊙ O) uses its own
//        rounded O, off by exactly ΔD_i = Σ_d dO_id·(O_kernel - O_ref)_id (computed here from
//        the kernel's output, which the forward checks separately); P's recomputation
//        (2·E_i·|dP - D|) and the fp32 sums of dP and D (γ(D)·(Σ_d|dO||V| + Σ_d|dO||O|)).
//        dQ = scale·dS·K and dK = scale·dSᵀ·Q carry that error times |K| (|Q|), are rounded
//        (u·|dQ|, u·|dK|) and sum S (T·G) terms in fp32. dK and dV of a KV head sum over its G
//        query heads (GQA), and so do their bounds: gradients accumulate over S (T·G) terms.
//   fp16 only: values below 2^-14 are subnormal, with absolute error up to 2^-25; over n terms
//        that adds n·2^-25·max|x| (bf16 has fp32's exponent range).
// The fused G1 gate (Y = O ⊙ σ(g), logits g in the input type): the kernel rounds O_acc·σ(g)
// once, so out's bound becomes σ(g)·(the terms above before the final rounding) + u·|Y|, plus
// r_g = 8·2^-24 relative for the fp32 sigmoid (expf, a division) and product. The backward gets
// dY and Y only: its dO = dY ⊙ σ(g) is rounded to the input type (u·|dO| more in every term
// that reads dO: u·Pᵀ|dO| in dV, P·u·|dO||V|ᵀ in dS), D_i = Σ dY·Y_kernel is off by
// ΔD_i = Σ_d dY·(Y_kernel - Y_ref) (as above, with Y for O), and
//   dg = dY ⊙ Y ⊙ σ(-g) (elementwise): |dY|·σ(-g)·|Y_kernel - Y_ref| + (u + r_g)·|dg|;
//   dg = D_i·σ(-g) (headwise): σ(-g)·(ΔD_i + γ(D)·Σ_d|dY·Y|) + (u + r_g)·|dg|.
// ALiBi: the kernels add the bias in fp32 relative to a reference query position (slope/scale
// with 2 ulp, an FMA into the raw score, the row part into L) and the reference rounds its own
// -m·(i - j): each score within 2^-21·m_h·(|i - j| + 64), added to E_i (doubled, over the
// visible keys: 2^-20·m_h·(max|i - j| + 64)).
// Before any GPU run these bounds were checked on a CPU emulation of the kernels' algorithm
// (same tiles, masks, online softmax and roundings): errors reach 0.2-0.5 of the bound. A wrong
// mask, a missing tile or a wrong index moves elements by O(1) of Σ p|v| and far outside them
// (WrongWindowExceedsTheBound checks a bound can fail).
#pragma once
#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "model/alibi.h"
#include "sluice/attention.h"

namespace sluice::flash_test {

inline double unit_roundoff(at::ScalarType t) { return t == at::kBFloat16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11); }

// γ(n): relative error bound of an n-term fp32 sum.
inline double g32(int64_t n) { return static_cast<double>(n) * std::ldexp(1.0, -24); }

// The fp16 subnormal term of the header: n terms of absolute error 2^-25 times max|x|.
inline double subnormal_floor(at::ScalarType t, int64_t n, const at::Tensor& x) {
  if (t != at::kHalf) return 0.0;
  return static_cast<double>(n) * std::ldexp(1.0, -25) * x.abs().max().item<double>();
}

// |got - ref| <= bound elementwise (NaN fails).
inline void expect_within(const at::Tensor& got, const at::Tensor& ref, const at::Tensor& bound, const std::string& what) {
  ASSERT_EQ(got.sizes(), ref.sizes()) << what;
  ASSERT_EQ(bound.sizes(), ref.sizes()) << what;
  const at::Tensor err = (got.to(at::kDouble) - ref.to(at::kDouble)).abs();
  const at::Tensor b = bound.to(at::kDouble);
  const double excess = (err - b).max().item<double>();
  const double worst_ratio = (err / b).max().item<double>();
  EXPECT_LE(excess, 0.0) << what << ": max |err| " << err.max().item<double>() << ", max |err|/bound "
                         << worst_ratio;
}

// The fused G1 gate's granularity; None: ungated.
enum class Gate { None, Elementwise, Headwise };

struct Case {
  int64_t B, H, KV, T, S, D, window;
  at::ScalarType dtype;
  bool bthd = true;  // q/k/v as transposed views of [B, T, heads, D] (SelfAttention's layout)
  Gate gate = Gate::None;
  bool docs = false;  // documents packed in rows (AttentionMask::segments, make_segments)
  bool alibi = false;  // ALiBi slopes of c.H heads (alibi_slopes_tensor)
  bool jumps = false;  // keys every query aligns with (make_inputs): the row maximum jumps
};

inline std::string case_name(const Case& c) {
  return "B" + std::to_string(c.B) + "H" + std::to_string(c.H) + "KV" + std::to_string(c.KV) + "T" +
         std::to_string(c.T) + "S" + std::to_string(c.S) + "D" + std::to_string(c.D) + "W" + std::to_string(c.window) +
         "_" + (c.dtype == at::kBFloat16 ? "bf16" : "fp16") + (c.bthd ? "" : "_bhtd") +
         (c.gate == Gate::Elementwise ? "_gate" : c.gate == Gate::Headwise ? "_headgate" : "") +
         (c.docs ? "_docs" : "") + (c.alibi ? "_alibi" : "") + (c.jumps ? "_jumps" : "");
}

// Document indices [B, T] for c.docs: row 0 random boundaries (about one per 150 positions, so
// documents span several tiles), row 1 the same plus length-1 documents at positions 5 and 6
// and a boundary at every tile edge it can reach (63/64, 127/128), later rows one document.
inline at::Tensor make_segments(const Case& c, const at::Device& device = at::kCUDA) {
  at::manual_seed(99 + c.T);
  at::Tensor starts = at::rand({c.B, c.T}) < (1.0 / 150.0);
  if (c.B > 1) {
    for (int64_t t : {5, 6, 7, 64, 128})
      if (t < c.T) starts[1][t] = true;
  }
  for (int64_t b = 2; b < c.B; ++b) starts[b].zero_();
  starts.select(1, 0).zero_();
  return starts.to(at::kLong).cumsum(1).to(device);
}

inline void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

// Leaf tensors in the layout the case asks for; dout in the input dtype.
struct Inputs {
  at::Tensor qb, kb, vb;  // leaves: [B, L, heads, D] (bthd) or [B, heads, L, D]
  at::Tensor dout;        // [B, H, T, D]
  at::Tensor gb;          // G1 logits [B, T, H, D or 1] (SelfAttention's layout); undefined: ungated
};

inline Inputs make_inputs(const Case& c, uint64_t seed, const at::Device& device = at::kCUDA) {
  at::manual_seed(seed);
  const auto opts = at::TensorOptions(device);
  Inputs in;
  auto leaf = [&](int64_t heads, int64_t L) {
    return c.bthd ? at::randn({c.B, L, heads, c.D}, opts).to(c.dtype) : at::randn({c.B, heads, L, c.D}, opts).to(c.dtype);
  };
  in.qb = leaf(c.H, c.T);
  in.kb = leaf(c.KV, c.S);
  in.vb = leaf(c.KV, c.S);
  in.dout = at::randn({c.B, c.H, c.T, c.D}, opts).to(c.dtype);
  // 2·N(0, 1) logits: scores from nearly closed to nearly open (drawn last: the ungated cases'
  // inputs stay what they were).
  if (c.gate != Gate::None)
    in.gb = (2 * at::randn({c.B, c.T, c.H, c.gate == Gate::Headwise ? 1 : c.D}, opts)).to(c.dtype);
  // c.jumps: every query gets 3·u (u a random unit vector) and key 0 is 4.6·√D·u, keys S/3 and
  // 2S/3 half that, like attention sinks: scaled by 1/√D, key 0 scores ~20 ± 7 powers of two
  // above a row's other keys and the middle ones ~10 ± 3, against ~2^1.5 spread elsewhere. The
  // forward walks keys from the diagonal down, so a row's maximum jumps past the lazy rescaling's
  // slack (2^8, flash_fwd_kernel.cuh) at key 0 and mostly stays within it at the middle keys,
  // whose probabilities then reach ~2^7 against the stale reference.
  if (c.jumps) {
    at::Tensor u = at::randn({c.D}, opts);
    u = u / u.norm();
    in.qb = (in.qb.to(at::kFloat) + 3 * u).to(c.dtype);
    const int64_t key_dim = c.bthd ? 1 : 2;
    const double big = 4.6 * std::sqrt(static_cast<double>(c.D));
    in.kb.select(key_dim, 0).copy_((big * u).expand_as(in.kb.select(key_dim, 0)));
    for (int64_t key : {c.S / 3, 2 * c.S / 3})
      in.kb.select(key_dim, key).copy_((big / 2 * u).expand_as(in.kb.select(key_dim, key)));
  }
  return in;
}

// [B, heads, L, D] view of a leaf.
inline at::Tensor heads_view(const at::Tensor& leaf, bool bthd) { return bthd ? leaf.transpose(1, 2) : leaf; }

struct Result {
  at::Tensor out, lse, dq, dk, dv;  // [B, heads, L, D] / [B, H, T]
  at::Tensor dg;                    // [B, H, T, D or 1] when gated
};


// The math backend in fp32 from the same low-precision inputs (values and gradients), and the
// header's bounds. `kernel_out` enters only through ΔD (see the header).
struct Expected {
  Result ref, bound;
};

inline Expected expected(const Case& c, const Inputs& in, const AttentionMask& mask, double scale,
                  const at::Tensor& kernel_out) {
  Expected e;
  Result& r = e.ref;
  const at::Tensor q = in.qb.detach().to(at::kFloat).requires_grad_(true);
  const at::Tensor k = in.kb.detach().to(at::kFloat).requires_grad_(true);
  const at::Tensor v = in.vb.detach().to(at::kFloat).requires_grad_(true);
  const at::Tensor qh = heads_view(q, c.bthd), kh = heads_view(k, c.bthd), vh = heads_view(v, c.bthd);
  const bool gated = in.gb.defined();
  const at::Tensor g = gated ? in.gb.detach().to(at::kFloat).requires_grad_(true) : at::Tensor();
  const at::Tensor attn = make_attention_core("math")->forward(qh, kh, vh, mask, scale);
  r.out = gated ? attn * at::sigmoid(heads_view(g, true)) : attn;  // Y
  r.out.backward(in.dout.to(at::kFloat));
  r.out = r.out.detach();
  r.dq = heads_view(q.grad(), c.bthd);
  r.dk = heads_view(k.grad(), c.bthd);
  r.dv = heads_view(v.grad(), c.bthd);
  if (gated) r.dg = heads_view(g.grad(), true);

  at::NoGradGuard no_grad;
  const double u = unit_roundoff(c.dtype);
  const int64_t G = c.H / c.KV;
  const at::Tensor Q = qh.detach(), K = kh.detach().repeat_interleave(G, 1), V = vh.detach().repeat_interleave(G, 1);
  // Gated (header): σ(g), the attention's dO = dY ⊙ σ(g) rounded by the kernel (u_do), the fp32
  // sigmoid and product (r_g). Ungated these are 1, dY, 0, 0 and the bounds are the plain ones.
  const at::Tensor sig = gated ? at::sigmoid(heads_view(g.detach(), true)) : at::ones({}, Q.options());
  const double u_do = gated ? u : 0.0, r_g = gated ? 8 * std::ldexp(1.0, -24) : 0.0;
  const at::Tensor dY = in.dout.to(at::kFloat), Y = r.out;
  const at::Tensor dO = dY * sig, O = attn.detach();
  const at::Tensor Qa = Q.abs(), Ka = K.abs(), Va = V.abs(), dOa = dO.abs();
  // Scores with the mask spelled out here (not through the backend) for P and the log-sum-exp.
  const at::Tensor hidden = allowed_positions(c.T, c.S, mask, Q.device()).logical_not();
  at::Tensor s = at::matmul(Q, K.transpose(-2, -1)) * scale;
  if (mask.alibi_slopes.defined()) s = s + alibi_bias(c.T, c.S, mask.alibi_slopes);
  s = s.masked_fill(hidden, -INFINITY);
  r.lse = at::logsumexp(s, -1);
  const at::Tensor P = at::softmax(s, -1);
  at::Tensor E = (2 * g32(c.D) * scale * at::matmul(Qa, Ka.transpose(-2, -1)))
                     .masked_fill(hidden, 0.0)
                     .amax(-1, /*keepdim=*/true);  // [B, H, T, 1]
  if (mask.alibi_slopes.defined()) {  // the header's ALiBi term
    const at::Tensor ones = at::ones({1}, mask.alibi_slopes.options());
    const at::Tensor dist = alibi_bias(c.T, c.S, ones).abs().masked_fill(hidden, 0.0).amax(-1, /*keepdim=*/true);
    E = E + std::ldexp(1.0, -20) * mask.alibi_slopes.view({-1, 1, 1}) * (dist + 64);
  }
  auto sum_group = [&](const at::Tensor& x) { return x.view({c.B, c.KV, G, c.S, c.D}).sum(2); };

  const at::Tensor pv = at::matmul(P, Va);
  e.bound.out = 2 * (sig * (u * pv + (2 * E + g32(c.S)) * pv) + (u + r_g) * Y.abs()) +
                subnormal_floor(c.dtype, c.S, in.vb) + 1e-6;
  e.bound.lse = 2 * (E.squeeze(-1) + g32(c.S) + std::ldexp(1.0, -24) * r.lse.abs());

  const at::Tensor dP = at::matmul(dO, V.transpose(-2, -1));
  const at::Tensor Dref = (dO * O).sum(-1, /*keepdim=*/true);
  const at::Tensor dS = P * (dP - Dref);
  const at::Tensor dD = (dY * (kernel_out.to(at::kFloat) - Y)).sum(-1, /*keepdim=*/true).abs();
  const at::Tensor dOV = at::matmul(dOa, Va.transpose(-2, -1));
  // Gated fp16: dO can be subnormal (2^-25 absolute each, D terms of dP).
  const double sub_do = gated ? subnormal_floor(c.dtype, c.D, in.vb) : 0.0;
  const at::Tensor e_ds =
      u * dS.abs() + P * dD +
      P * (2 * E * (dP - Dref).abs() + g32(c.D) * (dOV + (dOa * O.abs()).sum(-1, /*keepdim=*/true)) +
           u_do * dOV + sub_do);
  const int64_t n_q = c.T * G;  // terms of a dK/dV sum
  e.bound.dv = 2 * ((u + u_do) * sum_group(at::matmul(P.transpose(-2, -1), dOa)) + u * r.dv.abs() +
                    sum_group(at::matmul(((2 * E + g32(n_q)) * P).transpose(-2, -1), dOa))) +
               subnormal_floor(c.dtype, n_q, in.dout) * (gated ? 2 : 1) + 1e-6;
  e.bound.dk = 2 * (scale * sum_group(at::matmul(e_ds.transpose(-2, -1), Qa)) + u * r.dk.abs() +
                    g32(n_q) * scale * sum_group(at::matmul(dS.abs().transpose(-2, -1), Qa))) +
               subnormal_floor(c.dtype, n_q, in.qb) * scale + 1e-6;
  e.bound.dq = 2 * (scale * at::matmul(e_ds, Ka) + u * r.dq.abs() + g32(c.S) * scale * at::matmul(dS.abs(), Ka)) +
               subnormal_floor(c.dtype, c.S, in.kb) * scale + 1e-6;
  if (gated) {
    const at::Tensor comp = at::sigmoid(-heads_view(g.detach(), true));  // 1 - σ(g)
    const at::Tensor e_y = c.gate == Gate::Headwise
                               ? dD + g32(c.D) * (dY * Y).abs().sum(-1, /*keepdim=*/true)
                               : (dY * (kernel_out.to(at::kFloat) - Y)).abs();
    e.bound.dg = 2 * (comp * e_y + (u + r_g) * r.dg.abs()) + 1e-6;
  }
  return e;
}

}  // namespace sluice::flash_test
