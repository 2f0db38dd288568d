// Elementwise kernel benchmark: Sluice's fused RoPE, CoCA (Q_eff, K_eff), SwiGLU, RMSNorm and gate kernels
// (kernels/) against their ATen references, forward and forward+backward, in one run on the
// GPU, as effective memory bandwidth:
//
//   build/benchmarks/bench_elementwise [--warmup 10] [--iters 50] [--out result.json]
//
// Napkin math: these maps are memory-bound, so the floor is bytes moved / HBM bandwidth. The
// shape is one layer of benchmarks/configs/llama_125m.yaml's batch (16 x 2048 tokens, 12 heads
// of 64 for q; SwiGLU 16·2048 x 2048) and of the issue-8 attention shape (8 x 2048, 16 heads of
// 128). RoPE of x [B, T, H, D] bf16 reads x and writes the result (2 x 2 bytes per element; the
// fp32 tables are T·D/2·8 bytes, negligible), its backward the same; a CoCA map reads x and
// writes Q_eff/K_eff, its backward reads x and dy and writes dx (3 x 2 bytes); SwiGLU reads
// gate and up and writes out (3 x 2), its backward reads dy, gate, up and writes two (5 x 2).
// GB/s = those bytes / time; an H100 80GB HBM3 streams about 3 TB/s.
//
// RMSNorm (kernels/rms_norm.h) over 16·2048 rows of the 125M width (768) and of the 1.7B
// width (2048), with bf16 weights, plain and with the residual add: the fused kernels against
// ATen's composition (x + residual, at::rms_norm, autograd for the backward). Bytes, n elements
// of 2: plain forward reads x, writes y (4n), backward reads dy, s, writes ds (6n); residual
// forward reads x, residual, writes s, y (8n), backward reads dy, s, d_residual_out, writes ds
// (8n); weights, rstd and the dw workspace are negligible. The fused "f+b" is the forward and
// backward launchers in a row, ATen's the forward with autograd then torch::autograd::grad.
//
// The sigmoid gate (kernels/gate_mul.h: out = y · sigmoid(z)) at the 125M G1 gate's shape,
// y [16·2048 tokens, 12 heads, 64] bf16, elementwise (z like y) and headwise (z [tokens, 12, 1]):
// the fused kernels against ATen's y * at::sigmoid(z) with autograd. Bytes, n elements of 2:
// elementwise forward reads y, z, writes out (6n), backward reads dout, y, z, writes dy, dz
// (10n); headwise forward reads y, writes out (4n), backward reads dout, y, writes dy (6n); the
// headwise z and dz (n/64) are negligible.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/cuda.h>

#include <CLI/CLI.hpp>
#include <array>
#include <chrono>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "model/coca.h"
#include "gpu_timer.h"
#if defined(SLUICE_HAVE_CUDA_KERNELS)
#include "gate_mul.h"
#include "rms_norm.h"
#endif
#include "model/fused_ops.h"
#include "model/rope.h"
#include "train/device.h"

using namespace sluice;

