"""Start ``comfyfn serve`` as a real process for tests, and make keys with the real CLI; or
serve ``create_app`` in a thread of the test process (:class:`InProcess`) where a test must
set what the CLI cannot (small limits, a store with a short busy timeout)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.cli_proc import CHILD_ENV
from tests.support.polling import wait_for
from tests.support.ports import free_port

ENV = dict(CHILD_ENV)  # tests may add to it (monkeypatch.setitem)


def auth(key: str) -> dict[str, str]:
    """The header that presents the API key ``key``."""
    return {"Authorization": f"Bearer {key}"}


def make_key(db: str, name: str, rate: str = "1000/min") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "comfyfn.cli", "keys", "create", name, "--rate", rate, "--db", db],
        capture_output=True,
        text=True,
        env=ENV,
        check=True,
    )
    return out.stdout.strip()


class Gateway:
    #: API keys a test module's fixture made for its tests, and the ComfyUI it serves
    key: str
    other: str
    secret: str
    server: str

    def __init__(
        self,
        servers: list[str],
        db: str,
        storage: Path,
        *extra: str,
        port: int | None = None,
        ready: str = "/readyz",
    ) -> None:
        self.db = db
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable,
            "-m",
            "comfyfn.cli",
            "serve",
            "--port",
            str(self.port),
            "--db",
            db,
            "--storage",
            str(storage),
            *extra,
        ]
        for s in servers:
            args += ["--server", s]
        self.log = storage.parent / f"gateway-{self.port}.log"
        storage.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            args, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=ENV
        )
        try:
            self._wait_ready(ready)
        except BaseException:
            self.stop()  # never leave a gateway process behind a failed start
            raise

    def _wait_ready(self, ready: str) -> None:
        def answers() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}{ready}", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 60, f"the gateway to answer {ready}", interval=0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)  # slow on a loaded machine, not hung
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def sqlite_gateway(
    servers: list[str], root: Path, *extra: str, **options: Any
) -> Iterator[Gateway]:
    """A :class:`Gateway` on a SQLite file (``gateway.db``) and a storage folder (``files``)
    under ``root``, stopped when the ``with`` ends."""
    gateway = Gateway(
        servers, f"sqlite:///{root / 'gateway.db'}", root / "files", *extra, **options
    )
    try:
        yield gateway
    finally:
        gateway.stop()


def settings_for(root: Path, servers: list[str], **kwargs: Any):
    """Gateway settings on a SQLite file and a storage folder under ``root``."""
    from comfyfn.gateway import GatewaySettings

    kwargs.setdefault("db_url", f"sqlite:///{root / 'g.db'}")
    kwargs.setdefault("storage", root / "files")
    return GatewaySettings(servers=tuple(servers), **kwargs)


class InProcess:
    """``create_app(settings, store=store)`` served by uvicorn on a free loopback port, in a
    thread of this process; a context manager (the app's worker starts and stops with it)."""

    #: what a test module's fixture made for its tests: API keys, a key's id, a storage root
    secret: str
    key_id: str
    other: str
    root: Path

    def __init__(self, settings: Any, store: Any = None) -> None:
        import uvicorn

        from comfyfn.gateway import create_app

        self.app = create_app(settings, store=store)
        self.store = self.app.state.runtime.store
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def key(self, name: str = "k", rate: str = "100000/min") -> str:
        return self.store.create_key(f"{name}-{time.monotonic_ns()}", rate)[0]

    def __enter__(self) -> InProcess:
        self.thread.start()

        def started() -> bool:
            if not self.thread.is_alive():
                raise RuntimeError("the in-process gateway's thread ended before it started")
            return bool(self.server.started)

        try:
            wait_for(started, 60, "the in-process gateway to start", interval=0.02)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        if self.thread.is_alive():
            raise RuntimeError("the in-process gateway did not stop within 30 s")
