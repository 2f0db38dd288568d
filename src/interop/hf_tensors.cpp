#include "interop/hf_tensors.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <regex>
#include <vector>

#include "sluice/errors.h"

namespace sluice {

std::map<std::string, at::Tensor> to_hf_tensors(const std::map<std::string, at::Tensor>& sluice) {
  static const std::regex stacked(R"((.*\.mlp\.experts)\.(gate_proj|up_proj|down_proj))");
  std::map<std::string, at::Tensor> out;
  std::smatch m;
  for (const auto& [name, t] : sluice) {
    if (!std::regex_match(name, m, stacked)) {
      out.emplace(name, t);
      continue;
    }
    for (int64_t e = 0; e < t.size(0); ++e) out.emplace(fmt::format("{}.{}.{}.weight", m[1].str(), e, m[2].str()), t[e].contiguous());
  }
  return out;
}

std::map<std::string, at::Tensor> from_hf_tensors(const std::map<std::string, at::Tensor>& hf, const std::string& file) {
  static const std::regex per_expert(R"((.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight)");
  static const std::regex fused(R"((.*\.mlp\.experts)\.gate_up_proj)");
  std::map<std::string, at::Tensor> out;
  std::map<std::string, std::map<int64_t, at::Tensor>> experts;  // "model.layers.1.mlp.experts.gate_proj" -> e -> [F, D]
  std::smatch m;
  for (const auto& [name, t] : hf) {
    if (std::regex_match(name, m, per_expert)) {
      const std::string& digits = m[2].str();
      if (digits.size() > 6) throw InputError(fmt::format("{}: tensor {}: expert index out of range", file, name));
      experts[m[1].str() + "." + m[3].str()][std::stoll(digits)] = t;
    } else if (std::regex_match(name, m, fused)) {
      if (t.dim() != 3 || t.size(1) % 2 != 0)
        throw InputError(fmt::format("{}: tensor {} has shape {}; expected [experts, 2 x width, hidden]", file, name,
                                     c10::str(t.sizes())));
      const int64_t f = t.size(1) / 2;
      out.emplace(m[1].str() + ".gate_proj", t.narrow(1, 0, f).contiguous());
      out.emplace(m[1].str() + ".up_proj", t.narrow(1, f, f).contiguous());
    } else {
      out.emplace(name, t);
    }
  }
  for (const auto& [stacked, by_index] : experts) {
    std::vector<at::Tensor> parts;
    for (const auto& [e, t] : by_index) {
      const auto missing = static_cast<int64_t>(parts.size());
      if (e != missing) {
        const std::string dot = stacked.substr(stacked.rfind('.'));
        throw InputError(fmt::format("{}: tensor {}.{}{}.weight is missing (experts must be numbered 0..E-1)", file,
                                     stacked.substr(0, stacked.rfind('.')), missing, dot));
      }
      if (!parts.empty() && t.sizes() != parts.front().sizes())
        throw InputError(fmt::format("{}: expert {} of {} has shape {}, expert 0 {}", file, e, stacked, c10::str(t.sizes()),
                                     c10::str(parts.front().sizes())));
      parts.push_back(t);
    }
    if (out.count(stacked)) throw InputError(fmt::format("{}: {} is given both per expert and fused", file, stacked));
    out.emplace(stacked, at::stack(parts));
  }
  return out;
}

}  // namespace sluice
