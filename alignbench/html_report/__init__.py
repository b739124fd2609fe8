"""``alignbench report --html DIR``: a static report, with galleries of the maps, written to a directory.

The one library function the command calls, :func:`write_html_report`:

1. checks the output directory before anything else (see :class:`OutputDirectory`);
2. reads what the report shows from the store (``build.read_report_data``);
3. computes the thumbnails its galleries lack (``thumbnails``, the only step that imports torch,
   skipped when every thumbnail is stored) and stores them, so the next report reuses them;
4. builds the page model from the store (``build.build_page``) and writes ``DIR/index.html``
   (``render.render_page``) and its pictures and figures.

The package, in the order the data flows: ``page`` (the page model: plain dataclasses), ``painter``
(the pictures and figures, matplotlib), ``gallery`` (which images each gallery shows, and its rows
of pictures), ``build`` (the page built from the store), ``render`` (the Jinja2 templates in
``templates/``), and ``thumbnails`` (the gallery maps computed and stored; torch).

An empty or missing store gives a page that says so. A run whose model or data is not on this
machine gets a gallery that says which and why; the rest of the report is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alignbench.analysis import DEFAULT_BINS, NOTHING_STORED
from alignbench.analysis.runs import RunFilter
from alignbench.errors import AlignbenchError, StoreError
from alignbench.html_report.build import build_page, missing_thumbnails, read_report_data
from alignbench.html_report.gallery import DEFAULT_GALLERY, DEFAULT_SEED
from alignbench.html_report.page import message_page
from alignbench.html_report.render import render_page
from alignbench.store import StoreMissing, open_store, open_store_to_read, resolve_url

MANIFEST = ".alignbench-report.json"  # the files a report wrote into its directory, and nothing else
INDEX = "index.html"


@dataclass
class HtmlReportResult:
    index: Path
    n_runs: int
    n_galleries: int
    thumbnails_computed: int = 0  # images whose thumbnails this report computed (and stored)
    unavailable: dict[int, str] = field(default_factory=dict)  # run id → why its maps are not shown
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went
    message: str | None = None  # why the report is empty


class OutputDirectory:
    """Where a report is written, and the files of it that an earlier report wrote (its manifest).

    A directory that is missing, empty or holds only an earlier report is written; one that holds
    other files is refused unless ``force``, and even then nothing the report did not write is
    deleted or overwritten: files of an earlier report that this one no longer needs are removed,
    every other file is left alone. A file is the earlier report's only while it holds the bytes
    whose sha256 the manifest recorded: a name added to the manifest, or a file edited since, is
    someone else's (an index.html that is not the report's is refused even with ``force``). The
    files an older alignbench listed without digests may be written over, never deleted.
    """

    def __init__(self, path: str | os.PathLike[str], *, force: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.previous: set[str] = set()  # files an earlier report wrote, which this one may write over
        self.verified: set[str] = set()  # those of them holding the bytes the manifest recorded: may be deleted
        if self.path.exists() and not self.path.is_dir():
            raise AlignbenchError(f"--html {self.path} is a file; give a directory (it is created if missing)")
        if self.path.is_dir():
            self.previous, self.verified = self._owned()
            foreign = sorted(self._files() - self.previous - {MANIFEST})
            if INDEX in foreign:  # checked first: --force would not write over it either
                raise AlignbenchError(
                    f"--html {self.path} holds an index.html this report did not write; move it or choose another directory"
                )
            if foreign and not force:
                shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                raise AlignbenchError(
                    f"--html {self.path} holds files this report did not write ({shown}); choose an empty or new directory, "
                    "or pass --force to write beside them (they are kept)"
                )
        self._check_writable()

    def _manifest(self) -> dict[str, tuple[str, ...] | None]:
        """name → the sha256 digests its file may hold and still be the report's (None: an older
        alignbench's manifest, a list of names without digests)."""
        try:
            listed = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        if isinstance(listed, list):
            listed = {name: None for name in listed if isinstance(name, str)}
        if not isinstance(listed, dict):
            return {}
        recorded: dict[str, tuple[str, ...] | None] = {}
        for name, digests in listed.items():
            # only plain paths inside the directory: a manifest never makes the report touch anything else
            if Path(name).is_absolute() or ".." in Path(name).parts:
                continue
            if digests is not None:
                digests = (digests,) if isinstance(digests, str) else tuple(d for d in digests if isinstance(d, str))
            recorded[name] = digests
        return recorded

    def _owned(self) -> tuple[set[str], set[str]]:
        """(files the report may write over, files it may delete)."""
        owned, verified = set(), set()
        for name, digests in self._manifest().items():
            file = self.path / name
            if not file.is_file() or file.is_symlink():
                continue
            if digests is None:
                owned.add(name)
            elif _sha256(file.read_bytes()) in digests:
                owned.add(name)
                verified.add(name)
        return owned, verified

    def _record(self, files: dict[str, tuple[str, ...]]) -> None:
        partial = self.path / f"{MANIFEST}.partial"
        partial.write_text(json.dumps({"files": {name: list(files[name]) for name in sorted(files)}}, indent=0), encoding="utf-8")
        os.replace(partial, self.path / MANIFEST)

    def _files(self) -> set[str]:
        return {str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file() or p.is_symlink()}

    def _check_writable(self) -> None:
        existing = self.path
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise AlignbenchError(f"--html {self.path}: {existing} is not a writable directory; choose another directory")

    def write(self, files: dict[str, bytes]) -> Path:
        """Write ``files`` (relative path → bytes), remove what the previous report wrote and this one
        does not, and record the manifest; returns the path of the index."""
        foreign = {name for name in files if (self.path / name).exists()} - self.previous - {MANIFEST}
        if foreign:
            raise AlignbenchError(
                f"--html {self.path}: {sorted(foreign)[0]} exists and was not written by this report; move it or choose another directory"
            )
        digests = {name: _sha256(content) for name, content in files.items()}
        try:
            for directory in sorted({(self.path / name).parent for name in files}):
                directory.mkdir(parents=True, exist_ok=True)
            # first: while files are replaced one by one, each holds its old or its new bytes, both recorded
            interim = {name: (_sha256((self.path / name).read_bytes()),) for name in self.verified}
            for name, digest in digests.items():
                interim[name] = (*interim.get(name, ()), digest)
            self._record(interim)
            for name, content in sorted(files.items(), key=lambda item: item[0] == INDEX):  # the page last
                target = self.path / name
                if name in self.previous and _sha256(target.read_bytes()) == digests[name]:
                    continue  # already these bytes (pictures are named by a hash of them)
                partial = target.with_name(f".{target.name}.partial")
                partial.write_bytes(content)
                os.replace(partial, target)  # a reader of the old file never sees half the new one
            for name in sorted(self.verified - set(files)):
                stale = self.path / name
                if stale.is_file() and _sha256(stale.read_bytes()) in interim[name]:
                    stale.unlink()
                    if stale.parent != self.path and not any(stale.parent.iterdir()):
                        stale.parent.rmdir()
            self._record({name: (digest,) for name, digest in digests.items()})
        except OSError as error:
            raise AlignbenchError(f"cannot write the report to {self.path}: {error.strerror or error}") from None
        return self.path / INDEX


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _store_label(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy reads: open_store has refused it already
        return url


def _store_thumbnails(db: str | None, missing: dict[int, set[str]], **options):
    """Compute and store the thumbnails the galleries lack: the one write of ``report --html`` (at the
    store's own revision and journal mode). A store the user may only read keeps its galleries
    without maps, each saying why."""
    from alignbench.html_report.thumbnails import ThumbnailOutcome, compute_thumbnails  # torch: only when maps are missing

    try:
        writer = open_store(db, create=False, migrate=False, read_only=False)
    except StoreError as refused:
        reason = f"its maps are not stored yet and cannot be stored here ({refused.message.split(';')[0]})"
        return ThumbnailOutcome(unavailable={run_id: reason for run_id in missing})
    with writer:
        return compute_thumbnails(writer, missing, **options)


def write_html_report(
    directory: str | os.PathLike[str],
    db: str | None = None,
    runs: RunFilter | None = None,
    *,
    gallery: int = DEFAULT_GALLERY,
    seed: int = DEFAULT_SEED,
    bins: int = DEFAULT_BINS,
    force: bool = False,
    device: str = "auto",
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
    **filters,
) -> HtmlReportResult:
    """Write the HTML report of the runs ``runs`` (or ``filters``: the fields of ``RunFilter``) selects
    in the store at ``db`` to ``directory``; with ``run_id``, the page of that run (every image).

    ``gallery``: images per gallery section (0: no galleries, nothing computed); ``seed``: the random
    section's draw; ``bins``: the histograms'. Raises AlignbenchError for an output directory that cannot be used (before
    anything is read or computed), a bad filter or an unknown run; an empty store is not an error.
    """
    runs = RunFilter.of(runs, **filters)
    if gallery < 0:
        raise AlignbenchError(f"--gallery must be 0 (no galleries) or more, got {gallery}")
    if batch_size < 1:
        raise AlignbenchError(f"--batch-size must be at least 1, got {batch_size}")
    out = OutputDirectory(directory, force=force)
    started = time.perf_counter()
    url = resolve_url(db)
    try:
        store = open_store_to_read(db)
    except StoreMissing:
        page = message_page(NOTHING_STORED, store=_store_label(url), filters=runs.options() or "none")
        index = out.write({INDEX: render_page(page).encode("utf-8")})
        return HtmlReportResult(index, 0, 0, message=NOTHING_STORED)
    outcome = None
    try:
        with store.engine.connect() as connection:  # Core only: the report never imports the ORM
            data = read_report_data(connection, runs, gallery=gallery, seed=seed, bins=bins)
            missing = missing_thumbnails(connection, data)
        read_seconds = time.perf_counter() - started
        if missing:
            outcome = _store_thumbnails(db, missing, device=device, batch_size=batch_size, progress=progress)
        page_started = time.perf_counter()
        with store.engine.connect() as connection:
            page = build_page(connection, data, store=_store_label(store.url), unavailable=outcome.unavailable if outcome else {})
    finally:
        store.close()
    files = dict(page.assets)
    files[INDEX] = render_page(page).encode("utf-8")
    write_started = time.perf_counter()
    index = out.write(files)
    seconds = {"read": read_seconds, "page": write_started - page_started, "write": time.perf_counter() - write_started}
    if outcome is not None:
        seconds |= {f"thumbnails_{name}": value for name, value in outcome.seconds.items()}
    return HtmlReportResult(
        index,
        len(data.stored.runs),
        len(page.galleries),
        outcome.computed if outcome else 0,
        dict(outcome.unavailable) if outcome else {},
        seconds,
        page.message,
    )
