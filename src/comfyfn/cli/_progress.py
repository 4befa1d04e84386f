"""A batch's progress on stderr: on a terminal, a live bar for the jobs and a line per server;
off one (``2>&1 | tee``, nohup, CI: no bar can be drawn) a plain line as the batch starts,
one per finished row with the counts so far and the rate, and the counts again whenever
``--status-every`` seconds pass without a line (a first job loading its models), so a log
shows the batch moving.
Row labels, errors and URLs are printed literally (never read as rich markup)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from comfyfn.batch import Batch, JobResult
from comfyfn.cli._common import err, esc

if TYPE_CHECKING:
    from comfyfn.batch.queued import QueuedBatch


class BatchProgress:
    """What :class:`Batch` reports (its ``on_event``), shown on stderr for the ``with``; or
    a queued batch followed from the shared store (server lines only for the servers of a
    worker in this process)."""

    def __init__(self, batch: Batch | QueuedBatch, total: int | None) -> None:
        self.batch, self.total = batch, total
        self.counted: dict[str, int] = {}  #: results by state
        self.started = self.said = time.monotonic()
        self.live = err.is_terminal
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
            disable=not self.live,
        )

    def __enter__(self) -> BatchProgress:
        self.bar.__enter__()
        self.jobs = self.bar.add_task("jobs", total=self.total, rate="")
        self.lines = {url: self.bar.add_task(esc(url), total=None, rate="") for url in self.servers}
        if not self.live:
            self._say(
                f"batch: {self.total if self.total is not None else '?'} jobs on "
                f"{', '.join(self.servers) or 'the workers of the shared queue'}; a line per "
                "finished row"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    @property
    def servers(self) -> list[str]:
        return list(self.batch.servers)

    def on_event(self, kind: str, data: Any) -> None:
        if kind == "result":
            self._result(data)
        elif kind == "queued_again":  # a finished row of a followed batch runs again
            self.counted[data.state] -= 1
            self.bar.update(self.jobs, advance=-1)
            line = f"{data.label} was queued again (batch retry, or its files remade)"
            if self.live:
                self.bar.console.print(esc(line), highlight=False)
            else:
                self._say(line)
        elif kind in ("server_down", "server_up") and not self.live:
            self._say(f"server {data} is " + ("down" if kind == "server_down" else "up again"))
        elif kind == "store_down":  # following a queued batch: its store is out
            self._say(f"the job store does not answer ({data}); following on when it does")
        elif kind == "store_up":
            self._say(f"the job store answers again (after {data} s)")
        if self.live:
            self._show_servers()

    def _result(self, result: JobResult) -> None:
        self.counted[result.state] = self.counted.get(result.state, 0) + 1
        self.bar.update(self.jobs, advance=1, rate=self._rate())
        failed = result.state in ("failed", "invalid")
        if self.live and failed:
            line = f"[red]{result.state}[/red] {esc(result.error)}"
            self.bar.console.print(line, highlight=False)
        elif not self.live and result.state != "skipped":  # a resume: counted, not listed
            what = str(result.error) if failed else self._made(result)
            self._say(f"{result.state} {what} · {self._counts()}")

    @staticmethod
    def _made(result: JobResult) -> str:
        took = f" in {result.seconds:.1f}s" if result.seconds is not None else ""
        if result.executed is not None:  # the server's time apart from ours queued behind
            took = f" (ran {result.executed:.1f}s){took}"
        return f"{result.label}{took}" + (f" on {result.server}" if result.server else "")

    def _counts(self) -> str:
        c = self.counted
        finished = sum(c.values())
        of = f"{finished}/{self.total}" if self.total is not None else str(finished)
        skipped = f", skipped {c['skipped']}" if c.get("skipped") else ""
        return (
            f"{of}: done {c.get('done', 0)}, failed {c.get('failed', 0)}, invalid "
            f"{c.get('invalid', 0)}{skipped} · {self._rate()}"
        )

    def _rate(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return f"{self.counted.get('done', 0) / elapsed * 60:.1f}/min"

    def _show_servers(self) -> None:
        pool = self.batch.pool
        if pool is None:
            return
        for url, task in self.lines.items():
            s = pool.states[url]
            status = "up" if s.healthy else "[red]down[/red]"
            self.bar.update(
                task,
                description=f"{esc(url)} {status} busy {min(s.in_flight, 1)} "
                f"queued {s.queued} failures {s.failures}",
                rate=f"{s.done} done",
            )

    async def keep_saying(self, every: float) -> None:
        """Off a terminal, until cancelled: the counts after ``every`` seconds without a line
        (never with 0)."""
        if self.live or every <= 0:
            return
        while True:
            await asyncio.sleep(max(self.said + every - time.monotonic(), 0.0))
            if time.monotonic() - self.said >= every:
                self._say(f"running · {self._counts()}")

    def _say(self, line: str) -> None:
        """``line`` as it is (no markup, no wrapping), straight to stderr: a batch of 100,000
        rows writes as many lines."""
        self.said = time.monotonic()
        err.file.write(f"{line}\n")
        err.file.flush()
