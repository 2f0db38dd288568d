#include "model/gate.h"
#include "sluice/model.h"

namespace sluice {

ModelStats model_stats(const ModelConfig& cfg, int64_t seq_len) {
  const int64_t d = cfg.d_model, hd = cfg.resolved_head_dim(), H = cfg.n_heads, KV = cfg.n_kv_heads;
  const GateConfig& g = cfg.attention.gate;
  const int64_t gate_out = gate_projection_outputs(cfg);
  const int64_t gate_matmul = g.input == "hidden" ? gate_out * d : 0;  // g_proj.weight (CoCA's W_T is k_proj)
  const int64_t gate_bias = (g.input == "hidden" && g.bias) || g.input == "constant" ? gate_out : 0;
  const int64_t attn = d * H * hd * 2 + d * KV * hd * 2 + gate_matmul;  // q, o + k, v + g
  const int64_t dense_mlp = 3 * d * cfg.resolved_ffn_hidden();
  // RMSNorm weights, gate biases: parameters outside any matrix multiply
  const int64_t norms = 2 * d + (cfg.qk_norm ? 2 * hd : 0) + (cfg.attention.output_norm ? H * hd : 0) + gate_bias;
  const int64_t embed = cfg.vocab_size * d;

  // MoE feed-forward: router + E experts + shared experts (+ their gate); per token only
  // top_k of the E experts run.
  const MoEConfig& m = cfg.moe;
  const int64_t expert = 3 * d * cfg.resolved_expert_hidden();
  const int64_t moe_always = m.n_experts * d + 3 * d * cfg.resolved_shared_hidden() + (m.shared_expert_gate ? d : 0);
  const int64_t moe_total = moe_always + m.n_experts * expert;
  const int64_t moe_active = moe_always + m.top_k * expert;

  ModelStats s;
  s.params_embedding = embed * (cfg.tie_embeddings ? 1 : 2);
  s.params_total = d + s.params_embedding;
  s.params_active = s.params_total;
  s.params_matmul = embed;  // the output head multiplies by V·d
  for (int64_t i = 0; i < cfg.n_layers; ++i) {
    const bool moe = cfg.is_moe_layer(i);
    s.params_total += attn + norms + (moe ? moe_total : dense_mlp);
    s.params_active += attn + norms + (moe ? moe_active : dense_mlp);
    s.params_matmul += attn + (moe ? moe_active : dense_mlp);
  }
  s.train_flops_per_token = 6.0 * static_cast<double>(s.params_matmul) +
                            12.0 * static_cast<double>(cfg.n_layers * H * hd * seq_len);
  return s;
}

}  // namespace sluice
