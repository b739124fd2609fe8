"""End-to-end wall time of `alignbench --help`, `runs list`, `compare` and `report` on the demo store,
each as a ratio to `python -c "import typer, rich"` measured in the same run.

    .venv/bin/python benchmarks/cli_latency.py [--repeats 5] [--json]

The demo store is ``alignbench.db.example`` (what ``make example-db`` writes) copied to a temporary
directory. Each command runs in a fresh process (``python -m alignbench ...``, output discarded), as a
user runs it: interpreter start and imports included, from bytecode caches (an installed package has
them; with PYTHONDONTWRITEBYTECODE set, as in our shells, every alignbench module would be compiled
again at each start): the processes write and read their caches under a temporary
PYTHONPYCACHEPREFIX, filled by one uncounted run of each command. The rounds interleave the reference and the
commands so that a machine busy with other work slows them alike; the ratio of the medians (of
--repeats rounds) is the figure, the seconds are for scale. The targets are issue 21's: the lazy
command group lists the commands without importing them, and store-only commands never import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE_DB = Path(__file__).resolve().parents[1] / "alignbench.db.example"
REFERENCE = [sys.executable, "-c", "import typer, rich"]
# command -> (its arguments, target ratio to REFERENCE)
COMMANDS: dict[str, tuple[list[str], float]] = {
    "--help": (["--help"], 1.5),
    "runs list": (["runs", "list"], 5.0),
    "compare": (["compare"], 8.0),
    "report": (["report"], 8.0),
}


def wall_time(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return seconds


def measure(repeats: int, db: str, pycache: str) -> dict[str, list[float]]:
    env = {**os.environ, "COLUMNS": "160", "PYTHONPYCACHEPREFIX": pycache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    runs = {name: [*args, *([] if name == "--help" else ["--db", db])] for name, (args, _) in COMMANDS.items()}
    times: dict[str, list[float]] = {"reference": [], **{name: [] for name in COMMANDS}}
    # the first start of each reads the files from disk and writes the bytecode caches; not counted
    for command in [REFERENCE, *([sys.executable, "-m", "alignbench", *args] for args in runs.values())]:
        wall_time(command, env)
    for _ in range(repeats):
        times["reference"].append(wall_time(REFERENCE, env))
        for name, args in runs.items():
            times[name].append(wall_time([sys.executable, "-m", "alignbench", *args], env))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds; each figure is the median (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="alignbench-cli-latency-") as tmp:
        db = Path(tmp) / "demo.db"
        shutil.copyfile(EXAMPLE_DB, db)
        times = measure(args.repeats, f"sqlite:///{db}", str(Path(tmp) / "pycache"))
    reference = statistics.median(times["reference"])
    rows = []
    for name, (_, target) in COMMANDS.items():
        seconds = statistics.median(times[name])
        rows.append(
            {"command": name, "seconds": seconds, "ratio": seconds / reference, "target": target, "met": seconds / reference <= target}
        )
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"reference_seconds": reference, "repeats": args.repeats, "load_average": load, "commands": rows}))
        return
    print(
        f"python -c 'import typer, rich': {reference:.3f} s (median of {args.repeats}); "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores"
    )
    for row in rows:
        verdict = "met" if row["met"] else "NOT met"
        print(f"  alignbench {row['command']:10s} {row['seconds']:.3f} s  {row['ratio']:5.2f}x  (target <= {row['target']:g}x: {verdict})")


if __name__ == "__main__":
    main()
