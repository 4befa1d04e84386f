"""Output images: a damaged ``/view`` body is fetched again, then the job fails clearly.

Through :class:`tests.support.fake_comfy.FakeComfy`, which answers with the recorded responses.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import httpx
import pytest

from comfyfn.client._job import follow
from comfyfn.client._outputs import fetch_outputs
from comfyfn.errors import CorruptOutput
from comfyfn.events import BinaryFrame, Succeeded
from tests.support.fake_comfy import (
    GOOD_PNG,
    GRAPH,
    HALF_PNG,
    SERVER,
    TYPES,
    FakeComfy,
    history_for,
    spec,
)
from tests.support.sockets import NoSocket

pytestmark = pytest.mark.anyio


@pytest.fixture
def prompt_id() -> str:
    return "5d3a3c1e-0000-4000-8000-000000000001"


@pytest.fixture
def fake(prompt_id) -> FakeComfy:
    return FakeComfy(prompt_id)


def _entry(prompt_id: str) -> dict:
    return history_for(prompt_id, graph=GRAPH)[prompt_id]


async def _fetch(fake: FakeComfy, prompt_id: str, *, retries: int = 3, **kw):
    entry = _entry(prompt_id)
    images, _ = await fetch_outputs(
        fake.session(retries=retries), entry, [], TYPES, prompt_id=prompt_id, **kw
    )
    return images


async def test_truncated_png_is_fetched_again(fake, prompt_id):
    fake.set(
        "GET", "/view", httpx.Response(200, content=HALF_PNG), httpx.Response(200, content=GOOD_PNG)
    )
    (image,) = await _fetch(fake, prompt_id)
    assert image.data == GOOD_PNG
    assert fake.count("GET", "/view") == 2


async def test_always_truncated_png_fails_with_corrupt_output(fake, prompt_id):
    fake.set("GET", "/view", httpx.Response(200, content=HALF_PNG))
    with pytest.raises(CorruptOutput) as info:
        await _fetch(fake, prompt_id, retries=2)
    err = info.value
    assert (err.node_id, err.filename, err.prompt_id, err.server) == (
        "2",
        "t_00001_.png",
        prompt_id,
        SERVER,
    )
    assert "is cut short" in err.reason and "fetched 3 times" in err.reason
    assert str(err).startswith(f"output t_00001_.png from node 2 of job {prompt_id} is unusable")
    assert fake.count("GET", "/view") == 3


async def test_body_shorter_than_content_length_is_fetched_again(fake, prompt_id):
    short = httpx.Response(
        200, content=GOOD_PNG, headers={"content-length": str(len(GOOD_PNG) + 10)}
    )
    fake.set("GET", "/view", short)
    with pytest.raises(CorruptOutput, match=r"bytes arrived but Content-Length said"):
        await _fetch(fake, prompt_id, retries=1)
    assert fake.count("GET", "/view") == 2


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"<html><body>Bad Gateway</body></html>", "the body is not an image"),
        (b"", "the body is empty"),
        (GOOD_PNG[:-20], "is cut short"),
    ],
)
async def test_non_image_bodies_are_corrupt(fake, prompt_id, body, what):
    fake.set("GET", "/view", httpx.Response(200, content=body))
    with pytest.raises(CorruptOutput, match=what):
        await _fetch(fake, prompt_id, retries=0)


async def test_transient_view_error_then_good(fake, prompt_id):
    fake.set("GET", "/view", httpx.Response(503), httpx.Response(200, content=GOOD_PNG))
    (image,) = await _fetch(fake, prompt_id)
    assert image.data == GOOD_PNG


async def test_non_image_outputs_are_not_decoded(fake, prompt_id):
    entry = _entry(prompt_id)
    entry["outputs"]["2"]["images"][0]["filename"] = "clip_00001_.mp4"
    fake.set("GET", "/view", httpx.Response(200, content=b"\x00\x00\x00\x18ftypmp42"))
    images, (video,) = await fetch_outputs(fake.session(), entry, [], TYPES, prompt_id=prompt_id)
    assert not images
    assert (video.kind, video.media_type, video.filename) == (
        "video",
        "video/mp4",
        "clip_00001_.mp4",
    )
    assert video.data.endswith(b"mp42")


async def test_expected_size_mismatch_names_both_sizes(fake, prompt_id):
    with pytest.raises(CorruptOutput) as info:
        await _fetch(fake, prompt_id, expect_size=(1024, 768))
    err = info.value
    assert (err.expected_size, err.actual_size) == ((1024, 768), (64, 64))
    assert "it is 64x64 but 1024x768 was expected" in str(err)
    assert fake.count("GET", "/view") == 1  # a decoded image of the wrong size is not re-fetched
    (image,) = await _fetch(fake, prompt_id, expect_size=(64, 64))
    assert image.size == (64, 64)


async def _follow(session, prompt_id: str, **settings) -> list:
    job = follow(session, NoSocket("ws://unused"), spec(prompt_id, **settings), None)
    return [event async for event in job]


async def test_expected_size_through_a_whole_job(fake, prompt_id):
    with pytest.raises(CorruptOutput, match="64x64 but 128x128"):
        await _follow(fake.session(), prompt_id, expect_size=(128, 128))
    events = await _follow(FakeComfy(prompt_id).session(), prompt_id, expect_size=(64, 64))
    assert isinstance(events[-1], Succeeded)


async def test_damaged_websocket_frame_is_corrupt(fake, prompt_id):
    entry: dict[str, dict] = {"outputs": {}, "status": {"messages": []}}
    types = {"5": "SaveImageWebsocket"}
    good = BinaryFrame(1, GOOD_PNG, "image/png", "5", prompt_id)
    (image,), (output,) = await fetch_outputs(
        fake.session(), entry, [good], types, prompt_id=prompt_id, expect_size=(64, 64)
    )
    assert image.type == "websocket"
    assert (output.kind, output.media_type, output.data) == ("image", "image/png", GOOD_PNG)
    bad = BinaryFrame(1, HALF_PNG, "image/png", "5", prompt_id)
    with pytest.raises(CorruptOutput, match="the websocket frame is cut short"):
        await fetch_outputs(fake.session(), entry, [bad], types, prompt_id=prompt_id)


def test_retries_print_nothing_with_logging_unconfigured():
    """Slow by design (~0.5 s): a fresh interpreter, where logging is unconfigured."""
    script = textwrap.dedent(
        """
        import asyncio, io, httpx
        from PIL import Image
        from comfyfn.client._http import HttpSession
        from comfyfn.client._outputs import fetch_outputs

        buf = io.BytesIO(); Image.new("RGB", (8, 8)).save(buf, format="PNG")
        good = buf.getvalue()
        R = httpx.Response
        answers = {"/queue": [R(503), R(502), R(200, json={})],
                   "/view": [R(200, content=good[:30]), R(200, content=good)]}

        def handler(request):
            queue = answers[request.url.path]
            r = queue.pop(0)
            return httpx.Response(r.status_code, content=r.content)

        async def main():
            mock = httpx.MockTransport(handler)
            s = HttpSession("http://comfy.test", httpx.Timeout(5), transport=mock)
            print(await s.get_json("/queue"))
            entry = {"outputs": {"2": {"images": [{"filename": "a.png"}]}}}
            images, _ = await fetch_outputs(s, entry, [], {"2": "SaveImage"}, prompt_id="p")
            print(len(images[0].data) == len(good))
            await s.aclose()

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{}\nTrue\n"
    assert done.stderr == ""


