"""The gateway job store on SQLite files (the embedded default).

The same cases run on a real PostgreSQL in tests/integration/test_gateway_store_pg.py, which
loads this module and gives it its own ``url`` fixture: a case that holds only on SQLite has
``sqlite`` in its name. Time is the store's ``clock``, a fake one here: nothing sleeps.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from comfyfn.jobs.schema import JobRecord
from comfyfn.jobs.store import STATES, Store
from tests.support.fake_clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)  # an epoch clock


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def stores(url, clock):
    """Open stores on ``url`` (with the fake clock); each is closed after the test."""
    made: list[Store] = []

    def open_store(**kwargs) -> Store:
        made.append(Store(url, clock=clock, **kwargs))
        return made[-1]

    yield open_store
    for s in made:
        s.close()


@pytest.fixture
def store(stores) -> Store:
    return stores()


def all_rows(url: str) -> str:
    """Every row of every table, as one string."""
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return repr([conn.execute(sa.select(t)).all() for t in meta.sorted_tables])
    finally:
        engine.dispose()


def new_job(store: Store, key_id: str = "key_a", **kwargs):
    job, created = store.create_job(
        key_id=key_id, workflow="zimage-turbo", params={"n": 1}, **kwargs
    )
    assert created
    return job


def jobs_in_order(store: Store, clock, n: int) -> list:
    """``n`` new jobs, each created a second after the one before (claimed in this order)."""
    jobs = []
    for _ in range(n):
        jobs.append(new_job(store))
        clock.advance(1)
    return jobs


# -- keys --------------------------------------------------------------------------------------


def test_key_secret_is_returned_once_and_only_its_hash_is_stored(store, url):
    secret, key = store.create_key("alice", rate="10/s")
    assert secret.startswith("cfn_") and len(secret) > 40
    assert key.id.startswith("key_") and key.name == "alice" and key.rate == "10/s"
    assert key.prefix == secret[:8] and not key.revoked
    assert store.find_key(secret) == key
    assert secret not in all_rows(url)
    assert secret[8:20] not in all_rows(url)
    if url.startswith("sqlite"):
        store.close()  # and look at the bytes on disk, WAL included
        db = Path(url.removeprefix("sqlite:///"))
        files = list(db.parent.glob(db.name + "*"))
        assert files
        for f in files:
            assert secret.encode() not in f.read_bytes()


def test_find_key_refuses_unknown_and_near_misses(store):
    secret, _ = store.create_key("alice")
    assert store.find_key("") is None
    assert store.find_key("cfn_nope") is None
    assert store.find_key(secret[:-1]) is None
    assert store.find_key(secret + "x") is None
    assert store.find_key(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None


def test_keys_with_the_same_prefix_are_told_apart(store, monkeypatch):
    real = secrets.token_urlsafe
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: "SAME" + real(n)[4:])
    made = [store.create_key(f"k{i}") for i in range(5)]
    assert {key.prefix for _, key in made} == {"cfn_SAME"}
    for secret, key in made:
        assert store.find_key(secret) == key


def test_revoke_by_name_or_id_and_list(store, clock):
    s1, k1 = store.create_key("alice")
    clock.advance(1)
    s2, k2 = store.create_key("bob", rate="5/min")
    assert [k.name for k in store.list_keys()] == ["alice", "bob"]
    assert store.revoke_key("alice") is True
    assert store.find_key(s1) is None
    assert store.revoke_key("alice") is False
    assert store.revoke_key(k2.id) is True
    assert store.find_key(s2) is None
    assert store.revoke_key("nobody") is False
    keys = {k.id: k for k in store.list_keys()}
    assert keys[k1.id].revoked and keys[k2.id].revoked


def test_key_names_are_unique_among_live_keys(store):
    store.create_key("alice")
    with pytest.raises(ValueError, match="alice"):
        store.create_key("alice")
    store.revoke_key("alice")
    secret, key = store.create_key("alice")  # the name is free again
    assert store.find_key(secret) == key
    assert len([k for k in store.list_keys() if k.name == "alice"]) == 2


def test_create_key_refuses_a_bad_rate_or_name(store):
    with pytest.raises(ValueError):
        store.create_key("alice", rate="lots")
    with pytest.raises(ValueError):
        store.create_key(" ")
    assert store.list_keys() == []


def test_a_key_s_max_priority_is_kept_and_defaults_to_0(store):
    secret, key = store.create_key("urgent", max_priority=50)
    assert key.max_priority == 50 and store.find_key(secret).max_priority == 50
    plain_secret, plain = store.create_key("plain")
    assert plain.max_priority == 0 and store.find_key(plain_secret).max_priority == 0
    assert {k.name: k.max_priority for k in store.list_keys()} == {"urgent": 50, "plain": 0}
    for bad in (-1, 101, True, 1.5, "5"):
        with pytest.raises(ValueError, match="max priority"):
            store.create_key(f"bad-{bad}", max_priority=bad)
    assert len(store.list_keys()) == 2


def test_concurrent_creates_of_one_name_make_one_key(stores):
    stores = [stores() for _ in range(2)]
    results: list[object] = []
    barrier = threading.Barrier(8)

    def make(i: int) -> None:
        barrier.wait()
        try:
            results.append(stores[i % 2].create_key("same"))
        except ValueError as e:
            results.append(e)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(not isinstance(r, ValueError) for r in results) == 1
    assert len(stores[0].list_keys()) == 1


# -- jobs --------------------------------------------------------------------------------------


def test_create_and_get_job(store, clock):
    job, created = store.create_job(
        key_id="key_a",
        workflow="zimage-turbo",
        params={"prompt": "猫", "seed": 1},
        webhook="https://example.com/hook",
    )
    assert created
    assert job.id.startswith("job_") and len(job.id) == 36
    assert job.state == "queued" and job.params == {"prompt": "猫", "seed": 1}
    assert job.outputs == [] and job.error is None and job.progress == 0.0
    assert job.webhook == "https://example.com/hook" and job.idempotency_key is None
    assert job.created_at == job.updated_at == clock.now
    assert job.started_at is job.finished_at is job.claimed_by is job.heartbeat_at is None
    assert job.server is job.prompt_id is None and job.cancel_requested is False
    assert store.get_job(job.id) == job
    assert store.get_job("job_missing") is None


def test_get_job_scoped_to_its_key(store):
    job = new_job(store, key_id="key_a")
    assert store.get_job(job.id, key_id="key_a") == job
    assert store.get_job(job.id, key_id="key_b") is None


def test_idempotency_key_returns_the_same_job_per_key(store):
    first, created = store.create_job(
        key_id="key_a", workflow="w", params={"n": 1}, idempotency_key="req-1"
    )
    assert created
    again, created = store.create_job(
        key_id="key_a", workflow="w", params={"n": 2}, idempotency_key="req-1"
    )
    assert not created and again == first
    other, created = store.create_job(
        key_id="key_b", workflow="w", params={"n": 1}, idempotency_key="req-1"
    )
    assert created and other.id != first.id
    # jobs without an idempotency key never collide
    assert new_job(store).id != new_job(store).id


def test_idempotency_is_race_safe(stores):
    stores = [stores() for _ in range(2)]
    barrier = threading.Barrier(8)
    results: list[tuple] = []

    def submit(i: int) -> None:
        barrier.wait()
        results.append(
            stores[i % 2].create_job(key_id="key_a", workflow="w", params={}, idempotency_key="k")
        )

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert stores[0].queue_depth()["queued"] == 1


def test_update_job_fields_and_timestamps(store, clock):
    job = new_job(store)
    clock.advance(1)
    running = store.update_job(
        job.id, state="running", server="http://gpu1:8188", prompt_id="p-1", progress=0.25
    )
    assert running.state == "running" and running.server == "http://gpu1:8188"
    assert running.prompt_id == "p-1" and running.progress == 0.25
    assert running.updated_at > job.updated_at and running.created_at == job.created_at
    assert running.started_at == running.updated_at == clock.now
    assert running.finished_at is None
    clock.advance(1)
    done = store.update_job(job.id, state="succeeded", progress=1.0, outputs=["file_1", "file_2"])
    assert done.outputs == ["file_1", "file_2"] and done.progress == 1.0
    assert done.finished_at == done.updated_at == clock.now
    assert done.started_at == running.started_at  # not moved by later updates
    clock.advance(1)
    later = store.update_job(job.id, state="succeeded", webhook=None)
    assert later.finished_at == done.finished_at  # it ended once
    assert later.updated_at == clock.now
    assert store.get_job(job.id) == later

    failed = store.update_job(
        new_job(store).id, state="failed", error={"code": "engine", "message": "OOM"}
    )
    assert failed.error == {"code": "engine", "message": "OOM"} and failed.finished_at
    assert store.update_job(failed.id, error=None).error is None


def test_update_job_refuses_bad_fields(store):
    job = new_job(store)
    for field in ("id", "key_id", "created_at", "updated_at", "colour"):
        with pytest.raises(TypeError):
            store.update_job(job.id, **{field: "x"})
    with pytest.raises(ValueError):
        store.update_job(job.id, state="exploded")
    with pytest.raises(KeyError):
        store.update_job("job_missing", progress=0.5)
    assert store.get_job(job.id) == job


def test_queue_depth_and_cancel(store):
    assert store.queue_depth() == dict.fromkeys(STATES, 0)
    a, b, c = new_job(store), new_job(store), new_job(store)
    store.update_job(b.id, state="running")
    store.update_job(c.id, state="succeeded")
    assert store.queue_depth() == {
        "queued": 1,
        "running": 1,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 0,
    }
    store.request_cancel(a.id)
    store.request_cancel(b.id)
    store.request_cancel(c.id)  # already over: nothing to cancel
    assert store.get_job(a.id).cancel_requested and store.get_job(a.id).state == "queued"
    assert store.get_job(b.id).cancel_requested
    assert not store.get_job(c.id).cancel_requested
    store.request_cancel("job_missing")  # no error


def test_queue_position_is_each_jobs_own_place_in_claim_order(store):
    jobs = [new_job(store) for _ in range(4)]
    order = sorted(jobs, key=lambda j: (j.created_at, j.id))  # the claim order
    assert [store.queue_position(j.id) for j in order] == [0, 1, 2, 3]
    assert store.claim_job("w").id == order[0].id
    assert store.queue_position(order[0].id) is None  # running: not in the queue
    assert store.cancel_if_queued(order[2].id)
    assert [store.queue_position(j.id) for j in order] == [None, 0, None, 1]
    assert store.queue_position("job_missing") is None


def test_queue_position_counts_only_the_jobs_of_the_same_key(store, clock):
    """What a key is told of its place never reveals other keys' traffic."""
    mine_first = new_job(store, "key_a")
    clock.advance(1)
    theirs = []
    for _ in range(3):  # claimed before mine
        theirs.append(new_job(store, "key_b", priority=5))
        clock.advance(1)
    mine_next = new_job(store, "key_a")
    assert [store.queue_position(j.id) for j in (mine_first, mine_next)] == [0, 1]
    assert [store.queue_position(j.id) for j in theirs] == [0, 1, 2]


