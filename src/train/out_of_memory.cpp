#include "train/out_of_memory.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <new>

namespace sluice {

bool is_out_of_memory(const std::exception& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return true;
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) return true;
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    // LibTorch rethrows allocation failures from inside its ops as plain c10::Errors.
    const std::string msg = c10_error->what_without_backtrace();
    for (const char* words : {"can't allocate memory", "not enough memory", "out of memory", "std::bad_alloc"})
      if (msg.find(words) != std::string::npos) return true;
  }
  return false;
}

std::string out_of_memory_message(const Config& cfg, const std::string& phase, int64_t step, const std::string& what,
                                  const std::string& estimate, const std::optional<std::string>& last_checkpoint,
                                  const std::string& run_dir) {
  const ModelConfig& m = cfg.model;
  std::string msg = fmt::format(
      "out of memory in the {} {} ({}). Memory is driven by train.micro_batch ({}), data.seq_len ({}), "
      "train.activation_checkpointing ({}), train.loss_chunk_tokens ({}), parallel.zero ({}), train.precision ({}) "
      "and the model's size (model.d_model {}, model.n_layers {}, model.vocab_size {}{})",
      phase, step > 0 ? fmt::format("of step {}", step) : std::string("before the first step"), what, cfg.train.micro_batch, cfg.data.seq_len, cfg.train.activation_checkpointing,
      cfg.train.loss_chunk_tokens, cfg.parallel.zero, cfg.train.precision, m.d_model, m.n_layers, m.vocab_size,
      m.is_moe() ? fmt::format(", model.moe.n_experts {}", m.moe.n_experts) : std::string());
  if (!estimate.empty()) msg += "; the pre-flight estimate was " + estimate;
  if (last_checkpoint) {
    msg += fmt::format(". The last checkpoint, {}, is intact: change the config and resume with `sluice train CONFIG "
                       "--run-dir {}`",
                       *last_checkpoint, run_dir);
  } else {
    msg += ". No checkpoint was written before it (checkpoint.every)";
  }
  return msg;
}

void apply_test_address_space_headroom() {
  const char* env = std::getenv("SLUICE_TEST_ADDRESS_SPACE_HEADROOM_MB");
  if (env == nullptr) return;
  std::ifstream statm("/proc/self/statm");
  long long pages = 0;
  if (!(statm >> pages)) return;
  const auto bytes = static_cast<rlim_t>(pages) * static_cast<rlim_t>(sysconf(_SC_PAGESIZE)) +
                     (static_cast<rlim_t>(std::atoll(env)) << 20);
  const rlimit limit{bytes, bytes};
  setrlimit(RLIMIT_AS, &limit);
}

}  // namespace sluice
