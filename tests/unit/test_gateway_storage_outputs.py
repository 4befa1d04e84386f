"""The gateway's output files (named by comfyfn.outputs, written by comfyfn.storage.put_files,
mapped back by comfyfn.gateway._outputs): every kind of a Generation with its media type,
stored under <job_id>/<i>.<ext> in a real local folder; old absolute paths
mapped to keys; OpenAI's routes given the still images only while a job's view lists every
output with its media type; the storage setting resolved argument > environment > default;
the warm-up's readiness; previews handed to the bus."""

from __future__ import annotations

import pytest

from comfyfn.events import Preview
from comfyfn.gateway import service
from comfyfn.gateway._outputs import KnownFiles, stored_key
from comfyfn.gateway.registry import Registry
from comfyfn.gateway.runtime import Runtime, WarmUp
from comfyfn.gateway.settings import GatewaySettings, default_data_dir
from comfyfn.jobs import write_outputs
from comfyfn.jobs.bus import JobUpdate
from comfyfn.jobs.schema import FileRecord
from comfyfn.jobs.store import Store
from comfyfn.outputs import indexed_files, output_files
from comfyfn.result import Generation, Image, Output, Timings
from comfyfn.storage import LocalStorage
from tests.support.fake_fleet import FakeFleet, new_job, started
from tests.support.polling import await_for
from tests.support.tests_png import image_bytes

pytestmark = pytest.mark.anyio


def generation() -> Generation:
    still = Image(image_bytes((8, 8), "red"), "9", "a.png")
    outputs = (
        Output("image", "image/png", still.data, "9", "a.png"),  # also in images: once only
        Output("animated", "image/webp", b"RIFF\0\0\0\0WEBPVP8X", "2", "anim_00001_.webp"),
        Output("audio", "audio/flac", b"fLaC", "3", "sound_00001_.FLAC"),
        Output("file", "application/octet-stream", b"\0", "4", "odd.na/me"),
        Output("text", "text/plain", "héllo".encode(), "5"),
    )
    return Generation("p", "s", (still,), {"seed": 1}, {}, Timings(0, 0, 0), (), outputs)


def test_every_output_is_kept_with_its_media_type_still_images_first():
    files = output_files(generation())
    assert [(f.content_type, f.ext, f.still_image) for f in files] == [
        ("image/png", "png", True),
        ("image/webp", "webp", False),
        ("audio/flac", "flac", False),
        ("application/octet-stream", "bin", False),
        ("text/plain; charset=utf-8", "txt", False),
    ]
    assert b"comfyfn" in files[0].data  # the still image carries its provenance
    assert files[4].data.decode() == "héllo"


async def test_outputs_are_stored_under_the_job_id(tmp_path):
    storage = LocalStorage(tmp_path)
    new = await write_outputs(storage, indexed_files(generation(), "job_1"))
    assert [n.path for n in new] == [
        "job_1/0.png",
        "job_1/1.webp",
        "job_1/2.flac",
        "job_1/3.bin",
        "job_1/4.txt",
    ]
    assert (tmp_path / "job_1" / "4.txt").read_bytes() == "héllo".encode()
    assert [n.size for n in new] == [len((tmp_path / n.path).read_bytes()) for n in new]
    assert new[1].content_type == "image/webp" and len(new[1].etag) == 32


def test_old_absolute_paths_map_to_keys_inside_the_folder_only(tmp_path):
    storage = LocalStorage(tmp_path / "files")
    assert stored_key(storage, "job_1/0.png") == "job_1/0.png"
    assert stored_key(storage, str(tmp_path / "files" / "job_1" / "0.png")) == "job_1/0.png"
    assert stored_key(storage, str(tmp_path / "elsewhere.png")) is None
    assert stored_key(storage, str(tmp_path / "files" / ".." / "x.png")) is None


def test_known_files_keep_the_most_recent():
    known = KnownFiles(limit=2)
    records = [FileRecord(f"file_{i}", "job", f"job/{i}", "image/png", 1, "e", 0) for i in range(3)]
    known.remember(records)
    assert known.get("file_0") is None and known.get("file_2") is records[2]
    assert known.missing(["file_0", "file_1"]) == ["file_0"]


def test_storage_setting_argument_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv("COMFYFN_GATEWAY_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("COMFYFN_STORAGE", raising=False)
    resolve = GatewaySettings.resolve
    assert resolve(servers=[]).storage == default_data_dir() / "files" == tmp_path / "data/files"
    monkeypatch.setenv("COMFYFN_STORAGE", "s3://bucket/env")
    assert resolve(servers=[]).storage == "s3://bucket/env"
    assert resolve(servers=[], storage=str(tmp_path / "arg")).storage == tmp_path / "arg"
    assert resolve(servers=[], storage="s3://b/p").storage == "s3://b/p"


def test_warm_up_holds_readiness_until_done_and_after_a_failure():
    assert WarmUp(()).problem() is None
    warm = WarmUp(("zimage-turbo",))
    assert (warming := warm.problem()) is not None and warming.code == "warming_up"
    warm.done = True
    assert warm.problem() is None
    warm.failed.append("zimage-turbo (ExecutionFailed)")
    problem = warm.problem()
    assert problem is not None and (problem.status, problem.code) == (503, "warm_up_failed")
    assert "zimage-turbo (ExecutionFailed)" in problem.message


class PreviewFleet(FakeFleet):
    """The worker tests' stand-in fleet, whose job sends a sampler preview first."""

    async def run(self, ticket, slot, *, on_submit, on_event=None, validate=True):
        await on_event(Preview("p", "3", b"jpeg-bytes", 4, "image/jpeg"))
        return await super().run(ticket, slot, on_submit=on_submit, on_event=on_event)


async def test_a_jobs_previews_reach_the_bus(tmp_path, monkeypatch):
    async with started(tmp_path, PreviewFleet(), monkeypatch) as (worker, _):
        job = new_job(worker.store)
        with worker.bus.subscribe(job.id) as news:
            worker.job_created()

            async def previewed() -> bool:
                await news.wait(0.1)
                return news.preview is not None

            await await_for(previewed, 10, "a preview on the bus")
        preview = news.preview.item
        assert (preview.job_id, preview.step, preview.data, preview.content_type) == (
            job.id,
            4,
            b"jpeg-bytes",
            "image/jpeg",
        )


async def test_openai_routes_get_the_still_images_only(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    settings = GatewaySettings(servers=("http://fake",), db_url=store.url, storage=tmp_path)
    runtime = Runtime(settings, store, Registry(), LocalStorage(tmp_path))
    try:
        job = store.create_job(key_id="key_1", workflow="w", params={})[0]
        stored = await write_outputs(runtime.storage, indexed_files(generation(), job.id))
        done, files = store.complete_job(job.id, stored, state="succeeded")
        (png,) = [f for f in files if f.content_type == "image/png"]
        in_hand = JobUpdate(done, files, (b"png-bytes",))
        assert await service.output_records(runtime, in_hand) == [png]
        assert await service.output_bytes(runtime, in_hand) == [b"png-bytes"]
        other_replica = JobUpdate(done)  # nothing published here: read from store and storage
        assert await service.output_records(runtime, other_replica) == [png]
        assert await service.output_bytes(runtime, other_replica) == [
            (tmp_path / png.path).read_bytes()
        ]
        shown = service.job_view(runtime, done, "http://gw").outputs
        assert [(o.content_type, o.size) for o in shown] == [
            (f.content_type, f.size) for f in files
        ]
    finally:
        store.close()
