#!/usr/bin/env bash
# One benchmark run on a real GPU (written for an NVIDIA H100 / H200 through Vulkan)
# with binaries built elsewhere: the adapter report, the kernel benchmark (GEMM
# up to 4096^3 and the GPT-2 shapes with every tile the autotune compares,
# attention at T=1024, LayerNorm / softmax / cross-entropy against the copy
# kernel), GPT training at two sizes and, with time to spare, sparse attention;
# then the PyTorch peer of the same
# benchmarks (scripts/torch_peer.py: the same GPT-2-layout training in fp32 with
# TF32 off and in bf16 autocast with SDPA, torch.matmul at the GEMM shapes, SDPA
# at the attention bench's shapes in f32 and f16) and the ratios ours / torch in
# summary.txt. Every step has a time limit; our steps
# stop starting after TOTAL_S (360) seconds and the torch step has TORCH_S (90)
# of its own after them, so the whole run stays under 8 minutes; a step that
# fails or times out is logged and the next one runs.
# The kernel bench rewrites its JSON after every record, so a step cut short
# keeps what it measured.
#
# Build first (on any x86-64 Linux machine with the same glibc or older):
#   cargo build --release && cargo bench --bench kernels --no-run
#   mkdir -p bin && cp target/release/wgformer bin/ \
#     && cp "$(ls -t target/release/deps/kernels-* | grep -v '\.d$' | head -1)" bin/kernels
# The bench binary is self-contained (shaders are compiled in); run it as
# `bin/kernels [FILTER[,FILTER...]]` with WGFORMER_BENCH_JSON=<file>.
# Optional: the kernel test binary as bin/kernel_tests (`cargo test --release
# --test kernels --no-run`, the newest target/release/deps/kernels-*): then the
# cooperative-matrix GEMM and attention forward are checked against the f64
# reference on the GPU first (they have never run on hardware with the
# feature before).
#
# Run:  OUT=/some/dir BIN=bin scripts/gpu_bench.sh
# Writes to $OUT: info.txt, kernels_*.log/json, train_*.log, torch_peer.log/json,
# summary.txt. PYTHON (default python3) runs torch_peer.py; without torch the
# step fails, is logged, and the summary has no ratios.
#
# Dry run (any machine, e.g. lavapipe and a CPU-only torch; minutes, not a
# benchmark): DRY_RUN=1 OUT=/tmp/dry BIN=<dir with debug builds> scripts/gpu_bench.sh
# takes whichever adapter wgformer picks, tiny training sizes, one small GEMM
# filter, skips the attention and row-kernel steps, and runs torch_peer.py
# --tiny, with every time limit times LIMIT_SCALE (4). It exercises every
# step, the time limits and the summary.
# Needs a Vulkan loader (libvulkan.so.1) and the GPU's ICD. If the machine has
# none, put the loader .debs in .gl/ (see /work/.library/device/README.md) and
# the script unpacks them; an NVIDIA ICD under /usr/local/nvidia is used when
# no other is registered.
set -u
OUT="${OUT:?set OUT to the output directory}"
BIN="${BIN:-bin}"
mkdir -p "$OUT"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
DRY_RUN="${DRY_RUN:-0}"
PYTHON="${PYTHON:-python3}"
SCRIPTS="$(cd "$(dirname "$0")" && pwd)"
# Fail rather than benchmark a software adapter by mistake (a dry run takes any).
if [ "$DRY_RUN" = 1 ]; then
  export WGFORMER_ADAPTER="${WGFORMER_ADAPTER:-}"
else
  export WGFORMER_ADAPTER="${WGFORMER_ADAPTER:-nvidia}"
fi
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
# Measure GEMM tiles on this device (the default on GPUs; explicit for the log),
# with the tuning cache in $OUT so it comes back with the results.
export WGFORMER_GEMM_TUNE=on
export WGFORMER_TUNE_CACHE="$OUT/gemm_tune.json"
start=$(date +%s)

log() { echo "[$(( $(date +%s) - start ))s] $*" | tee -a "$OUT/summary.txt"; }

