#!/usr/bin/env bash
# GPU check, under 5 minutes on one GPU: the engine benchmark on CUDA, then short meta-trainings
# (second-order MAML with a U-Net, first-order MAML with bf16 autocast, pretraining with
# torch.compile) on a generated store, printing tasks/s from each run's metrics.csv.
#   bash scripts/gpu_check.sh            (from the repository root; PYTHON overrides the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

echo "== engine benchmark (scripts/bench_meta.py), U-Net, k = 1..3"
timeout 150 "$PY" scripts/bench_meta.py --model unet --max-k 3 --repeats 5 --device cuda

echo "== short meta-trainings on a generated 64 px store"
"$PY" - "$TMP/store" <<'EOF'
import sys
sys.path.insert(0, "tests")
from pathlib import Path
from store_factory import make_store
make_store(Path(sys.argv[1]), chip_size=64, parents_per_region=40)
EOF

run() {  # name, then extra arguments for landmeta train
  local name=$1; shift
  local start=$SECONDS
  timeout 120 "$PY" -m landmeta train --config tiny --data "$TMP/store" --out "$TMP/$name" --device cuda \
    --no-progress --set data.chip_size=64 --set train.val_every=1000 --set train.ckpt_every=1000 "$@"
  "$PY" - "$TMP/$name" "$name" $((SECONDS - start)) <<'EOF'
import sys
import pandas as pd
import yaml
out, name, wall = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = yaml.safe_load(open(f"{out}/config.yaml"))
m = pd.read_csv(f"{out}/metrics.csv").set_index("step")["seconds"]
first, last = 5, len(m) - 1
per_step = cfg["meta"]["meta_batch"] if cfg["meta"]["method"] != "pretrain" else cfg["train"]["batch_size"]
unit = "tasks/s" if cfg["meta"]["method"] != "pretrain" else "chips/s"
print(f"{name}: {per_step * (last - first) / (m[last] - m[first]):.1f} {unit} "
      f"(steps {first}-{last}), whole command {wall} s")
EOF
}
run maml-unet --set task.kind=segmentation --set model.name=unet --set meta.steps=40 --set meta.meta_batch=4
run fomaml-amp --method fomaml --set meta.steps=60 --set meta.meta_batch=8 --set train.amp=true
run pretrain-compile --method pretrain --set meta.steps=60 --set train.batch_size=64 --set train.amp=true \
  --set train.compile=true
echo "gpu_check: done"
