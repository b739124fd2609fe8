"""Running a command as a user the file permissions apply to, for the read-only store tests.

Root ignores permission bits (a chmod 444 store is writable to root), and CI and many containers run
as root: there the command runs in a forked child that has dropped to the ``nobody`` account. The
child cannot import anything new from root's home (where Python lives), so the command is first run
once as ourselves on a copy of its inputs (``warm``), which imports every module its path needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from alignbench.testing.cli import invoke


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def unprivileged_account() -> pwd.struct_passwd | None:
    """The account commands run as: None (ourselves) unless we are root."""
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None


@contextlib.contextmanager
def reachable_directory() -> Iterator[Path]:
    """A temporary directory the unprivileged account can reach (pytest's own are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="alignbench-ro-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for child in [path, *path.rglob("*")]:
            if child.is_dir() and not child.is_symlink():
                child.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)


def invoke_unprivileged(*args: str, warm: Callable[[], object] | None = None) -> Outcome:
    """``alignbench ARGS`` run by a user without root's override of file permissions."""
    account = unprivileged_account()
    if account is None:
        result = invoke(*args)
        return Outcome(result.exit_code, result.stdout, result.stderr)
    if warm is not None:
        warm()
    cache = tempfile.mkdtemp(prefix="alignbench-cache-")  # the tests' cache is root's: the child gets its own
    os.chown(cache, account.pw_uid, account.pw_gid)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the account, run, report, and never return into pytest
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
            os.environ["ALIGNBENCH_CACHE"] = cache
            result = invoke(*args)
            answer = [result.exit_code, result.stdout, result.stderr]
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                answer[2] += "".join(traceback.format_exception(result.exception))
        except BaseException:  # noqa: BLE001 - reported to the parent, never raised into its pytest
            answer = [70, "", traceback.format_exc()]
        with os.fdopen(write, "wb") as pipe:
            pipe.write(json.dumps(answer).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    shutil.rmtree(cache, ignore_errors=True)
    if not payload:
        raise RuntimeError(f"the unprivileged child failed (wait status {status})")
    exit_code, stdout, stderr = json.loads(payload)
    return Outcome(exit_code, stdout, stderr)