if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
  if ls .gl/*.deb >/dev/null 2>&1; then
    log "no Vulkan loader: unpacking .gl/*.deb"
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
  else
    log "warning: no libvulkan.so.1 and no .gl/*.deb to unpack"
  fi
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] \
  && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

WGF="$BIN/wgformer"
KB="$BIN/kernels"
[ -x "$KB" ] || KB="$(ls -t "$BIN"/kernels-* 2>/dev/null | grep -v '\.d$' | head -1)"
[ -x "$WGF" ] || { log "missing $WGF"; exit 1; }
[ -n "$KB" ] && [ -x "$KB" ] || { log "missing the kernel bench binary in $BIN"; exit 1; }

# Our steps stay inside TOTAL_S seconds (default 360): each step's limit is
# cut to what is left, and a step with under 10 s left is skipped. The torch
# peer then has TORCH_S (default 90) of its own.
TOTAL_S="${TOTAL_S:-360}"
TORCH_S="${TORCH_S:-90}"
# Every limit times LIMIT_SCALE: a dry run on a software adapter builds its
# pipelines on a loaded CPU, often from a debug build (default 4 there).
if [ "$DRY_RUN" = 1 ]; then LIMIT_SCALE="${LIMIT_SCALE:-4}"; else LIMIT_SCALE="${LIMIT_SCALE:-1}"; fi
TOTAL_S=$(( TOTAL_S * LIMIT_SCALE ))
TORCH_S=$(( TORCH_S * LIMIT_SCALE ))
# Sizes: the real run, or tiny ones for the dry run.
if [ "$DRY_RUN" = 1 ]; then
  GEMM_FILTER="gemm/register/256x256x256,gemm/coop"
  SMALL_ARGS="--layers 1 --d-model 32 --heads 2 --seq 16 --batch 2 --vocab 64 --steps 2"
  GPT2_ARGS="--layers 2 --d-model 64 --heads 2 --seq 32 --batch 2 --vocab 128 --steps 2"
  GPT2_B4_ARGS="$GPT2_ARGS"
  TORCH_ARGS="--tiny --steps 2"
else
  GEMM_FILTER="gemm/"
  SMALL_ARGS="--layers 4 --d-model 256 --heads 4 --seq 256 --batch 8 --vocab 256 --steps 10"
  GPT2_ARGS="--layers 12 --d-model 768 --heads 12 --seq 1024 --batch 8 --vocab 50257 --steps 5"
  GPT2_B4_ARGS="--layers 12 --d-model 768 --heads 12 --seq 1024 --batch 4 --vocab 50257 --steps 5"
  TORCH_ARGS="--gpt2 --steps 5"
fi

# step NAME SECONDS COMMAND...: runs with a limit, output to $OUT/NAME.log.
step() {
  local name="$1" secs=$(( $2 * LIMIT_SCALE ))
  shift 2
  local left=$(( TOTAL_S - ($(date +%s) - start) ))
  if [ "$left" -lt 10 ]; then
    log "skip $name: the run's time is spent"
    return
  fi
  [ "$secs" -gt "$left" ] && secs=$left
  log "start $name (limit ${secs}s)"
  timeout -k 5 "$secs" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  log "end $name: exit $rc$([ $rc -eq 124 ] && echo ' (timed out)')"
}

nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv >"$OUT/nvidia_smi.txt" 2>&1 || true
step info 30 "$WGF" info
cat "$OUT/info.log" >>"$OUT/summary.txt"

if [ -x "$BIN/kernel_tests" ]; then
  step coop_tests 60 "$BIN/kernel_tests" gemm_coop:: attention_coop:: shaders::every_cooperative \
    --nocapture --test-threads 1
  grep -h "test result\|SKIPPED\|panicked" "$OUT/coop_tests.log" >>"$OUT/summary.txt" 2>/dev/null
fi

# Most important first (the time budget cuts the tail): GEMM, then training,
# then attention and the row-wise kernels. One process per group so each JSON
# stands alone.
WGFORMER_BENCH_JSON="$OUT/kernels_gemm.json" step kernels_gemm 150 "$KB" "$GEMM_FILTER"

# Training: the issue's configuration, then GPT-2 small at T = 1024 (B = 8,
# else 4 when the logits do not fit one storage binding).
# shellcheck disable=SC2086 # the *_ARGS are word lists
step train_small 30 "$WGF" bench train $SMALL_ARGS
# shellcheck disable=SC2086
step train_gpt2 70 "$WGF" bench train $GPT2_ARGS
# Mixed precision, where this build has it (--precision on bench train).
if "$WGF" bench train --help 2>/dev/null | grep -q -- "--precision"; then
  # shellcheck disable=SC2086
  step train_gpt2_f16 70 "$WGF" bench train $GPT2_ARGS --precision f16
fi
# B = 4 only when B = 8 failed fast (an error, e.g. a binding limit; not a time-out).
if ! grep -qs "tokens/s" "$OUT/train_gpt2.log" && grep -qs "^error" "$OUT/train_gpt2.log"; then
  # shellcheck disable=SC2086
  step train_gpt2_b4 50 "$WGF" bench train $GPT2_B4_ARGS
fi

if [ "$DRY_RUN" = 1 ]; then
  log "skip kernels_attention, kernels_rowwise, kernels_train_*, kernels_sparse: dry run"
else
  WGFORMER_BENCH_JSON="$OUT/kernels_attention.json" step kernels_attention 45 "$KB" "NH=12 T=1024"
  WGFORMER_BENCH_JSON="$OUT/kernels_rowwise.json" step kernels_rowwise 45 "$KB" "copy/vec4,softmax,layernorm,cross_entropy"

  # Per-kernel GPU time of one step of each (dispatch by dispatch, timestamps).
  WGFORMER_BENCH_JSON="$OUT/kernels_train.json" step kernels_train_small 30 "$KB" "train_step"
  WGFORMER_BENCH_TRAIN=12,768,12,1024,8,50257 WGFORMER_BENCH_JSON="$OUT/kernels_train_gpt2.json" \
    step kernels_train_gpt2 50 "$KB" "train_step"
  # The optimiser's update of GPT-2 small's 148 tensors: per tensor, and in arenas.
  WGFORMER_BENCH_TRAIN=12,768,12,1024,8,50257 WGFORMER_BENCH_JSON="$OUT/kernels_optim_gpt2.json" \
    step kernels_optim_gpt2 20 "$KB" "adamw_step"

  # Sparse attention (issue 12's table on the GPU: dense causal, window 256 and
  # strided at T = 1024 / 4096 / 16384, the paired speed-up, decode memory),
  # last: only with time to spare.
  WGFORMER_BENCH_JSON="$OUT/kernels_sparse.json" step kernels_sparse 40 "$KB" "sparse/"
fi

# The PyTorch peer, after ours (its CUDA context never shares the GPU with our
# runs), with its own time: the step's limit, and inside it torch_peer.py's own
# budget, which skips what would start too late and keeps what it measured.
TOTAL_S=$(( $(date +%s) - start + TORCH_S ))
# shellcheck disable=SC2086
step torch_peer $(( TORCH_S / LIMIT_SCALE )) "$PYTHON" "$SCRIPTS/torch_peer.py" $TORCH_ARGS \
  --time-limit $(( TORCH_S > 30 ? TORCH_S - 20 : TORCH_S / 2 )) --json "$OUT/torch_peer.json"

# Summary: best GEMM rate per shape as a fraction of the GPU's FP32 peak, copy
# bandwidth against its memory's, tokens/s of each training run, our fused
# attention against our unfused path and each row kernel against the copy
# kernel (issue 11's targets), then ours against PyTorch. The peaks default to
# the H200 SXM's (67 TFLOP/s FP32, 4.8 TB/s HBM3e; the H100 SXM: 67, 3.35).
PEAK_FP32_TFLOPS="${PEAK_FP32_TFLOPS:-67}"
PEAK_TBPS="${PEAK_TBPS:-4.8}"
{
  echo "--- GEMM best GFLOP/s per shape (fraction of $PEAK_FP32_TFLOPS TFLOP/s FP32 peak)"
  python3 - "$OUT" "$PEAK_FP32_TFLOPS" "$PEAK_TBPS" <<'EOF' || true
import json, sys, os
out = sys.argv[1]
peak_gflops, peak_gbps = 1e3 * float(sys.argv[2]), 1e3 * float(sys.argv[3])
best = {}
for name in sorted(os.listdir(out)):
    if not (name.startswith("kernels_") and name.endswith(".json")):
        continue
    try:
        records = json.load(open(os.path.join(out, name)))
    except Exception as e:
        print(name, "unreadable:", e)
        continue
    for r in records:
        key = (r["kernel"], r["shape"])
        if r["kernel"] == "gemm" and r["gflops"] > best.get(key, (0, ""))[0]:
            best[key] = (r["gflops"], r["variant"])
        if r["kernel"] == "copy" and r["variant"] == "vec4":
            print(f"copy {r['shape']}: {r['gbps']:.0f} GB/s = {100 * r['gbps'] / peak_gbps:.0f}% of the memory's peak")
        if r["kernel"] in ("attention", "train_step", "adamw_step"):
            print(f"{r['kernel']} {r['variant']} {r['shape']}: {r['median_ms']:.3f} ms {r['gflops']:.0f} GFLOP/s")
for (k, shape), (g, v) in sorted(best.items(), key=lambda x: -x[1][0]):
    print(f"gemm {shape:<28} {g:>9.0f} GFLOP/s = {100 * g / peak_gflops:5.1f}% of peak ({v})")
EOF
  echo "--- training"
  grep -h "tokens/s" "$OUT"/train_*.log "$OUT"/kernels_train*.log 2>/dev/null
  echo "--- fused attention against our unfused path (target: fwd+bwd >= 1.5x, >= 5x less memory)"
  grep -h "x the speed of unfused" "$OUT/kernels_attention.log" 2>/dev/null
  echo "--- row kernels against the copy kernel (target >= 70%)"
  grep -h -- "-> .* of copy" "$OUT/kernels_rowwise.log" 2>/dev/null
  echo "--- autotune ranking (1024^3)"
  sed -n '/autotune 1024/,/^[a-z]/p' "$OUT/kernels_gemm.log" 2>/dev/null | head -15
  echo "--- ours / PyTorch on the same device (torch_peer.json)"
  "$PYTHON" "$SCRIPTS/peer_ratios.py" "$OUT" 2>&1 || python3 "$SCRIPTS/peer_ratios.py" "$OUT"
} >>"$OUT/summary.txt" 2>&1
log "done"
