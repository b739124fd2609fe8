"""Whether a run marked ``running`` still has a process computing it.

The scorer records its process id and host in the run when it starts, and a heartbeat time with
every committed batch and every ``HEARTBEAT_INTERVAL_S`` in between (a thread: one batch of a slow
metric, e.g. deletion with 224 steps, takes minutes). A reader shows a ``running`` run as
``interrupted`` when its process is gone:

- on the host that runs it: its process id is not alive (``kill -9``, a crash, a reboot), or its
  heartbeat is older than ``HEARTBEAT_TIMEOUT_S`` (the id was reused by another process);
- on another host (a shared PostgreSQL store): its heartbeat is older than ``HEARTBEAT_TIMEOUT_S``.
  Hosts' clocks must agree to well within that (NTP does).

Runs written before the scorer recorded a heartbeat are judged by their last update.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from alignbench.store.engine import Store

HEARTBEAT_INTERVAL_S = 30.0
# Ten missed beats: a busy store (SQLite's 60 s busy timeout) or a loaded machine delays a beat, it
# does not make a live run look dead.
HEARTBEAT_TIMEOUT_S = 300.0
RUNNING, INTERRUPTED = "running", "interrupted"


def this_process() -> tuple[int, str]:
    """(process id, host name) as a run records them."""
    return os.getpid(), socket.gethostname()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie (dead, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): kill's answer stands
        return True


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)  # SQLite drops the zone


def shown_status(
    status: str,
    *,
    pid: int | None,
    host: str | None,
    heartbeat_at: datetime | None,
    updated_at: datetime | None = None,
    now: datetime | None = None,
) -> str:
    """``status`` as a reader should show it: a ``running`` run whose process is gone is ``interrupted``."""
    if status != RUNNING:
        return status
    beat = heartbeat_at or updated_at
    if beat is None:
        return INTERRUPTED
    now = now or datetime.now(timezone.utc)
    stale = now - _utc(beat) > timedelta(seconds=HEARTBEAT_TIMEOUT_S)
    if pid is not None and host == socket.gethostname():
        return RUNNING if process_alive(pid) and not stale else INTERRUPTED
    return INTERRUPTED if stale else RUNNING


class Heartbeat:
    """While the context is open, refresh run ``run_id``'s heartbeat every ``interval`` seconds from a
    daemon thread. A failed beat (a store busy past its timeout) is skipped, never fatal to the run.
    The thread only waits and writes one row: DataLoader workers forked meanwhile never touch it."""

    def __init__(self, store: "Store", run_id: int, interval: float = HEARTBEAT_INTERVAL_S) -> None:
        self.store, self.run_id, self.interval = store, run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name=f"alignbench-heartbeat-{run_id}", daemon=True)

    def _beat_until_stopped(self) -> None:
        from alignbench.store import queries as q

        while not self._stop.wait(self.interval):
            try:
                with self.store.session(write=True) as session:
                    q.beat(session, self.run_id)
                    session.commit()
            except Exception:  # noqa: BLE001 - the next beat, or the next batch, tries again
                continue

    def start(self) -> "Heartbeat":
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

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
