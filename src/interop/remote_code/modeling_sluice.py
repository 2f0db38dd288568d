"""SluiceForCausalLM: Sluice's decoder in plain PyTorch, for the variants that no stock
transformers class computes (docs/interop.md). Loaded with trust_remote_code=True from a
`sluice export hf` directory; tensor names are Sluice's checkpoint names (which are Llama's
where the two have the same parts). Generation uses transformers' DynamicCache.

One class per concept, each following its C++ counterpart in src/model/ (formulas in
docs/attention.md): RMSNorm, HeadRMSNorm (model.attention.output_norm), Rotary (RoPE and its
scalings), Coca, Alibi, Gate (gated attention G1-G5), SwiGLU, Attention, DecoderLayer,
SluiceModel, SluiceForCausalLM. The Sluice config keys are read from config.sluice (the
checkpoint's `model:` section; docs/config.md). Keys of that section that do not change what
is computed: attention.backend (math, sdpa and fused compute the same attention; on the CPU and
in fp32 fused runs sdpa), fused_projections and gate.fuse_q_proj (one GEMM over concatenated
weights that stay separate tensors: the same products), init_std. MoE (arch: moe) is refused by
the exporter.

transformers builds the modules on the meta device before loading the weights, so nothing here
keeps a tensor that is not a loaded parameter: tables, slopes and masks are made in forward.
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


class HeadRMSNorm(nn.Module):
    """model.attention.output_norm (the paper's "SDPA GroupNorm"): each head's SDPA output
    RMS-normalised over its head_dim values, then a per-channel weight [n_heads * head_dim]
    (self_attn.o_norm.weight). Normalise first, weight after, as self_attention.cpp does."""

    def __init__(self, n_heads, head_dim, eps):
        super().__init__()
        self.n_heads, self.head_dim, self.eps = n_heads, head_dim, eps
        self.weight = nn.Parameter(torch.ones(n_heads * head_dim))

    def forward(self, y):
        """y [B, T, H, D]."""
        return F.rms_norm(y, (self.head_dim,), None, self.eps) * self.weight.view(self.n_heads, self.head_dim)


class Rotary:
    """RoPE on the two halves of each head (rotate-half); scalings as src/model/rope.cpp. The
    frequencies are computed in fp64 when used (transformers builds modules on the meta device,
    so nothing is kept as a tensor here)."""

    def __init__(self, head_dim, rope):
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
        """cos, sin [length, head_dim / 2] of positions start .. start + length - 1 (fp64 angles).
        Dynamic NTK takes its base from start + length, the total length of this call only, as
        Sluice does: with a KV cache the cached keys keep the rotation of the call that made
        them, so cached decoding past original_max_len differs from a full forward, in Sluice
        and here alike (docs/attention.md, KV cache)."""
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


class Coca:
    """Collinear Constrained Attention (Zhu et al. 2023; src/model/coca.cpp). k_proj is the
    magnitude projection W_T: t = ReLU(mean of each rotary pair of W_T x), one value >= 0 per
    pair. The scores are ordinary attention on Q_eff . K_eff:
      strict: Q_eff = |q_j|^2 (cos m theta_j, sin m theta_j), K_eff = t_j (cos n theta_j, sin n theta_j)
      slack:  Q_eff = q * RoPE(q, m),                         K_eff = RoPE([t, t], n)
    The KV cache stores K_eff (as Sluice's and the official code's caches do), built with the
    rotary tables of the call that processed the token."""

    def __init__(self, mode):
        if mode not in ("strict", "slack"):
            raise ValueError(f"model.attention.coca.mode: unknown value {mode!r}")
        self.strict = mode == "strict"

    @staticmethod
    def _rotate_magnitude(a, cos, sin):
        # RoPE of [a, 0] is [a cos, a sin]: the direction of each pair scaled by a
        return Rotary.apply(torch.cat([a, torch.zeros_like(a)], dim=-1), cos, sin)

    def query(self, q, cos, sin):
        if self.strict:
            half = q.shape[-1] // 2
            q1, q2 = q[..., :half], q[..., half:]
            return self._rotate_magnitude(q1 * q1 + q2 * q2, cos, sin)
        return q * Rotary.apply(q, cos, sin)

    def key(self, t_raw, cos, sin):
        half = t_raw.shape[-1] // 2
        t = F.relu((t_raw[..., :half] + t_raw[..., half:]) * 0.5)
        if self.strict:
            return self._rotate_magnitude(t, cos, sin)
        return Rotary.apply(torch.cat([t, t], dim=-1), cos, sin)


class Alibi:
    """ALiBi (Press et al. 2022; src/model/alibi.cpp, attention_core.cpp): query head h adds
    -m_h (i - j) to its score of key j; no rotation."""

    @staticmethod
    def slopes(n):
        """m_h = 2^(-8h/n), h = 1..n, for n a power of two; otherwise the slopes of the largest
        power of two p < n, then every other slope of 2p (the paper's code)."""
        p = 1
        while p * 2 <= n:
            p *= 2
        s = [2.0 ** (-8.0 * h / p) for h in range(1, p + 1)]
        if p < n:
            s += Alibi.slopes(2 * p)[0::2][: n - p]
        return s

    @staticmethod
    def bias(slopes, T, S, allowed):
        """fp32 [H, T, S]: -m_h (i - j) for queries i = S - T .. S - 1, -inf where not allowed."""
        device = allowed.device
        distance = (torch.arange(S - T, S, dtype=torch.float32, device=device)[:, None]
                    - torch.arange(0, S, dtype=torch.float32, device=device)[None, :])
        m = torch.tensor(slopes, dtype=torch.float64).float().to(device)
        return (-m.view(-1, 1, 1) * distance).masked_fill(~allowed, float("-inf"))


class Gate(nn.Module):
    """Gated attention (Qiu et al. 2025; src/model/gate.cpp), registered as self_attn.g_proj:
    Y' = Y * act(logits) (multiplicative) or Y + act(logits) (additive), with logits
    X W_g^T [+ b] (input hidden: g_proj.weight [n_out, d_model], g_proj.bias [n_out] with bias),
    the learnt vector g_proj.bias (input constant: the same for every token) or Y itself (input
    self, no parameters). The attention calls it at each insertion point; the gate acts
    only at its own and returns its input unchanged elsewhere (GateImpl::apply)."""

    ACTIVATIONS = {
        "sigmoid": torch.sigmoid,
        "silu": F.silu,
        "ns_sigmoid": lambda z: 0.5 + 0.5 * torch.sigmoid(z),  # scores in [0.5, 1]: the non-sparse control
        "identity": lambda z: z,
    }

    def __init__(self, m):
        super().__init__()
        g = m.get("attention", {}).get("gate", {})
        self.site = g.get("position", "none")
        granularity = g.get("granularity", "elementwise")
        self.head_shared = g.get("sharing", "head_specific") == "head_shared"
        self.additive = g.get("form", "multiplicative") == "additive"
        self.input = g.get("input", "hidden")
        activation = g.get("activation", "sigmoid")
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"model.attention.gate.activation: unknown value {activation!r}")
        self.activate = self.ACTIVATIONS[activation]
        # G2/G3 gate the KV heads, G1/G4 the query heads; G5 the o_proj output, which has no heads
        self.groups = m["n_kv_heads"] if self.site in ("G2", "G3") else m["n_heads"]
        self.width = 1 if granularity == "headwise" else m["head_dim"]
        n_out = m["d_model"] if self.site == "G5" else self.groups * self.width
        self.weight = self.bias = None
        if self.site == "none" or self.input == "self":
            return
        if self.input == "hidden":
            self.weight = nn.Parameter(torch.empty(n_out, m["d_model"]))
            if g.get("bias", False):
                self.bias = nn.Parameter(torch.zeros(n_out))
        elif self.input == "constant":
            self.bias = nn.Parameter(torch.zeros(n_out))
        else:
            raise ValueError(f"model.attention.gate.input: unknown value {self.input!r}")

    def scores(self, x):
        """act(logits) shaped to broadcast against the gated tensor: [..., groups, width] at
        G1-G4 (row h * width + j of g_proj scores element j of head h), [..., d_model] at G5."""
        logits = self.bias if self.weight is None else F.linear(x, self.weight, self.bias)
        s = self.activate(logits)
        if self.site == "G5":
            return s
        s = s.reshape(*logits.shape[:-1], self.groups, self.width)
        if self.head_shared:  # the mean of the activated scores over the heads, not of the logits
            s = s.mean(dim=-2, keepdim=True)
        return s

    def forward(self, site, y, x):
        """y gated when `site` is this gate's position (y [B, T, heads, D] at G1-G4, [B, T,
        d_model] at G5; x the block's normalised input [B, T, d_model]), else y itself."""
        if site != self.site:
            return y
        s = self.activate(y) if self.input == "self" else self.scores(x)
        s = s.to(y.dtype)
        return y + s if self.additive else y * s


class SwiGLU(nn.Module):
    def __init__(self, d_model, hidden):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """src/model/self_attention.cpp, in its order: projections; G4/G3/G2 on q/k/v; QK-norm;
    positions (RoPE, CoCA, or none for ALiBi/NoPE); the KV cache; causal/window attention (with
    the ALiBi bias); output_norm; G1; o_proj; G5. With CoCA, k_proj is CoCA's W_T."""

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
        self.o_norm = HeadRMSNorm(self.n_heads, self.head_dim, m["norm_eps"]) if att.get("output_norm", False) else None
        self.g_proj = Gate(m)
        coca = att.get("coca", {}).get("mode", "off")
        self.coca = Coca(coca) if coca != "off" else None  # needs position rope (the config check)

    def positions(self, q, k, rope):
        if rope is None:  # ALiBi (a bias in the core) and NoPE leave q and k alone
            return q, k
        cos, sin = rope
        if self.coca is not None:
            return self.coca.query(q, cos, sin), self.coca.key(k, cos, sin)
        return Rotary.apply(q, cos, sin), Rotary.apply(k, cos, sin)

    def core(self, q, k, v, slopes):
        """softmax(q k^T / sqrt(D) + mask) v with q [B, H, T, D], k, v [B, KV, S, D]; the queries
        are the last T of the S positions. The same SDPA calls as Sluice's sdpa backend."""
        T, S = q.shape[2], k.shape[2]
        scale = 1.0 / math.sqrt(self.head_dim)
        gqa = self.n_heads != self.n_kv_heads  # query head h reads KV head h // (H / KV)
        if slopes is None and self.window == 0 and T == S:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
        qpos = torch.arange(S - T, S, device=q.device)[:, None]
        kpos = torch.arange(S, device=q.device)[None, :]
        allowed = kpos <= qpos
        if self.window > 0:  # the last `window` positions, the query's own included
            allowed = allowed & (qpos - kpos < self.window)
        if slopes is not None:
            mask = Alibi.bias(slopes, T, S, allowed).to(q.dtype).unsqueeze(0)
        else:
            mask = allowed
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)

    def forward(self, x, rope, slopes, cache):
        B, T, _ = x.shape
        gate = self.g_proj
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim)
        # G2-G4 right after the projections, before QK-norm and the positions
        q, k, v = gate("G4", q, x), gate("G3", k, x), gate("G2", v, x)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.positions(q, k, rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, D]
        if cache is not None:  # keys as the core consumes them: gated, normalised, rotated (CoCA's K_eff)
            k, v = cache.update(k, v, self.layer)
        y = self.core(q, k, v, slopes).transpose(1, 2)  # [B, T, H, D]
        if self.o_norm is not None:
            y = self.o_norm(y)
        y = gate("G1", y, x)
        out = self.o_proj(y.reshape(B, T, self.n_heads * self.head_dim))
        return gate("G5", out, x)


