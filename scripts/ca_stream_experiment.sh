#!/usr/bin/env bash
# The README's CA-Stream experiment on this CPU: efficientnet_lite0 with a CA-Stream trained on the
# first 800 images of ../shared/data/imagenet-samples-256 (labels.csv order; backbone frozen), then
# Grad-CAM of the model with global average pooling (the parent) and with the stream, scored with the
# paper's faithfulness metrics on the last 200 images and on the embedded sample, and compared.
#
#   scripts/ca_stream_experiment.sh [WORKDIR] [EPOCHS] [DEL_INS_STEPS]
#
# The 200 evaluation images are one per class, classes the training never saw (fine for a pooling
# trained in front of a frozen classifier). The split is images/ + labels.csv only: the folder
# dataset without heatmaps/ has no reference maps, which the faithfulness metrics used here never read.
set -euo pipefail

WORK=${1:-ca_stream_experiment}
EPOCHS=${2:-6}
STEPS=${3:-16}
SAMPLES=${ALIGNBENCH_SAMPLES:-$(dirname "$0")/../../shared/data/imagenet-samples-256}
ALIGNBENCH=${ALIGNBENCH:-alignbench}
PYTHON=${PYTHON:-python}
DB="sqlite:///$(realpath -m "$WORK")/store.db"
METRICS=average-drop,average-gain,average-increase,insertion,deletion

mkdir -p "$WORK"
"$PYTHON" - "$SAMPLES" "$WORK" <<'EOF'
import csv, os, sys
from pathlib import Path

samples, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
with open(samples / "labels.csv", newline="") as handle:
    header, *rows = list(csv.reader(handle))
for name, part in (("train800", rows[:800]), ("eval200", rows[800:])):
    root = work / name
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *part])
    for row in part:
        image, link = samples / "images" / row[0], root / "images" / row[0]
        if not link.exists():
            os.symlink(image, link)
print(f"split {len(rows)} images: {work}/train800, {work}/eval200")
EOF

time "$ALIGNBENCH" train efficientnet_lite0 --ca-stream --data "$WORK/train800" --val "$WORK/eval200" \
    --out "$WORK/lite0-ca" --epochs "$EPOCHS" --tag lite0-ca --db "$DB" --json > "$WORK/train.json"

for dataset in "folder --data-dir $WORK/eval200" "sample"; do
    # shellcheck disable=SC2086
    time "$ALIGNBENCH" score efficientnet_lite0 --explainer gradcam --dataset $dataset --metric "$METRICS" \
        --steps "$STEPS" --db "$DB" --json > "$WORK/score-gap-${dataset%% *}.json"
    # shellcheck disable=SC2086
    time "$ALIGNBENCH" score --trained lite0-ca --explainer gradcam --dataset $dataset --metric "$METRICS" \
        --steps "$STEPS" --db "$DB" --json > "$WORK/score-ca-${dataset%% *}.json"
    for metric in ${METRICS//,/ }; do
        "$ALIGNBENCH" compare --against parent --dataset "${dataset%% *}" --explainer gradcam --metric "$metric" --db "$DB" \
            > "$WORK/compare-${dataset%% *}-$metric.txt"
    done
done
echo "done: $WORK (store $DB)"
