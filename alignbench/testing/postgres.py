"""A throwaway PostgreSQL server for the tests and benchmarks: a temporary data directory, loopback
only, a free port, stopped and deleted on exit. Never used for real results (a team runs its own
server; README "Running the full study").

Debian's server binaries (``/usr/lib/postgresql/<version>/bin``; ``scripts/system_packages.sh``
installs them) refuse to run as root, and CI and many containers run as root: the server then runs
as the ``postgres`` system user the Debian package creates (``nobody`` where it is missing), which
owns the temporary directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SUPERUSER = "postgres"  # the database role initdb creates (-U), trusted on loopback only


def server_bindir() -> Path | None:
    """Where ``initdb``/``pg_ctl`` are: ``$ALIGNBENCH_PG_BINDIR``, Debian's newest version, or $PATH."""
    configured = os.environ.get("ALIGNBENCH_PG_BINDIR")
    if configured:
        return Path(configured) if (Path(configured) / "initdb").is_file() else None
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0
    )
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root; None: run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalPostgres:
    """``with LocalPostgres.start() as server: server.create_database("t1")`` → a SQLAlchemy URL."""

    bindir: Path
    root: Path
    port: int
    account: pwd.struct_passwd | None

    @classmethod
    def start(cls, *, durable: bool = False) -> LocalPostgres:
        """initdb + pg_ctl start. ``durable=False`` turns fsync off (tests); True keeps the server's
        defaults, so commits are flushed to disk as a real server's are (benchmarks)."""
        bindir = server_bindir()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found; run scripts/system_packages.sh")
        account = _run_as()
        root = Path(tempfile.mkdtemp(prefix="alignbench-pg-"))
        if account is not None:
            os.chown(root, account.pw_uid, account.pw_gid)
        server = cls(bindir, root, _free_port(), account)
        try:
            server._command(
                "initdb", "-D", str(root / "data"), "-U", _SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"
            )
            options = ["-c listen_addresses=127.0.0.1", f"-p {server.port}", f"-c unix_socket_directories={root}"]
            if not durable:
                options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            server._command(
                "pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-w", "-t", "60", "-o", " ".join(options), "start"
            )
        except BaseException:
            server.stop()
            raise
        return server

    def _command(self, program: str, *args: str) -> None:
        kwargs = {}
        if self.account is not None:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        result = subprocess.run([str(self.bindir / program), *args], capture_output=True, text=True, cwd=self.root, **kwargs)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}\n{tail}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={_SUPERUSER} dbname=postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its directory."""
        if (self.root / "data" / "postmaster.pid").exists():
            try:
                self._command("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
