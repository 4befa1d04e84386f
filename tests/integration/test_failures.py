"""Failures the real server produces: validation, runtime errors, interrupts, lost sockets."""

from __future__ import annotations

import asyncio
import copy
import shutil

import pytest

import comfyfn
from comfyfn import events as ev
from comfyfn.workflow import zimage_turbo
from tests.support.graphs import blur_graph, trivial_graph
from tests.support.polling import await_for, wait_for
from tests.support.ports import free_port

pytestmark = pytest.mark.engine


def _invalid(server, graph) -> comfyfn.WorkflowInvalid:
    """The server's own verdict: our pre-submit validation is switched off."""
    with comfyfn.Client(server) as c, pytest.raises(comfyfn.WorkflowInvalid) as info:
        c.run(graph, validate=False)
    return info.value


def test_validation_errors_are_readable(server, unique):
    base = trivial_graph(unique())

    g = copy.deepcopy(base)
    g["1"]["class_type"] = "NoSuchNode"
    unknown = str(_invalid(server, g))  # 0.3.75: "… does not exist"; 0.28: "… not found"
    assert "node 1" in unknown and "NoSuchNode" in unknown

    g = copy.deepcopy(base)
    del g["1"]["inputs"]["color"]
    assert "node 1 EmptyImage: required input 'color' is missing" in str(_invalid(server, g))

    g = copy.deepcopy(base)
    g["1"]["inputs"]["width"] = 0
    assert "node 1 EmptyImage: width 0: Value 0 smaller than min of 1" in str(_invalid(server, g))

    g = copy.deepcopy(base)
    g["1"]["inputs"]["width"] = "abc"
    assert "width 'abc' has the wrong type" in str(_invalid(server, g))

    g = copy.deepcopy(base)
    g["2"]["inputs"]["images"] = ["9", 0]
    assert "node 2 SaveImage" in str(_invalid(server, g))

    g = {"1": base["1"]}
    assert "Prompt has no outputs" in str(_invalid(server, g))


def test_link_type_mismatch_and_missing_model_file(server, unique):
    g = zimage_turbo().to_api()
    g["9"]["inputs"]["images"] = ["13", 0]  # a LATENT into SaveImage.images
    error = _invalid(server, g)
    assert "node 9 SaveImage: images expects IMAGE but receives LATENT from node 13" in str(error)

    with comfyfn.Client(server) as c, pytest.raises(comfyfn.WorkflowInvalid) as info:
        c.generate("p", model="missing.safetensors", size=(64, 64), seed=unique())
    (problem,) = info.value.problems
    assert (problem.node_id, problem.class_type, problem.input_name) == (
        "28",
        "UNETLoader",
        "unet_name",
    )
    assert "'z_image_turbo_bf16.safetensors'" in problem.message


def test_invalid_size_fails_before_anything_is_sent(server):
    with comfyfn.Client(server) as c:
        before = len(c.history())
        with pytest.raises(comfyfn.WorkflowInvalid, match="width 1000 is not a multiple of 16"):
            c.generate("p", size=(1000, 768))
        assert len(c.history()) == before


def test_corrupt_model_file_raises_execution_failed(engine, server, unique):
    vae_dir = engine.base / "models" / "vae"
    vae_dir.mkdir(parents=True, exist_ok=True)
    corrupt = vae_dir / "corrupt_ae.safetensors"
    corrupt.write_bytes(b"\xff" * 64 + b"not a safetensors file")
    try:
        with comfyfn.Client(server) as c, pytest.raises(comfyfn.ExecutionFailed) as info:
            c.generate("p", vae="corrupt_ae.safetensors", seed=unique(), size=(64, 64))
    finally:
        corrupt.unlink()
    error = info.value
    assert (error.node_id, error.class_type) == ("29", "VAELoader")
    # what safetensors says of a file whose 8-byte header length is 0xffff…: it is not
    # "any error", but the loader refusing this very file
    assert error.exception_type == "safetensors._safetensors_rust.SafetensorError"
    assert error.exception_message == "Error while deserializing header: header too large"
    assert (
        str(error) == f"node 29 VAELoader failed: {error.exception_type}: {error.exception_message}"
    )
    assert any("load_torch_file" in line or "safe_open" in line for line in error.traceback)
    assert error.prompt_id and error.server == server


