"""Claims that scale: claim latency on PostgreSQL with a long history, and how soon an idle
worker hears of a new job.

Run: ``.venv/bin/python -m bench.claims [--finished 1000000] [--queued 1000] [--claims 500]``.

A throwaway PostgreSQL (tests/support/pg.py) gets ``--finished`` succeeded jobs (one
``INSERT … SELECT generate_series``) and ``--queued`` queued ones over two model sets and
three priorities, then ``ANALYZE``. Measured, through :class:`comfyfn.jobs.store.Store`:

- claim latency: ``claim_jobs(limit=1)`` with one model set loaded, ``--claims`` times (p50,
  p99; goal < 5 ms with 1 M finished jobs) and ``limit=8`` batches;
- wake latency: a :class:`comfyfn.jobs.listen.QueueListener` (``LISTEN cfn_jobs``) from
  calling ``create_job`` (its commit is inside) to the wake call, ``--wakes`` times (goal:
  a new job reaches an idle worker within 50 ms).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from comfyfn.jobs.listen import QueueListener
from comfyfn.jobs.store import Store
from tests.support.pg import Postgres

FILL = """
INSERT INTO cfn_jobs (id, key_id, workflow, params, state, progress, outputs, created_at,
    updated_at, started_at, finished_at, claimed_by, heartbeat_at, cancel_requested,
    attempts, priority, claims, models)
SELECT 'job_old_' || i, 'key_a', 'zimage-turbo', '{}', 'succeeded', 1, '[]', 1e9 + i,
    1e9 + i, 1e9 + i, 1e9 + i, 'w', 1e9 + i, false, 0, 0, 1, 'm-a'
FROM generate_series(1, %s) AS i
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def claim_latency(store: Store, claims: int, limit: int) -> list[float]:
    times = []
    for _ in range(claims):
        started = time.perf_counter()
        taken = store.claim_jobs("bench", limit=limit, models={"m-b"})
        times.append((time.perf_counter() - started) * 1000)
        assert taken, "the queue ran dry: raise --queued"
    return times


def wake_latency(store: Store, url: str, wakes: int) -> list[float]:
    heard = threading.Event()
    listener = QueueListener(url, heard.set)
    listener.start()
    assert listener.listening.wait(10), "LISTEN did not start"
    times = []
    try:
        for _ in range(wakes):
            heard.clear()
            started = time.perf_counter()  # the commit is inside create_job
            store.create_job(key_id="key_a", workflow="zimage-turbo", params={}, models="m-a")
            assert heard.wait(5), "no notification within 5 s"
            times.append((time.perf_counter() - started) * 1000)
    finally:
        listener.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--queued", type=int, default=1000)
    parser.add_argument("--claims", type=int, default=300)
    parser.add_argument("--wakes", type=int, default=50)
    args = parser.parse_args()
    with Postgres() as pg:
        url = pg.url
        with Store(url) as store:
            filling = time.perf_counter()
            with store._write() as conn:
                conn.exec_driver_sql(FILL % int(args.finished))
            for i in range(args.queued):
                store.create_job(
                    key_id="key_a",
                    workflow="zimage-turbo",
                    params={"i": i},
                    priority=i % 3,
                    models="m-a" if i % 2 else "m-b",
                )
            with store._write() as conn:
                conn.exec_driver_sql("ANALYZE cfn_jobs")
            print(
                f"{args.finished:,} finished + {args.queued:,} queued jobs in "
                f"{time.perf_counter() - filling:.1f} s"
            )
            one = claim_latency(store, args.claims, 1)
            eight = claim_latency(store, max(1, args.claims // 8), 8)
            wakes = wake_latency(store, url, args.wakes)
    print("| measure | p50 ms | p99 ms | goal |")
    print("|---|---|---|---|")
    for name, values, goal in (
        ("claim, 1 job", one, "< 5"),
        ("claim, batch of 8", eight, ""),
        ("NOTIFY → idle worker", wakes, "< 50"),
    ):
        print(
            f"| {name} | {statistics.median(values):.2f} | {percentile(values, 0.99):.2f} "
            f"| {goal} |"
        )


if __name__ == "__main__":
    main()
