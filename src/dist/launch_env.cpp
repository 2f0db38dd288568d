#include "dist/launch_env.h"

#include <cstdlib>
#include <fmt/format.h>

#include "sluice/errors.h"

namespace sluice::dist {

namespace {

int64_t parse_int(const Getenv& getenv, const char* name, int64_t lo, int64_t hi) {
  const char* v = getenv(name);
  const std::string text = v ? v : "";
  size_t used = 0;
  int64_t out = 0;
  try {
    out = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || out < lo || out > hi) {
    throw InputError(fmt::format("environment variable {}: expected an integer in [{}, {}], got '{}'", name, lo, hi, text));
  }
  return out;
}

bool has(const Getenv& getenv, const char* name) {
  const char* v = getenv(name);
  return v != nullptr && *v != '\0';
}

// "01-04,07" -> {"01", "02", "03", "04", "07"}, zero padding kept as wide as the range's start.
std::vector<std::string> expand_ranges(const std::string& body, const std::string& list) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= body.size()) {
    const size_t comma = body.find(',', pos);
    const std::string item = body.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    const size_t dash = item.find('-');
    const std::string a = item.substr(0, dash), b = dash == std::string::npos ? a : item.substr(dash + 1);
    const auto digits = [](const std::string& s) {
      return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
    };
    if (!digits(a) || !digits(b) || std::stoull(b) < std::stoull(a) || std::stoull(b) - std::stoull(a) > 100000) {
      throw InputError("SLURM_JOB_NODELIST: cannot read range '" + item + "' in '" + list + "'");
    }
    for (unsigned long long i = std::stoull(a); i <= std::stoull(b); ++i) {
      std::string n = std::to_string(i);
      if (n.size() < a.size()) n.insert(0, a.size() - n.size(), '0');
      out.push_back(n);
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

// One host expression without top-level commas: "rack[1-2]-n[01-02]" (brackets multiply).
std::vector<std::string> expand_host(const std::string& expr, const std::string& list) {
  const size_t open = expr.find('[');
  if (open == std::string::npos) {
    if (expr.find(']') != std::string::npos) throw InputError("SLURM_JOB_NODELIST: unmatched ']' in '" + list + "'");
    return {expr};
  }
  const size_t close = expr.find(']', open);
  if (close == std::string::npos) throw InputError("SLURM_JOB_NODELIST: unmatched '[' in '" + list + "'");
  const std::string prefix = expr.substr(0, open);
  std::vector<std::string> out;
  for (const std::string& mid : expand_ranges(expr.substr(open + 1, close - open - 1), list))
    for (const std::string& rest : expand_host(expr.substr(close + 1), list)) out.push_back(prefix + mid + rest);
  return out;
}

}  // namespace

std::vector<std::string> expand_slurm_nodelist(const std::string& list) {
  std::vector<std::string> out;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= list.size(); ++i) {
    if (i < list.size() && list[i] == '[') ++depth;
    if (i < list.size() && list[i] == ']') --depth;
    if (depth < 0) throw InputError("SLURM_JOB_NODELIST: unmatched ']' in '" + list + "'");
    if (i == list.size() || (list[i] == ',' && depth == 0)) {
      const std::string expr = list.substr(start, i - start);
      if (expr.empty()) throw InputError("SLURM_JOB_NODELIST: empty host name in '" + list + "'");
      for (auto& h : expand_host(expr, list)) out.push_back(std::move(h));
      start = i + 1;
    }
  }
  if (depth != 0) throw InputError("SLURM_JOB_NODELIST: unmatched '[' in '" + list + "'");
  return out;
}

int64_t slurm_tasks_on_node(const std::string& tasks_per_node, int64_t node) {
  int64_t seen = 0;
  size_t pos = 0;
  while (pos < tasks_per_node.size()) {
    const size_t comma = tasks_per_node.find(',', pos);
    const std::string item = tasks_per_node.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    int64_t tasks = 0, repeat = 1;
    if (std::sscanf(item.c_str(), "%ld(x%ld)", &tasks, &repeat) < 1 || tasks < 0 || repeat < 1) {
      throw InputError("SLURM_TASKS_PER_NODE: cannot read '" + tasks_per_node + "' (expected e.g. 2(x3),1)");
    }
    if (node < seen + repeat) return tasks;
    seen += repeat;
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return 0;
}

LaunchEnv read_launch_env(const Getenv& getenv) {
  LaunchEnv e;
  const bool torchrun = has(getenv, "RANK") || has(getenv, "WORLD_SIZE");
  const bool slurm = has(getenv, "SLURM_PROCID") && has(getenv, "SLURM_NTASKS");
  if (torchrun) {
    for (const char* v : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"})
      if (!has(getenv, v))
        throw InputError(std::string("environment variable ") + v +
                         " is not set, but RANK/WORLD_SIZE are: a launcher (torchrun, sluice launch) sets all of "
                         "RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT");
    e.launcher = "torchrun";
    e.world_size = parse_int(getenv, "WORLD_SIZE", 1, 1 << 20);
    e.rank = parse_int(getenv, "RANK", 0, e.world_size - 1);
    e.local_world_size = has(getenv, "LOCAL_WORLD_SIZE") ? parse_int(getenv, "LOCAL_WORLD_SIZE", 1, e.world_size) : 1;
    e.local_rank = has(getenv, "LOCAL_RANK") ? parse_int(getenv, "LOCAL_RANK", 0, e.local_world_size - 1) : 0;
    e.master_addr = getenv("MASTER_ADDR");
    e.master_port = static_cast<int>(parse_int(getenv, "MASTER_PORT", 1, 65535));
    const char* agent = getenv("TORCHELASTIC_USE_AGENT_STORE");
    e.agent_store = agent != nullptr && std::string(agent) == "True";
    return e;
  }
  if (!slurm) return e;
  e.launcher = "slurm";
  e.world_size = parse_int(getenv, "SLURM_NTASKS", 1, 1 << 20);
  e.rank = parse_int(getenv, "SLURM_PROCID", 0, e.world_size - 1);
  const int64_t node = has(getenv, "SLURM_NODEID") ? parse_int(getenv, "SLURM_NODEID", 0, 1 << 20) : 0;
  int64_t on_node = 0;
  if (has(getenv, "SLURM_TASKS_PER_NODE")) on_node = slurm_tasks_on_node(getenv("SLURM_TASKS_PER_NODE"), node);
  if (on_node == 0 && has(getenv, "SLURM_NTASKS_PER_NODE"))
    on_node = parse_int(getenv, "SLURM_NTASKS_PER_NODE", 1, e.world_size);
  e.local_world_size = on_node > 0 ? on_node : 1;
  e.local_rank = has(getenv, "SLURM_LOCALID") ? parse_int(getenv, "SLURM_LOCALID", 0, e.local_world_size - 1) : 0;
  if (has(getenv, "MASTER_ADDR")) {
    e.master_addr = getenv("MASTER_ADDR");
  } else {
    const char* list = has(getenv, "SLURM_JOB_NODELIST") ? getenv("SLURM_JOB_NODELIST") : getenv("SLURM_NODELIST");
    if (list == nullptr || *list == '\0') {
      throw InputError("environment variable SLURM_JOB_NODELIST is not set (nor MASTER_ADDR): the first host of the "
                       "job hosts the rendezvous");
    }
    e.master_addr = expand_slurm_nodelist(list).front();
  }
  if (has(getenv, "MASTER_PORT")) {
    e.master_port = static_cast<int>(parse_int(getenv, "MASTER_PORT", 1, 65535));
  } else if (has(getenv, "SLURM_JOB_ID")) {
    // One port per job, so that two jobs sharing a node do not meet at the same rendezvous.
    e.master_port = static_cast<int>(20000 + parse_int(getenv, "SLURM_JOB_ID", 0, INT64_MAX) % 20000);
  }
  return e;
}

LaunchEnv read_launch_env() {
  return read_launch_env([](const char* name) { return std::getenv(name); });
}

std::string LaunchEnv::describe() const {
  if (!launched()) return "a single process";
  return fmt::format("rank {} of {} (local {} of {}), rendezvous at {}:{}, from {}", rank, world_size, local_rank,
                     local_world_size, master_addr, master_port,
                     launcher == "torchrun" ? "RANK/WORLD_SIZE (torchrun, sluice launch)" : "Slurm's variables");
}

}  // namespace sluice::dist