def test_interrupt_a_running_job(server, unique):
    with comfyfn.Client(server) as c:
        seen: list[object] = []
        outcomes: list[str] = []
        for event in c.stream_graph(blur_graph(unique())):
            seen.append(event)
            is_blur = isinstance(event, ev.NodeStarted) and event.class_type == "ImageBlur"
            if is_blur and not outcomes:
                outcomes.append(c.cancel(event.prompt_id))
    assert outcomes == ["interrupted"]
    assert isinstance(seen[-1], ev.Stopped)
    assert isinstance(seen[-1].error, comfyfn.Interrupted) and not seen[-1].error.lost
    assert seen[-1].error.class_type == "ImageBlur"


def test_delete_a_queued_job(server, unique):
    with comfyfn.Client(server, check_interval=30) as c:
        running = c.stream_graph(blur_graph(unique()))
        blocker = next(running)  # queued (about 4 s of blurring)
        queued = c.stream_graph(trivial_graph(unique()))
        first = next(queued)
        assert isinstance(first, ev.Queued) and first.position >= 1
        assert c.cancel(first.prompt_id) == "dequeued"
        rest = list(queued)
        assert isinstance(rest[-1], ev.Stopped) and rest[-1].error.lost
        assert "removed from the queue" in str(rest[-1].error)
        assert c.history(first.prompt_id) == {}
        running.close()  # abandoning a stream cancels its job on the server
        entry = _history_entry(c, blocker.prompt_id)
        kinds = [kind for kind, _ in entry["status"]["messages"]]
        assert "execution_interrupted" in kinds and entry["outputs"] == {}


def _history_entry(c: comfyfn.Client, prompt_id: str) -> dict:
    """The job's history entry, once it has one (a job stops at a node boundary)."""
    return wait_for(
        lambda: c.history(prompt_id).get(prompt_id), 30, f"a history entry of job {prompt_id}"
    )


@pytest.mark.anyio
async def test_run_raises_interrupted(server, unique):
    color = unique()
    async with comfyfn.AsyncClient(server) as c:
        task = asyncio.create_task(c.run(blur_graph(color)))

        async def ours_running() -> str | None:  # our job, recognised by its color
            running = (await c.queue())["queue_running"]
            ours = running and running[0][2]["1"]["inputs"]["color"] == color
            return str(running[0][1]) if ours else None

        prompt_id = await await_for(ours_running, 60, "the job to run")
        await c.interrupt(prompt_id)
        with pytest.raises(comfyfn.Interrupted) as info:
            await task
    assert info.value.prompt_id == prompt_id


def test_whole_job_timeout_cancels_the_job(server, unique):
    with comfyfn.Client(server) as c:
        with pytest.raises(comfyfn.GenerationTimeout) as info:
            c.run(blur_graph(unique(), blurs=6), timeout=0.5)
        prompt_id = info.value.prompt_id
        assert prompt_id is not None
        # it was cancelled on the server, not left running
        events = list(c.stream_graph(trivial_graph(unique())))
        assert isinstance(events[-1], ev.Succeeded)
        entry = c.history(prompt_id).get(prompt_id)
        assert entry is None or entry["status"]["status_str"] == "error"


def test_many_quick_jobs_never_finish_without_outputs(server, unique):
    """execution_success precedes the history write (3 of 30 measured): never report empty."""
    with comfyfn.Client(server) as c:
        for _ in range(30):
            gen = c.run(trivial_graph(unique()))
            assert len(gen.images) == 1 and gen.images[0].width == 64


