"""Check alignbench's fixation metrics against pysaliency itself, on real NUS eye-tracking data.

pysaliency is never a dependency (it needs numpy < 2 and setuptools < 81), so this runs in two steps
and two environments:

    .venv/bin/python scripts/check_fixation_metrics_against_pysaliency.py ours /tmp/fixation_check.npz
    python -m venv /tmp/psvenv && /tmp/psvenv/bin/pip install "numpy<2" "setuptools<81" torch pysaliency
    /tmp/psvenv/bin/python scripts/check_fixation_metrics_against_pysaliency.py theirs /tmp/fixation_check.npz

Step ``ours`` opens ``nus-scene`` (../shared/data/nus-scene-500) and, for six held-out stimuli of
several sizes (283×213 to 2000×1330), scores three maps at the stimulus size with
``alignbench.metrics.fixation``: the dataset's leave-one-out centre bias, a smooth random map, and
that map quantised to 21 levels (ties; mostly constant, where alignbench says NULL and pysaliency 0).
Step ``theirs`` computes the same with pysaliency: ``SaliencyMapModel.AUC_Judd(jitter=False)``,
``metrics.NSS`` (mean over the image's fixations), ``metrics.CC``, ``metrics.MIT_KLDiv``,
``metrics.SIM``, the shuffled AUC as ``roc.general_roc`` of the fixated values against the other
images' fixations rescaled to this size (``FullShuffledNonfixationProvider``), and information gain
written from its definition (pysaliency scores probabilistic models, not saliency maps), then prints
every pair and the largest difference per metric.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NUS = ROOT.parent / "shared" / "data" / "nus-scene-500"
PICKS = (400, 401, 410, 433, 460, 499)  # positions of 401, 402, 411, 434, 461, 500.jpg
EPS = 2.2204e-16


def ours(path: Path) -> None:
    from scipy.ndimage import gaussian_filter

    from alignbench.datasets import open_dataset, torch_dataset
    from alignbench.metrics import fixation as F
    from alignbench.models.preprocessing import Preprocessing

    dataset = open_dataset("nus-scene", NUS)
    items = torch_dataset(dataset, Preprocessing(input_size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3), reference_ranks=False)
    rng = np.random.default_rng(0)
    arrays, results = {}, []
    for k, index in enumerate(PICKS):
        item = items[index]
        height, width = item["stimulus_size"]
        xs, ys = item["fixations"][:, 0], item["fixations"][:, 1]
        other = item["other_fixations"]
        smooth = gaussian_filter(rng.random((height, width)), 0.05 * max(height, width)).astype(np.float32)
        for name, saliency in (("centre-bias", item["baseline"]), ("smooth", smooth), ("quantised", np.round(smooth * 20) / 20)):
            key = f"{k}-{name}"
            arrays |= {
                f"{key}/map": saliency,
                f"{key}/xs": xs,
                f"{key}/ys": ys,
                f"{key}/density": item["density"],
                f"{key}/baseline": item["baseline"],
                f"{key}/other_xs": other[:, 0],
                f"{key}/other_ys": other[:, 1],
            }
            values = {
                "nss": F.nss(saliency, xs, ys),
                "auc_judd": F.auc_judd(saliency, xs, ys),
                "sauc": F.sauc(saliency, xs, ys, other[:, 0], other[:, 1]),
                "cc": F.cc(saliency, item["density"]),
                "kl": F.kl(saliency, item["density"]),
                "sim": F.sim(saliency, item["density"]),
                "ig": F.information_gain(saliency, item["baseline"], xs, ys),
            }
            results.append({"key": key, "image": dataset.image_ids()[index], "values": {m: float(v) for m, v in values.items()}})
    arrays["results"] = np.array(json.dumps(results))
    np.savez(path, **arrays)
    print(f"wrote {len(results)} maps' scores to {path}")


def theirs(path: Path) -> None:
    import pysaliency
    from pysaliency.metrics import CC, NSS, SIM, MIT_KLDiv
    from pysaliency.roc import general_roc

    data = np.load(path)
    worst: dict[str, float] = {}
    for result in json.loads(str(data["results"])):
        key = result["key"]
        saliency = data[f"{key}/map"].astype(float)
        xs, ys, density = data[f"{key}/xs"], data[f"{key}/ys"], data[f"{key}/density"].astype(float)
        height, width = saliency.shape

        class Map(pysaliency.SaliencyMapModel):
            def __init__(self, saliency_map: np.ndarray) -> None:
                super().__init__(caching=False)
                self.fixed_map = saliency_map

            def _saliency_map(self, stimulus):
                return self.fixed_map

        stimuli = pysaliency.Stimuli([np.zeros((height, width, 3), dtype=np.uint8)])
        fixations = pysaliency.Fixations.create_without_history(xs, ys, np.zeros(len(xs), dtype=int))
        # the pixel of a fixation: int(x) (pysaliency's x_int); x in (-1, 0) is pixel 0
        fixated = saliency[ys.astype(int), xs.astype(int)]
        other = saliency[
            np.clip(data[f"{key}/other_ys"].astype(int), 0, height - 1), np.clip(data[f"{key}/other_xs"].astype(int), 0, width - 1)
        ]
        p = saliency - saliency.min() if saliency.min() < 0 else saliency
        p, b = p / p.sum(), data[f"{key}/baseline"].astype(float)
        b = b / b.sum()
        reference = {
            "nss": float(NSS(saliency, xs, ys).mean()),
            "auc_judd": float(Map(saliency).AUC_Judd(stimuli, fixations, jitter=False)),
            "sauc": float(general_roc(np.asarray(fixated, float), np.asarray(other, float))[0]),
            "cc": float(CC(saliency, density)),
            "kl": float(MIT_KLDiv(saliency, density)),
            "sim": float(SIM(saliency, density)),
            "ig": float(np.mean(np.log2(EPS + p[ys.astype(int), xs.astype(int)]) - np.log2(EPS + b[ys.astype(int), xs.astype(int)]))),
        }
        cells = []
        for metric, value in reference.items():
            mine = result["values"][metric]
            if mine == mine:  # NaN: alignbench's undefined (a constant map), where pysaliency says 0
                worst[metric] = max(worst.get(metric, 0.0), abs(mine - value))
            cells.append(f"{metric} {mine:.6f}/{value:.6f}")
        print(f"{key:16s} {result['image']} {width}x{height} {len(xs):3d} fixations  " + "  ".join(cells))
    print("largest |alignbench - pysaliency| (defined values):", {m: f"{v:.1e}" for m, v in worst.items()})


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("ours", "theirs"):
        sys.exit("usage: check_fixation_metrics_against_pysaliency.py ours|theirs FILE.npz")
    (ours if sys.argv[1] == "ours" else theirs)(Path(sys.argv[2]))
