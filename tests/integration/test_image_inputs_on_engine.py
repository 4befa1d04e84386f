"""Images in, files out, on the real engine: zimage-edit with an input image by path and by
URL (uploaded once per server), a path naming no regular file within the byte limit refused
before anything is submitted, and outputs of every kind from a model-free graph."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image as PIL

import comfyfn
from comfyfn.errors import ConfigError
from tests.support.graphs import kinds_graph
from tests.support.special_files import make_fifo, make_sparse, without_waiting_on
from tests.support.tests_png import image_bytes

pytestmark = pytest.mark.engine


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real network transport, counting image uploads."""

    uploads = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/upload/image"):
            self.uploads += 1
        return await super().handle_async_request(request)


def test_an_input_image_through_zimage_edit_gives_its_size_rounded_to_16(server, unique, tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(image_bytes((100, 75), "orange"))
    with comfyfn.Client(server) as c:
        gen = c.generate("a cat", image=path, denoise=0.6, steps=2, seed=unique())
    (image,) = gen.images
    assert image.size == (96, 80)
    assert gen.workflow["40"]["inputs"]["image"].startswith("comfyfn/")
    assert gen.workflow["40"]["inputs"]["image"] != "comfyfn/photo.png"


@pytest.mark.anyio
async def test_an_image_by_url_is_uploaded_once_per_server_and_width_wins(
    server, unique, file_server
):
    base, files = file_server.url, file_server.files
    files["/in.png"] = image_bytes((64, 48), "blue")
    transport = CountingTransport()
    async with comfyfn.AsyncClient(server, transport=transport) as c:
        first = await c.generate("x", image=f"{base}/in.png", steps=1, seed=unique())
        again = await c.generate(
            "x", image=f"{base}/in.png", steps=1, seed=unique(), width=32, height=32
        )
        with pytest.raises(ConfigError, match="HTTP 404"):
            await c.submit("x", image=f"{base}/missing.png")
    assert first.images[0].size == (64, 48)
    assert again.images[0].size == (32, 32)
    assert transport.uploads == 1


def test_a_missing_path_fails_before_anything_is_submitted(server, tmp_path):
    with comfyfn.Client(server) as c, pytest.raises(ConfigError, match="cannot be read"):
        c.submit("x", image=tmp_path / "nope.png")


def test_an_animated_webp_and_a_text_output_come_back_typed(server, unique, tmp_path):
    graph = kinds_graph(unique() % 0xFFFF, f"hello {unique()}")
    with comfyfn.Client(server) as c:
        gen = c.run(graph)
    assert gen.images == ()
    (animated,) = gen.outputs_of("animated")
    assert (animated.media_type, animated.node_id) == ("image/webp", "2")
    assert animated.filename is not None and animated.filename.endswith(".webp")
    assert animated.data[12:16] == b"VP8X" and b"ANIM" in animated.data[:64]
    with PIL.open(io.BytesIO(animated.data)) as im:
        assert (im.size, getattr(im, "n_frames", 1)) == ((32, 24), 2)
    (text,) = gen.outputs_of("text")
    assert (text.node_id, text.media_type) == ("4", "text/plain")
    assert text.text == graph["3"]["inputs"]["value"]
    saved = gen.save(tmp_path, prefix="kinds")
    assert sorted(p.name for p in saved) == ["kinds_animated0.webp", "kinds_text0.txt"]
    assert (tmp_path / "kinds_text0.txt").read_text() == text.text


def test_a_pipe_a_device_or_a_huge_file_fails_before_anything_is_submitted(
    server, tmp_path, monkeypatch
):
    pipe = make_fifo(tmp_path / "pipe.png")
    monkeypatch.setenv("COMFYFN_MAX_INPUT_BYTES", "1000")  # so a regression reads 1 MiB only
    huge = make_sparse(tmp_path / "huge.png", 1024**2)
    with comfyfn.Client(server) as c:
        with pytest.raises(ConfigError, match=r"the image for image, .*, is not a regular file"):
            without_waiting_on(pipe, lambda: c.submit("x", image=pipe))
        with pytest.raises(ConfigError, match=r"/dev/null, is not a regular file \(a character"):
            c.submit("x", image="/dev/null")
        with pytest.raises(ConfigError, match="has 1,048,576 bytes; the limit is 1,000 bytes"):
            c.submit("x", image=huge)


def test_an_image_the_server_holds_is_not_rewritten_and_a_damaged_one_is_replaced(
    engine, server, unique, tmp_path
):
    """Two jobs of one image (an edit with n=2, two clients) each upload it: the second
    upload must leave the server's file alone, which a running prompt may be reading (an
    overwrite cut it short under the reader: "could not read this image"). A different
    file under the image's content-hashed name (cut short by a crash) is replaced."""
    path = tmp_path / "photo.png"
    path.write_bytes(image_bytes((40, 30), "olive"))
    held = engine.base / "input" / comfyfn.workflow.input_image(path, "image").server_name

    def edit() -> None:  # a client of its own: no memory of the others' uploads
        with comfyfn.Client(server) as c:
            (image,) = c.generate("x", image=path, steps=1, seed=unique()).images
        assert image.size == (32, 32)  # its size rounded to 16

    edit()
    written = held.stat().st_mtime_ns
    edit()
    assert held.stat().st_mtime_ns == written  # the same image: not written again
    held.write_bytes(path.read_bytes()[:100])  # cut short
    edit()
    assert held.read_bytes() == path.read_bytes()