def test_websocket_loss_mid_job_still_returns_images(server, unique):
    with comfyfn.Client(server) as c:
        events = []
        for event in c.stream_graph(blur_graph(unique(), blurs=3)):
            events.append(event)
            if isinstance(event, ev.NodeStarted) and event.node_id == "10":
                c._drop_websocket()  # a test hook, not public API
        assert isinstance(events[-1], ev.Succeeded)
        assert events[-1].generation.images[0].width == 64
        finished = [e.node_id for e in events if isinstance(e, ev.NodeFinished)]
        assert finished == ["3"]  # picked up from /history after the drop
        # the next job gets its socket back
        again = list(c.stream("p", seed=unique(), size=(64, 64), steps=2))
        assert any(isinstance(e, ev.Progress) for e in again)


def test_without_websocket_jobs_are_polled(server, unique, monkeypatch):
    from comfyfn.client import _async as client_module

    monkeypatch.setattr(client_module, "_ws_url", lambda s, cid: "ws://127.0.0.1:9/ws")
    with comfyfn.Client(server) as c:
        events = list(c.stream("p", seed=unique(), size=(64, 64)))
    assert [type(e).__name__ for e in events][:2] == ["Queued", "Started"]
    assert isinstance(events[-1], ev.Succeeded)
    assert events[-1].generation.images[0].height == 64


def test_unreachable_server_fails_fast_and_clearly():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with comfyfn.Client(url) as c, pytest.raises(comfyfn.ServerUnreachable) as info:
        c.generate("p", size=(64, 64))
    assert url in str(info.value)
    assert info.value.server == url


def test_save_image_websocket_frames_are_the_images(server, unique):
    g = zimage_turbo().to_api()
    g["9"] = {"class_type": "SaveImageWebsocket", "inputs": {"images": ["8", 0]}}
    with comfyfn.Client(server) as c:
        gen = c.generate("p", workflow=g, seed=unique(), size=(64, 80), batch_size=2)
    assert [(i.width, i.height, i.type) for i in gen.images] == [(64, 80, "websocket")] * 2


def test_upload_an_input_image(server, unique, tmp_path):
    from PIL import Image as PIL

    src = tmp_path / "in.png"
    PIL.new("RGB", (40, 24), (200, 10, 10)).save(src)
    with comfyfn.Client(server) as c:
        name = c.upload_image(src, name=f"up_{unique()}.png", subfolder="tests")
        gen = c.run(
            {
                "1": {"class_type": "LoadImage", "inputs": {"image": name}},
                "2": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["1", 0], "filename_prefix": "up"},
                },
            }
        )
    assert name.startswith("tests/")
    assert gen.images[0].to_pil().convert("RGB").getpixel((5, 5)) == (200, 10, 10)


def test_other_routes(engine, server):
    with comfyfn.Client(server) as c:
        assert c.system_stats()["system"]["comfyui_version"] == engine.install.version
        assert "supports_preview_metadata" in c.features()
        assert "KSampler" in c.object_info()
        assert c.object_info("EmptySD3LatentImage")["input"]["required"]["width"][1]["step"] == 16
        assert "z_image_turbo_bf16.safetensors" in c.models("diffusion_models")
        assert "vae" in c.models()
        assert set(c.queue()) >= {"queue_running", "queue_pending"}
        c.free()
        with pytest.raises(comfyfn.HTTPStatusError) as info:
            c.view("does-not-exist.png")
        assert info.value.status_code == 404


def test_model_file_copied_under_another_name_is_listed(engine, server):
    src = engine.install.tiny_models / "vae" / "ae.safetensors"
    dst = engine.base / "models" / "vae" / "copy_of_ae.safetensors"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    try:
        with comfyfn.Client(server) as c:
            assert "copy_of_ae.safetensors" in c.models("vae")
    finally:
        dst.unlink()
