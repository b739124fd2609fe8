"""Time the first `alignbench report --html` (it computes the gallery maps) against the second (it reuses them).

    .venv/bin/python benchmarks/html_thumbnails.py [--repeats 3] [--json]

Scores efficientnet_lite0 (real weights) on the embedded sample with Threshold-Grad-CAM and with
Grad-CAM into a temporary store: two runs of one model, whose galleries (3 × 8 images, here every one
of the 10 sample images) need 20 image thumbnails of each kind. Then, per repeat (the thumbnails
deleted in between):

- the first report, in-process: its time split into reading the store, loading the model, the
  explanations (``explain_batch`` on batches of the gallery images), the rest of the thumbnail step
  (reading and preprocessing the images, the Spearman check against the stored scores, PNG encoding,
  storing) and building and writing the page;
- the second report, end to end in a fresh process (``python -m alignbench report --html``), which
  must import no torch.

The reference measured in the same run is ``score``'s own explanation time for the same images and
model (its compute time, per image), so the thumbnail step's explanations can be compared with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from alignbench.html_report import write_html_report
    from alignbench.scoring import ScoreRequest, score

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        url = f"sqlite:///{db}"
        scored = [score(ScoreRequest(explainer=method, workers=0), db=url) for method in ("threshold-gradcam", "gradcam")]
        score_per_image = sum(r.seconds for r in scored) / sum(r.computed_images for r in scored)
        firsts, seconds_ = [], []
        for repeat in range(args.repeats):
            with sqlite3.connect(db) as con:
                con.execute("DELETE FROM thumbnail")
            start = time.perf_counter()
            result = write_html_report(Path(tmp) / f"first-{repeat}", url)
            total = time.perf_counter() - start
            assert result.thumbnails_computed == 20 and not result.unavailable, result
            firsts.append({"total_s": total, **{k: v for k, v in result.seconds.items()}})
            code = (
                "import sys, time; t = time.perf_counter(); from alignbench.cli.app import main; sys.argv = ['alignbench', 'report', "
                f"'--html', {str(Path(tmp) / f'second-{repeat}')!r}, '--db', {url!r}]\n"
                "try:\n    main()\nexcept SystemExit:\n    pass\n"
                "print('torch' in sys.modules, file=sys.stderr)"
            )
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            seconds_.append(time.perf_counter() - start)
            assert proc.stderr.strip().splitlines()[-1] == "False", "the second report imported torch"

    def median(key: str) -> float:
        return statistics.median(f[key] for f in firsts)

    explain = median("thumbnails_explain")
    step = median("thumbnails_explain") + median("thumbnails_other")
    figures = {
        "load_average_1min": os.getloadavg()[0],
        "images": 20,
        "first_report_s": median("total_s"),
        "read_s": median("read"),
        "model_load_s": median("thumbnails_load"),
        "explain_s": explain,
        "thumbnail_other_s": median("thumbnails_other"),
        "page_s": median("page"),
        "explain_share_of_thumbnail_step": explain / step,
        "explain_per_image_s": explain / 20,
        "score_per_image_s": score_per_image,
        "second_report_end_to_end_s": statistics.median(seconds_),
    }
    if args.json:
        print(json.dumps(figures))
        return
    f = figures
    print(f"load average (1 min): {f['load_average_1min']:.2f} on {os.cpu_count()} cores; medians of {args.repeats} repeats")
    print(
        f"first report {f['first_report_s']:.2f} s: read {f['read_s']:.2f} s · model load {f['model_load_s']:.2f} s · "
        f"explanations {f['explain_s']:.2f} s · rest of the thumbnail step {f['thumbnail_other_s']:.2f} s · page {f['page_s']:.2f} s"
    )
    print(
        f"explanations are {f['explain_share_of_thumbnail_step']:.0%} of the thumbnail step (model load aside): "
        f"{1000 * f['explain_per_image_s']:.0f} ms per image, against {1000 * f['score_per_image_s']:.0f} ms per image in `score` (explain + score + store)"
    )
    print(f"second report (maps stored, no torch) end to end {f['second_report_end_to_end_s']:.2f} s")


if __name__ == "__main__":
    main()
