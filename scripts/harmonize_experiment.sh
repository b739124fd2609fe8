#!/usr/bin/env bash
# Issue 23's experiment: does the neural harmonizer (Fel et al. 2022) make a model's explanations more
# like where people look, on images it never trained on? On this CPU, offline, real eye-tracking data.
#
#   efficientnet_lite0 (real ImageNet weights) fine-tuned with `--harmonize λ --distill-from self` on NUS
#   scenes 001–400 (their fixation density as the human map; the frozen parent's predictions as the
#   teacher, since scenes have no ImageNet labels), then scored before and after on NUS 401–500 with
#   Spearman, NSS, shuffled AUC, CC and information gain, under Threshold-Grad-CAM and `saliency`
#   (Harmonization's evaluation map); top-1 agreement with the parent on 401–500; `compare --against
#   parent` with paired bootstrap CIs (and the dataset's centre bias as the reference row).
#   Variants:  all     every weight but the batch norms (--freeze norms), --harmonize $LAMBDA   (seeds $SEEDS)
#              control the same with --harmonize 0: the same steps, distillation only (seeds $CONTROL_SEEDS)
#              dcls    DCLS --init from-dense, the positions only    (seeds $DCLS_SEEDS)
#              dcls-control  the same positions only with --harmonize 0   (seeds $DCLS_SEEDS)
#   The batch-norm layers stay fixed (statistics included): in train mode a batch of scenes is normalised
#   by its own statistics, not ImageNet's, and before any update the student's predictions were already
#   ~3 nats (KL) from its own eval-mode parent's; the first run of this script with --freeze none
#   trained mostly to undo that.
#
#   scripts/harmonize_experiment.sh                              # the full run (STEPS per variant and seed)
#   STEPS=20 SEEDS=0 VARIANTS="all control" scripts/harmonize_experiment.sh   # a short one
#
# The splits are `fixations` datasets (images/ as symbolic links to the stimuli + fixations.csv filtered
# to their images), so the script depends only on that dataset layout. Every command is an ordinary
# alignbench command; the store keeps every run, so running the script again computes only what is
# missing (a finished training is resumed, i.e. only recorded again).
set -euo pipefail
cd "$(dirname "$0")/.."

NUS=${NUS:-../shared/data/nus-scene-500}
WORK=${WORK:-experiments/harmonize}
DB=${DB:-sqlite:///$WORK/experiment.db}
STEPS=${STEPS:-150}          # optimiser steps per variant and seed (batch $BATCH: 150 steps = 6 passes over the 400 images)
BATCH=${BATCH:-16}
LR=${LR:-1e-4}
POSITIONS_LR=${POSITIONS_LR:-0.01}
LAMBDA=${LAMBDA:-1}
SEEDS=${SEEDS:-"0 1 2"}
CONTROL_SEEDS=${CONTROL_SEEDS:-$SEEDS}  # the λ = 0 control (default: the same seeds)
DCLS_SEEDS=${DCLS_SEEDS:-"0"}
VARIANTS=${VARIANTS:-"all control dcls dcls-control"}
EXPLAINERS=${EXPLAINERS:-"threshold-gradcam saliency"}
METRICS=${METRICS:-spearman,nss,sauc,cc,ig}
AB=${AB:-.venv/bin/alignbench}
PY=${PY:-.venv/bin/python}

mkdir -p "$WORK/scores"

# 1. The split, by image number: 001–400 to train on, 401–500 to evaluate on (never trained on).
"$PY" - "$NUS" "$WORK" <<'EOF'
import csv, sys
from pathlib import Path

nus, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
with open(nus / "fixations.csv", newline="") as handle:
    header, *rows = list(csv.reader(handle))
column = header.index("image")
for name, first, last in (("train", 1, 400), ("test", 401, 500)):
    root = work / name
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = [f"{number:03d}.jpg" for number in range(first, last + 1)]
    for image in names:
        link = root / "images" / image
        if not link.is_symlink():
            link.symlink_to(nus / "stimuli" / image)
    keep = set(names)
    kept = [row for row in rows if row[column] in keep]
    with open(root / "fixations.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *kept])
    print(f"{root}: {len(names)} images, {len(kept)} fixations")
EOF
train=(--dataset fixations --data-dir "$WORK/train")
test=(--dataset fixations --data-dir "$WORK/test" --metric "$METRICS" --db "$DB" --json)

# 2. The parents on the held-out images: the dense model, and its DCLS from-dense conversion (the same function).
for explainer in $EXPLAINERS; do
    $AB score efficientnet_lite0 --explainer "$explainer" "${test[@]}" > "$WORK/scores/parent-dense-$explainer.json"
    if [[ " $VARIANTS " == *" dcls"* ]]; then
        $AB score efficientnet_lite0 --dcls --init from-dense --explainer "$explainer" "${test[@]}" > "$WORK/scores/parent-dcls-$explainer.json"
    fi
done

# 3. Train each variant and seed (an earlier run is resumed), then score it on the held-out images.
common=(--steps "$STEPS" --batch-size "$BATCH" --lr "$LR" --distill-from self --db "$DB")
tags=()
for variant in $VARIANTS; do
    case $variant in
        all)     options=(--harmonize "$LAMBDA" --freeze norms); seeds=$SEEDS ;;
        control) options=(--harmonize 0 --freeze norms); seeds=$CONTROL_SEEDS ;;
        dcls)    options=(--dcls --init from-dense --harmonize "$LAMBDA" --freeze all-but-positions --positions-lr "$POSITIONS_LR"); seeds=$DCLS_SEEDS ;;
        dcls-control) options=(--dcls --init from-dense --harmonize 0 --freeze all-but-positions --positions-lr "$POSITIONS_LR"); seeds=$DCLS_SEEDS ;;
        *) echo "unknown variant $variant (all, control, dcls, dcls-control)" >&2; exit 2 ;;
    esac
    for seed in $seeds; do
        tag="lite0-harmonize-$variant-s$seed"
        out="$WORK/$tag"
        resume=()
        [ -f "$out/last.pt" ] && resume=(--resume "$out/last.pt")
        /usr/bin/time -f "$tag: %e s wall" $AB train efficientnet_lite0 "${train[@]}" "${common[@]}" "${options[@]}" --seed "$seed" \
            --out "$out" --tag "$tag" "${resume[@]}"
        for explainer in $EXPLAINERS; do
            $AB score --trained "$tag" --explainer "$explainer" "${test[@]}" > "$WORK/scores/$tag-$explainer.json"
        done
        tags+=("$tag")
    done
