#!/usr/bin/env python3
"""PyTorch peer of wgformer's benchmarks, on the same GPU (standard library + torch only).

What `wgformer bench train` times, in PyTorch: the same GPT-2-layout model (learned
positions, pre-LayerNorm blocks, packed QKV with biases, tanh GELU MLP of 4C, final
LayerNorm, LM head tied to the token embedding, no dropout, eps 1e-5), the same
batch of random tokens, AdamW (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1)
with the global gradient norm clipped at 1, the loss read back every step, one
warm-up step then `--steps` timed ones -> tokens/s. Two modes:
  fp32  eager float32, TF32 off (matmul and cuDNN), attention written out
        (matmul, causal mask, softmax, matmul): the peer of wgformer's f32 run;
  bf16  torch.autocast(bfloat16) with F.scaled_dot_product_attention(is_causal):
        the peer of wgformer's mixed precision.
And torch.matmul at the GEMM benchmark's shapes (benches/kernels/gemm.rs: squares,
the GPT-2 small projections forward and backward with their transposes) in f32
(TF32 off) and f16 (f16 out; wgformer's f16 GEMM writes f32), in TFLOP/s. And
F.scaled_dot_product_attention at the attention benchmark's shapes
(benches/kernels/attention.rs: B4 NH12 HS64 causal, T = 256 and 1024), forward
and forward + backward, in f32 and f16 (the peers of our f32 fused kernels and
of the tensor-core ones), in ms. Each time is the best of three samples of
repeated calls, by wall clock around a device synchronisation.

Output: one JSON object (--json FILE, else stdout) and a readable log on stderr.
Every part checks a time budget (--time-limit) and records "skipped" when it is
spent, so a caller's time-out never loses what was measured: the JSON is
rewritten after every part.

  python3 scripts/torch_peer.py --gpt2 --json out.json            # the GPU run
  python3 scripts/torch_peer.py --tiny --device cpu --json x.json  # dry run anywhere
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# `wgformer bench train`'s defaults (src/cli/bench.rs) and GPT-2 small.
SMALL = dict(layers=4, d_model=256, heads=4, seq=256, batch=8, vocab=256)
GPT2 = dict(layers=12, d_model=768, heads=12, seq=1024, batch=8, vocab=50257)
TINY = dict(layers=1, d_model=32, heads=2, seq=16, batch=2, vocab=64)

# benches/kernels/gemm.rs: (M, K, N, trans_a, trans_b); squares on GPUs up to 4096.
GEMM_SHAPES = [
    (2048, 768, 2304, False, False),
    (2048, 768, 3072, False, False),
    (2048, 3072, 768, False, False),
    (2048, 768, 3072, False, True),
    (768, 2048, 3072, True, False),
    (2048, 256, 768, False, False),
    (2048, 256, 1024, False, False),
    (2048, 1024, 256, False, True),
    (256, 2048, 1024, True, False),
]
GEMM_SQUARES = [256, 512, 1024, 2048, 4096]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Block(nn.Module):
    def __init__(self, c, nh, attention):
        super().__init__()
        self.nh = nh
        self.attention = attention
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.c_attn = nn.Linear(c, 3 * c)
        self.attn_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def attn(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        heads = lambda y: y.view(b, t, self.nh, c // self.nh).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)
        if self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.shape[-1]))
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            y = s.masked_fill(mask, float("-inf")).softmax(dim=-1) @ v
        return self.attn_proj(y.transpose(1, 2).reshape(b, t, c))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt(nn.Module):
    def __init__(self, cfg, attention):
        super().__init__()
        c = cfg["d_model"]
        self.wte = nn.Embedding(cfg["vocab"], c)
        self.wpe = nn.Embedding(cfg["seq"], c)
        self.blocks = nn.ModuleList(
            Block(c, cfg["heads"], attention) for _ in range(cfg["layers"])
        )
        self.ln_f = nn.LayerNorm(c, eps=1e-5)
        # wgformer's initialisation (src/nn/gpt.rs): N(0, 0.02), residual
        # projections / sqrt(2 L), positions N(0, 0.01), biases 0.
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln_" in name:
                nn.init.ones_(p)
            elif name == "wpe.weight":
                nn.init.normal_(p, std=0.01)
            elif name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg["layers"]))
            else:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.wte(ids) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.ln_f(x) @ self.wte.weight.t()  # tied LM head

    def train_flops_per_token(self, cfg):
        # 6 N (matmuls, forward + backward) + attention 12 L T C, as wgformer
        # counts it (GptConfig::train_flops_per_token), N without embeddings
        # but with the tied head.
        c, l, t, v = cfg["d_model"], cfg["layers"], cfg["seq"], cfg["vocab"]
        return 6 * (12 * l * c * c + v * c) + 12 * l * t * c


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train(cfg, mode, steps, device):
    """Tokens/s of `steps` AdamW steps after one warm-up step; loss read back each step."""
    torch.manual_seed(1)
    attention = "sdpa" if mode == "bf16" else "eager"
    model = Gpt(cfg, attention).to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1
    )
    gen = torch.Generator(device="cpu").manual_seed(1)
    b, t, v = cfg["batch"], cfg["seq"], cfg["vocab"]
    losses = []

    def step():
        ids = torch.randint(0, v, (b, t), generator=gen).to(device, non_blocking=True)
        targets = torch.randint(0, v, (b, t), generator=gen).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16"):
            logits = model(ids)
            loss = F.cross_entropy(logits.float().view(-1, v), targets.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())  # the read-back wgformer does every step

    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    secs = time.perf_counter() - t0
    tokens_per_s = steps * b * t / secs
    flops = model.train_flops_per_token(cfg)
    rec = {
        "mode": mode,
        "attention": attention,
        "config": cfg,
        "steps": steps,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": tokens_per_s,
        "ms_per_step": secs * 1e3 / steps,
        "model_tflops": tokens_per_s * flops / 1e12,
        "losses": losses,
    }
    if device.type == "cuda":
        rec["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return rec


def time_matmul(m, k, n, ta, tb, dtype, device, min_s):
    """TFLOP/s of C = op(A) op(B) with A stored (K, M) when ta and B (N, K) when tb."""
    g = torch.Generator(device="cpu").manual_seed(m * 31 + n)
    a = torch.randn((k, m) if ta else (m, k), generator=g).to(device, dtype)
    b = torch.randn((n, k) if tb else (k, n), generator=g).to(device, dtype)
    opa = a.t() if ta else a
    opb = b.t() if tb else b
    ms = time_ms(lambda: torch.matmul(opa, opb), device, min_s)
    return 2.0 * m * n * k / ms / 1e9, ms


# benches/kernels/attention.rs: (B, NH, HS), causal, at each T.
ATTENTION = (4, 12, 64)
ATTENTION_T = [256, 1024]


def time_ms(fn, device, min_s):
    """Milliseconds per call of `fn`: doubled repetitions until one sample takes
    >= min_s, then the best of that and two more samples (wall clock around a
    device synchronisation)."""
    fn()  # warm-up (kernel choice, allocation)
    sync(device)
    reps = 1
    while True:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        secs = time.perf_counter() - t0
        if secs >= min_s or reps >= 1 << 14:
            break
        reps *= 2
    best = secs / reps
    for _ in range(2):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best * 1e3


def time_attention(b, nh, t, hs, dtype, device, min_s):
    """(forward ms, forward + backward ms) of causal SDPA on (B, NH, T, HS)."""
    g = torch.Generator(device="cpu").manual_seed(t)
    q, k, v, d_o = (torch.randn((b, nh, t, hs), generator=g).to(device, dtype) for _ in range(4))
    for x in (q, k, v):
        x.requires_grad_(True)

    def forward():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward_backward():
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.autograd.grad(o, (q, k, v), d_o)

    return time_ms(forward, device, min_s), time_ms(forward_backward, device, min_s)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", help="write the results here (rewritten after every part)")
    ap.add_argument("--gpt2", action="store_true",
                    help="also train GPT-2 small (L12 C768 NH12 T1024 B8 V50257)")
    ap.add_argument("--tiny", action="store_true",
                    help="dry run: a 1-layer model and GEMMs of at most 256")
    ap.add_argument("--steps", type=int, default=6, help="timed steps (bench train's default)")
    ap.add_argument("--modes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    ap.add_argument("--time-limit", type=float, default=150.0,
                    help="seconds; parts that would start later are skipped")
    ap.add_argument("--no-gemm", action="store_true")
    ap.add_argument("--no-attention", action="store_true")
    ap.add_argument("--no-train", action="store_true")
    args = ap.parse_args()
    t_start = time.perf_counter()
    device = torch.device(args.device)

    # fp32 means fp32: no TF32 anywhere (PyTorch's default for matmul is
    # "highest" already; cuDNN's TF32 default is on).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")

    out = {
        "torch": torch.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "tf32": False,
        "train": [],
        "matmul": [],
        "attention": [],
        "skipped": [],
    }

    def save():
        text = json.dumps(out, indent=1)
        if args.json:
            with open(args.json, "w") as f:
                f.write(text + "\n")
        return text

    def time_left():
        return args.time_limit - (time.perf_counter() - t_start)

    configs = [("tiny", TINY)] if args.tiny else [("small", SMALL)]
    if args.gpt2 and not args.tiny:
        configs.append(("gpt2", GPT2))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in ("fp32", "bf16"):
            ap.error(f"--modes: unknown mode {m!r}; expected fp32 and/or bf16")

    if not args.no_train:
        for name, cfg in configs:
            for mode in modes:
                what = f"train {name} {mode}"
                if time_left() < 10:
                    out["skipped"].append(what)
                    log(f"{what}: skipped, time limit")
                    continue
                try:
                    rec = train(cfg, mode, args.steps, device)
                    rec["name"] = name
                    out["train"].append(rec)
                    log(f"{what}: {rec['tokens_per_s']:.0f} tokens/s, "
                        f"{rec['ms_per_step']:.1f} ms/step, {rec['model_tflops']:.1f} model TFLOP/s, "
                        f"loss {rec['losses'][0]:.3f} -> {rec['losses'][-1]:.3f}")
                except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
                    out["train"].append({"name": name, "mode": mode, "config": cfg,
                                         "error": str(e).splitlines()[0]})
                    log(f"{what}: error {e}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                save()

    if not args.no_gemm:
        if args.tiny:
            # 256^3 is also the dry run's GEMM of ours: one pair for the ratio path.
            squares = [64, 256]
            shapes, min_s = [(64, 32, 48, False, True), (48, 64, 32, True, False)], 0.001
        else:
            squares = GEMM_SQUARES if device.type == "cuda" else [256, 512, 1024]
            shapes, min_s = GEMM_SHAPES, 0.02
        jobs = []
        for dtype in (torch.float32, torch.float16):
            for s in squares:
                jobs.append((s, s, s, False, False, dtype, f"{s}x{s}x{s}"))
        for m, k, n, ta, tb in shapes:
            label = f"{m}x{k}·{k}x{n}" + (" ta" if ta else "") + (" tb" if tb else "")
            jobs.append((m, k, n, ta, tb, torch.float32, label))
        for m, k, n, ta, tb, dtype, label in jobs:
            dname = "f32" if dtype == torch.float32 else "f16"
            what = f"matmul {dname} {label}"
            if time_left() < 3:
                out["skipped"].append(what)
                continue
            try:
                tflops, ms = time_matmul(m, k, n, ta, tb, dtype, device, min_s)
                out["matmul"].append({"dtype": dname, "shape": label, "m": m, "n": n, "k": k,
                                      "trans_a": ta, "trans_b": tb, "tflops": tflops, "ms": ms})
                log(f"{what}: {tflops:.2f} TFLOP/s ({ms:.3f} ms)")
            except RuntimeError as e:
                out["matmul"].append({"dtype": dname, "shape": label, "error": str(e).splitlines()[0]})
                log(f"{what}: error {e}")
        save()
    if not args.no_attention:
        b, nh, hs = (1, 2, 16) if args.tiny else ATTENTION
        lengths = [16, 32] if args.tiny else ATTENTION_T
        min_s = 0.001 if args.tiny else 0.02
        for dtype in (torch.float32, torch.float16):
            dname = "f32" if dtype == torch.float32 else "f16"
            for t in lengths:
                label = f"B={b} NH={nh} T={t} HS={hs}"
                what = f"attention {dname} {label}"
                if time_left() < 3:
                    out["skipped"].append(what)
                    continue
                try:
                    fwd, fwd_bwd = time_attention(b, nh, t, hs, dtype, device, min_s)
                    out["attention"].append({"dtype": dname, "shape": label, "causal": True,
                                             "fwd_ms": fwd, "fwd_bwd_ms": fwd_bwd})
                    log(f"{what}: forward {fwd:.3f} ms, forward + backward {fwd_bwd:.3f} ms")
                except RuntimeError as e:
                    out["attention"].append({"dtype": dname, "shape": label,
                                             "error": str(e).splitlines()[0]})
                    log(f"{what}: error {e}")
        save()
    if out["skipped"]:
        log(f"skipped for the time limit: {', '.join(out['skipped'])}")
    text = save()
    if not args.json:
        print(text)


if __name__ == "__main__":
    main()
