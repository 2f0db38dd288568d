"""Loads `sluice export hf` directories with transformers (fp32) and compares each with what
Sluice computed: logits on a fixed batch and greedy generation with transformers' KV cache.
Used by the fixture of tests/hf_export_fixture.h (test_interop.cpp, test_interop_remote.cpp).

    python tests/hf_check.py EXPORT_DIR EXPECTED.safetensors [EXPORT_DIR EXPECTED.safetensors ...]

Several pairs share one start of Python and transformers, the bulk of a check's time.
EXPECTED.safetensors holds tokens [B, T], logits [B, T, V], prompt [P] and generated [N]
(Sluice's greedy continuation of the prompt: no EOS stop, the whole vocabulary). Prints a JSON
list with one object per pair, in order: {"architecture", "max_abs_logits", "generated"} and,
when the greedy tokens differ from Sluice's, "divergence": the first differing index and the
margin between the two best logits there (a tie within rounding makes greedy decoding
ill-conditioned). A pair that cannot be loaded or run gives {"error": its traceback} and the
others are still checked.
"""
import json
import sys
import traceback

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def check(export_dir, expected_file):
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
    return result


if len(sys.argv) < 3 or len(sys.argv) % 2 != 1:
    sys.exit("usage: hf_check.py EXPORT_DIR EXPECTED.safetensors [EXPORT_DIR EXPECTED.safetensors ...]")
results = []
for export_dir, expected_file in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        results.append(check(export_dir, expected_file))
    except Exception:
        results.append({"error": f"{export_dir}: {traceback.format_exc()}"})
print(json.dumps(results))
