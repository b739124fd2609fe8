"""Whether a run marked ``running`` still has a process computing it.

The scorer records its process id and host in the run when it starts, and a heartbeat time with
every committed batch and every ``HEARTBEAT_INTERVAL_S`` in between (a thread: one batch of a slow
metric, e.g. deletion with 224 steps, takes minutes). A reader shows a ``running`` run as
``interrupted`` when its process is gone:

- on the host that runs it: its process id is not alive (``kill -9``, a crash, a reboot), or its
  heartbeat is older than ``HEARTBEAT_TIMEOUT_S`` (the id was reused by another process);
- on another host (a shared PostgreSQL store): its heartbeat is older than ``HEARTBEAT_TIMEOUT_S``.
  Hosts' clocks must agree to well within that (NTP does).

Runs written before the scorer recorded a heartbeat are judged by their last update. This module
is the reading side; the writing side (the heartbeat thread) is ``alignbench.scoring.lifecycle``.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta, timezone

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
