#!/usr/bin/env bash
# Scaling of `wgformer train --parallel` on this machine: one process, data
# parallel and ZeRO-1 with 1, 2 and 4 ranks (strong: the same global batch;
# weak: the same batch per rank), the gradient exchange overlapped or not, and
# pipelines of 2 and 4 stages. Prints one row per run: the median step time
# (steps 3.., from the train log), and each rank's exchange / exposed time,
# overlap and bytes sent per step (from the summary line it prints).
#
#   cargo build --release --features mpi && scripts/mpi_scaling.sh [TEXT_FILE]
#
# The model: a 4-layer GPT, C=128, NH=4, T=64, char tokens, 12 steps,
# 256 KiB gradient buckets. Ranks share this machine's cores, unbound
# (`--bind-to none`: Open MPI would otherwise pin each rank to one core, where
# a plain process uses them all).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/wgformer
TEXT=${1:-}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$WORK/xdg}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
if [ -z "$TEXT" ]; then
  TEXT=$WORK/text.txt
  for _ in 1 2 3 4 5 6 7 8; do cat README.md DEVELOPERS.md; done >"$TEXT"
fi
MODEL="--model gpt --data $TEXT --steps 12 --layers 4 --d-model 128 --heads 4 --seq 64 \
  --eval-every 1000 --no-energy"

run() { # name ranks batch extra-flags...
  local name=$1 ranks=$2 batch=$3
  shift 3
  local out=$WORK/$name
  if [ "$ranks" = 0 ]; then
    $BIN train $MODEL --batch "$batch" --out "$out" "$@" >"$out.log" 2>&1
  else
    mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$ranks" $BIN train $MODEL \
      --batch "$batch" --out "$out" "$@" >"$out.log" 2>&1
  fi
  python3 - "$name" "$out.train.jsonl" "$out.log" <<'EOF'
import json, re, statistics, sys
name, log, text = sys.argv[1:]
rows = [json.loads(l) for l in open(log)]
steps = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(rows, rows[1:]) if b["step"] >= 3]
ranks = []
# Ranks' lines may arrive joined: find each summary anywhere in the output.
for m in re.finditer(r"rank (\d+) of \d+: ((?:data parallel|pipeline stage)[^\n]*?over \d+ steps(?:;[^\n]*?after the first\))?)", open(text).read()):
    r, rest = m.groups()
    ex = re.search(r"gradient exchange ([\d.]+) ms per step, ([\d.]+) ms of it after the backward \(overlap (\w+), (\d+)% hidden", rest)
    sent = re.search(r"\((\d+) per step\)", rest)
    passes = re.search(r"passes [\d.]+ s \(([\d.]+) ms per step\)", rest)
    what = f"exchange {ex[1]} ms, exposed {ex[2]} ms, overlap {ex[3]} {ex[4]}%" if ex else ""
    what += f"passes {passes[1]} ms" if passes else ""
    ranks.append(f"r{r}: {what or 'no exchange'}, sent {sent[1] if sent else '?'} B")
print(f"| {name} | {1e3 * statistics.median(steps):.0f} ms | {'; '.join(sorted(ranks))} |")
EOF
}

echo "| run | median step (steps 3-12) | per rank, per step |"
echo "|---|---|---|"
run one-process 0 8
run data-1 1 8 --parallel data --bucket-kb 256
run data-2-strong 2 8 --parallel data --bucket-kb 256
run data-2-strong-no-overlap 2 8 --parallel data --bucket-kb 256 --overlap-comm off
run data-4-strong 4 8 --parallel data --bucket-kb 256
run data-2-weak 2 16 --parallel data --bucket-kb 256
run data-4-weak 4 32 --parallel data --bucket-kb 256
run zero1-2-strong 2 8 --parallel zero1 --bucket-kb 256
run zero1-4-strong 4 8 --parallel zero1 --bucket-kb 256
run pipeline-2 2 8 --parallel pipeline --stages 2 --micro-batches 4
run pipeline-4 4 8 --parallel pipeline --stages 4 --micro-batches 4