# -- claim protocol ----------------------------------------------------------------------------


def test_claim_takes_the_oldest_queued_job(store, clock):
    jobs = jobs_in_order(store, clock, 3)
    claimed = store.claim_job("w1")
    assert claimed.id == jobs[0].id
    assert claimed.state == "running" and claimed.claimed_by == "w1"
    assert claimed.heartbeat_at == claimed.started_at == claimed.updated_at
    assert store.claim_job("w2").id == jobs[1].id
    assert store.claim_job("w1").id == jobs[2].id
    assert store.claim_job("w1") is None
    assert store.queue_depth()["running"] == 3


def test_higher_priority_jobs_are_claimed_first_and_counted_ahead(store, clock):
    old, normal = jobs_in_order(store, clock, 2)
    urgent = new_job(store, priority=5)
    assert store.get_job(urgent.id).priority == 5
    assert [store.queue_position(j.id) for j in (urgent, old, normal)] == [0, 1, 2]
    assert [store.claim_job("w").id for _ in range(3)] == [urgent.id, old.id, normal.id]


def made_before_versions(url: str, *dropped: tuple[str, str]) -> None:
    """Turn the store at ``url`` into one as made before schema versions (revision 0001's
    tables, no version table), without the ``dropped`` (table, column) pairs."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE cfn_workers")
        conn.exec_driver_sql("DROP TABLE cfn_alembic_version")
        conn.exec_driver_sql("DROP INDEX cfn_jobs_queued")
        conn.exec_driver_sql("DROP INDEX cfn_jobs_batch")  # revision 0003
        for column in ("claims", "models", "batch", "target", "row_key"):  # revision 0002
            conn.exec_driver_sql(f"ALTER TABLE cfn_jobs DROP COLUMN {column}")
        for column in ("executed", "turnaround"):  # revision 0004
            conn.exec_driver_sql(f"ALTER TABLE cfn_jobs DROP COLUMN {column}")
        for table, column in dropped:
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    engine.dispose()


def test_a_database_made_before_priorities_gets_the_column(url, clock):
    Store(url, clock=clock).close()
    made_before_versions(url, ("cfn_jobs", "priority"))
    reopened = Store(url, clock=clock)
    try:
        assert new_job(reopened, priority=2).priority == 2
        claimed = reopened.claim_job("w")
        assert claimed is not None and claimed.priority == 2
    finally:
        reopened.close()


def test_each_job_is_claimed_exactly_once_under_concurrency(stores):
    stores = [stores() for _ in range(2)]  # two "replicas"
    ids = {new_job(stores[0]).id for _ in range(50)}
    claims: list[tuple[str, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        name = f"w{i}"
        try:
            barrier.wait()
            while (job := stores[i % 2].claim_job(name)) is not None:
                assert job.claimed_by == name and job.state == "running"
                with lock:
                    claims.append((job.id, name))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a claimer did not finish within 60 s"
    assert not errors, errors
    counts = Counter(job_id for job_id, _ in claims)
    assert set(counts) == ids
    assert all(n == 1 for n in counts.values()), counts.most_common(3)
    for job_id, name in claims:
        assert stores[1].get_job(job_id).claimed_by == name
    assert stores[0].queue_depth()["running"] == 50


def test_stale_running_job_is_taken_over_only_after_stale_after(store, clock):
    job = new_job(store)
    first = store.claim_job("dead", stale_after=30)
    store.update_job(job.id, server="http://gpu1:8188", prompt_id="p-1")
    assert store.claim_job("alive", stale_after=30) is None  # heartbeat is fresh
    clock.advance(29)
    assert store.claim_job("alive", stale_after=30) is None
    clock.advance(2)
    taken = store.claim_job("alive", stale_after=30)
    assert taken.id == job.id and taken.claimed_by == "alive" and taken.state == "running"
    assert taken.server == "http://gpu1:8188" and taken.prompt_id == "p-1"  # re-attachable
    assert taken.started_at == first.started_at
    assert taken.heartbeat_at == clock.now
    assert store.claim_job("third", stale_after=30) is None


def test_queued_jobs_go_before_stale_ones(store, clock):
    stale = new_job(store)
    store.claim_job("dead")
    clock.advance(100)
    fresh = new_job(store)
    assert store.claim_job("w", stale_after=30).id == fresh.id
    assert store.claim_job("w", stale_after=30).id == stale.id


def test_heartbeat_keeps_a_job_alive_and_staleness_follows_the_clock(store, clock):
    a, b = jobs_in_order(store, clock, 2)
    store.claim_job("w1")
    store.claim_job("w2")
    clock.advance(0.8)
    store.heartbeat("w1")
    assert store.get_job(a.id).heartbeat_at > store.get_job(b.id).heartbeat_at
    taken = store.claim_job("w3", stale_after=0.6)
    assert taken.id == b.id and taken.claimed_by == "w3"  # w2 stopped beating
    assert store.claim_job("w4", stale_after=0.6) is None  # w1's job is alive


def test_heartbeat_touches_only_the_workers_running_jobs(store, clock):
    mine, theirs, finished = jobs_in_order(store, clock, 3)
    store.claim_job("me")
    store.claim_job("them")
    store.claim_job("me")
    old = clock.now
    store.update_job(finished.id, state="succeeded")
    clock.advance(100)
    store.heartbeat("me")
    assert store.get_job(mine.id).heartbeat_at == clock.now
    assert store.get_job(theirs.id).heartbeat_at == old
    assert store.get_job(finished.id).heartbeat_at == old


def test_release_puts_a_job_back_in_the_queue(store):
    job = new_job(store)
    claimed = store.claim_job("w1")
    store.update_job(job.id, server="http://gpu1:8188", prompt_id="p-1")
    store.release_job(job.id)
    released = store.get_job(job.id)
    assert released.state == "queued" and released.claimed_by is None
    assert released.heartbeat_at is None and released.prompt_id == "p-1"
    again = store.claim_job("w2")
    assert again.id == job.id and again.claimed_by == "w2"
    assert again.started_at == claimed.started_at
    store.update_job(job.id, state="succeeded")
    store.release_job(job.id)  # a finished job stays finished
    assert store.get_job(job.id).state == "succeeded"


# -- files and the secret ----------------------------------------------------------------------


def test_files(store):
    job = new_job(store)
    f = store.add_file(
        job_id=job.id, path="ab/cd.png", content_type="image/png", size=1234, etag='"abc"'
    )
    assert f.id.startswith("file_") and f.size == 1234 and f.job_id == job.id
    assert store.get_file(f.id) == f
    assert store.get_file("file_missing") is None
    big = store.add_file(job_id=job.id, path="x", content_type="image/png", size=5 << 30, etag="e")
    assert store.get_file(big.id).size == 5 << 30


def test_secret_persists_across_stores(stores):
    a = stores()
    secret = a.secret()
    assert isinstance(secret, bytes) and len(secret) == 32
    assert a.secret() == secret
    a.close()
    assert stores().secret() == secret


def test_concurrent_first_use_of_the_secret_agrees(stores):
    stores = [stores() for _ in range(4)]
    barrier = threading.Barrier(4)
    got: list[bytes] = []

    def read(s: Store) -> None:
        barrier.wait()
        got.append(s.secret())

    threads = [threading.Thread(target=read, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and len(set(got)) == 1


def test_reopening_keeps_data(stores):
    a = stores()
    secret, key = a.create_key("alice")
    job = new_job(a)
    a.close()
    b = stores()  # tables exist already
    assert b.find_key(secret) == key and b.get_job(job.id) == job


def test_attempts_are_kept_and_added_to_an_older_database(url, stores):
    store = stores()
    job = new_job(store)
    assert job.attempts == 0
    assert store.update_job(job.id, attempts=2).attempts == 2
    store.close()
    made_before_versions(url, ("cfn_jobs", "attempts"))  # as made before the column existed
    store = stores()
    assert store.get_job(job.id).attempts == 0
    assert new_job(store).attempts == 0


def test_a_database_made_before_key_priorities_gets_the_column(url, stores):
    store = stores()
    secret, _ = store.create_key("old")
    store.close()
    made_before_versions(url, ("cfn_keys", "max_priority"))  # made before the column existed
    store = stores()
    assert store.find_key(secret).max_priority == 0  # an existing key: normal jobs only
    assert store.create_key("new", max_priority=7)[1].max_priority == 7


def test_sqlite_uses_wal(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'g.db'}") as s, s.database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000


def test_sqlite_busy_timeout_is_configurable(url, stores):
    """A writer waits ``busy_timeout`` for another's lock, then fails; reads go on (WAL)."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    assert stores().busy_timeout == 30.0  # the default
    store = stores(busy_timeout=0.3)
    job = new_job(store)
    holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held longer than the timeout
    try:
        started = time.monotonic()  # SQLite's own wait: real time
        with pytest.raises(OperationalError, match="locked"):
            new_job(store)
        assert 0.25 <= time.monotonic() - started < 10
        assert store.get_job(job.id) == job
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert new_job(store).state == "queued"  # the lock gone, writes work again
    with pytest.raises(ValueError):
        stores(busy_timeout=-1)


