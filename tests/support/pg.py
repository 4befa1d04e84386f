"""A real, throwaway PostgreSQL server for tests.

``with Postgres() as pg: ... pg.url ...`` runs ``initdb`` into a temporary directory, starts the
server on a free port of 127.0.0.1 (socket in that directory too, trust authentication, no
fsync), creates the database ``comfyfn`` and stops the server (``pg_ctl stop -m fast``) and
removes the directory on exit. :meth:`Postgres.create_database` makes more databases, e.g. a
fresh one per test.

The binaries are Debian's (``/usr/lib/postgresql/<version>/bin``, newest first) or the ones on
``PATH``; ``COMFYFN_PG_BIN`` names another directory. PostgreSQL refuses to run as root: then
every server command runs as the ``postgres`` system user (``runuser -u postgres --``, else
``su postgres -c``) on a directory owned by it. ``tests/pg_install.sh`` installs the binaries
(what CI runs).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.support.ports import free_port

__all__ = ["INSTALL_HINT", "Postgres", "available", "find_bin"]

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found: the PostgreSQL tests "
    "(tests/integration: the store, replicas, outages) run against a real server. Install "
    "them with `sh tests/pg_install.sh` (apt-get install -y "
    "postgresql), or set COMFYFN_PG_BIN to the directory holding initdb and pg_ctl."
)


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([\d.]+)/bin/", path)
    return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)


def find_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None."""
    env = os.environ.get("COMFYFN_PG_BIN")
    candidates = [env] if env else []
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key, reverse=True)
    candidates += [str(Path(p).parent) for p in debian]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    for directory in candidates:
        d = Path(directory)
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file() and (d / "postgres").is_file():
            return d
    return None


def _runner() -> list[str] | None:
    """The command prefix that runs the server commands: [] if we are not root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"]
    if shutil.which("su"):
        return ["su", "postgres", "-c"]  # the command is joined into one string
    return None


def available() -> bool:
    """Whether a throwaway server can be started here."""
    return find_bin() is not None and _runner() is not None


class Postgres:
    """A throwaway PostgreSQL server (a context manager); ``url`` points at database ``comfyfn``."""

    def __init__(self, database: str = "comfyfn") -> None:
        self.database = database
        self.bin = find_bin()
        self.port: int | None = None
        self.root: Path | None = None
        self._started = False

    # -- commands ----------------------------------------------------------------------------

    def _run(self, args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess:
        runner = _runner()
        if runner is None:
            raise RuntimeError(
                "running as root, and no `postgres` user with runuser/su to run PostgreSQL as"
            )
        cmd = [*runner, shlex.join(args)] if runner[:1] == ["su"] else [*runner, *args]
        result = subprocess.run(
            cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            log = ""
            if self.root and (self.root / "server.log").exists():
                log = (self.root / "server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"{shlex.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}\n{log}"
            )
        return result

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> Postgres:
        if self.bin is None:
            raise RuntimeError(INSTALL_HINT)
        self.root = Path(tempfile.mkdtemp(prefix="comfyfn-pg-"))
        atexit.register(self.stop)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o700)
        data = self.root / "data"
        self._run(
            [
                str(self.bin / "initdb"),
                "-D", str(data),
                "-U", "postgres",
                "-A", "trust",
                "-E", "UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )  # fmt: skip
        last: Exception | None = None
        for _attempt in range(3):  # another process may take the free port meanwhile
            self.port = free_port()
            try:
                self._pg_start()
            except RuntimeError as e:
                last = e
                continue
            break
        else:
            raise RuntimeError(f"PostgreSQL did not start: {last}")
        self.create_database(self.database)
        return self

    def halt(self) -> None:
        """Stop the server, keeping its data and port (an outage); :meth:`resume` restarts it."""
        self._pg_ctl("-m", "fast", "-w", "stop")
        self._started = False

    def resume(self) -> None:
        """Start the halted server again on the same port."""
        self._pg_start()

    def _pg_start(self) -> None:
        assert self.root is not None, "PostgreSQL has no folder yet"
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._pg_ctl("-l", str(self.root / "server.log"), "-o", options, "-w", "-t", "60", "start")
        self._started = True

    def _pg_ctl(self, *args: str) -> None:
        """``pg_ctl -D <its data> <args>``, once :meth:`start` made the server's folder."""
        assert self.bin is not None and self.root is not None, "PostgreSQL was not started"
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), *args])

    def stop(self) -> None:
        if self.root is None:
            return
        root = self.root
        try:
            if self._started:
                self._started = False
                with contextlib.suppress(Exception):
                    self._pg_ctl("-m", "fast", "-w", "stop")
        finally:
            self.root = None
            shutil.rmtree(root, ignore_errors=True)
            atexit.unregister(self.stop)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases ---------------------------------------------------------------------------

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def create_database(self, name: str | None = None) -> str:
        """Create a database (a fresh random name if none) and return its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}")
        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)
