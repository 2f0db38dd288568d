// Elementwise kernel benchmark: Sluice's fused RoPE, CoCA (Q_eff, K_eff) and SwiGLU kernels
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

#include "model/coca.h"
#include "gpu_timer.h"
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Elementwise kernel benchmark: fused RoPE, CoCA and SwiGLU against their ATen references (bf16)."};
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
    const double fwd_gbs = c.fwd_bytes / (fwd_ms * 1e-3) / 1e9;
    const double fb_gbs = (c.fwd_bytes + c.bwd_bytes) / (fb_ms * 1e-3) / 1e9;
    std::cout << fmt::format("{:<34} {:<6} {:>9.3f} {:>9.0f} {:>11.3f} {:>11.0f}\n", c.name, c.variant, fwd_ms, fwd_gbs,
                             fb_ms, fb_gbs);
    results.push_back({{"op", c.name},
                       {"impl", c.variant},
                       {"fwd_ms", fwd_ms},
                       {"fwd_gb_per_s", fwd_gbs},
                       {"fwd_bwd_ms", fb_ms},
                       {"fwd_bwd_gb_per_s", fb_gbs}});
  }
  const nlohmann::json doc = {{"device", device_name(c10::Device(at::kCUDA))},
                              {"dtype", "bf16"},
                              {"bytes", "napkin-math traffic, see bench_elementwise's header"},
                              {"warmup", warmup},
                              {"iters", iters},
                              {"results", results}};
  if (!out_path.empty()) std::ofstream(out_path) << doc.dump(2) << "\n";
  return 0;
}