def test_in_memory_sqlite_is_shared_between_threads():
    with Store("sqlite://") as s:
        job = new_job(s)
        got: list[JobRecord | None] = []
        t = threading.Thread(target=lambda: got.append(s.claim_job("w")))
        t.start()
        t.join(30)
        assert got[0] is not None and got[0].id == job.id


# -- runners on many machines: fencing, model-aware claims, the registry, schema versions ---


def test_a_stale_claim_changes_nothing_and_the_new_holder_finishes(store, clock):
    """A claims; A's heartbeat stops past stale_after; B takes over (the claim counter moves
    on); every write A makes afterwards changes nothing and says so; B's writes count."""
    from comfyfn.jobs.store import NewFile, StaleClaim

    job = new_job(store)
    a = store.claim_job("a")
    assert a.claims == 1 and a.claim.worker == "a"
    store.update_job(job.id, fence=a.claim, server="http://gpu1:8188", prompt_id="p-1")
    clock.advance(31)
    b = store.claim_job("b", stale_after=30)
    assert b.id == job.id and b.claims == 2 and b.prompt_id == "p-1"  # re-attach, not rerun
    assert not store.holds(job.id, a.claim) and store.holds(job.id, b.claim)
    before = all_rows(store.url)
    with pytest.raises(StaleClaim):
        store.update_job(job.id, fence=a.claim, progress=0.5)
    with pytest.raises(StaleClaim):
        store.complete_job(job.id, [NewFile("x/0.png", "image/png", 1, "e")], fence=a.claim)
    store.release_job(job.id, fence=a.claim)
    assert store.heartbeat("a", {job.id: a.claims}) == {job.id}
    assert all_rows(store.url) == before  # not one byte changed by the stale holder
    done, files = store.complete_job(
        job.id, [NewFile("x/0.png", "image/png", 1, "e")], fence=b.claim, state="succeeded"
    )
    assert done.state == "succeeded" and [f.id for f in files] == done.outputs
    with pytest.raises(StaleClaim):  # a finished job is no longer held by anyone
        store.update_job(job.id, fence=b.claim, state="failed")


