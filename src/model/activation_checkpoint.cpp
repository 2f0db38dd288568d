#include "model/activation_checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/function_hook.h>

#include <mutex>
#include <stdexcept>

namespace sluice {

ActivationCheckpointing parse_activation_checkpointing(const std::string& name) {
  if (name == "none") return ActivationCheckpointing::None;
  if (name == "selective") return ActivationCheckpointing::Selective;
  if (name == "full") return ActivationCheckpointing::Full;
  throw std::invalid_argument("activation_checkpointing: expected none, selective or full, got '" + name + "'");
}

namespace {

// The forward's RNG and autocast state, for a later recompute on tensors of `device`.
struct ForwardState {
  c10::DeviceType device = c10::DeviceType::CPU;
  at::Generator generator;  // the device's default generator
  at::Tensor rng_state;     // its state when the forward ran the region
  bool autocast = false;
  at::ScalarType autocast_dtype = at::kFloat;
};

// What the recompute needs besides the inputs.
struct Recompute : torch::CustomClassHolder {
  RegionFn region;
  ForwardState state;
};

// Not held while the region runs: its random ops take the same lock.
at::Tensor generator_state(at::Generator& g) {
  std::lock_guard<std::mutex> lock(g.mutex());
  return g.get_state();
}
void set_generator_state(at::Generator& g, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(g.mutex());
  g.set_state(state);
}

// Sets the autocast state of one device type for a scope (backward runs on the engine's threads,
// whose autocast state is not the forward's).
class AutocastScope {
 public:
  AutocastScope(c10::DeviceType t, bool enabled, at::ScalarType dtype)
      : t_(t), enabled_(at::autocast::is_autocast_enabled(t)), dtype_(at::autocast::get_autocast_dtype(t)) {
    at::autocast::set_autocast_enabled(t, enabled);
    at::autocast::set_autocast_dtype(t, dtype);
  }
  ~AutocastScope() {
    at::autocast::set_autocast_enabled(t_, enabled_);
    at::autocast::set_autocast_dtype(t_, dtype_);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  c10::DeviceType t_;
  bool enabled_;
  at::ScalarType dtype_;
};

// Runs r's region on `inputs` as the forward did: its generator state and autocast state; the
// generator then goes on from where it is now, so the recompute consumes no random numbers.
std::vector<at::Tensor> recompute(Recompute& r, const std::vector<at::Tensor>& inputs, bool with_grad) {
  ForwardState& f = r.state;
  const at::Tensor now = generator_state(f.generator);
  set_generator_state(f.generator, f.rng_state);
  std::vector<at::Tensor> outputs;
  {
    AutocastScope autocast(f.device, f.autocast, f.autocast_dtype);
    at::AutoGradMode grad(with_grad);
    outputs = r.region(inputs);
  }
  set_generator_state(f.generator, now);
  return outputs;
}

ForwardState capture(c10::DeviceType device) {
  ForwardState f;
  f.device = device;
  f.generator = at::globalContext().defaultGenerator(c10::Device(device));
  f.rng_state = generator_state(f.generator);
  f.autocast = at::autocast::is_autocast_enabled(device);
  f.autocast_dtype = at::autocast::get_autocast_dtype(device);
  return f;
}

c10::intrusive_ptr<Recompute> make_recompute(RegionFn region, ForwardState state) {
  auto r = c10::make_intrusive<Recompute>();
  r->region = std::move(region);
  r->state = std::move(state);
  return r;
}

bool needs_checkpoint(const std::vector<at::Tensor>& inputs) {
  bool any_grad = false;
  for (const at::Tensor& x : inputs) any_grad = any_grad || (x.defined() && x.requires_grad());
  return at::GradMode::is_enabled() && any_grad;
}

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const c10::intrusive_ptr<Recompute>& r, at::TensorList inputs) {
    std::vector<at::Tensor> outputs;
    {
      at::NoGradGuard no_grad;
      outputs = r->region(inputs.vec());
    }
    ctx->save_for_backward(inputs.vec());
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(r);
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto r = c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["recompute"].toCapsule());
    const std::vector<at::Tensor> saved = ctx->get_saved_variables();
    std::vector<at::Tensor> detached;
    detached.reserve(saved.size());
    for (const at::Tensor& x : saved) {
      detached.push_back(x.detach().requires_grad_(x.requires_grad()));
    }
    const std::vector<at::Tensor> outputs = recompute(*r, detached, /*with_grad=*/true);
    std::vector<at::Tensor> roots, grads;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].defined() && outputs[i].requires_grad() && grad_outputs[i].defined()) {
        roots.push_back(outputs[i]);
        grads.push_back(grad_outputs[i]);
      }
    }
    if (!roots.empty()) torch::autograd::backward(roots, grads);
    torch::autograd::variable_list result{at::Tensor()};  // for `r`
    for (const at::Tensor& x : detached) result.push_back(x.requires_grad() ? x.grad() : at::Tensor());
    return result;
  }
};

