#!/usr/bin/env python3
"""Ours / PyTorch ratios of one scripts/gpu_bench.sh run (standard library only).

Reads, in the output directory given as the argument: torch_peer.json
(scripts/torch_peer.py), our training logs train_*.log (`wgformer bench train`:
the "GPT L=.. C=.. NH=.. T=.. B=.. V=.." line and "N tokens/s"; a log whose
name contains "f16" is the mixed-precision run) and kernels_*.json (the kernel
bench's records). Training runs are paired by configuration: f32 with torch's
fp32 (TF32 off), f16 with torch's bf16 autocast. GEMMs are paired by shape
label and input type: our best variant with f16 in its name against torch f16,
every other variant against torch f32. Attention is paired by shape: our fused
kernels (forward, and forward + backward) against SDPA in f32, our
tensor-core ones against SDPA in f16. Prints one line per pair with the
issue's target where it has one; missing halves are reported, not guessed.
"""

import glob
import json
import os
import re
import sys

CONFIG = re.compile(r"GPT L=(\d+) C=(\d+) NH=(\d+) T=(\d+) B=(\d+) V=(\d+)")
RATE = re.compile(r"^([\d.]+) tokens/s", re.M)


def our_training(out):
    runs = []
    for path in sorted(glob.glob(os.path.join(out, "train_*.log"))):
        text = open(path, errors="replace").read()
        cfg, rate = CONFIG.search(text), RATE.search(text)
        name = os.path.basename(path)[:-4]
        if not cfg or not rate:
            runs.append((name, None, None, None))
            continue
        key = tuple(int(x) for x in cfg.groups())
        runs.append((name, key, "f16" in name, float(rate.group(1))))
    return runs


def our_kernel_records(out, kernel):
    """The kernel bench's records of `kernel` in every kernels_*.json of `out`."""
    for path in sorted(glob.glob(os.path.join(out, "kernels_*.json"))):
        try:
            records = json.load(open(path))
        except (OSError, ValueError):
            continue
        yield from (r for r in records if r.get("kernel") == kernel)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    path = os.path.join(out, "torch_peer.json")
    try:
        peer = json.load(open(path))
    except (OSError, ValueError) as e:
        print(f"no PyTorch results ({path}: {e}); no ratios")
        return
    print(f"torch {peer.get('torch')} on {peer.get('device_name')} (TF32 off)")
    torch_train = {}
    for r in peer.get("train", []):
        c = r["config"]
        key = (c["layers"], c["d_model"], c["heads"], c["seq"], c["batch"], c["vocab"])
        torch_train[(key, r["mode"])] = r
    for name, key, f16, ours in our_training(out):
        if key is None:
            print(f"train {name}: no tokens/s in our log")
            continue
        mode = "bf16" if f16 else "fp32"
        t = torch_train.get((key, mode))
        label = "L{} C{} NH{} T{} B{} V{}".format(*key)
        if t is None or "tokens_per_s" not in t:
            why = t.get("error", "no record") if t else "no torch run of this config"
            print(f"train {label} ours {'f16' if f16 else 'f32'} {ours:.0f} tokens/s; torch {mode}: {why}")
            continue
        ratio = ours / t["tokens_per_s"]
        target = " (target >= 0.50)" if f16 else " (target >= 0.75)"
        print(f"train {label} ours {'f16' if f16 else 'f32'} {ours:.0f} / torch {mode} "
              f"{t['tokens_per_s']:.0f} tokens/s = {ratio:.2f}{target}")

    best = {}
    for r in our_kernel_records(out, "gemm"):
        dtype = "f16" if "f16" in r["variant"] else "f32"
        k = (dtype, r["shape"])
        if r["gflops"] > best.get(k, (0.0, ""))[0]:
            best[k] = (r["gflops"], r["variant"])
    for r in peer.get("matmul", []):
        if "tflops" not in r:
            print(f"gemm {r['dtype']} {r['shape']}: torch error {r.get('error')}")
            continue
        ours = best.get((r["dtype"], r["shape"]))
        if ours is None:
            print(f"gemm {r['dtype']} {r['shape']:<26} torch {r['tflops']:7.2f} TFLOP/s; no run of ours")
            continue
        ratio = ours[0] / 1e3 / r["tflops"]
        target = " (target >= 0.40)" if r["dtype"] == "f16" and r["shape"] == "4096x4096x4096" else ""
        print(f"gemm {r['dtype']} {r['shape']:<26} ours {ours[0] / 1e3:7.2f} ({ours[1]}) / torch "
              f"{r['tflops']:7.2f} TFLOP/s = {ratio:.2f}{target}")
    # Our attention records by (shape, variant) -> median ms.
    ours_attention = {
        (r["shape"], r["variant"]): r["median_ms"] for r in our_kernel_records(out, "attention")
    }
    tensor_cores = ", tensor cores (f16 operands)"
    for r in peer.get("attention", []):
        if "fwd_ms" not in r:
            print(f"attention {r['dtype']} {r['shape']}: torch error {r.get('error')}")
            continue
        suffix = tensor_cores if r["dtype"] == "f16" else ""
        for what, variant, theirs in [
            ("forward", f"fused causal{suffix}", r["fwd_ms"]),
            ("fwd+bwd", f"fwd+bwd fused causal{suffix}", r["fwd_bwd_ms"]),
        ]:
            ours = ours_attention.get((r["shape"], variant))
            if ours is None:
                print(f"attention {what} {r['dtype']} {r['shape']}: torch {theirs:.3f} ms; "
                      f"no run of ours ({variant!r})")
                continue
            print(f"attention {what} {r['dtype']} {r['shape']}: ours {ours:.3f} ms ({variant}) / "
                  f"torch {theirs:.3f} ms: ours at {theirs / ours:.2f}x torch's speed")
    if peer.get("skipped"):
        print("torch skipped for its time limit:", ", ".join(peer["skipped"]))


if __name__ == "__main__":
    main()