def test_the_same_name_restarted_does_not_inherit_its_old_claim(store, clock):
    """Fencing is by claim, not by name: a worker restarted under its name takes over its
    job with a new counter, and the old process's writes are stale."""
    from comfyfn.jobs.store import StaleClaim

    new_job(store)
    old = store.claim_job("gpu1")
    clock.advance(31)
    again = store.claim_job("gpu1", stale_after=30)
    assert again.claims == old.claims + 1
    assert store.heartbeat("gpu1", {old.id: old.claims}) == {old.id}
    with pytest.raises(StaleClaim):
        store.update_job(old.id, fence=old.claim, state="succeeded")
    assert store.heartbeat("gpu1", {again.id: again.claims}) == set()


def test_claims_take_priority_then_loaded_models_then_age(store, clock):
    def job(models, priority=0):
        clock.advance(1)
        return new_job(store, models=models, priority=priority)

    oldest, other = job("m-flux"), job("m-zimage")
    urgent_elsewhere = job("m-flux", priority=5)
    newer_loaded = job("m-zimage")
    order = [j.id for j in store.claim_jobs("w", limit=4, models={"m-zimage"})]
    assert order == [urgent_elsewhere.id, other.id, newer_loaded.id, oldest.id]


def test_without_loaded_models_claims_are_by_priority_then_age(store, clock):
    first = new_job(store, models="m-a")
    clock.advance(1)
    second = new_job(store, models="m-b")
    assert [j.id for j in store.claim_jobs("w", limit=2)] == [first.id, second.id]


