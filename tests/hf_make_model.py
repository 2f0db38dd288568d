"""Writes a small randomly initialised transformers model with save_pretrained, and its logits
on a fixed batch, for the import tests (tests/test_interop.cpp): what a directory made by
transformers itself (not by `sluice export hf`) looks like.

    python tests/hf_make_model.py OUT_DIR llama|qwen3|qwen3_next|qwen3_moe|qwen2_moe DTYPE [CONFIG_JSON_OVERRIDES]
    python tests/hf_make_model.py OUT_DIR KIND DTYPE OVERRIDES [OUT_DIR KIND DTYPE OVERRIDES ...]

DTYPE: float32, bfloat16 or float16 (the saved weights; logits are computed in fp32 from
exactly the saved values). OUT_DIR/expected.safetensors: tokens [2, 48], logits [2, 48, V].
Several models share one start of Python and transformers, the bulk of the time; each is made
from seed 0 as if alone. A model that fails prints its traceback, naming OUT_DIR, and the
others are still made; the exit status is then 1.
"""
import json
import sys
import traceback

import torch
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM, Qwen3NextConfig,
                          Qwen3NextForCausalLM)


def make(out, kind, dtype, extra):
    torch.manual_seed(0)
    common = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5)
    common.update(extra)
    moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif kind == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common))
    elif kind == "qwen3_next":  # full attention everywhere, dense MLPs, whole heads rotated
        layers = common["num_hidden_layers"]
        model = Qwen3NextForCausalLM(Qwen3NextConfig(head_dim=16, layer_types=["full_attention"] * layers,
                                                     mlp_only_layers=list(range(layers)), partial_rotary_factor=1.0,
                                                     **common))
    elif kind == "qwen3_moe":
        model = Qwen3MoeForCausalLM(Qwen3MoeConfig(head_dim=16, decoder_sparse_step=2, norm_topk_prob=True, **moe, **common))
    else:
        model = Qwen2MoeForCausalLM(Qwen2MoeConfig(qkv_bias=False, shared_expert_intermediate_size=40, **moe, **common))
    with torch.no_grad():  # routers away from zero, so that routing differs between tokens
        for name, p in model.named_parameters():
            if name.endswith("mlp.gate.weight") or "shared_expert_gate" in name:
                p.normal_(0.0, 0.5)
    with torch.no_grad():  # norms away from 1, so that a lost or misplaced norm weight shows
        for name, p in model.named_parameters():
            if "norm" in name:  # Qwen3-Next's norms are x̂·(1 + w): the same spread around 1
                p.copy_((0.0 if kind == "qwen3_next" else 1.0) + 0.3 * torch.randn_like(p))
    model = model.to(dtype)
    model.save_pretrained(out)
    # the reference: the saved files loaded back in fp32 (not model.float(): .to(dtype) also rounded
    # RoPE's inv_freq buffer, which loading recomputes)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokens = torch.randint(0, 300, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(tokens).logits
    save_file({"tokens": tokens, "logits": logits.contiguous()}, f"{out}/expected.safetensors")


args = sys.argv[1:]
if len(args) == 3:
    args.append("{}")
if not args or len(args) % 4 != 0:
    sys.exit("usage: hf_make_model.py OUT_DIR KIND DTYPE [OVERRIDES] | (OUT_DIR KIND DTYPE OVERRIDES)...")
failed = False
for i in range(0, len(args), 4):
    out, kind, dtype, overrides = args[i:i + 4]
    try:
        make(out, kind, getattr(torch, dtype), json.loads(overrides))
    except Exception:
        print(f"{out}: {traceback.format_exc()}", file=sys.stderr)
        failed = True
sys.exit(1 if failed else 0)