// checkpoint() with the forward's state already captured (`state`, taken before the region runs).
std::vector<at::Tensor> checkpoint_from(const RegionFn& region, const std::vector<at::Tensor>& inputs,
                                        ForwardState state) {
  // The Function sees only the defined inputs; the region gets the undefined ones back in place.
  std::vector<size_t> slots;
  std::vector<at::Tensor> present;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) continue;
    slots.push_back(i);
    present.push_back(inputs[i]);
  }
  auto all = [region, slots, n = inputs.size()](const std::vector<at::Tensor>& p) {
    std::vector<at::Tensor> all(n);
    for (size_t j = 0; j < slots.size(); ++j) all[slots[j]] = p[j];
    return region(all);
  };
  return CheckpointFunction::apply(make_recompute(all, std::move(state)), at::TensorList(present));
}

c10::DeviceType first_defined_device(const std::vector<at::Tensor>& inputs) {
  for (const at::Tensor& x : inputs) {
    if (x.defined()) return x.device().type();
  }
  return c10::DeviceType::CPU;
}

// Puts the recomputed result back into the released memory before the consumer's backward.
class RestoreBeforeBackward : public torch::autograd::FunctionPreHook {
 public:
  RestoreBeforeBackward(c10::intrusive_ptr<Recompute> r, std::vector<at::Tensor> inputs,
                        c10::intrusive_ptr<c10::StorageImpl> storage, size_t bytes)
      : r_(std::move(r)), inputs_(std::move(inputs)), storage_(std::move(storage)), bytes_(bytes) {}

  torch::autograd::variable_list operator()(const torch::autograd::variable_list& grads) override {
    if (!storage_) return grads;
    const at::Tensor again = recompute(*r_, inputs_, /*with_grad=*/false).at(0);
    TORCH_CHECK(again.is_contiguous() && again.storage_offset() == 0 && again.storage().nbytes() == bytes_,
                "activation checkpointing: the recomputed tensor does not fit the released memory");
    storage_->set_data_ptr_noswap(again.storage().unsafeGetStorageImpl()->set_data_ptr(at::DataPtr(nullptr, again.device())));
    storage_->set_nbytes(bytes_);
    storage_.reset();
    inputs_.clear();
    return grads;
  }

 private:
  c10::intrusive_ptr<Recompute> r_;
  std::vector<at::Tensor> inputs_;  // detached: the recompute needs values only
  c10::intrusive_ptr<c10::StorageImpl> storage_;
  size_t bytes_;
};

}  // namespace

std::vector<at::Tensor> checkpoint(const RegionFn& region, const std::vector<at::Tensor>& inputs) {
  if (!needs_checkpoint(inputs)) return region(inputs);
  return checkpoint_from(region, inputs, capture(first_defined_device(inputs)));
}

at::Tensor with_recomputed_input(const RegionFn& region, const std::vector<at::Tensor>& inputs,
                                 const std::function<at::Tensor(const at::Tensor&)>& consumer) {
  if (!needs_checkpoint(inputs)) return consumer(region(inputs).at(0));
  // One capture, before the region runs (its random numbers), for both recomputes.
  ForwardState state = capture(first_defined_device(inputs));
  c10::intrusive_ptr<Recompute> r = make_recompute(region, state);
  const at::Tensor value = checkpoint_from(region, inputs, std::move(state)).at(0);
  at::Tensor result = consumer(value);
  const size_t bytes = value.numel() * value.element_size();
  const bool releasable = value.requires_grad() && result.grad_fn() &&
                          value.is_contiguous() && value.storage_offset() == 0 &&
                          value.storage().nbytes() == bytes && !result.is_alias_of(value);
  if (!releasable) return result;
  std::vector<at::Tensor> detached;
  for (const at::Tensor& x : inputs) detached.push_back(x.defined() ? x.detach() : x);
  c10::intrusive_ptr<c10::StorageImpl> storage = c10::intrusive_ptr<c10::StorageImpl>::reclaim_copy(value.storage().unsafeGetStorageImpl());
  result.grad_fn()->add_pre_hook(std::make_unique<RestoreBeforeBackward>(std::move(r), std::move(detached), storage, bytes));
  // The backward nodes that saved `value` keep this storage; its memory goes until the hook.
  storage->set_data_ptr_noswap(at::DataPtr(nullptr, value.device()));
  storage->set_nbytes(0);
  return result;
}

}  // namespace sluice