def test_runners_register_refresh_and_list_with_their_jobs(store, clock):
    servers = [{"url": "http://127.0.0.1:8188", "models": ["z.safetensors"], "in_flight": 1}]
    store.register_worker("gpu1", host="h1", pid=10, free_slots=2, servers=servers)
    started = clock.now
    clock.advance(5)
    store.register_worker("gpu1", host="h1", pid=10, free_slots=1, servers=servers)
    store.register_worker("gpu2", host="h2", pid=11, free_slots=0, servers=[])
    new_job(store)
    store.claim_job("gpu1")
    gpu1, gpu2 = store.workers()
    assert (gpu1.name, gpu1.started_at, gpu1.heartbeat_at) == ("gpu1", started, clock.now)
    assert (gpu1.free_slots, gpu1.running, gpu1.servers) == (1, 1, servers)
    assert (gpu2.name, gpu2.running) == ("gpu2", 0)
    clock.advance(100)
    store.register_worker("gpu2", host="h2", pid=11, free_slots=0, servers=[])
    assert store.forget_workers(60) == 1
    store.unregister_worker("gpu2")
    assert store.workers() == []


def test_queued_jobs_counted_by_workflow_and_priority(store):
    for workflow, priority in [("a", 0), ("a", 0), ("a", 5), ("b", 0)]:
        store.create_job(key_id="k", workflow=workflow, params={}, priority=priority)
    store.claim_job("w")  # the a/5 one: running, no longer queued
    assert sorted(store.queued_by_workflow()) == [("a", 0, 2), ("b", 0, 1)]


