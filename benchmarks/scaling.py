"""Scale-out figures: scoring throughput with torchrun, store insert rates, `study status` time.

    .venv/bin/python benchmarks/scaling.py                  # everything (a few minutes)
    .venv/bin/python benchmarks/scaling.py --only scoring --images 96

1. **Scoring, images/s**: resnet50 (random weights, a seeded state_dict passed as ``--checkpoint``:
   the cost does not depend on the values) with Threshold-Grad-CAM + Spearman on ClickMe-format
   shards written from real images (``benchmarks/score.py``'s ``write_shards``), through the
   ``alignbench score`` command itself, ``--workers 0`` so that each process decodes its own images and
   uses exactly the threads it is given:
   - 1 process on 1 thread (OMP_NUM_THREADS=1): the reference;
   - 2 processes on 1 thread each under ``torchrun --standalone --nproc_per_node 2`` (target ≥ 1.6×);
   - 1 process on 2 threads.
   Throughput is read from the store: every batch's rows carry their commit time, so images/s =
   rows committed after the last rank's first batch / time from then to the last commit. Start-up,
   model load and each rank's first batch (allocator warm-up) are left out for every configuration
   alike, so the three are compared in their steady state.
2. **Store inserts, rows/s**: writer processes each insert 16-row batches (the scorer's default batch)
   into one run, one transaction per batch as the scorer commits, all starting at the same instant;
   rows/s = all rows / (last writer's end − first writer's start). 1 and 2 writers, on SQLite (WAL)
   and on a throwaway PostgreSQL server with its default durability (``alignbench/testing/postgres.py``,
   fsync on).
3. **`study status`**: a store with 32 runs × 52,224 rows (the paper's grid: 8 architectures × {baseline,
   DCLS} × {Grad-CAM, Threshold-Grad-CAM}) matched to a 32-cell study by run key, on a ClickMe-format
   directory of 52,224 tiny records (status never decodes an image); the models' checkpoints are small
   files (only their digests enter the identity). Timed: ``alignbench study status`` end to end (best of
   3) against the target of 1 s, beside the interpreter start-up with the CLI imported (reference).
4. **An H100 estimate per run** (an estimate: no GPU here): the FLOPs of one image's forward pass,
   counted by ``torch.utils.flop_counter`` for the 16 models of the paper's grid;
   this CPU core's achieved FLOP/s on resnet50 as a share of its peak (from /proc/cpuinfo), that share
   of the H100's TF32 peak as its rate; the data side (decode, ClickMe preprocessing, reference
   ranks) measured per image on one core and shared by 8 DataLoader workers. A run takes the longer
   of the two (they overlap), model load and start-up left out.

The machine may be busy: the load average is printed before and after, and every figure is a ratio
to a reference measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATUS_IMAGES = 52_224  # the ClickMe validation set
TARGET_SPEEDUP = 1.6
TARGET_STATUS_S = 1.0


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _env(threads: int, cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "ALIGNBENCH_CACHE": str(cache),
        "PYTHONWARNINGS": "ignore",
    }


# --- 1. scoring throughput ------------------------------------------------------------------------


def steady_images_per_second(db: Path, processes: int) -> tuple[float, int]:
    """(images/s after every rank's first batch, rows counted) from the commit times of the rows."""
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT image_index, image_score.created_at FROM image_score JOIN run ON run.id = image_score.run_id "
        "JOIN model ON model.id = run.model_id WHERE model.name = 'resnet50'"
    ).fetchall()
    con.close()
    times = [(index, datetime.fromisoformat(str(when)).timestamp()) for index, when in rows]
    # a run started from scratch gives rank r the positions r, r + N, r + 2N, ... (alignbench.distributed)
    start = max(min(t for i, t in times if i % processes == rank) for rank in range(processes))
    end = max(t for _, t in times)
    after = sum(1 for _, t in times if t > start)
    return after / (end - start), after


