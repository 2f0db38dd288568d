// test_expert_parallel's worker: one rank (under torchrun's variables) or one process (none)
// builds the config's model from its seed, applies the trainer's parallelism around it, and
// on a fixed global batch (GLOBAL_BATCH sequences; rank r of W takes rows r, r + W, ...)
// writes what the test compares with one process:
//   logits   an eval forward of its rows (before training)
//   loss.*   the training objective and its parts
//   grad_norm, grad.<name>  the global gradient norm and this rank's gradients, averaged and
//            scaled as the optimizer sees them (after clip_grad_norm(0))
//   loss_after  the loss of the same rows after one optimizer step
// --init CKPT: the weights of a checkpoint (loaded as the trainer does: this rank's part).
// --force-routing: MoE layer 0 never picks the experts of the second half (expert-parallel
// rank 1 of 2 receives no tokens), layer 1 never the first half (every token goes to rank 1).
// Needs model.moe.bias_update_rate > 0 (the selection bias it sets).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "dist/data_parallel.h"
#include "sluice/config.h"
#include "sluice/model.h"
#include "train/checkpoint.h"
#include "train/parallel.h"
#include "train/safetensors.h"

using namespace sluice;

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: ep_worker CONFIG OUT_DIR GLOBAL_BATCH [--force-routing] [--init CKPT]\n";
    return 2;
  }
  const std::string out_dir = argv[2];
  const int64_t global_batch = std::atoll(argv[3]);
  bool force = false;
  std::string init;
  for (int i = 4; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--force-routing") force = true;
    if (a == "--init" && i + 1 < argc) init = argv[++i];
  }
  try {
    const LoadedConfig loaded = load_config(argv[1], {}, /*check_paths=*/false);
    const Config& cfg = loaded.config;
    at::set_num_threads(1);
    std::shared_ptr<Parallel> dist = dist::connect(loaded);
    Parallel single;
    Parallel& par = dist ? *dist : single;

    at::manual_seed(static_cast<uint64_t>(cfg.train.seed));
    CausalLM model(cfg.model);
    if (force) {
      at::NoGradGuard no_grad;
      const int64_t E = cfg.model.moe.n_experts;
      for (auto& b : model->named_buffers()) {
        if (b.key().find("e_score_correction_bias") == std::string::npos) continue;
        const bool layer0 = b.key().find("layers.0.") != std::string::npos;
        if (layer0) b.value().narrow(0, E / 2, E / 2).fill_(-100.0);
        else b.value().narrow(0, 0, E / 2).fill_(-100.0);
      }
    }
    par.shard_model(*model);
    model->set_routing_count_reducer(par.routing_count_reducer());
    std::vector<std::pair<std::string, at::Tensor>> params;
    for (const auto& p : model->named_parameters()) params.emplace_back(p.key(), p.value());
    auto optimizer = par.make_optimizer(*model, params, cfg);
    if (!init.empty()) {
      load_checkpoint(init, *model, /*opt=*/nullptr, /*restore_rng=*/false,
                      [&](const std::string& name, const at::Tensor& whole) { return par.local_part(name, whole); });
    }

    const int64_t W = par.world_size(), m = global_batch / W, T = cfg.data.seq_len;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1234);
    const at::Tensor all = at::randint(cfg.model.vocab_size, {global_batch, T + 1}, gen, at::kLong);
    // Rank r's rows are r, r + W, ...: the trainer's loader interleaves the ranks' sequences.
    const at::Tensor rows = all.index_select(0, at::arange(par.rank(), global_batch, W, at::kLong));
    const at::Tensor inputs = rows.narrow(1, 0, T).contiguous(), targets = rows.narrow(1, 1, T).contiguous();

    NamedTensors out;
    {
      at::NoGradGuard no_grad;
      model->eval();
      out.emplace_back("logits", model->forward(inputs));
      model->train();
    }
    LossParts lp = model->loss_parts(inputs, targets);
    par.before_backward(lp.total, /*last_micro_batch=*/true);
    lp.total.backward();
    const at::Tensor gnorm = optimizer->clip_grad_norm(0.0);
    out.emplace_back("loss.total", lp.total.detach());
    out.emplace_back("loss.lm", lp.lm.detach());
    if (lp.aux.defined()) out.emplace_back("loss.aux", lp.aux.detach());
    if (lp.z.defined()) out.emplace_back("loss.z", lp.z.detach());
    out.emplace_back("grad_norm", gnorm);
    for (const auto& [name, p] : params) out.emplace_back("grad." + name, p.grad().clone());
    optimizer->step(1e-3);
    optimizer->zero_grad();
    model->after_optimizer_step();
    {
      at::NoGradGuard no_grad;
      out.emplace_back("loss_after", model->loss_parts(inputs, targets).lm);
    }
    for (auto& [name, t] : out) t = t.contiguous();
    write_safetensors(out_dir + "/rank-" + std::to_string(par.rank()) + ".safetensors", out);
    par.barrier("the end");
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "ep_worker: " << e.what() << "\n";
    return 1;
  }
}
