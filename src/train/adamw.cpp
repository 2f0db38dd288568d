#include "train/adamw.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sluice/errors.h"
#include "train/grad_clip.h"

namespace sluice {

bool excluded_from_decay(const std::string& name, const std::vector<std::string>& no_decay) {
  for (const auto& kind : no_decay) {
    if (kind == "norm" && name.find("norm.") != std::string::npos) return true;
    if (kind == "bias" && name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0) return true;
    if (kind == "embedding" && name.find("embed_tokens.") != std::string::npos) return true;
  }
  return false;
}

AdamW::AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_params, const OptimConfig& cfg)
    : cfg_(cfg), groups_(2) {
  groups_[0].weight_decay = cfg.weight_decay;
  groups_[1].weight_decay = 0.0;
  for (const auto& [name, p] : named_params) {
    AdamWState s;
    s.name = name;
    s.param = p;
    s.exp_avg = at::zeros_like(p, at::MemoryFormat::Contiguous);
    s.exp_avg_sq = at::zeros_like(p, at::MemoryFormat::Contiguous);
    s.step = at::zeros({}, p.options().dtype(at::kFloat));
    groups_[excluded_from_decay(name, cfg.no_decay) ? 1 : 0].params.push_back(std::move(s));
  }
}

void AdamW::step(double lr, const at::Tensor& found_inf) {
  at::NoGradGuard no_grad;
  for (auto& g : groups_) {
    std::vector<at::Tensor> p, grads, m, v, steps;
    for (auto& s : g.params) {
      if (!s.param.grad().defined()) continue;
      p.push_back(s.param);
      grads.push_back(s.param.grad());
      m.push_back(s.exp_avg);
      v.push_back(s.exp_avg_sq);
      steps.push_back(s.step);
    }
    if (p.empty()) continue;
    at::_foreach_add_(steps, 1.0);  // the fused kernel reads the step count; callers advance it
    const std::optional<at::Tensor> inf = found_inf.defined() ? std::optional<at::Tensor>(found_inf) : std::nullopt;
    at::_fused_adamw_(p, grads, m, v, /*max_exp_avg_sqs=*/{}, steps, lr, cfg_.beta1, cfg_.beta2, g.weight_decay,
                      cfg_.eps, /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt, inf);
    if (inf) at::_foreach_sub_(steps, std::vector<at::Tensor>(steps.size(), *inf));  // a skipped step does not count
  }
}

void AdamW::zero_grad() {
  for (auto& g : groups_)
    for (auto& s : g.params) s.param.mutable_grad() = at::Tensor();
}

at::Tensor AdamW::clip_grad_norm(double max_norm) { return sluice::clip_grad_norm(params(), max_norm); }

namespace {
std::vector<at::Tensor> defined_grads(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}
}  // namespace

at::Tensor AdamW::grad_square_sum() {
  at::NoGradGuard no_grad;
  const std::vector<at::Tensor> grads = defined_grads(params());
  if (grads.empty()) return at::zeros({});
  return at::stack(at::_foreach_norm(grads, 2)).to(at::kFloat).square().sum();
}

void AdamW::scale_grads(const at::Tensor& coef) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads = defined_grads(params());
  if (!grads.empty()) at::_foreach_mul_(grads, coef);
}

NamedTensors AdamW::state_tensors() {
  NamedTensors out;
  for (const auto& g : groups_) {
    for (const auto& s : g.params) {
      out.emplace_back("exp_avg." + s.name, s.exp_avg);
      out.emplace_back("exp_avg_sq." + s.name, s.exp_avg_sq);
      out.emplace_back("step." + s.name, s.step);
    }
  }
  return out;
}

void AdamW::load_state_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& file) {
  at::NoGradGuard no_grad;
  for (auto& g : groups_) {
    for (auto& s : g.params) {
      for (auto [prefix, dst] : {std::pair<const char*, at::Tensor*>{"exp_avg.", &s.exp_avg},
                                 {"exp_avg_sq.", &s.exp_avg_sq},
                                 {"step.", &s.step}}) {
        const auto it = tensors.find(prefix + s.name);
        if (it == tensors.end())
          throw InputError("checkpoint file '" + file + "': tensor '" + prefix + s.name + "' is missing");
        if (it->second.sizes() != dst->sizes() || it->second.scalar_type() != dst->scalar_type())
          throw InputError(fmt::format("checkpoint file '{}': tensor '{}{}' does not match the parameter (shape [{}])",
                                       file, prefix, s.name, fmt::join(it->second.sizes(), ", ")));
        dst->copy_(it->second);
      }
    }
  }
}

int64_t AdamW::state_bytes() const {
  int64_t n = 0;
  for (const auto& g : groups_)
    for (const auto& s : g.params) n += (s.exp_avg.numel() + s.exp_avg_sq.numel()) * s.exp_avg.element_size();
  return n;
}

std::vector<at::Tensor> AdamW::params() const {
  std::vector<at::Tensor> out;
  for (const auto& g : groups_)
    for (const auto& s : g.params) out.push_back(s.param);
  return out;
}

}  // namespace sluice
