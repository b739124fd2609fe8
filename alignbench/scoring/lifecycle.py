"""A run's life in the store, in the order it happens: opened (its row, with the model, explainer
setting and dataset rows it names), marked running by this process, kept alive by a heartbeat while
rows are written, and settled (complete or partial). Torch-free: the same steps for a model's run
and the centre-bias reference. Readers judge a running run by ``alignbench.store.liveness``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from sqlmodel import Session

from alignbench.scoring.identity import RunIdentity
from alignbench.store import Store
from alignbench.store import queries as q
from alignbench.store.liveness import HEARTBEAT_INTERVAL_S, RUNNING, this_process
from alignbench.store.tables import Run

COMPLETE, PARTIAL = "complete", "partial"


def open_run(
    session: Session,
    identity: RunIdentity,
    *,
    model: Any,
    dataset: Any,
    param_count: int | None = None,
    family: str | None = None,
    retag: bool = False,
) -> Run:
    """The run of ``identity``, created (with the rows it names) when the store has none yet.
    ``model`` is the weights' ModelIdentity (or a stand-in with its attributes), ``dataset`` the
    opened dataset; the caller commits."""
    model_row = q.upsert_model(session, model, param_count=param_count, family=family, retag=retag)
    explainer_row = q.upsert_explainer(session, identity.method, identity.params)
    dataset_row = q.upsert_dataset(
        session,
        dataset.name,
        dataset.fingerprint,
        len(dataset),
        ceiling=dataset.ceiling,
        location=str(getattr(dataset, "location", "") or "") or None,
    )
    return q.get_or_create_run(
        session,
        key=identity.key,
        model=model_row,
        explainer=explainer_row,
        dataset=dataset_row,
        protocol=identity.protocol,
        metrics=identity.metrics,
        n_images=len(dataset),
        precision=identity.precision,
    )


def mark_running(session: Session, run: Run, *, device: str, versions: Mapping[str, str]) -> None:
    """The run is being computed by this process (readers show it interrupted once it is gone)."""
    q.update_run(session, run, status=RUNNING, device=device, versions=versions)
    pid, host = this_process()
    q.record_process(session, run, pid=pid, host=host)


def settle_status(store: Store, run_id: int) -> str:
    """complete when the run has a row for every image of its dataset, else partial; returns it."""
    with store.session(write=True) as session:
        row = session.get(Run, run_id)
        status = COMPLETE if q.count_rows(session, run_id) >= row.n_images else PARTIAL
        q.update_run(session, row, status=status)
        session.commit()
    return status


class Heartbeat:
    """While the context is open, refresh run ``run_id``'s heartbeat every ``interval`` seconds from a
    daemon thread. A failed beat (a store busy past its timeout) is skipped, never fatal to the run.
    The thread only waits and writes one row: DataLoader workers forked meanwhile never touch it."""

    def __init__(self, store: Store, run_id: int, interval: float = HEARTBEAT_INTERVAL_S) -> None:
        self.store, self.run_id, self.interval = store, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name=f"alignbench-heartbeat-{run_id}", daemon=True)

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.store.session(write=True) as session:
                    q.beat(session, self.run_id)
                    session.commit()
            except Exception:  # noqa: BLE001 - the next beat, or the next batch, tries again
                continue

    def start(self) -> Heartbeat:
        url = self.store.engine.url
        # An in-memory SQLite store is one connection that only this process sees: a second thread
        # would share its transactions, and no other process could read the beat anyway.
        if not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")):
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
