"""SluiceForCausalLM: Sluice's decoder in plain PyTorch, for the variants that no stock
transformers class computes (docs/interop.md). Loaded with trust_remote_code=True from a
`sluice export hf` directory; tensor names are Sluice's checkpoint names (which are Llama's
where the two have the same parts). Generation uses transformers' DynamicCache.

One class per concept: RMSNorm, Rotary (RoPE and its scalings), SwiGLU, Attention, DecoderLayer,
SluiceModel, SluiceForCausalLM. The Sluice config keys are read from config.sluice (the
checkpoint's `model:` section; docs/config.md).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_sluice import SluiceConfig


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Rotary(nn.Module):
    """RoPE on the two halves of each head (rotate-half); scalings as src/model/rope.cpp. The
    frequencies are computed in fp64 when used (transformers builds modules on the meta device,
    so nothing is kept as a tensor here)."""

    def __init__(self, head_dim, rope):
        super().__init__()
        self.head_dim = head_dim
        self.base = rope.get("base", 10000.0)
        self.scaling = rope.get("scaling", "none")
        self.factor = rope.get("factor", 1.0)
        self.original = rope.get("original_max_len", 0)
        if self.scaling not in ("none", "linear", "ntk", "dynamic_ntk", "yarn"):
            raise ValueError(f"model.rope.scaling: unknown value {self.scaling!r}")
        s = self.factor
        self.attention_factor = 0.1 * math.log(s) + 1.0 if self.scaling == "yarn" and s > 1.0 else 1.0

    def _base_inv_freq(self, base):
        j = torch.arange(0, self.head_dim // 2, dtype=torch.float64, device="cpu")
        return base ** (-2.0 * j / self.head_dim)

    def _yarn_inv_freq(self):
        d, base, s, l0 = self.head_dim, self.base, self.factor, self.original

        def correction_dim(rotations):
            return d * math.log(l0 / (rotations * 2.0 * math.pi)) / (2.0 * math.log(base))

        low = max(math.floor(correction_dim(32.0)), 0.0)
        high = min(math.ceil(correction_dim(1.0)), d - 1.0)
        if low == high:
            high += 0.001
        j = torch.arange(0, d // 2, dtype=torch.float64, device="cpu")
        ramp = ((j - low) / (high - low)).clamp(0.0, 1.0)
        extrapolated = self._base_inv_freq(base)
        return extrapolated / s * ramp + extrapolated * (1.0 - ramp)

    def inv_freq_for(self, total_length):
        d, s = self.head_dim, self.factor
        if self.scaling == "linear":
            return self._base_inv_freq(self.base) / s
        if self.scaling == "ntk":
            return self._base_inv_freq(self.base * s ** (d / (d - 2)))
        if self.scaling == "yarn":
            return self._yarn_inv_freq()
        if self.scaling == "dynamic_ntk" and total_length > self.original:
            ratio = s * total_length / self.original - (s - 1.0)
            return self._base_inv_freq(self.base * ratio ** (d / (d - 2)))
        return self._base_inv_freq(self.base)

    def tables(self, start, length, device):
        """cos, sin [length, head_dim / 2] of positions start .. start + length - 1 (fp64 angles)."""
        pos = torch.arange(start, start + length, dtype=torch.float64, device="cpu")
        angles = torch.outer(pos, self.inv_freq_for(start + length))
        cos, sin = angles.cos() * self.attention_factor, angles.sin() * self.attention_factor
        return cos.float().to(device), sin.float().to(device)

    @staticmethod
    def apply(x, cos, sin):
        """x [B, T, H, D]; cos, sin [T, D/2]."""
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half].float(), x[..., half:].float()
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, d_model, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    def __init__(self, m, layer):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = m["n_heads"], m["n_kv_heads"], m["head_dim"]
        d = m["d_model"]
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)
        att = m.get("attention", {})
        pattern = att.get("window_pattern", [])
        self.window = pattern[layer % len(pattern)] if pattern else att.get("window", 0)  # 0: full causal
        if m.get("qk_norm", False):
            self.q_norm = RMSNorm(self.head_dim, m["norm_eps"])
            self.k_norm = RMSNorm(self.head_dim, m["norm_eps"])
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, rotary, cache):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        past = cache.get_seq_length(self.layer) if cache is not None else 0
        cos, sin = rotary.tables(past, T, x.device)
        q, k = Rotary.apply(q, cos, sin), Rotary.apply(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, D]
        if cache is not None:
            k, v = cache.update(k, v, self.layer)
        S = k.shape[2]
        rep = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        # queries are the last T of the S positions
        qpos = torch.arange(S - T, S, device=x.device)[:, None]
        kpos = torch.arange(S, device=x.device)[None, :]
        allowed = kpos <= qpos
        if self.window > 0:  # the last `window` positions, the query's own included
            allowed = allowed & (kpos > qpos - self.window)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=1.0 / math.sqrt(self.head_dim))
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class DecoderLayer(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, m, layer):
        super().__init__()
        self.input_layernorm = RMSNorm(m["d_model"], m["norm_eps"])
        self.self_attn = Attention(m, layer)
        self.post_attention_layernorm = RMSNorm(m["d_model"], m["norm_eps"])
        self.mlp = SwiGLU(m["d_model"], m["ffn_hidden"])

    def forward(self, x, rotary, cache):
        x = x + self.self_attn(self.input_layernorm(x), rotary, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class SluicePreTrainedModel(PreTrainedModel):
    config_class = SluiceConfig
    base_model_prefix = "model"
    _no_split_modules = ["DecoderLayer"]


class SluiceModel(SluicePreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        m = config.sluice
        self.embed_tokens = nn.Embedding(m["vocab_size"], m["d_model"])
        self.layers = nn.ModuleList([DecoderLayer(m, i) for i in range(m["n_layers"])])
        self.norm = RMSNorm(m["d_model"], m["norm_eps"])
        self.rotary = Rotary(m["head_dim"], m.get("rope", {}))
        self.post_init()

    def forward(self, input_ids, cache=None):
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, self.rotary, cache)
        return self.norm(x)


class SluiceForCausalLM(SluicePreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.model = SluiceModel(config)
        self.lm_head = nn.Linear(config.sluice["d_model"], config.sluice["vocab_size"], bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, past_key_values=None,
                use_cache=None, labels=None, logits_to_keep=0, **kwargs):
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        h = self.model(input_ids, cache if use_cache else None)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1))
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)