def test_a_new_database_is_at_the_newest_revision(url, store):
    from comfyfn.jobs.database import head_revision

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        have = conn.exec_driver_sql("SELECT version_num FROM cfn_alembic_version").scalar()
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("cfn_jobs")}
    engine.dispose()
    assert have == head_revision() == "0004"
    assert {"cfn_jobs_queued", "cfn_jobs_batch"} <= indexes


def test_a_database_made_before_versions_is_stamped_and_upgraded(url, stores):
    store = stores()
    job = new_job(store, priority=3)
    store.close()
    made_before_versions(url)
    store = stores()
    assert store.get_job(job.id).priority == 3
    assert store.claim_job("w").claims == 1  # the new columns are there
    test_a_new_database_is_at_the_newest_revision(url, store)


def test_a_schema_newer_than_this_comfyfn_is_refused_untouched(url, stores):
    from comfyfn.jobs.database import SchemaTooNew

    stores().close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE cfn_alembic_version SET version_num = '0099'")
    engine.dispose()
    before = all_rows(url)
    with pytest.raises(SchemaTooNew, match=r"revision 0099, newer than this comfyfn"):
        stores()
    assert all_rows(url) == before


def test_a_job_s_run_times_are_kept(store):
    """The report of a queued batch shows each row's execution time and turnaround
    (revision 0004)."""
    job = new_job(store)
    claimed = store.claim_job("w")
    assert claimed is not None and (claimed.executed, claimed.turnaround) == (None, None)
    done, _ = store.complete_job(
        job.id, [], state="succeeded", executed=1.25, turnaround=3.5, fence=claimed.claim
    )
    assert (done.executed, done.turnaround) == (1.25, 3.5)
    assert store.get_job(job.id) == done