done

# 4. Top-1 agreement with the parent on the held-out images (no labels: the parent's prediction is the reference).
"$PY" - "$WORK/test" "$DB" "${tags[@]}" <<'EOF'
import sys
from dataclasses import replace

import torch

from alignbench.datasets import collate, open_dataset, torch_dataset
from alignbench.models import load_model
from alignbench.scoring import trained_request

test, db, *tags = sys.argv[1:]
dataset = open_dataset("fixations", test)
predictions = {}


def top1(request):
    model = load_model(request).eval()
    items = torch_dataset(dataset, model.alignbench_info.preprocessing, reference_ranks=False)
    out = []
    with torch.no_grad():
        for start in range(0, len(items), 20):
            batch = collate([items[i] for i in range(start, min(start + 20, len(items)))])
            out.append(model(batch["image"]).argmax(1))
    return torch.cat(out)


for tag in tags:
    request = trained_request(tag, db)
    parent = replace(request, checkpoint=None, tag=None, init="from-dense" if request.dcls else None)
    key = (parent.dcls,)
    if key not in predictions:
        predictions[key] = top1(parent)
    agreement = float((top1(request) == predictions[key]).float().mean())
    print(f"{tag}: top-1 agreement with its parent on {len(dataset)} held-out images {agreement:.3f}")
EOF

# 5. What training changed, per explainer and metric: each trained model against its parent (paired
#    bootstrap CI; the centre-bias row says whether either beats the dataset's centre bias), and mean ± spread over seeds.
$AB models --trained --db "$DB"
for explainer in $EXPLAINERS; do
    for metric in ${METRICS//,/ }; do
        $AB compare --against parent --dataset fixations --explainer "$explainer" --metric "$metric" --db "$DB" || true
    done
done
"$PY" - "$WORK/scores" "$METRICS" $EXPLAINERS <<'EOF'
import json, re, statistics, sys
from collections import defaultdict
from pathlib import Path

scores, metrics, explainers = Path(sys.argv[1]), sys.argv[2].split(","), sys.argv[3:]
table = defaultdict(list)  # (variant, explainer) -> the metrics of each seed
for path in sorted(scores.glob("*.json")):  # {tag}-{explainer}.json, parent-{dense,dcls}-{explainer}.json
    explainer = next((e for e in explainers if path.stem.endswith("-" + e)), None)
    lines = path.read_text().strip().splitlines()
    if explainer is None or not lines:
        continue
    variant = re.sub(r"-s\d+$", "", path.stem[: -len(explainer) - 1])
    table[(variant, explainer)].append(json.loads(lines[-1])["metrics"])
print(f"{'variant':32s} {'explainer':18s} " + " ".join(f"{m:>17s}" for m in metrics))
for (variant, explainer), runs in sorted(table.items()):
    cells = []
    for metric in metrics:
        values = [run[metric] for run in runs if run.get(metric) is not None]
        if len(values) > 1:
            cells.append(f"{statistics.mean(values):.4f} ± {max(values) - min(values):.4f}".rjust(17))
        else:
            cells.append((f"{values[0]:.4f}" if values else "-").rjust(17))
    print(f"{variant:32s} {explainer:18s} " + " ".join(cells) + f"   (n={len(runs)})")
print("mean ± spread (max − min) over seeds")
EOF
