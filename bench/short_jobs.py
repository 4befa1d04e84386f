"""Short jobs on one server: how close to the server-bound limit, with default settings.

Run: ``.venv/bin/python -m bench.short_jobs [--ms 20 200]``.

GPU time is SIMULATED with the engine's test-only ``ComfyfnSleep`` node. For each job length,
side by side on one local engine:

- server-bound limit, measured: every job posted at once, so the server never waits for a
  client; jobs/s from the first job's start to the last job's end (the server's own
  timestamps). ComfyUI's own work per job (validation, history, saving the image) is in it;
- nominal: 1000 / job ms (no per-job work at all);
- ``comfyfn.batch`` with its default settings: adaptive priming (``comfyfn.fleet.prime_for``
  on the job and turnaround times the fleet measures per server);
- ``comfyfn.batch --prime 1`` and ``--prime 2`` (one or two jobs queued behind the running
  one), and a client that queues every job at once (``--prime`` = the number of jobs), for
  comparison: the default should be at least as good as the best of them.

``--jobs`` fixes the batch sizes (e.g. ``--jobs 30 1000``: a short batch the adaptive rule
never outlives, and a long one); without it each run is ``--seconds`` of simulated work.

Our rates are wall time from the first submit to the last result, client side. With
``--rtt-ms`` the clients reach the server through a TCP relay that delays every byte by half
the round trip each way (a server across a network); the limit is the server's own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
import warnings

import httpx

from comfyfn.batch import Batch, BatchSettings, Row
from comfyfn.engine import Engine
from tests.support.graphs import sleep_graph

_colour = iter(range(int(time.time() * 1000) % 8_000_000, 2**24))


class Relay:
    """A TCP relay to ``upstream`` that delays each direction by ``rtt / 2`` (HTTP and
    websockets alike), keeping the bandwidth: bytes are written when their delay is up."""

    def __init__(self, upstream: str, rtt: float) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.host, self.port, self.delay = host, int(port), rtt / 2

    async def __aenter__(self) -> str:
        self.tasks: set[asyncio.Task[None]] = set()
        self.server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            up_writer.close()
            self.tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay, data))
            queue.put_nowait((time.monotonic() + self.delay, b""))
            await sender
        finally:
            sender.cancel()


async def server_alone(url: str, n: int, ms: int) -> float:
    """Jobs/s of the server on its own: n jobs posted at once, timed by its timestamps."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        ids = []
        for _ in range(n):
            graph = sleep_graph(next(_colour), milliseconds=ms, steps=2)
            prompt_id = str(uuid.uuid4())
            await http.post("/prompt", json={"prompt": graph, "prompt_id": prompt_id})
            ids.append(prompt_id)
        deadline = time.monotonic() + 600
        while not (await http.get(f"/history/{ids[-1]}")).json():
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not finish within 10 minutes")
            await asyncio.sleep(0.02)
        history = (await http.get("/history", params={"max_items": n + 10})).json()
    stamps = [dict(history[i]["status"]["messages"]) for i in ids]
    first = min(s["execution_start"]["timestamp"] for s in stamps)
    last = max(s["execution_success"]["timestamp"] for s in stamps)
    return n / (float(last - first) / 1000)


async def batch(upstream: str, rtt: float, n: int, ms: int, prime: int | None) -> tuple[float, int]:
    """``comfyfn.batch`` (prime None: its default, adaptive): jobs/s, and the prime it
    ended with."""
    wf = sleep_graph(0, milliseconds=ms, steps=2)
    rows = (Row(i, {"1.color": next(_colour)}) for i in range(1, n + 1))
    async with Relay(upstream, rtt) as url:
        run = Batch(rows, None, servers=[url], workflow=wf, settings=BatchSettings(prime=prime))
        start, done = time.perf_counter(), 0
        async for result in run.results():
            done += result.state == "done"
        seconds = time.perf_counter() - start
    if done != n:
        raise RuntimeError(f"only {done}/{n} jobs done")
    return n / seconds, run.pool.slots(url) - 1


ADAPTIVE = "comfyfn.batch, default (adaptive priming)"
CONTENDERS: dict[str, int | None] = {
    ADAPTIVE: None,
    "comfyfn.batch --prime 1": 1,
    "comfyfn.batch --prime 2": 2,
    "all at once (--prime = jobs)": 0,  # 0: the number of jobs
}


def measure(
    url: str, rtt_ms: int, ms: int, n: int, turn: int, primes: list[int]
) -> dict[str, float]:
    """Jobs/s of each way to run the jobs, through a relay of ``rtt_ms``, starting with the
    ``turn``-th (each round another one goes first: the machine's load drifts); the prime the
    adaptive rule ended with is appended to ``primes``. A run that outlasts 10x the nominal
    time (plus a minute) is a hang: it raises."""
    rtt, deadline = rtt_ms / 1000, 60 + 10 * n * ms / 1000
    names = list(CONTENDERS)
    rates: dict[str, float] = {}
    for what in names[turn % len(names) :] + names[: turn % len(names)]:
        prime = CONTENDERS[what]
        run = batch(url, rtt, n, ms, n if prime == 0 else prime)
        rates[what], ended = asyncio.run(asyncio.wait_for(run, deadline))
        if prime is None:
            primes.append(ended)
    return {what: rates[what] for what in names}


def main() -> None:
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser()
    parser.add_argument("--ms", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--rtt-ms", type=int, nargs="+", default=[0, 20])
    parser.add_argument("--seconds", type=float, default=5.0, help="simulated work per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, nargs="+", default=None, help="batch sizes")
    args = parser.parse_args()
    engine = Engine("bench-short")
    url = engine.up().url
    print(
        "SIMULATED GPU time (ComfyfnSleep), one server. Each figure: mean of "
        f"{args.rounds} rounds; the limit: the best round of the server alone."
    )
    print(
        f"{'job':>7} {'rtt':>6} {'what':46}{'jobs/s':>8}{'/ limit':>9}{'/ nominal':>11}"
        "  (/ limit, each round)"
    )
    try:
        sizes = [(ms, n) for ms in args.ms for n in args.jobs or [0]]
        for ms, jobs in sizes:
            n = jobs or max(20, int(args.seconds * 1000 / ms))
            limits: list[float] = []
            rates: dict[int, dict[str, list[float]]] = {rtt: {} for rtt in args.rtt_ms}
            primes: dict[int, list[int]] = {rtt: [] for rtt in args.rtt_ms}
            for turn in range(args.rounds):
                limits.append(asyncio.run(server_alone(url, n, ms)))
                for rtt_ms in args.rtt_ms:
                    measured = measure(url, rtt_ms, ms, n, turn, primes[rtt_ms])
                    for what, rate in measured.items():
                        rates[rtt_ms].setdefault(what, []).append(rate)
            limit = max(limits)
            what = "server alone: the server-bound limit"
            print(f"{ms:5d}ms {'-':>6} {what:46}{limit:8.2f}{1:9.2f}{limit * ms / 1000:11.2f}")
            for rtt_ms, by_what in rates.items():
                for what, values in by_what.items():
                    rate = sum(values) / len(values)
                    if what == ADAPTIVE:
                        what += f" → prime {'/'.join(map(str, primes[rtt_ms]))}"
                    nominal = rate * ms / 1000
                    rounds = "/".join(f"{value / limit:.2f}" for value in values)
                    print(
                        f"{ms:5d}ms {rtt_ms:4d}ms {what:46}{rate:8.2f}{rate / limit:9.2f}"
                        f"{nominal:11.2f}  ({rounds})"
                    )
            print(f"{'':7} ({n} jobs per run)")
    finally:
        engine.down()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
