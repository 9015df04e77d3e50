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

# Two processes at a time, one per core. The segmentation MAML run starts from the U-Net
# pretraining's weights (train.init_from), so that pretraining runs first.
step "train: classifier MAML and U-Net pretraining"
train cls maml & a=$!; train seg pretrain & b=$!; wait "$a"; wait "$b"
step "train: classifier pretraining and U-Net MAML (from the pretrained U-Net)"
train cls pretrain & a=$!; train seg maml --config demo-seg-maml --set train.init_from="$W/runs/seg-pretrain/best.pt" & b=$!
wait "$a"; wait "$b"

for kind in cls seg; do
  step "evaluate $kind on held-out regions"
  landmeta evaluate --data "$W/data/sen12ms" --runs "$W/runs/$kind-maml" "$W/runs/$kind-pretrain" \
    --split test --out "$W/results/$kind"
  step "report $kind"
  landmeta report "$W/results/$kind" --out "$W/reports/$kind" --overwrite
done

step "done"
echo "reports: $W/reports/cls/index.html and $W/reports/seg/index.html (Markdown: index.md beside them)"
