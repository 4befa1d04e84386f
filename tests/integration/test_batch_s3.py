"""``comfyfn batch -o s3://bucket/prefix`` on the local engine and a real S3 server
(SeaweedFS): the images go to the store, the manifest stays in a local state folder, and a
resumed run checks the store (``exists``) instead of storing again."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path

import pytest
from PIL import Image as PIL
from typer.testing import CliRunner

from comfyfn.cli._app import app
from comfyfn.provenance import read_provenance
from comfyfn.storage import S3Storage

pytestmark = pytest.mark.engine
runner = CliRunner()


def test_batch_outputs_go_to_s3_and_resume_from_the_state_folder(
    s3, server, unique, tmp_path, monkeypatch
):
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3.bucket}/b-{uuid.uuid4().hex[:8]}/out"
    store = S3Storage.from_url(url, env=s3.env())
    seed = unique()
    source = tmp_path / "rows.csv"
    source.write_text(
        "prompt,seed,width,height,steps\n"
        + "".join(f"row {i},{seed + i},64,48,2\n" for i in range(3)),
        encoding="utf-8",
    )
    state = tmp_path / "state"
    args = ["batch", str(source), "-o", url, "--state", str(state), "-s", server, "--json"]

    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["done"] == 3
    keys = [f"images/00000{i}.png" for i in (1, 2, 3)]
    for i, key in enumerate(keys):
        data = asyncio.run(store.get(key))
        with PIL.open(io.BytesIO(data)) as image:
            assert image.size == (64, 48)
        path = tmp_path / f"{i}.png"
        path.write_bytes(data)
        assert read_provenance(path)["seed"] == seed + i
    assert (state / "manifest.sqlite").is_file() and (state / "summary.json").is_file()
    assert not (state / "images").exists()  # nothing of the images on the local disk

    # a stored file that is present is trusted (not stored again); a missing one is made again
    asyncio.run(store.put(keys[0], b"marker", "image/png"))
    asyncio.run(store.delete(keys[1]))
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert (summary["done"], summary["skipped"]) == (1, 2)
    assert asyncio.run(store.get(keys[0])) == b"marker"
    assert asyncio.run(store.exists(keys[1]))


def test_the_default_state_folder_is_keyed_by_the_url(tmp_path, monkeypatch) -> None:
    from comfyfn.batch import output_place

    monkeypatch.setenv("COMFYFN_HOME", str(tmp_path))
    folder, storage = output_place("s3://bucket/a/b/", None)
    again, _ = output_place("s3://bucket/a/b", None)
    other, _ = output_place("s3://bucket/a/c", None)
    assert folder == again != other and folder.parent == tmp_path / "batches"
    assert isinstance(storage, S3Storage)
    assert output_place("s3://bucket/x", Path("st"))[0] == Path("st")
    assert output_place("out", None) == (Path("out"), None)


def test_a_store_that_fails_stops_the_batch_with_exit_2_and_keeps_the_job_recorded(
    s3, server, unique, tmp_path, monkeypatch
):
    from comfyfn.batch import Manifest
    from tests.support.ports import free_port

    for name, value in {**s3.env(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}.items():
        monkeypatch.setenv(name, value)  # nothing listens there: every store call fails
    source = tmp_path / "rows.csv"
    source.write_text(f"prompt,seed,width,height,steps\nrow,{unique()},64,48,2\n", "utf-8")
    state = tmp_path / "state"
    url = f"s3://{s3.bucket}/b-{uuid.uuid4().hex[:8]}/out"
    result = runner.invoke(
        app, ["batch", str(source), "-o", url, "--state", str(state), "-s", server]
    )
    assert result.exit_code == 2, result.output
    assert "the outputs cannot be stored" in result.output
    manifest = Manifest(state / "manifest.sqlite")
    try:  # the job ran on the server: the next run re-attaches to it by its prompt id
        (record,) = manifest.records("submitted")
        assert record.prompt_id
    finally:
        manifest.close()
