"""The job store's cases (tests/unit/test_gateway_store.py) on a real PostgreSQL.

The unit module is loaded from its file and its cases run here with a ``url`` of a fresh
PostgreSQL database each (tests/support/pg.py starts a throwaway server; CI installs the binaries
with tests/pg_install.sh). Cases that hold only on SQLite have ``sqlite`` in their names and
are left out; PostgreSQL's own cases follow.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from comfyfn.jobs.store import Store


def _load_cases():
    path = Path(__file__).parents[1] / "unit" / "test_gateway_store.py"
    spec = importlib.util.spec_from_file_location("gateway_store_cases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_cases = _load_cases()
clock, stores, store, new_job = _cases.clock, _cases.stores, _cases.store, _cases.new_job
globals().update(
    {
        name: case
        for name, case in vars(_cases).items()
        if name.startswith("test_") and "sqlite" not in name
    }
)


@pytest.fixture
def url(postgres) -> str:
    return postgres.create_database()  # a fresh database per case


def test_a_plain_postgresql_url_means_psycopg_3(url):
    with Store(url.replace("postgresql+psycopg://", "postgresql://")) as s:
        assert s.url.startswith("postgresql+psycopg://")
        assert s.create_key("alice")[1].name == "alice"


def test_claims_skip_rows_another_transaction_holds(url, stores):
    """``FOR UPDATE SKIP LOCKED``: a claimer passes over a job another one is taking."""
    import sqlalchemy as sa

    first, second = new_job(stores()), new_job(stores())
    engine = sa.create_engine(url)
    try:
        with engine.begin() as holder:
            holder.execute(
                sa.text("SELECT id FROM cfn_jobs WHERE id = :id FOR UPDATE"), {"id": first.id}
            )
            assert stores().claim_job("w").id == second.id
        assert stores().claim_job("w").id == first.id  # free again once the holder is done
    finally:
        engine.dispose()


def test_a_look_for_work_reads_indexes_not_the_finished_jobs(url, stores):
    """Every statement of a claim is planned as an index scan with a long history: a seq
    scan from the table's start (where the finished jobs are) cost 19 ms at 100,000."""
    import sqlalchemy as sa

    store = stores()
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO cfn_jobs (id, key_id, workflow, params, state, progress, outputs, "
            "created_at, updated_at, cancel_requested, attempts, priority, claims) "
            "SELECT 'old_' || i, 'k', 'w', '{}', 'succeeded', 1, '[]', i, i, false, 0, 0, 1 "
            "FROM generate_series(1, 20000) AS i"
        )
        conn.exec_driver_sql(  # a queue behind them, as a busy store has
            "INSERT INTO cfn_jobs (id, key_id, workflow, params, state, progress, outputs, "
            "created_at, updated_at, cancel_requested, attempts, priority, claims, batch) "
            "SELECT 'new_' || i, 'k', 'w', '{}', 'queued', 0, '[]', 1e6 + i, 1e6 + i, false, "
            "0, 0, 0, 'another batch' FROM generate_series(1, 400) AS i"
        )
        conn.exec_driver_sql("ANALYZE cfn_jobs")
    seen: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    sa.event.listen(store.database.engine, "before_cursor_execute", record)
    try:
        assert store.claim_jobs("w", limit=1, batch="b") == []  # nothing of this batch
        assert len(store.claim_jobs("w", limit=2, models=["m"])) == 2
    finally:
        sa.event.remove(store.database.engine, "before_cursor_execute", record)
    assert seen
    with store.database.engine.connect() as conn:
        for statement, parameters in seen:
            plan = "\n".join(
                row[0] for row in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            )
            assert "Seq Scan" not in plan, (statement, plan)
    engine.dispose()
