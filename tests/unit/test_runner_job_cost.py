"""What a job costs the runner (issue 21): its graph is copied once, not once per reader; the
slots and typed inputs of a batch's jobs are found once per shape and per changed node; the
folder of a job's images is fsynced once per manifest commit, before the commit that marks
the jobs done; start-up's objects are kept out of the collector's full passes during a
batch. Each saving keeps what it replaced: the answers are those of the slow way."""

from __future__ import annotations

import asyncio
import copy
import errno
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import pytest

from comfyfn.batch import Row
from comfyfn.batch.jobs import Job, prepare
from comfyfn.batch.manifest import Manifest, ManifestError
from comfyfn.workflow import Workflow, _meaning, _params, zimage_turbo
from comfyfn.workflow._meaning import find_slots

ROW = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 64 px is outside Z-Image's recommended sizes
        yield


def _workflow() -> Workflow:
    wf = zimage_turbo()
    return wf.with_definitions(dict(wf.definitions))  # the definitions of one server


def test_a_job_is_prepared_checked_and_sent_without_deepcopy(monkeypatch):
    wf = _workflow()
    wf.inputs  # noqa: B018  (the batch types the workflow's inputs before its rows)

    def refused(*_: Any, **__: Any) -> Any:
        raise AssertionError("copy.deepcopy called while preparing a job")

    monkeypatch.setattr(copy, "deepcopy", refused)
    job = prepare(wf, Row(1, ROW))
    assert isinstance(job, Job), job
    job.workflow.validate(check_files=False)
    graph = job.workflow.to_api()
    assert graph == {k: dict(v) for k, v in job.workflow.graph.items()}
    assert graph["27"]["inputs"]["text"] == "a lighthouse"


def test_the_api_graph_shares_nothing_mutable_with_its_workflow():
    wf = _workflow().bind(prompt="a cat", seed=3)
    before = copy.deepcopy(dict(wf.graph))
    graph = wf.to_api()
    for node in graph.values():
        node["inputs"].clear()
        node.setdefault("_meta", {})["title"] = "changed"
    graph["3"] = {"class_type": "Nothing", "inputs": {}}
    assert dict(wf.graph) == before


def test_slots_are_found_once_per_shape_of_graph(monkeypatch):
    found: list[int] = []
    real = _meaning._find_slots

    def counted(graph: Any) -> Any:
        found.append(len(graph))
        return real(graph)

    monkeypatch.setattr(_meaning, "_find_slots", counted)
    monkeypatch.setattr(_meaning, "_FOUND", {})
    wf = _workflow()
    prepared = [prepare(wf, Row(i, {**ROW, "prompt": f"cat {i}"})) for i in range(1, 21)]
    jobs = [job for job in prepared if isinstance(job, Job)]
    assert [job.workflow.provenance()["prompt"] for job in jobs] == [
        f"cat {i}" for i in range(1, 21)
    ]
    assert len(found) == 1  # twenty jobs of one shape


def test_a_graph_of_another_shape_gets_its_own_slots():
    graph = zimage_turbo().to_api()
    plain = find_slots(graph)
    graph["50"] = {"class_type": "PrimitiveInt", "inputs": {"value": 320}}
    graph["13"]["inputs"]["width"] = ["50", 0]  # the width now comes from a primitive
    linked = find_slots(graph)
    assert plain.params["width"] == ("13", "width")
    assert linked.params["width"] == ("50", "value")
    graph["13"]["inputs"]["width"] = 512  # back to the first shape: its slots again
    assert find_slots(graph).params["width"] == ("13", "width")


def test_inputs_are_typed_again_only_for_the_nodes_a_job_changed(monkeypatch):
    typed: list[str] = []
    real = _params._typed_inputs

    def counted(node_id: str, node: Any, definition: Any) -> Any:
        typed.append(node_id)
        return real(node_id, node, definition)

    wf = _workflow()
    wf.inputs  # noqa: B018
    monkeypatch.setattr(_params, "_typed_inputs", counted)
    first = wf.bind(prompt="a cat", seed=1)
    assert {p.path: p.default for p in first.inputs}["27.text"] == "a cat"
    typed.clear()
    second = wf.bind(prompt="a dog", seed=1)
    defaults = {p.path: p.default for p in second.inputs}
    assert defaults["27.text"] == "a dog"  # not the first job's prompt
    assert typed == ["27"]  # the one node that differs from the job before
    assert [p.name for p in second.inputs] == [p.name for p in wf.inputs]


