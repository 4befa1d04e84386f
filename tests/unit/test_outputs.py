"""What a finished job writes (comfyfn.outputs): every kind of output, named for an API job
(``<id>/<i>.<ext>``) and for a batch row (``<base>.png`` for its still images, delivered at
the row's size; ``<base>_<kind><i>.<ext>`` for the rest; a JPEG kept a JPEG unless
delivered), the kind read back from a batch name, Generation.save naming them alike; and
comfyfn.storage.put_files writing them with their media types."""

from __future__ import annotations

import io

import pytest
from PIL import Image as PIL

from comfyfn import read_provenance
from comfyfn.outputs import indexed_files, named_files, named_kind
from comfyfn.result import Generation, Image, Output, Timings
from comfyfn.storage import LocalStorage, StoredFile, put_files
from tests.support.tests_png import image_bytes


def generation(stills: int = 1) -> Generation:
    images = tuple(Image(image_bytes((8, 6), "red"), "9", f"a{i}.png") for i in range(stills))
    outputs = (
        *(Output("image", "image/png", im.data, "9", im.filename) for im in images),
        Output("animated", "image/webp", b"RIFF\0\0\0\0WEBPVP8X", "2", "anim_00001_.webp"),
        Output("text", "text/plain", "第一".encode(), "5"),
        Output("video", "video/mp4", b"\0\0\0\x18ftypmp42", "7", "clip_00001_.mp4"),
        Output("text", "text/plain", b"second", "6"),
        Output("audio", "audio/flac", b"fLaC", "3", "sound_00001_.FLAC"),
    )
    return Generation("p", "s", images, {"seed": 1}, {}, Timings(0, 0, 0), (), outputs)


def test_a_batch_row_names_every_output_after_its_base():
    named = named_files(generation(), "images/row-7")
    assert [(rel, f.content_type) for rel, f in named] == [
        ("images/row-7.png", "image/png"),
        ("images/row-7_animated0.webp", "image/webp"),
        ("images/row-7_text0.txt", "text/plain; charset=utf-8"),
        ("images/row-7_video0.mp4", "video/mp4"),
        ("images/row-7_text1.txt", "text/plain; charset=utf-8"),
        ("images/row-7_audio0.flac", "audio/flac"),
    ]
    assert named[2][1].data.decode() == "第一"
    assert [named_kind(rel) for rel, _ in named] == [
        "image",
        "animated",
        "text",
        "video",
        "text",
        "audio",
    ]


def test_several_still_images_are_numbered_and_delivered_at_the_rows_size(tmp_path):
    named = named_files(generation(stills=2), "out/x", {"width": 16, "height": 16, "fit": "cover"})
    stills = [(rel, f) for rel, f in named if f.still_image]
    assert [rel for rel, _ in stills] == ["out/x_0.png", "out/x_1.png"]
    for _, file in stills:
        (tmp_path / "d.png").write_bytes(file.data)
        with PIL.open(tmp_path / "d.png") as made:
            assert made.size == (16, 16)
        assert read_provenance(tmp_path / "d.png")["delivery"]["from"] == [8, 6]
    assert named_kind("out/x_1.png") == "image"


def test_an_api_job_keeps_the_servers_order_under_its_id():
    keys = [key for key, _ in indexed_files(generation(), "job_1")]
    assert keys == [
        "job_1/0.png",
        "job_1/1.webp",
        "job_1/2.txt",
        "job_1/3.mp4",
        "job_1/4.txt",
        "job_1/5.flac",
    ]


@pytest.mark.anyio
async def test_put_files_writes_every_file_in_order(tmp_path):
    named = named_files(generation(), "images/r")
    stored = await put_files(LocalStorage(tmp_path), named)
    assert [s.key for s in stored] == [rel for rel, _ in named]
    for (rel, file), kept in zip(named, stored, strict=True):
        assert (tmp_path / rel).read_bytes() == file.data
        assert kept.size == len(file.data)


def test_generation_save_numbers_other_outputs_within_their_kind_as_a_batch_row(tmp_path):
    saved = generation().save(tmp_path, prefix="g")
    names = [p.name for p in saved]
    assert names == [
        "g_1_0.png",
        "g_1_animated0.webp",
        "g_1_text0.txt",
        "g_1_video0.mp4",
        "g_1_text1.txt",
        "g_1_audio0.flac",
    ]
    kinds = [rel.rsplit("_", 1)[1].split(".")[0] for rel, _ in named_files(generation(), "g_1")]
    assert kinds[1:] == [n.rsplit("_", 1)[1].split(".")[0] for n in names[1:]]
    assert (tmp_path / "g_1_text0.txt").read_text("utf-8") == "第一"


def jpeg_generation() -> Generation:
    buf = io.BytesIO()
    PIL.new("RGB", (8, 6), "blue").save(buf, format="JPEG")
    still = Image(buf.getvalue(), "9", "a.jpg")
    apng = Output("animated", "image/png", image_bytes((8, 6), "red"), "2", "anim_00001_.png")
    return Generation("p", "s", (still,), {}, {}, Timings(0, 0, 0), (), (apng,))


def test_a_jpeg_keeps_its_type_and_is_a_png_once_delivered(tmp_path):
    named = named_files(jpeg_generation(), "images/j")
    assert [(rel, f.content_type, f.still_image) for rel, f in named] == [
        ("images/j.jpg", "image/jpeg", True),
        ("images/j_animated0.png", "image/apng", False),  # an animated PNG: no still image
    ]
    ((rel, file), _) = named_files(jpeg_generation(), "j", {"width": 4, "height": 4})
    assert (rel, file.content_type) == ("j.png", "image/png")
    (tmp_path / rel).write_bytes(file.data)
    with PIL.open(tmp_path / rel) as made:
        assert (made.format, made.size) == ("PNG", (4, 4))
    assert read_provenance(tmp_path / rel)["delivery"]["from"] == [8, 6]


class Recorded:
    """A storage that keeps what it was given (LocalStorage keeps no media type)."""

    def __init__(self) -> None:
        self.put_args: list[tuple[str, str]] = []

    async def put(self, key: str, data: bytes, content_type: str) -> StoredFile:
        self.put_args.append((key, content_type))
        return StoredFile(key, len(data), "etag")


@pytest.mark.anyio
async def test_put_files_passes_each_files_media_type():
    storage = Recorded()
    await put_files(storage, named_files(generation(), "r"))  # type: ignore[arg-type]
    assert storage.put_args == [
        ("r.png", "image/png"),
        ("r_animated0.webp", "image/webp"),
        ("r_text0.txt", "text/plain; charset=utf-8"),
        ("r_video0.mp4", "video/mp4"),
        ("r_text1.txt", "text/plain; charset=utf-8"),
        ("r_audio0.flac", "audio/flac"),
    ]


def test_a_webp_still_keeps_its_type_and_name():
    buf = io.BytesIO()
    PIL.new("RGB", (8, 6), "green").save(buf, format="WEBP")
    still = Image(buf.getvalue(), "9", "a.webp")
    assert (still.format, still.media_type) == ("webp", "image/webp")
    gen = Generation("p", "s", (still,), {}, {}, Timings(0, 0, 0), (), ())
    ((rel, file),) = named_files(gen, "images/w")
    assert (rel, file.content_type, file.data) == ("images/w.webp", "image/webp", still.data)