class DecoderLayer(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, m, layer):
        super().__init__()
        self.input_layernorm = RMSNorm(m["d_model"], m["norm_eps"])
        self.self_attn = Attention(m, layer)
        self.post_attention_layernorm = RMSNorm(m["d_model"], m["norm_eps"])
        self.mlp = SwiGLU(m["d_model"], m["ffn_hidden"])

    def forward(self, x, rope, slopes, cache):
        x = x + self.self_attn(self.input_layernorm(x), rope, slopes, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class SluicePreTrainedModel(PreTrainedModel):
    config_class = SluiceConfig
    base_model_prefix = "model"
    _no_split_modules = ["DecoderLayer"]


class SluiceModel(SluicePreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        m = config.sluice
        position = m.get("position", "rope")
        if position not in ("rope", "alibi", "none"):
            raise ValueError(f"model.position: unknown value {position!r}")
        self.embed_tokens = nn.Embedding(m["vocab_size"], m["d_model"])
        self.layers = nn.ModuleList([DecoderLayer(m, i) for i in range(m["n_layers"])])
        self.norm = RMSNorm(m["d_model"], m["norm_eps"])
        self.rotary = Rotary(m["head_dim"], m.get("rope", {})) if position == "rope" else None  # CoCA too
        self.n_heads = m["n_heads"]
        self.alibi = position == "alibi"
        self.post_init()

    def forward(self, input_ids, cache=None):
        T = input_ids.shape[1]
        # positions of the new tokens start after the cached ones; tables once per forward, for every layer
        start = cache.get_seq_length() if cache is not None else 0
        rope = self.rotary.tables(start, T, input_ids.device) if self.rotary is not None else None
        slopes = Alibi.slopes(self.n_heads) if self.alibi else None
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, rope, slopes, cache)
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
        # attention_mask and position_ids are not read: Sluice has no padding, and positions
        # follow the cache (generate() here gets one unpadded sequence per batch row)
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