def test_a_value_of_another_type_is_typed_anew():
    info: dict[str, Any] = {}  # no definitions: a value's own type is its parameter's
    one = {"1": {"class_type": "Unknown", "inputs": {"flag": 1}}}
    true = {"1": {"class_type": "Unknown", "inputs": {"flag": True}}}
    assert [p.type for p in _params.all_inputs(one, info)] == ["INT"]
    assert [p.type for p in _params.all_inputs(true, info)] == ["BOOLEAN"]  # 1 == True
    assert [p.type for p in _params.all_inputs(one, info)] == ["INT"]


def test_new_definitions_type_a_node_anew():
    graph = {"1": {"class_type": "Steps", "inputs": {"steps": 4}}}
    old = {"Steps": {"input": {"required": {"steps": ["INT", {"min": 1, "max": 10}]}}}}
    new = {"Steps": {"input": {"required": {"steps": ["INT", {"min": 1, "max": 99}]}}}}
    assert [p.max for p in _params.all_inputs(graph, old)] == [10]
    assert [p.max for p in _params.all_inputs(graph, new)] == [99]  # a server's refreshed ones


def _states(path: Path) -> dict[str, str]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT key, state FROM jobs"))
    finally:
        db.close()


def test_done_jobs_have_their_folder_fsynced_once_per_commit_before_it(tmp_path, monkeypatch):
    from comfyfn.batch import manifest as manifest_module

    path, images = tmp_path / "manifest.sqlite", tmp_path / "images"
    images.mkdir()
    synced: list[tuple[Path, dict[str, str]]] = []
    monkeypatch.setattr(
        manifest_module, "fsync_directory", lambda folder: synced.append((folder, _states(path)))
    )
    manifest = Manifest(path)
    for i in range(10):
        manifest.add(f"k{i}", i, f"row {i}", f"{i:06d}", {})
    blocker = sqlite3.connect(path, isolation_level=None)

    async def go() -> None:
        blocker.execute("BEGIN IMMEDIATE")  # the disk is busy: the done marks pile up
        commits = [
            manifest.done(
                f"k{i}",
                [{"path": f"images/{i:06d}.png", "size": 1, "sha256": "0"}],
                "http://a",
                seconds=1.0,
                executed=1.0,
                folders=[images],
                block=False,
            )
            for i in range(10)
        ]
        await asyncio.sleep(0)
        blocker.execute("COMMIT")
        await commits[-1]

    try:
        asyncio.run(asyncio.wait_for(go(), 30))
    finally:
        blocker.close()
        manifest.close()
    assert 1 <= len(synced) <= 2  # the first mark may have been taken alone
    assert all(folder == images for folder, _ in synced)
    assert all("done" not in states.values() for _, states in synced[:1])  # before the commit
    assert _states(path) == {f"k{i}": "done" for i in range(10)}


def test_a_folder_that_cannot_be_synced_fails_the_done_mark(tmp_path, monkeypatch):
    from comfyfn.batch import manifest as manifest_module

    def failing(folder: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(manifest_module, "fsync_directory", failing)
    path = tmp_path / "manifest.sqlite"
    manifest = Manifest(path)
    manifest.add("k1", 1, "row 1", "000001", {})

    async def go() -> None:
        with pytest.raises(
            ManifestError, match=f"output folder \\({tmp_path / 'images'}\\): Input/output error"
        ):
            await manifest.done(
                "k1", [], "http://a", seconds=1.0, executed=1.0, folders=[tmp_path / "images"]
            )

    try:
        asyncio.run(asyncio.wait_for(go(), 30))
    finally:
        manifest.close()
    assert _states(path) == {"k1": "pending"}  # not marked done: its file may be lost
