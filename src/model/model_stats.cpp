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
  const int64_t mlp = 3 * d * cfg.resolved_ffn_hidden();
  const int64_t norms = 2 * d + (cfg.qk_norm ? 2 * hd : 0) + (cfg.attention.output_norm ? H * hd : 0);
  const int64_t per_layer = attn + mlp + norms + gate_bias;
  const int64_t embed = cfg.vocab_size * d;

  ModelStats s;
  s.params_embedding = embed * (cfg.tie_embeddings ? 1 : 2);
  s.params_total = cfg.n_layers * per_layer + d + s.params_embedding;
  s.params_matmul = cfg.n_layers * (attn + mlp) + embed;  // the output head multiplies by V·d
  s.train_flops_per_token = 6.0 * static_cast<double>(s.params_matmul) +
                            12.0 * static_cast<double>(cfg.n_layers * H * hd * seq_len);
  return s;
}

}  // namespace sluice
