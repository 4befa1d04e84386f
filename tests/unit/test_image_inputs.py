"""Input images bound by meaning or path: content-hashed names, checks, and the default size."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import warnings

import pytest
from PIL import Image as PIL

from comfyfn.client._inputs import fetch_url, fetch_urls
from comfyfn.errors import ConfigError, WorkflowInvalid
from comfyfn.result import Image
from comfyfn.workflow import ComfyWarning, InputImage, Workflow, _images, builtin
from tests.support.fileserver import FileServer, Reply
from tests.support.special_files import make_fifo, make_sparse, without_waiting_on
from tests.support.tests_png import image_bytes

warnings.simplefilter("ignore", ComfyWarning)


def test_zimage_edit_offers_image_and_sizes_the_output_from_it():
    wf = builtin("zimage-edit")
    assert {p.name: p.type for p in wf.params}["image"] == "IMAGE"
    data = image_bytes((100, 75), "red")
    bound = wf.bind(image=data, prompt="p", denoise=0.5)
    name = f"comfyfn/{hashlib.sha256(data).hexdigest()[:32]}.png"
    graph = bound.to_api()
    assert graph["40"]["inputs"]["image"] == name
    assert (graph["41"]["inputs"]["width"], graph["41"]["inputs"]["height"]) == (96, 80)
    assert graph["3"]["inputs"]["denoise"] == 0.5
    assert bound.uploads[name].data == data
    assert bound.values["image"] == name
    explicit = wf.bind(image=data, width=64, height=48).to_api()["41"]["inputs"]
    assert (explicit["width"], explicit["height"]) == (64, 48)


def test_every_kind_of_image_gets_the_same_content_name(tmp_path):
    data = image_bytes((32, 32), "green")
    path = tmp_path / "a b.png"
    path.write_bytes(data)
    wf = builtin("zimage-edit")
    names = {
        wf.bind(image=value).to_api()["40"]["inputs"]["image"]
        for value in (data, path, str(path), Image(data, "9", "x.png"))
    }
    assert len(names) == 1 and "a b" not in names.pop()
    from_pil = wf.bind(image=PIL.new("RGB", (20, 20), "blue")).to_api()["40"]["inputs"]["image"]
    assert from_pil.startswith("comfyfn/") and from_pil.endswith(".png")


def test_a_missing_path_or_non_image_or_url_in_bind_is_a_config_error(tmp_path):
    wf = builtin("zimage-edit")
    with pytest.raises(ConfigError, match="cannot be read"):
        wf.bind(image=tmp_path / "missing.png")
    with pytest.raises(ConfigError, match="not an image"):
        wf.bind(image=b"hello")
    with pytest.raises(ConfigError, match="fetched by the client"):
        wf.bind(image="https://example.invalid/a.png")
    with pytest.raises(ConfigError, match="takes a path"):
        wf.bind(image=3)


def test_by_path_a_server_file_name_stays_and_a_local_file_is_uploaded(tmp_path):
    wf = builtin("zimage-edit")
    assert wf.is_image_input("image") and wf.is_image_input("40.image")
    assert not wf.is_image_input("3.seed") and not wf.is_image_input("nothing.here")
    kept = wf.bind(**{"40.image": "example.png"})
    assert kept.to_api()["40"]["inputs"]["image"] == "example.png" and not kept.uploads
    local = tmp_path / "in.png"
    local.write_bytes(image_bytes((100, 75), "red"))
    bound = wf.bind(**{"Input image.image": local})
    assert bound.to_api()["40"]["inputs"]["image"] in bound.uploads


MASK_GRAPH = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
    "2": {"class_type": "LoadImageMask", "inputs": {"image": "m.png", "channel": "alpha"}},
    "3": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
}


def test_mask_and_several_images_are_found_by_meaning():
    wf = Workflow.load(MASK_GRAPH)
    bound = wf.bind(mask=image_bytes((8, 8), "red"))
    assert bound.to_api()["2"]["inputs"]["image"].startswith("comfyfn/")
    with pytest.raises(WorkflowInvalid, match="ambiguous"):
        wf.bind(image=image_bytes((100, 75), "red"))


@pytest.fixture
def local_http(file_server: FileServer) -> str:
    file_server.files["/ok.png"] = image_bytes((10, 10), "red")
    file_server.files["/page"] = Reply(b"<html>", media_type="text/html")
    return file_server.url


@pytest.mark.anyio
async def test_a_url_is_fetched_and_checked(local_http):
    image = await fetch_url(f"{local_http}/ok.png", "image")
    assert image.size == (10, 10) and image.media_type == "image/png"
    with pytest.raises(ConfigError, match="HTTP 404"):
        await fetch_url(f"{local_http}/gone.png", "image")
    with pytest.raises(ConfigError, match="text/html, not image"):
        await fetch_url(f"{local_http}/page", "image")


def test_bind_refuses_a_pipe_a_device_or_a_huge_file_naming_the_parameter(tmp_path, monkeypatch):
    wf = builtin("zimage-edit")
    fifo = make_fifo(tmp_path / "pipe.png")
    with pytest.raises(ConfigError, match=r"the image for image, .*pipe.png, is not a regular"):
        without_waiting_on(fifo, lambda: wf.bind(image=fifo))
    with pytest.raises(ConfigError, match=r"the image for mask, /dev/null, is not a regular"):
        Workflow.load(MASK_GRAPH).bind(mask="/dev/null")
    monkeypatch.setenv("COMFYFN_MAX_INPUT_BYTES", "1000")  # so a regression reads 1 MiB only
    huge = make_sparse(tmp_path / "huge.png", 1024**2)
    with pytest.raises(ConfigError) as caught:
        wf.bind(image=str(huge))
    assert str(caught.value) == (
        f"the image for image, {huge}, has 1,048,576 bytes; "
        "the limit is 1,000 bytes ($COMFYFN_MAX_INPUT_BYTES)"
    )
    monkeypatch.setenv("COMFYFN_MAX_INPUT_BYTES", "100")
    with pytest.raises(ConfigError, match="the limit is 100 bytes"):
        wf.bind(image=image_bytes((100, 75), "red"))  # bytes given: the same limit


def test_an_async_caller_reads_image_files_off_the_event_loop(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    path.write_bytes(image_bytes((32, 16), "red"))
    readers: list[int] = []
    real = _images.read_image_file

    def spy(*args, **kwargs):
        readers.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(_images, "read_image_file", spy)
    wf = builtin("zimage-edit")
    params = {"image": path, "40.image": "example.png", "prompt": "p"}
    out = asyncio.run(fetch_urls(wf, params))  # an event loop on this thread
    assert isinstance(out["image"], InputImage) and out["image"].size == (32, 16)
    assert out["40.image"] == "example.png" and out["prompt"] == "p"  # a server file name
    assert readers and threading.get_ident() not in readers
    bound = wf.bind(**out)
    assert bound.uploads == {out["image"].server_name: out["image"]}
    long_name = {"40.image": "x" * 5000}  # no local file: a server file name, as in bind
    assert asyncio.run(fetch_urls(wf, long_name)) == long_name
