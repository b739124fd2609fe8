"""Time `alignbench compare`, `alignbench report` and `alignbench report --html` on a big store: 16 runs × 52,000 images (+ centre bias).

    .venv/bin/python benchmarks/compare_report.py [--images 52000] [--repeats 3] [--db PATH] [--json]

Fills a temporary SQLite store with synthetic rows shaped like the paper's study (8 architectures ×
baseline/DCLS, threshold-gradcam, clickme-val, plus the centre-bias reference run: 17 runs, 884,000
image rows) and the gallery thumbnails the HTML report shows (made-up pictures and maps, 8 galleries
× 24 images × 2 runs: the report's second run, with every map stored), then times each command two ways:

- in-process: the library call plus formatting (what the command does after Python has started and
  imported alignbench);
- end to end: ``python -m alignbench compare|report --db ...`` in a fresh process, stdout to
  /dev/null, as a user runs it (interpreter start and imports included).

Prints the median of --repeats runs of each, wall-clock and CPU time, and the ratio of the end-to-end
wall time to its target (2 s; 5 s for the HTML report, written to a temporary directory), and the
HTML report's time as a multiple of `report`'s measured in the same run (target ≤ 1.3×: it reads each
run's scores once and renders its figures without querying again). A busy machine inflates wall times (the load average is printed with
them); CPU time (user + system, of the child process end to end) is what the command costs on an
idle machine. ``--db PATH`` reuses (or keeps) a filled store, since filling takes 15-30 s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

TARGET_S = {"compare": 2.0, "report": 2.0, "html": 5.0}
WRITES: list[tuple[float, int]] = []  # the HTML report's (seconds writing its files, files written), in process
HTML_OVER_REPORT_TARGET = 1.3


def fill(path: Path, n_images: int) -> float:
    from alignbench.html_report.build import missing_thumbnails, read_report_data
    from alignbench.store import open_store
    from alignbench.testing.synthetic import add_thumbnails, fill_paper_like_store

    start = time.perf_counter()
    with open_store(f"sqlite:///{path}") as store:
        fill_paper_like_store(store, n_images=n_images)
        with store.session() as session:
            needed = missing_thumbnails(session, read_report_data(session))
        add_thumbnails(store, needed)
    return time.perf_counter() - start


def _html_dir() -> str:
    return tempfile.mkdtemp(prefix="alignbench-html-")


def in_process(command: str, url: str) -> tuple[float, float]:
    from alignbench.analysis.compare import compare
    from alignbench.analysis.report import report
    from alignbench.cli.compare import print_result
    from alignbench.cli.report import _print_report
    from alignbench.html_report import write_html_report

    console = Console(file=io.StringIO(), width=160)
    directory = _html_dir()
    start, cpu = time.perf_counter(), time.process_time()
    if command == "compare":
        print_result(compare(url), console)
    elif command == "report":
        _print_report(report(url), console)
    else:
        result = write_html_report(directory, url)
        assert result.thumbnails_computed == 0 and not result.unavailable, "every gallery map must be stored"
        WRITES.append((result.seconds["write"], len(list(Path(directory).rglob("*")))))
    elapsed = time.perf_counter() - start, time.process_time() - cpu
    shutil.rmtree(directory)
    return elapsed


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def end_to_end(command: str, url: str) -> tuple[float, float]:
    directory = _html_dir()
    arguments = ["report", "--html", directory] if command == "html" else [command]
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run([sys.executable, "-m", "alignbench", *arguments, "--db", url], check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start, _children_cpu() - cpu
    shutil.rmtree(directory)
    return elapsed


def _median(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=52_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--db", type=Path, help="store file to fill (if missing) and reuse")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.db"
        fill_seconds = fill(path, args.images) if not path.exists() else 0.0
        url = f"sqlite:///{path}"
        results = {}
        for command in ("compare", "report", "html"):
            in_process(command, url)  # warm the OS file cache and the imports
            inside, inside_cpu = _median([in_process(command, url) for _ in range(args.repeats)])
            whole, whole_cpu = _median([end_to_end(command, url) for _ in range(args.repeats)])
            results[command] = {
                "in_process_s": inside,
                "in_process_cpu_s": inside_cpu,
                "end_to_end_s": whole,
                "end_to_end_cpu_s": whole_cpu,
                "ratio_to_target": whole / TARGET_S[command],
            }
    load = os.getloadavg()[0]
    html_over_report = {
        "in_process": results["html"]["in_process_s"] / results["report"]["in_process_s"],
        "end_to_end": results["html"]["end_to_end_s"] / results["report"]["end_to_end_s"],
        "end_to_end_cpu": results["html"]["end_to_end_cpu_s"] / results["report"]["end_to_end_cpu_s"],
    }
    if args.json:
        print(
            json.dumps(
                {
                    "images": args.images,
                    "runs": 17,
                    "fill_s": fill_seconds,
                    "load_average_1min": load,
                    "targets_s": TARGET_S,
                    **results,
                    "html_over_report": html_over_report,
                    "html_over_report_target": HTML_OVER_REPORT_TARGET,
                    "html_write_s": statistics.median(w[0] for w in WRITES),
                }
            )
        )
        return
    print(f"store: 16 runs + centre bias × {args.images:,} images" + (f" (filled in {fill_seconds:.1f} s)" if fill_seconds else ""))
    print(f"load average (1 min): {load:.2f} on {os.cpu_count()} cores")
    for command, r in results.items():
        print(
            f"{command:8s} in-process {r['in_process_s']:.2f} s (cpu {r['in_process_cpu_s']:.2f} s) · "
            f"end to end {r['end_to_end_s']:.2f} s (cpu {r['end_to_end_cpu_s']:.2f} s) "
            f"= {r['ratio_to_target']:.2f} × the {TARGET_S[command]:.0f} s target"
        )
    write_s, n_files = statistics.median(w[0] for w in WRITES), WRITES[-1][1]
    print(f"html: of which writing its {n_files} files (pictures, figures, page): {write_s:.2f} s (the disk's file creation)")
    print(
        f"report --html / report: in-process {html_over_report['in_process']:.2f}×, end to end {html_over_report['end_to_end']:.2f}× "
        f"(cpu {html_over_report['end_to_end_cpu']:.2f}×); target ≤ {HTML_OVER_REPORT_TARGET}×"
    )


if __name__ == "__main__":
    main()