async def test_every_output_kind_is_classified_and_only_still_images_are_decoded(fake, prompt_id):
    entry = {
        "outputs": {
            "2": {"images": [{"filename": "a.png", "type": "output"}]},
            "3": {"images": [{"filename": "anim.webp"}], "animated": [True]},
            "4": {"audio": [{"filename": "sound.flac", "subfolder": "audio"}]},
            "5": {"images": [{"filename": "clip.webm"}], "animated": [True]},
            "6": {"text": ["hello", "wörld"]},
            "7": {"3d": [{"filename": "mesh.glb"}]},
        },
        "status": {"messages": []},
    }
    bodies = {"a.png": GOOD_PNG, "anim.webp": b"RIFF....WEBPnot-decoded"}

    def view(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bodies.get(request.url.params["filename"], b"bytes"))

    fake.set("GET", "/view", view)
    types = {"2": "SaveImage", "3": "SaveAnimatedWEBP", "4": "SaveAudio", "5": "SaveWEBM"}
    images, outputs = await fetch_outputs(fake.session(), entry, [], types, prompt_id=prompt_id)
    assert [i.filename for i in images] == ["a.png"]
    kinds = [(o.node_id, o.kind, o.media_type) for o in outputs]
    assert kinds == [
        ("2", "image", "image/png"),
        ("3", "animated", "image/webp"),
        ("4", "audio", "audio/flac"),
        ("5", "video", "video/webm"),
        ("7", "file", "model/gltf-binary"),
        ("6", "text", "text/plain"),
        ("6", "text", "text/plain"),
    ]
    assert outputs[1].data == bodies["anim.webp"]  # an animated image is kept as it came
    assert outputs[2].subfolder == "audio"
    assert [o.text for o in outputs[-2:]] == ["hello", "wörld"]
