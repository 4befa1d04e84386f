"""The manifest's schema versions: a new manifest is made by the Alembic baseline and stamped;
one made before versions is adopted once (gaining ``executed``), its rows kept; one a newer
comfyfn made is refused untouched; and an up-to-date one opens without importing Alembic."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from comfyfn.batch import migrations
from comfyfn.batch.manifest import Manifest
from comfyfn.errors import ComfyError, SchemaTooNew

#: the manifest's table as made before schema versions, once ``executed`` was added
MADE_BEFORE_VERSIONS = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    row INTEGER NOT NULL,
    label TEXT NOT NULL,
    stem TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    server TEXT,
    prompt_id TEXT,
    files TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    submitted_at REAL,
    finished_at REAL,
    seconds REAL,
    executed REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
"""
#: the first manifests: before ``executed``
MADE_BEFORE_EXECUTED = MADE_BEFORE_VERSIONS.replace(",\n    executed REAL", "")


def old_manifest(path: Path, schema: str) -> None:
    """A manifest as an older comfyfn left it (WAL, as it opened them), with two jobs."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    db.execute(
        "INSERT INTO jobs(key,row,label,stem,params,state,files,attempts,seconds) "
        "VALUES('a',1,'row 1','000001','{\"seed\": 1}','done','[\"000001.png\"]',1,2.5)"
    )
    db.execute(
        "INSERT INTO jobs(key,row,label,stem,params,state) "
        "VALUES('b',2,'row 2','000002','{}','pending')"
    )
    db.close()


def columns(path: Path | sqlite3.Connection) -> list[tuple]:
    """The jobs table's columns as SQLite sees them: name, type, not null, default, pk."""
    db = path if isinstance(path, sqlite3.Connection) else sqlite3.connect(path)
    try:
        return [row[1:] for row in db.execute("PRAGMA table_info(jobs)")]
    finally:
        if db is not path:
            db.close()


def revision(path: Path) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(f"SELECT version_num FROM {migrations.VERSION_TABLE}").fetchall()
    finally:
        db.close()


def dump(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def test_a_new_manifest_is_at_the_head_with_the_tables_manifests_always_had(tmp_path):
    path = tmp_path / "manifest.sqlite"
    Manifest(path).close()
    assert revision(path) == [(migrations.HEAD,)]
    reference = sqlite3.connect(":memory:")
    reference.executescript(MADE_BEFORE_VERSIONS)
    assert columns(path) == columns(reference)
    db = sqlite3.connect(path)
    indexes = {row[1]: row[2] for row in db.execute("PRAGMA index_list(jobs)")}
    db.close()
    assert indexes["jobs_state"] == 0  # and not unique


def test_an_in_memory_manifest_is_made_the_same_way():
    manifest = Manifest(":memory:")
    try:
        assert migrations.current(manifest.db) == migrations.HEAD
        manifest.add("k", 1, "row 1", "000001", {})
        assert manifest.counts() == {"pending": 1}
    finally:
        manifest.close()


@pytest.mark.parametrize("schema", [MADE_BEFORE_EXECUTED, MADE_BEFORE_VERSIONS])
def test_a_manifest_made_before_versions_is_adopted_with_its_rows(tmp_path, schema):
    path = tmp_path / "manifest.sqlite"
    old_manifest(path, schema)
    manifest = Manifest(path)
    try:
        done, pending = manifest.get("a"), manifest.get("b")
        assert done is not None and pending is not None
        assert (done.state, done.files, done.params, done.attempts) == (
            "done",
            ["000001.png"],
            {"seed": 1},
            1,
        )
        assert (done.seconds, done.executed) == (2.5, None)
        assert pending.state == "pending"
        manifest.done("b", [], "http://a", seconds=1.0, executed=0.5)  # the column is there
        assert manifest.get("b").executed == 0.5  # type: ignore[union-attr]
    finally:
        manifest.close()
    assert revision(path) == [(migrations.HEAD,)]
    assert [c[0] for c in columns(path)][-1] == "executed"
    Manifest(path).close()  # adopted once: the next open finds it at the head
    assert revision(path) == [(migrations.HEAD,)]


def test_a_manifest_a_newer_comfyfn_made_is_refused_untouched(tmp_path):
    path = tmp_path / "manifest.sqlite"
    manifest = Manifest(path)
    manifest.add("k", 1, "row 1", "000001", {})
    manifest.close()
    db = sqlite3.connect(path)
    db.execute(f"UPDATE {migrations.VERSION_TABLE} SET version_num='zzzz9999'")
    db.commit()
    db.close()
    before, data = dump(path), path.read_bytes()
    with pytest.raises(SchemaTooNew) as refused:
        Manifest(path)
    assert isinstance(refused.value, ComfyError)
    message = str(refused.value)
    assert str(path) in message and "zzzz9999" in message
    assert "a newer comfyfn made it" in message
    assert dump(path) == before and path.read_bytes() == data
    fd = os.open(tmp_path / "manifest.lock", os.O_RDWR)  # and the folder is free again
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_an_up_to_date_manifest_opens_without_alembic_or_sqlalchemy(tmp_path):
    path = tmp_path / "manifest.sqlite"
    Manifest(path).close()
    code = (
        "import sys\n"
        "from comfyfn.batch.manifest import Manifest\n"
        f"Manifest({str(path)!r}).close()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'sqlalchemy'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_head_in_code_is_alembics_head():
    from alembic.script import ScriptDirectory

    folder = migrations.VERSIONS.migrations
    script = ScriptDirectory(str(folder), version_locations=[str(folder / "versions")])
    assert script.get_current_head() == migrations.HEAD
