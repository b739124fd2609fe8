#!/usr/bin/env bash
# The README's "Training for alignment" experiment, on this CPU, offline:
#
#   efficientnet_lite0 with DCLS --init from-dense (the dense function exactly), fine-tuned on the
#   first 800 images of imagenet-samples-256 (by labels.csv order) — positions only, every weight, and
#   with Grad-CAM consistency (λ = 25) — each checked on the last 200 (top-1 before and after, from
#   --val; and the faithfulness of its Threshold-Grad-CAM maps there: average drop / increase / gain,
#   which need no human maps) and scored before and after on the embedded sample (Spearman against its
#   box-derived maps, pointing game, energy in box), then `compare --against parent` with paired
#   bootstrap CIs.
#
#   scripts/train_experiment.sh                       # everything (about an hour on a quiet 2-core CPU)
#   STEPS=20 VARIANTS="pos" scripts/train_experiment.sh   # a shorter run of one variant
#
# Every command is an ordinary alignbench command; the store ($DB) keeps every run, so running the
# script again computes only what is missing (a finished training is resumed, i.e. only recorded again).
set -euo pipefail
cd "$(dirname "$0")/.."

SAMPLES=${SAMPLES:-../shared/data/imagenet-samples-256}
WORK=${WORK:-experiments/train}
DB=${DB:-sqlite:///$WORK/experiment.db}
STEPS=${STEPS:-100}
BATCH=${BATCH:-16}
LR=${LR:-1e-4}
POSITIONS_LR=${POSITIONS_LR:-0.01}
VARIANTS=${VARIANTS:-"pos all gc"}
AB=${AB:-.venv/bin/alignbench}
METRICS=spearman,pointing-game,energy-in-box
EVAL_METRICS=average-drop,average-increase,average-gain   # the 200 held-out images have no human maps or boxes

mkdir -p "$WORK"

# 1. The split: folder layouts (images/ + labels.csv) of symbolic links, first 800 rows / last 200.
.venv/bin/python - "$SAMPLES" "$WORK" <<'EOF'
import csv, os, sys
from pathlib import Path

samples, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
with open(samples / "labels.csv", newline="") as handle:
    rows = list(csv.reader(handle))
header, rows = rows[0], rows[1:]
assert len(rows) == 1000, f"{samples}/labels.csv has {len(rows)} rows, expected 1000"
for name, part in (("train800", rows[:800]), ("eval200", rows[800:])):
    images = work / name / "images"
    images.mkdir(parents=True, exist_ok=True)
    for row in part:
        link = images / row[0]
        if not link.exists():
            link.symlink_to(samples / "images" / row[0])
    with open(work / name / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *part])
print(f"split {samples}: {work}/train800 (800 images), {work}/eval200 (200 images)")
EOF

# 2. The parents, before training: dense and DCLS from-dense on the embedded sample and the 200.
eval200=(--dataset folder --data-dir "$WORK/eval200" --metric "$EVAL_METRICS" --db "$DB")
$AB score efficientnet_lite0 --metric "$METRICS" --db "$DB"
$AB score efficientnet_lite0 --dcls --metric "$METRICS" --db "$DB"
$AB score efficientnet_lite0 "${eval200[@]}"
$AB score efficientnet_lite0 --dcls "${eval200[@]}"

# 3. Train each variant (an earlier run is resumed: finished, it is only recorded again), then score it.
common=(--dcls --data "$WORK/train800" --val "$WORK/eval200" --steps "$STEPS" --batch-size "$BATCH" --lr "$LR"
        --positions-lr "$POSITIONS_LR" --db "$DB")
for variant in $VARIANTS; do
    case $variant in
        pos) options=(--freeze all-but-positions) ;;
        all) options=(--freeze none) ;;
        gc)  options=(--freeze none --gc-consistency 25) ;;
        *) echo "unknown variant $variant (pos, all, gc)" >&2; exit 2 ;;
    esac
    out="$WORK/lite0-dcls-$variant"
    resume=()
    [ -f "$out/last.pt" ] && resume=(--resume "$out/last.pt")
    $AB train efficientnet_lite0 "${common[@]}" "${options[@]}" --out "$out" --tag "lite0-dcls-$variant" "${resume[@]}"
    $AB score --trained "lite0-dcls-$variant" --metric "$METRICS" --db "$DB"
    $AB score --trained "lite0-dcls-$variant" "${eval200[@]}"
done

# 4. What training changed: each trained model against its parent, per metric, and the lineage.
$AB models --trained --db "$DB"
for metric in spearman pointing-game energy-in-box; do
    $AB compare --against parent --dataset sample --metric "$metric" --db "$DB"
done
for metric in ${EVAL_METRICS//,/ }; do
    $AB compare --against parent --dataset folder --metric "$metric" --db "$DB"
done
