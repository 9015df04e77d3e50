#!/usr/bin/env bash
# The main job on the embedded default dataset: synth -> preprocess -> train (MAML and pretrain,
# classifier and U-Net) -> evaluate on held-out regions -> report. Reruns skip finished steps.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${LANDMETA_DEMO_DIR:-demo}
SEED=${LANDMETA_DEMO_SEED:-0}
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

step "generate the embedded default dataset"
[ -f "$W/raw/synth.json" ] || landmeta synth --out "$W/raw" --scale default --seed "$SEED"

step "preprocess SEN12MS-layout tiles into a chip store"
[ -f "$W/data/sen12ms/manifest.json" ] || landmeta preprocess sen12ms --root "$W/raw/sen12ms" \
  --out "$W/data/sen12ms" --split-seed "$SEED" --downsample 2 --chip-size 64 --no-progress
landmeta inspect "$W/data/sen12ms" --out "$W/data/sen12ms-inspect" > "$W/inspect.txt"

train() {  # KIND METHOD [ARGS]: one torch thread; ARGS (e.g. another --config) go to `landmeta train`
  [ -f "$W/runs/$1-$2/best.pt" ] || OMP_NUM_THREADS=1 landmeta train --config "demo-$1" --method "$2" \
    --data "$W/data/sen12ms" --out "$W/runs/$1-$2" --set seed="$SEED" --no-progress "${@:3}"
}

evaluate() {  # KIND: score both trainings and the baselines on the held-out regions, then report
  step "evaluate $1 on held-out regions"
  landmeta evaluate --data "$W/data/sen12ms" --runs "$W/runs/$1-maml" "$W/runs/$1-pretrain" \
    --split test --out "$W/results/$1"
  step "report $1"
  landmeta report "$W/results/$1" --out "$W/reports/$1" --overwrite
}

# Both cores busy throughout. The segmentation MAML run starts from the U-Net pretraining's weights
# (train.init_from), so that pretraining runs first; while it trains, the classifier pretraining,
# evaluation and report run beside it.
step "train: classifier MAML and U-Net pretraining"
train cls maml & a=$!; train seg pretrain & b=$!; wait "$a"; wait "$b"
step "train: U-Net MAML (from the pretrained U-Net); beside it classifier pretraining"
train seg maml --config demo-seg-maml --set train.init_from="$W/runs/seg-pretrain/best.pt" & b=$!
train cls pretrain
evaluate cls
wait "$b"
evaluate seg

step "done"
echo "reports: $W/reports/cls/index.html and $W/reports/seg/index.html (Markdown: index.md beside them)"
