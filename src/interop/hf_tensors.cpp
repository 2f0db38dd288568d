#include "interop/hf_tensors.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <regex>
#include <vector>

#include "sluice/errors.h"

namespace sluice {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_norm_weight(const std::string& name) {
  static const std::regex norm(R"((.*(layernorm|_norm)|model\.norm)\.weight)");
  return std::regex_match(name, norm);
}

// Qwen3-Next's q_proj: per head [q rows; gate rows] -> [H * 2D, d]
at::Tensor interleave_query_and_gate(const at::Tensor& q, const at::Tensor& g, const GateLayout& l) {
  const int64_t d = q.size(1);
  const at::Tensor qh = q.view({l.n_heads, l.head_dim, d});
  const at::Tensor gh = l.headwise ? g.view({l.n_heads, 1, d}).expand({l.n_heads, l.head_dim, d}) : g.view({l.n_heads, l.head_dim, d});
  return at::cat({qh, gh}, 1).reshape({2 * l.n_heads * l.head_dim, d}).contiguous();
}

}  // namespace

std::map<std::string, at::Tensor> to_hf_tensors(const std::map<std::string, at::Tensor>& sluice,
                                                const std::string& architecture, const GateLayout& gate) {
  static const std::regex stacked(R"((.*\.mlp\.experts)\.(gate_proj|up_proj|down_proj))");
  static const std::regex query(R"((.*\.self_attn)\.q_proj\.weight)");
  const bool next = architecture == "Qwen3NextForCausalLM";
  std::map<std::string, at::Tensor> out;
  std::smatch m;
  for (const auto& [name, t] : sluice) {
    if (next && is_norm_weight(name)) {
      out.emplace(name, (t - 1.0).contiguous());  // x̂·(1 + w)
      continue;
    }
    if (next && std::regex_match(name, m, query)) {
      out.emplace(name, interleave_query_and_gate(t, sluice.at(m[1].str() + ".g_proj.weight"), gate));
      continue;
    }
    if (next && ends_with(name, ".self_attn.g_proj.weight")) continue;  // inside q_proj
    if (!std::regex_match(name, m, stacked)) {
      out.emplace(name, t);
      continue;
    }
    for (int64_t e = 0; e < t.size(0); ++e) out.emplace(fmt::format("{}.{}.{}.weight", m[1].str(), e, m[2].str()), t[e].contiguous());
  }
  return out;
}

std::map<std::string, at::Tensor> from_hf_tensors(const std::map<std::string, at::Tensor>& hf, const std::string& file,
                                                  const std::string& architecture, const GateLayout& gate) {
  static const std::regex per_expert(R"((.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight)");
  static const std::regex fused(R"((.*\.mlp\.experts)\.gate_up_proj)");
  if (architecture == "Qwen3NextForCausalLM") {
    // q_proj [H * 2D, d] -> q_proj and g_proj [H * D, d] (an elementwise G1 gate); norms w + 1
    static const std::regex query(R"((.*\.self_attn)\.q_proj\.weight)");
    std::map<std::string, at::Tensor> plain;
    std::smatch q;
    for (const auto& [name, t] : hf) {
      if (is_norm_weight(name)) {
        plain.emplace(name, (t.to(at::kFloat) + 1.0).contiguous());
      } else if (std::regex_match(name, q, query)) {
        const int64_t rows = 2 * gate.n_heads * gate.head_dim;
        if (t.dim() != 2 || t.size(0) != rows)
          throw InputError(fmt::format("{}: tensor {} has shape {}; Qwen3-Next's q_proj holds query and gate: [{}, hidden]",
                                       file, name, c10::str(t.sizes()), rows));
        const at::Tensor h = t.view({gate.n_heads, 2 * gate.head_dim, t.size(1)});
        plain.emplace(name, h.narrow(1, 0, gate.head_dim).reshape({rows / 2, t.size(1)}).contiguous());
        plain.emplace(q[1].str() + ".g_proj.weight",
                      h.narrow(1, gate.head_dim, gate.head_dim).reshape({rows / 2, t.size(1)}).contiguous());
      } else {
        plain.emplace(name, t);
      }
    }
    return from_hf_tensors(plain, file);
  }
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
