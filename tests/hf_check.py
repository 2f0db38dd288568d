"""Loads a `sluice export hf` directory with transformers (fp32) and compares it with what
Sluice computed: logits on a fixed batch and greedy generation with transformers' KV cache.
Used by tests/test_interop.cpp.

    python tests/hf_check.py EXPORT_DIR EXPECTED.safetensors

EXPECTED.safetensors holds tokens [B, T], logits [B, T, V], prompt [P] and generated [N]
(Sluice's greedy continuation of the prompt: no EOS stop, the whole vocabulary). Prints JSON:
{"architecture", "max_abs_logits", "generated"} and, when the greedy tokens differ from
Sluice's, "divergence": the first differing index and the margin between the two best logits
there (a tie within rounding makes greedy decoding ill-conditioned).
"""
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

export_dir, expected_file = sys.argv[1], sys.argv[2]
expected = load_file(expected_file)
model = AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32, trust_remote_code=True)
model.eval()
with torch.no_grad():
    logits = model(expected["tokens"].long()).logits
    max_abs = (logits - expected["logits"]).abs().max().item()
    n = expected["generated"].numel()
    model.generation_config.eos_token_id = None  # as Sluice's side: exactly n tokens
    prompt = expected["prompt"].long().unsqueeze(0)
    # an explicit mask: generate() would otherwise mask every prompt token equal to pad_token_id
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, use_cache=True, pad_token_id=0)
generated = out[0, expected["prompt"].numel():].tolist()
result = {"architecture": type(model).__name__, "max_abs_logits": max_abs, "generated": generated}
# Where the greedy sequences part, how close the two candidates were: transformers' logits of a
# full forward over the common prefix, the gap between its two best tokens.
theirs = expected["generated"].tolist()
first = next((i for i, (a, b) in enumerate(zip(generated, theirs)) if a != b), None)
if first is not None:
    prefix = torch.cat([expected["prompt"].long(), torch.tensor(theirs[:first], dtype=torch.long)]).unsqueeze(0)
    with torch.no_grad():
        last = model(prefix).logits[0, -1]
    top = torch.topk(last, 2)
    result["divergence"] = {"index": first, "top2": top.indices.tolist(), "margin": (top.values[0] - top.values[1]).item()}
print(json.dumps(result))