def scoring(args: argparse.Namespace, tmp: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from score import offline_checkpoint, write_shards  # benchmarks/score.py

    shards = write_shards(tmp / "shards", args.images)
    checkpoint, weights = offline_checkpoint("resnet50", tmp)
    print(
        f"scoring: resnet50 ({weights}), threshold-gradcam + spearman, {args.images} ClickMe-format images, batch {args.batch_size}, --workers 0"
    )
    common = [
        "score",
        "resnet50",
        "--dataset",
        "clickme-val",
        "--data-dir",
        str(shards),
        "--workers",
        "0",
        "--batch-size",
        str(args.batch_size),
        "--json",
    ]
    if checkpoint is not None:
        common += ["--checkpoint", str(checkpoint)]
    configs = [("1 process x 1 thread", 1, 1), ("2 torchrun processes x 1 thread", 2, 1), ("1 process x 2 threads", 1, 2)]
    # warm: the shard index and reference ranks go into the cache once, outside the timed runs
    subprocess.run(
        [sys.executable, "-m", "alignbench", *common, "--limit", "1", "--db", f"sqlite:///{tmp / 'warm.db'}"],
        env=_env(1, tmp / "cache"),
        check=True,
        capture_output=True,
    )
    results: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    for repeat in range(args.repeats):
        for name, processes, threads in configs:
            db = tmp / f"scoring-{processes}x{threads}-{repeat}.db"
            launcher = (
                [sys.executable]
                if processes == 1
                else [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
            )
            done = subprocess.run(
                [*launcher, "-m", "alignbench", *common, "--db", f"sqlite:///{db}"],
                env=_env(threads, tmp / "cache"),
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            rate, counted = steady_images_per_second(db, processes)
            results[name].append(rate)
            print(f"  repeat {repeat + 1}: {name:32s} {rate:6.2f} img/s ({counted} images after every rank's first batch)")
    reference = results[configs[0][0]]
    print("scoring, against 1 process x 1 thread of the same repeat (interleaved, so under the same load):")
    for name, _, _ in configs[1:]:
        ratios = sorted(rate / ref for rate, ref in zip(results[name], reference))
        target = f"   (target >= {TARGET_SPEEDUP}x)" if name.startswith("2 torchrun") else ""
        print(f"  {name:32s} {', '.join(f'{r:.2f}x' for r in ratios)}; median {ratios[len(ratios) // 2]:.2f}x{target}")


# --- 2. store insert rate -------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys, time
    from types import SimpleNamespace
    from alignbench.store import open_store
    from alignbench.store import queries as q

    url, name, n, batch, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    identity = SimpleNamespace(name="m", dcls=False, recipe=None, init=None, weights_source="t", fingerprint="bench", checkpoint_sha256=None)
    with open_store(url) as store:
        with store.session(write=True) as session:
            model = q.upsert_model(session, identity)
            explainer = q.upsert_explainer(session, "gradcam", {})
            dataset = q.upsert_dataset(session, "bench", "fp", 2 * n)
            key = q.run_key("bench", "gradcam", {}, "fp", "aligned", ["spearman"])
            run = q.get_or_create_run(session, key=key, model=model, explainer=explainer, dataset=dataset, protocol="aligned",
                                      metrics=["spearman"], n_images=2 * n)
            run_id = run.id
            session.commit()
        time.sleep(max(0.0, start_at - time.time()))
        began = time.time()
        for first in range(0, n, batch):
            rows = [{"image_index": i, "image_id": f"{name}-{i}", "target": 1, "prediction": 1, "confidence": 0.5,
                     "spearman": i / n} for i in range(first, min(n, first + batch))]
            with store.session(write=True) as session:  # one transaction per batch, as the scorer commits
                q.insert_scores(session, run_id, rows)
                session.commit()
        print(began, time.time())
    """
)


def insert_rate(url: str, writers: int, rows: int, batch: int) -> float:
    from alignbench.store import open_store

    open_store(url).close()  # the schema exists before the clock starts
    start_at = time.time() + 3.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, f"w{k}", str(rows), str(batch), str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(writers)
    ]
    spans = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"writer failed: {err[-2000:]}")
        spans.append(tuple(map(float, out.split())))
    return writers * rows / (max(end for _, end in spans) - min(begin for begin, _ in spans))


def inserts(args: argparse.Namespace, tmp: Path) -> None:
    from alignbench.testing.postgres import LocalPostgres

    print(f"store inserts: {args.rows} rows per writer in batches of {args.insert_batch}, one transaction per batch")
    with LocalPostgres.start(durable=True) as server:
        for backend in ("sqlite", "postgresql"):
            rates = {}
            for writers in (1, 2):
                url = f"sqlite:///{tmp / f'inserts-{writers}.db'}" if backend == "sqlite" else server.create_database(f"inserts_{writers}")
                rates[writers] = insert_rate(url, writers, args.rows, args.insert_batch)
            print(f"  {backend:10s} 1 writer {rates[1]:8.0f} rows/s   2 writers {rates[2]:8.0f} rows/s ({rates[2] / rates[1]:4.2f}x)")


# --- 3. study status ------------------------------------------------------------------------------

_ARCHITECTURES = (
    "resnet50",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "caformer_s18",
    "convformer_s18",
    "fastvit_sa24",
    "fastvit_sa36",
)


def _tiny_clickme(out_dir: Path, n: int) -> Path:
    """``n`` ClickMe-format records of tiny JPEGs in 17 shards (status reads the index, never a pixel)."""
    import numpy as np

    from alignbench.datasets import ClickMeRecord, write_clickme_shard
    from alignbench.datasets._clickme import _jpeg

    out_dir.mkdir(parents=True, exist_ok=True)
    image = _jpeg(np.zeros((8, 8, 3), np.uint8), 50)
    heatmap = _jpeg(np.zeros((8, 8), np.uint8), 50)
    per_shard = -(-n // 17)
    for shard, start in enumerate(range(0, n, per_shard)):
        write_clickme_shard(
            out_dir / f"val-{shard}.tfrecords", (ClickMeRecord(image, heatmap, i % 1000) for i in range(start, min(n, start + per_shard)))
        )
    return out_dir


def status(args: argparse.Namespace, tmp: Path) -> None:
    import numpy as np

    os.environ["ALIGNBENCH_CACHE"] = str(tmp / "cache")
    from alignbench.datasets import open_dataset
    from alignbench.scoring.study import load_study
    from alignbench.store import open_store
    from alignbench.testing.synthetic import add_request_run

    shards = _tiny_clickme(tmp / "clickme", STATUS_IMAGES)
    checkpoints = tmp / "checkpoints"
    checkpoints.mkdir()
    lines = [
        'name = "status-benchmark"',
        "",
        "[[explainer]]",
        'method = "gradcam"',
        "",
        "[[explainer]]",
        'method = "threshold-gradcam"',
        "",
        "[[dataset]]",
        'name = "clickme-val"',
        f'data_dir = "{shards}"',
        "",
    ]
    for name in _ARCHITECTURES:
        for dcls in (False, True):
            path = checkpoints / f"{name}-{'dcls' if dcls else 'dense'}.pth"
            path.write_bytes(os.urandom(1024))  # only its digest enters the model's identity
            lines += ["[[model]]", f'name = "{name}"', f"dcls = {'true' if dcls else 'false'}", f'checkpoint = "{path}"', ""]
    study_file = tmp / "study.toml"
    study_file.write_text("\n".join(lines))
    requests = load_study(study_file).requests()
    dataset = open_dataset("clickme-val", shards)  # indexes the shards once, into the cache
    db = tmp / "status.db"
    print(f"study status: filling a store with {len(requests)} runs x {len(dataset):,} rows ...", flush=True)
    rng = np.random.default_rng(0)
    with open_store(f"sqlite:///{db}") as store:
        for request in requests:
            add_request_run(store, request, dataset, rng.uniform(-1, 1, len(dataset)), status="complete")
    env = _env(1, tmp / "cache")
    command = [sys.executable, "-m", "alignbench", "study", "status", str(study_file), "--db", f"sqlite:///{db}"]
    reference = [sys.executable, "-c", "import alignbench.cli.app"]

    def best(cmd: list[str]) -> float:
        times = []
        for _ in range(3):
            began = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - began)
            if done.returncode != 0:
                raise SystemExit(done.stderr)
        return min(times)

    summary = subprocess.run(command, env=env, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    took, start_up = best(command), best(reference)
    print(f"  {summary}")
    print(
        f"  alignbench study status: {took:.2f} s end to end (target < {TARGET_STATUS_S:.0f} s); "
        f"interpreter + CLI imports alone {start_up:.2f} s ({took / start_up:.2f}x)"
    )


# --- 4. an estimate of one run on one H100 ------------------------------------------------------

H100_TF32_DENSE = 494.7e12  # H100 SXM TF32 tensor-core peak without sparsity (NVIDIA data sheet); cuDNN runs fp32 convs in TF32 by default
WORKERS_PER_GPU = 8  # DataLoader workers per GPU assumed (an 8-GPU node with 64+ cores)


def _cpu_peak_per_core() -> tuple[float, str]:
    """fp32 FLOP/s of one core of this CPU: FMA width x 2 FMA units x clock, from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text()
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    mhz = float(next((line.split(":", 1)[1] for line in info.splitlines() if line.startswith("cpu MHz")), "2000"))
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = lanes * 2 * 2  # lanes x (multiply + add) x two FMA units
    return (
        per_cycle * mhz * 1e6,
        f"{'AVX-512' if lanes == 16 else 'AVX2' if lanes == 8 else 'SSE'} FMA, {mhz:.0f} MHz: {per_cycle} FLOP/cycle",
    )


def estimate(args: argparse.Namespace, tmp: Path) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from alignbench.datasets import open_dataset, torch_dataset
    from alignbench.explainers._split import gradient_evidence
    from alignbench.models import load_model
    from alignbench.models.preprocessing import Preprocessing

    sys.path.insert(0, str(Path(__file__).parent))
    from score import write_shards  # benchmarks/score.py

    torch.set_num_threads(1)
    x = torch.randn(8, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    flops = {}
    for name in _ARCHITECTURES:
        for dcls in (False, True):
            options = {"dcls": True, "init": "random"} if dcls else {}
            model = load_model(name, pretrained=False, **options).to(memory_format=torch.channels_last).eval().requires_grad_(False)
            # the forward pass; the head's backward (pool + classifier) adds ~0.1% and cannot be counted
            # here (the counter's module hooks reject autograd.grad on a leaf)
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x[:1])
            flops[(name, dcls)] = counter.get_total_flops()
            if (name, dcls) == ("resnet50", False):
                gradient_evidence(model, x)
                times = []
                for _ in range(3):
                    began = time.perf_counter()
                    gradient_evidence(model, x)
                    times.append(time.perf_counter() - began)
                cpu_rate = len(x) / min(times)
    peak, described = _cpu_peak_per_core()
    achieved = cpu_rate * flops[("resnet50", False)]
    efficiency = achieved / peak
    # the data side: decode + ClickMe preprocessing + reference ranks, one item at a time on one thread
    dataset = open_dataset("clickme-val", write_shards(tmp / "estimate-shards", 32))
    items = torch_dataset(dataset, Preprocessing(input_size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3))
    per_item = {}
    for label in ("ranks computed", "ranks cached"):  # the first run on a dataset computes the reference ranks
        began = time.perf_counter()
        for k in range(len(items)):
            items[k]
        per_item[label] = (time.perf_counter() - began) / len(items)
    gpu_rate = efficiency * H100_TF32_DENSE
    print(
        f"estimate: this CPU core {achieved / 1e9:.1f} GFLOP/s on resnet50's explanation ({cpu_rate:.2f} img/s x {flops[('resnet50', False)] / 1e9:.2f} GFLOP) "
        f"= {100 * efficiency:.0f}% of its peak ({described}); the same share of an H100's TF32 peak: {gpu_rate / 1e12:.0f} TFLOP/s"
    )
    print(
        f"  data per image on one core: {1e3 * per_item['ranks computed']:.1f} ms (first run on a dataset) / "
        f"{1e3 * per_item['ranks cached']:.1f} ms (reference ranks cached); {WORKERS_PER_GPU} workers per GPU"
    )
    print(f"  {'model':22s} {'GFLOP/img':>9s} {'GPU s/run':>9s} {'data s/run':>10s} {'est. min/run':>12s}")
    for (name, dcls), count in flops.items():
        gpu = STATUS_IMAGES * count / gpu_rate
        data = STATUS_IMAGES * per_item["ranks cached"] / WORKERS_PER_GPU
        label = name + (" + DCLS" if dcls else "")
        print(f"  {label:22s} {count / 1e9:9.2f} {gpu:9.1f} {data:10.1f} {max(gpu, data) / 60:12.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("scoring", "inserts", "status", "estimate"), help="run one part only")
    parser.add_argument("--images", type=int, default=64, help="images per scoring run (real images, ClickMe format)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the three scoring configurations")
    parser.add_argument("--rows", type=int, default=4000, help="rows per writer")
    parser.add_argument("--insert-batch", type=int, default=16)
    args = parser.parse_args()
    print(f"load average before: {load()}")
    with tempfile.TemporaryDirectory(prefix="alignbench-scaling-") as tmp_dir:
        tmp = Path(tmp_dir)
        os.environ["ALIGNBENCH_CACHE"] = str(tmp / "cache")
        for part, function in (("scoring", scoring), ("inserts", inserts), ("status", status), ("estimate", estimate)):
            if args.only in (None, part):
                function(args, tmp)
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
