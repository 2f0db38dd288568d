#include "model/qk_positions.h"

#include <stdexcept>

#include "model/coca.h"
#include "model/fused_ops.h"

namespace sluice {

namespace {

class Unchanged final : public QKPositions {
 public:
  std::pair<at::Tensor, at::Tensor> apply(const at::Tensor& q, const at::Tensor& k,
                                          const RotaryTables&) const override {
    return {q, k};
  }
};

class RotaryQK final : public QKPositions {
 public:
  std::pair<at::Tensor, at::Tensor> apply(const at::Tensor& q, const at::Tensor& k,
                                          const RotaryTables& t) const override {
    return {apply_rope(q, t), apply_rope(k, t)};
  }
};

class CocaQK final : public QKPositions {
 public:
  explicit CocaQK(CocaMode mode) : mode_(mode) {}
  std::pair<at::Tensor, at::Tensor> apply(const at::Tensor& q, const at::Tensor& k,
                                          const RotaryTables& t) const override {
    return {coca_query(q, t, mode_), coca_key(k, t, mode_)};
  }

 private:
  CocaMode mode_;
};

}  // namespace

std::unique_ptr<QKPositions> make_qk_positions(const ModelConfig& cfg) {
  const std::string& coca = cfg.attention.coca.mode;
  if (coca == "strict") return std::make_unique<CocaQK>(CocaMode::Strict);
  if (coca == "slack") return std::make_unique<CocaQK>(CocaMode::Slack);
  if (coca != "off") throw std::invalid_argument("unknown coca mode '" + coca + "'");
  if (cfg.position == "rope") return std::make_unique<RotaryQK>();
  if (cfg.position == "alibi" || cfg.position == "none") return std::make_unique<Unchanged>();
  throw std::invalid_argument("unknown position encoding '" + cfg.position + "'");
}

}  // namespace sluice
