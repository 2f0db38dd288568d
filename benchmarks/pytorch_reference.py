#!/usr/bin/env python3
"""The PyTorch numbers Sluice competes with (../shared/device/README.md), reproducible in the same
GPU call as Sluice's benchmarks (scripts/gpu_perf.sh): a plain PyTorch Llama training step
(RMSNorm, RoPE, GQA, SwiGLU, SDPA causal, optional G1 elementwise gate sigmoid(X W_g) * SDPA
output), bf16 autocast, fused AdamW, random tokens, eager or torch.compile.

  python3 benchmarks/pytorch_reference.py --model 125m [--gate] [--compile] --out ref.json

Prints and writes tokens/s (timed steps after warm-up, synchronised) and peak GPU memory.
Napkin math, 125M at 16 x 2048 tokens: 6 * 124M params * 32768 tokens = 24.4 TFLOP per step
plus attention 12 * 12 layers * 768 * 2048 * 32768 / 2 (causal) = 7.4 TFLOP.
"""
import argparse, json, math, time
import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = {  # d_model, layers, q heads, kv heads, ffn, vocab, seq, batch
    "125m": (768, 12, 12, 4, 2048, 32000, 2048, 16),
    "360m": (1024, 24, 16, 4, 2816, 32000, 2048, 8),
    "tiny": (64, 2, 4, 2, 128, 256, 64, 2),  # a smoke test of this script: --model tiny --device cpu
}


def rope_tables(seq, dim, device, theta=10000.0):
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    ang = torch.outer(torch.arange(seq, device=device, dtype=torch.float32), inv)
    return ang.cos(), ang.sin()


def rope(x, cos, sin):  # x [B, H, T, D], rotate-half layout
    x1, x2 = x.chunk(2, dim=-1)
    c, s = cos[None, None].to(x.dtype), sin[None, None].to(x.dtype)
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


class Block(nn.Module):
    def __init__(self, d, h, kv, ffn, gate):
        super().__init__()
        self.h, self.kv, self.hd = h, kv, d // h
        self.n1, self.n2 = nn.RMSNorm(d), nn.RMSNorm(d)
        self.q, self.k, self.v = nn.Linear(d, d, bias=False), nn.Linear(d, kv * self.hd, bias=False), nn.Linear(d, kv * self.hd, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.g = nn.Linear(d, d, bias=False) if gate else None
        self.up, self.gp, self.down = nn.Linear(d, ffn, bias=False), nn.Linear(d, ffn, bias=False), nn.Linear(ffn, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        n = self.n1(x)
        q = self.q(n).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k(n).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v(n).view(B, T, self.kv, self.hd).transpose(1, 2)
        y = F.scaled_dot_product_attention(rope(q, cos, sin), rope(k, cos, sin), v, is_causal=True, enable_gqa=True)
        y = y.transpose(1, 2).reshape(B, T, -1)
        if self.g is not None:
            y = y * torch.sigmoid(self.g(n))
        x = x + self.o(y)
        n = self.n2(x)
        return x + self.down(F.silu(self.gp(n)) * self.up(n))


class Model(nn.Module):
    def __init__(self, d, layers, h, kv, ffn, vocab, gate):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, h, kv, ffn, gate) for _ in range(layers))
        self.norm, self.head = nn.RMSNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, tokens, targets, cos, sin):
        x = self.emb(tokens)
        for b in self.blocks:
            x = b(x, cos, sin)
        logits = self.head(self.norm(x)).float()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(MODELS), default="125m")
    ap.add_argument("--gate", action="store_true", help="G1 elementwise gate")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=0, help="0: the model's batch")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    d, layers, h, kv, ffn, vocab, seq, batch = MODELS[a.model]
    batch = a.batch or batch
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    model = Model(d, layers, h, kv, ffn, vocab, a.gate).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=cuda)
    cos, sin = rope_tables(seq, d // h, dev)
    step_loss = torch.compile(model) if a.compile else model
    tokens = torch.randint(vocab, (batch, seq), device=dev)
    targets = torch.randint(vocab, (batch, seq), device=dev)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = step_loss(tokens, targets, cos, sin)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(a.warmup):
        step()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync()
    dt = time.perf_counter() - t0
    r = {"model": a.model, "gate": a.gate, "compile": a.compile, "batch": batch, "seq": seq, "params": params,
         "tokens_per_s": a.steps * batch * seq / dt, "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
         "final_loss": float(loss.detach()), "torch": torch.__version__, "device": torch.cuda.get_device_name() if cuda else "cpu"}
    print(json.dumps(r))
    if a.out:
        json.dump(r, open(a.out, "w"), indent=2)


if __name__ == "__main__":
    main()
