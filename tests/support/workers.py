"""``comfyfn worker`` processes of this checkout, for the tests of runners on many machines:
each with its log, stopped even when frozen (``SIGSTOP``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.cli_proc import CHILD_ENV

#: ``comfyfn …`` in a child process (this checkout's)
CLI = ("-m", "comfyfn.cli")


class Worker:
    def __init__(
        self, name: str, db: str, storage: Path, urls: list[str], stale_after: float, *extra: str
    ):
        self.name = name
        self.log = storage.parent / f"worker-{name}.log"
        args = [
            sys.executable,
            *CLI,
            "worker",
            "--db",
            db,
            "--name",
            name,
            "--storage",
            str(storage),
            "--stale-after",
            str(stale_after),
            *extra,
        ]
        for url in urls:
            args += ["--server", url]
        self.proc = subprocess.Popen(
            args, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=CHILD_ENV
        )

    def said(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=60)