namespace {

using bench::time_ms;

struct Case {
  std::string name;     // e.g. "rope 16x2048x12x64"
  std::string variant;  // "fused" or "aten"
  std::vector<at::Tensor> inputs;
  std::function<at::Tensor(const std::vector<at::Tensor>&)> fn;
  double fwd_bytes, bwd_bytes;  // the napkin-math traffic of the forward and of the backward alone
};

// A case timed through two closures (the fused RMSNorm has no autograd function to go through).
struct TimedCase {
  std::string name, variant;
  std::function<void()> fwd, fwd_bwd;
  double fwd_bytes, bwd_bytes;
};

// RMSNorm cases at [rows, d] bf16, with or without the residual add (header: bytes).
std::vector<TimedCase> rms_norm_cases(int64_t rows, int64_t d, bool residual) {
  constexpr double kEps = 1e-5;
  const auto opts = at::TensorOptions(at::kCUDA).dtype(at::kBFloat16);
  const at::Tensor x = at::randn({rows, d}, opts), r = at::randn({rows, d}, opts), dy = at::randn({rows, d}, opts),
                   dres = at::randn({rows, d}, opts), w = 1.0 + 0.1 * at::randn({d}, opts);
  const double n = static_cast<double>(rows * d);
  const double fwd_bytes = residual ? 8 * n : 4 * n, bwd_bytes = residual ? 8 * n : 6 * n;
  const std::string name = fmt::format("rms_norm{} {}x{}", residual ? "+res" : "", rows, d);
  std::vector<TimedCase> out;
#if defined(SLUICE_HAVE_CUDA_KERNELS)
  auto fused_fwd = [=] {
    at::Tensor y = at::empty_like(x), s = residual ? at::empty_like(x) : at::Tensor();
    at::Tensor rstd = at::empty({rows}, opts.dtype(at::kFloat));
    kernels::rms_norm_forward(x, residual ? r : at::Tensor(), w, kEps, y, s, rstd);
    return std::make_pair(residual ? s : x, rstd);
  };
  out.push_back({name, "fused", [=] { fused_fwd(); },
                 [=] {
                   const auto [s, rstd] = fused_fwd();
                   at::Tensor ds = at::empty_like(x), dw = at::empty_like(w);
                   kernels::rms_norm_backward(dy, s, w, rstd, residual ? dres : at::Tensor(), ds, dw);
                 },
                 fwd_bytes, bwd_bytes});
#endif
  auto aten_fwd = [=](const at::Tensor& xi, const at::Tensor& ri, const at::Tensor& wi) {
    const at::Tensor s = residual ? xi + ri : xi;
    return std::make_pair(at::rms_norm(s, {d}, wi, kEps), s);
  };
  out.push_back({name, "aten",
                 [=] {
                   at::NoGradGuard no_grad;
                   aten_fwd(x, r, w);
                 },
                 [=] {
                   const at::Tensor xl = x.detach().requires_grad_(true), rl = r.detach().requires_grad_(true),
                                    wl = w.detach().requires_grad_(true);
                   const auto [y, s] = aten_fwd(xl, rl, wl);
                   if (residual) torch::autograd::grad({y, s}, {xl, rl, wl}, {dy, dres});
                   else torch::autograd::grad({y}, {xl, wl}, {dy});
                 },
                 fwd_bytes, bwd_bytes});
  return out;
}

// Sigmoid gate cases at y [tokens, heads, head_dim] bf16, elementwise or headwise (header: bytes).
std::vector<TimedCase> gate_mul_cases(int64_t tokens, int64_t heads, int64_t head_dim, bool headwise) {
  const auto opts = at::TensorOptions(at::kCUDA).dtype(at::kBFloat16);
  const at::Tensor y = at::randn({tokens, heads, head_dim}, opts), dout = at::randn({tokens, heads, head_dim}, opts);
  const at::Tensor z = headwise ? at::randn({tokens, heads, 1}, opts) : at::randn({tokens, heads, head_dim}, opts);
  const int64_t width = headwise ? head_dim : 1;
  const double n = static_cast<double>(tokens * heads * head_dim);
  const double fwd_bytes = headwise ? 4 * n : 6 * n, bwd_bytes = headwise ? 6 * n : 10 * n;
  const std::string name =
      fmt::format("gate_mul_{} {}x{}x{}", headwise ? "headwise" : "elementwise", tokens, heads, head_dim);
  std::vector<TimedCase> out;
#if defined(SLUICE_HAVE_CUDA_KERNELS)
  auto fused_fwd = [=] {
    at::Tensor o = at::empty_like(y);
    kernels::gate_mul_forward(y, z, width, o);
    return o;
  };
  out.push_back({name, "fused", [=] { fused_fwd(); },
                 [=] {
                   fused_fwd();
                   at::Tensor dy = at::empty_like(y), dz = at::empty_like(z);
                   kernels::gate_mul_backward(dout, y, z, width, dy, dz);
                 },
                 fwd_bytes, bwd_bytes});
#endif
  out.push_back({name, "aten",
                 [=] {
                   at::NoGradGuard no_grad;
                   (void)(y * at::sigmoid(z));
                 },
                 [=] {
                   const at::Tensor yl = y.detach().requires_grad_(true), zl = z.detach().requires_grad_(true);
                   torch::autograd::grad({yl * at::sigmoid(zl)}, {yl, zl}, {dout});
                 },
                 fwd_bytes, bwd_bytes});
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Elementwise kernel benchmark: fused RoPE, CoCA, SwiGLU, RMSNorm and gate kernels against ATen (bf16)."};
  int64_t warmup = 10, iters = 50;
  std::string out_path;
  app.add_option("--warmup", warmup, "untimed calls first");
  app.add_option("--iters", iters, "timed calls");
  app.add_option("--out", out_path, "write the results as JSON here");
  CLI11_PARSE(app, argc, argv);
  if (!torch::cuda::is_available()) {
    std::cerr << "bench_elementwise needs a CUDA device\n";
    return 1;
  }
  at::manual_seed(0);
  const auto opts = at::TensorOptions(at::kCUDA).dtype(at::kBFloat16);
  std::vector<Case> cases;
  for (const auto& [B, T, H, D] : {std::array<int64_t, 4>{16, 2048, 12, 64}, std::array<int64_t, 4>{8, 2048, 16, 128}}) {
    const std::string shape = fmt::format("{}x{}x{}x{}", B, T, H, D);
    const RotaryTables tab = Rotary(D, 10000.0).tables(0, T, at::Device(at::kCUDA));
    const double n = static_cast<double>(B * T * H * D);
    const at::Tensor x = at::randn({B, T, H, D}, opts);
    for (const bool fused : {true, false}) {
      const std::string variant = fused ? "fused" : "aten";
      cases.push_back({"rope " + shape, variant, {x},
                       [=](const std::vector<at::Tensor>& in) {
                         return fused ? apply_rope(in[0], tab) : rope_reference(in[0], tab);
                       },
                       4 * n, 4 * n});
      for (const CocaMode mode : {CocaMode::Strict, CocaMode::Slack}) {
        const std::string m = mode == CocaMode::Strict ? "strict" : "slack";
        cases.push_back({"coca_query_" + m + " " + shape, variant, {x},
                         [=](const std::vector<at::Tensor>& in) {
                           return fused ? coca_query(in[0], tab, mode) : coca_query_reference(in[0], tab, mode);
                         },
                         4 * n, 6 * n});
        cases.push_back({"coca_key_" + m + " " + shape, variant, {x},
                         [=](const std::vector<at::Tensor>& in) {
                           return fused ? coca_key(in[0], tab, mode) : coca_key_reference(in[0], tab, mode);
                         },
                         4 * n, 6 * n});
      }
    }
  }
  {
    const int64_t rows = 16 * 2048, width = 2048;
    const double n = static_cast<double>(rows * width);
    const at::Tensor g = at::randn({rows, width}, opts), u = at::randn({rows, width}, opts);
    for (const bool fused : {true, false})
      cases.push_back({fmt::format("swiglu {}x{}", rows, width), fused ? "fused" : "aten", {g, u},
                       [=](const std::vector<at::Tensor>& in) {
                         return fused ? swiglu(in[0], in[1]) : swiglu_reference(in[0], in[1]);
                       },
                       6 * n, 10 * n});
  }

  nlohmann::json results = nlohmann::json::array();
  std::cout << fmt::format("{:<34} {:<6} {:>9} {:>9} {:>11} {:>11}\n", "op shape", "impl", "fwd ms", "fwd GB/s",
                           "f+b ms", "f+b GB/s");
  auto report = [&](const std::string& name, const std::string& variant, double fwd_ms, double fb_ms,
                    double fwd_bytes, double bwd_bytes) {
    const double fwd_gbs = fwd_bytes / (fwd_ms * 1e-3) / 1e9;
    const double fb_gbs = (fwd_bytes + bwd_bytes) / (fb_ms * 1e-3) / 1e9;
    std::cout << fmt::format("{:<34} {:<6} {:>9.3f} {:>9.0f} {:>11.3f} {:>11.0f}\n", name, variant, fwd_ms, fwd_gbs,
                             fb_ms, fb_gbs);
    results.push_back({{"op", name},
                       {"impl", variant},
                       {"fwd_ms", fwd_ms},
                       {"fwd_gb_per_s", fwd_gbs},
                       {"fwd_bwd_ms", fb_ms},
                       {"fwd_bwd_gb_per_s", fb_gbs}});
  };
  for (const Case& c : cases) {
    double fwd_ms = 0;
    {
      at::NoGradGuard no_grad;
      fwd_ms = time_ms([&] { c.fn(c.inputs); }, warmup, iters);
    }
    std::vector<at::Tensor> leaves;
    for (const at::Tensor& t : c.inputs) leaves.push_back(t.detach().requires_grad_(true));
    const at::Tensor dy = at::randn_like(c.fn(c.inputs));
    const double fb_ms = time_ms([&] { torch::autograd::grad({c.fn(leaves)}, leaves, {dy}); }, warmup, iters);
    report(c.name, c.variant, fwd_ms, fb_ms, c.fwd_bytes, c.bwd_bytes);
  }
  for (const int64_t d : {int64_t{768}, int64_t{2048}})
    for (const bool residual : {false, true})
      for (const TimedCase& c : rms_norm_cases(16 * 2048, d, residual))
        report(c.name, c.variant, time_ms(c.fwd, warmup, iters), time_ms(c.fwd_bwd, warmup, iters), c.fwd_bytes,
               c.bwd_bytes);
  for (const bool headwise : {false, true})
    for (const TimedCase& c : gate_mul_cases(16 * 2048, 12, 64, headwise))
      report(c.name, c.variant, time_ms(c.fwd, warmup, iters), time_ms(c.fwd_bwd, warmup, iters), c.fwd_bytes,
             c.bwd_bytes);
  const nlohmann::json doc = {{"device", device_name(c10::Device(at::kCUDA))},
                              {"dtype", "bf16"},
                              {"bytes", "napkin-math traffic, see bench_elementwise's header"},
                              {"warmup", warmup},
                              {"iters", iters},
                              {"results", results}};
  if (!out_path.empty()) std::ofstream(out_path) << doc.dump(2) << "\n";
  return 0;
}
