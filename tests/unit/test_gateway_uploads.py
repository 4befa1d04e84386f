"""Input images through the gateway, served in this process (uvicorn on loopback, its only
ComfyUI server unreachable, so no job runs): ``POST /v1/uploads`` (multipart, base64, URL),
its limits, content addressing per key, the typed endpoint's and ``/v1/images/edits``'
checks before anything is queued, and :func:`resolve_inputs` reading references back."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import sqlite3
import struct
import zlib
from collections.abc import Iterator

import anyio
import httpx
import pytest
from PIL import Image

from comfyfn.gateway.uploads import (
    MAX_UPLOAD_BYTES,
    UploadLimits,
    UploadMissing,
    UploadRefused,
    check_image,
    fetch_image,
    for_comfyui,
    resolve_inputs,
    store_image,
)
from comfyfn.storage import LocalStorage
from comfyfn.workflow import zimage_edit
from tests.support.fileserver import FileServer, Reply
from tests.support.gateway_proc import InProcess, auth, settings_for
from tests.support.tests_png import image_bytes

ELSEWHERE = "http://127.0.0.1:9/elsewhere.png"  #: where a redirect points
WORKFLOWS = (("zimage-turbo", "zimage-turbo"), ("zimage-edit", "zimage-edit"))


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> Iterator[InProcess]:
    root = tmp_path_factory.mktemp("uploads")
    settings = settings_for(
        root,
        ["http://127.0.0.1:9"],
        workflows=WORKFLOWS,
        max_body_bytes=64 * 1024 * 1024,
        allow_private_webhooks=True,
    )
    with InProcess(settings) as gateway:
        gateway.secret = gateway.key()
        gateway.key_id = gateway.store.find_key(gateway.secret).id
        gateway.other = gateway.key("other")
        gateway.root = root / "files"
        yield gateway


def upload(gateway, data: bytes, secret: str | None = None, name: str = "photo.png"):
    return httpx.post(
        f"{gateway.url}/v1/uploads",
        files={"file": (name, data, "image/png")},
        headers=auth(secret or gateway.secret),
        timeout=60,
    )


def error(answer: httpx.Response) -> dict:
    return answer.json()["error"]


# -- POST /v1/uploads -------------------------------------------------------------------------


def test_an_upload_is_content_addressed_per_key(offline):
    data = image_bytes((40, 30))
    sha = hashlib.sha256(data).hexdigest()
    first, again = upload(offline, data), upload(offline, data, name="other-name.png")
    assert first.status_code == 201, first.text
    assert first.json() == {
        "id": f"upl_{sha}",
        "object": "upload",
        "bytes": len(data),
        "width": 40,
        "height": 30,
        "media_type": "image/png",
    }
    assert again.json()["id"] == first.json()["id"]
    stored = offline.root / "uploads" / offline.key_id / f"{sha}.png"
    assert stored.read_bytes() == data
    assert not list(offline.root.rglob("*photo*")) and not list(offline.root.rglob("*other-name*"))


def test_base64_and_data_urls_give_the_same_id_as_the_file(offline):
    data = image_bytes((20, 20), "green", fmt="JPEG")
    by_file = upload(offline, data).json()
    for text in (
        base64.b64encode(data).decode(),
        "data:image/jpeg;base64," + base64.b64encode(data).decode(),
    ):
        answer = httpx.post(
            f"{offline.url}/v1/uploads", json={"b64_json": text}, headers=auth(offline.secret)
        )
        assert answer.status_code == 201, answer.text
        assert answer.json() == by_file
    assert by_file["media_type"] == "image/jpeg"


def test_an_upload_by_url_from_a_loopback_server(offline, file_server):
    data = image_bytes((24, 16), "blue", fmt="WEBP")
    file_server.files["/in.webp"] = data
    answer = httpx.post(
        f"{offline.url}/v1/uploads",
        json={"url": f"{file_server.url}/in.webp"},
        headers=auth(offline.secret),
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["id"] == "upl_" + hashlib.sha256(data).hexdigest()
    assert answer.json()["media_type"] == "image/webp"


@pytest.mark.parametrize(
    ("data", "status", "code", "words"),
    [
        (b"hello, not an image" * 10, 422, "not_an_image", "not a PNG, JPEG or WebP"),
        (image_bytes((10, 10))[:-30], 422, "not_an_image", "cut off or corrupt"),  # truncated
        (image_bytes((10, 10), fmt="GIF", mode="P", color=1), 422, "unsupported_image", "GIF"),
        (image_bytes((8000, 5001), mode="1", color=0), 422, "too_many_pixels", "40,008,000 pixels"),
        (
            image_bytes((15000, 12000), mode="1", color=0),
            422,
            "too_many_pixels",
            "decompression bomb",
        ),
        (b"\x89PNG" + bytes(MAX_UPLOAD_BYTES), 413, "too_large", "20,971,520"),
    ],
    ids=["text", "truncated", "gif", "pixels", "pillow-bomb", "bytes"],
)
def test_uploads_over_the_limits_are_refused_clearly(offline, data, status, code, words):
    answer = upload(offline, data)
    assert answer.status_code == status, answer.text
    assert error(answer)["code"] == code
    assert error(answer)["param"] == "file"
    assert words in error(answer)["message"]
    assert " at 0x" not in error(answer)["message"]  # never a Python object's repr


def jpeg_claiming(size: tuple[int, int]) -> bytes:
    """An 8x8 JPEG (633 bytes) whose header says it is ``size``: libjpeg fills in the rest."""
    data = image_bytes((8, 8), fmt="JPEG")
    at = data.find(b"\xff\xc0") + 5  # SOF0: precision, then height and width
    return data[:at] + struct.pack(">HH", size[1], size[0]) + data[at + 4 :]


@pytest.mark.parametrize(
    ("size", "code", "words"),
    [
        ((6000, 6000), "too_many_pixels", "decodes to 144,000,000 bytes"),
        ((2000, 2000), "not_an_image", "cut off or corrupt"),
    ],
    ids=["6000x6000", "2000x2000"],
)
def test_a_jpeg_whose_header_claims_more_than_its_data_is_refused(offline, size, code, words):
    answer = upload(offline, jpeg_claiming(size))
    assert answer.status_code == 422, answer.text
    assert error(answer)["param"] == "file" and error(answer)["code"] == code
    assert words in error(answer)["message"]


def test_a_cut_off_jpeg_is_refused_however_large_the_budget():
    limits = UploadLimits(max_pixels=10**9, max_decoded_bytes=10**12)
    with pytest.raises(UploadRefused) as refused:
        check_image(jpeg_claiming((6000, 6000)), "image", limits, "k")
    assert refused.value.code == "not_an_image" and refused.value.param == "image"


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"progressive": True, "optimize": True},
        {"subsampling": 0},
        {"mode": "L", "color": 3},
        {"mode": "CMYK", "color": (1, 2, 3, 4)},
        {"restart_marker_blocks": 1},
    ],
    ids=["baseline", "progressive", "4:4:4", "grey", "cmyk", "restart-markers"],
)
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (3000, 2000)], ids=["1x1", "3x5", "6Mpx"])
def test_complete_jpegs_are_taken_even_flat_ones_at_the_lowest_quality(options, size):
    mode, color = options.pop("mode", "RGB"), options.pop("color", "orange")
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="JPEG", quality=1, **options)
    upload = check_image(buffer.getvalue(), "image", UploadLimits(), "k")
    assert (upload.width, upload.height) == size


def png16(size: tuple[int, int]) -> bytes:
    """A black 16-bit RGB PNG: a few hundred KB that decode to 4 bytes a pixel."""
    row = b"\0" + bytes(6 * size[0])
    header = struct.pack(">IIBBBBB", *size, 16, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * size[1], 9))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


def test_the_decoded_bytes_are_budgeted_from_the_header(offline):
    answer = upload(offline, png16((6300, 6300)))  # 39.7 Mpx: under the pixel limit
    assert answer.status_code == 422, answer.text
    assert error(answer)["param"] == "file" and error(answer)["code"] == "too_many_pixels"
    assert "decodes to 158,760,000 bytes, over the limit of 67,108,864" in error(answer)["message"]
    within = upload(offline, png16((4000, 4000)))  # 64,000,000 bytes decoded
    assert within.status_code == 201, within.text


def deep_json(depth: int) -> bytes:
    return b'{"prompt": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    "path",
    ["/v1/jobs", "/v1/uploads", "/v1/images/edits", "/v1/workflows/zimage-edit/jobs"],
)
def test_a_json_body_nested_too_deeply_is_a_400_everywhere(offline, path):
    answer = httpx.post(  # (deeper than Python's recursion limit however deep the stack is)
        f"{offline.url}{path}",
        content=deep_json(5000),
        headers={**auth(offline.secret), "Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert error(answer)["type"] == "invalid_request_error"
    assert "Traceback" not in answer.text


def test_bad_upload_requests_name_what_is_wrong(offline):
    both = httpx.post(
        f"{offline.url}/v1/uploads",
        json={"b64_json": "aGk=", "url": "http://127.0.0.1:9/x.png"},
        headers=auth(offline.secret),
    )
    assert both.status_code == 422 and "exactly one" in error(both)["message"]
    garbage = httpx.post(
        f"{offline.url}/v1/uploads", json={"b64_json": "%%%"}, headers=auth(offline.secret)
    )
    assert garbage.status_code == 422 and error(garbage)["param"] == "b64_json"
    anonymous = httpx.post(f"{offline.url}/v1/uploads", files={"file": ("a.png", b"x")})
    assert anonymous.status_code == 401


# -- fetching by URL --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_url_to_a_private_address_is_refused_without_the_allowance(file_server):
    file_server.files["/in.png"] = image_bytes((8, 8))
    with pytest.raises(UploadRefused) as refused:
        await fetch_image(f"{file_server.url}/in.png", "image", UploadLimits(allow_private=False))
    assert refused.value.code == "url_refused" and "not public" in str(refused.value)
    assert "webhook" not in str(refused.value)


@pytest.mark.anyio
async def test_a_url_that_resolves_to_loopback_is_refused(file_server):
    port = file_server.url.rsplit(":", 1)[1]
    file_server.files["/in.png"] = image_bytes((8, 8))

    def resolver(host: str, _port: int) -> list[str]:
        assert host == "images.example.com"
        return ["93.184.216.34", "127.0.0.1"]  # one public, one loopback: refused

    with pytest.raises(UploadRefused) as refused:
        await fetch_image(
            f"http://images.example.com:{port}/in.png", "image", UploadLimits(), resolve=resolver
        )
    assert refused.value.code == "url_refused" and "127.0.0.1" in str(refused.value)


@pytest.mark.anyio
async def test_a_url_is_fetched_at_the_address_checked_with_its_host_header(file_server):
    port = file_server.url.rsplit(":", 1)[1]
    data = image_bytes((8, 8))
    file_server.files["/in.png"] = data
    limits = UploadLimits(allow_private=True)
    got = await fetch_image(
        f"http://images.test:{port}/in.png", "image", limits, resolve=lambda h, p: ["127.0.0.1"]
    )
    assert got == data


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "limits", "code", "words"),
    [
        (Reply(bytes(5000)), UploadLimits(max_bytes=1000), "too_large", "over 1,000 bytes"),
        (
            Reply(bytes(5000), sized=False),
            UploadLimits(max_bytes=1000),
            "too_large",
            "over 1,000 bytes",
        ),
        (Reply(held=True), UploadLimits(fetch_timeout=0.2), "url_failed", "within 0.2 s"),
        (Reply(status=302, location=ELSEWHERE), UploadLimits(), "url_failed", "HTTP 302"),
        (Reply(status=404), UploadLimits(), "url_failed", "HTTP 404"),
    ],
    ids=["declared-over-the-limit", "streamed-over-the-limit", "timeout", "redirect", "missing"],
)
async def test_url_fetches_are_bounded(file_server: FileServer, reply, limits, code, words):
    """Each refused as it happens: the held reply is sent only after the test, so its
    refusal can only be the fetch's own timeout (a fetch that waited would hang here)."""
    file_server.files["/x.png"] = reply
    limits = dataclasses.replace(limits, allow_private=True)
    with anyio.fail_after(60), pytest.raises(UploadRefused) as refused:
        await fetch_image(f"{file_server.url}/x.png", "image", limits)
    assert refused.value.code == code and words in str(refused.value)


@pytest.mark.anyio
async def test_the_next_address_is_tried_when_one_does_not_connect(file_server):
    port = file_server.url.rsplit(":", 1)[1]
    data = image_bytes((8, 8), "red")
    file_server.files["/in.png"] = data
    limits = UploadLimits(allow_private=True)
    got = await fetch_image(  # nothing listens on ::1 at this port (the server is IPv4 only)
        f"http://images.test:{port}/in.png",
        "image",
        limits,
        resolve=lambda h, p: ["::1", "127.0.0.1"],
    )
    assert got == data


# -- resolving a job's references ---------------------------------------------------------------


@pytest.mark.anyio
async def test_resolve_inputs_gives_the_bytes_of_the_keys_own_uploads(tmp_path):
    storage = LocalStorage(tmp_path)
    data = image_bytes((32, 32))
    stored = await store_image(storage, "key_a", data, "image", UploadLimits())
    values = {"prompt": "a cat", "image": {"upload": stored.id}, "denoise": 0.5}
    resolved = await resolve_inputs(storage, zimage_edit(), values, key_id="key_a")
    assert resolved == {**values, "image": data}
    bound = zimage_edit().bind(**resolved)
    (name,) = bound.uploads  # named by its hash, as the client uploads it: never a caller's name
    assert name == f"comfyfn/{stored.id[4:36]}.png"
    with pytest.raises(UploadMissing) as missing:  # another key's upload is no upload of yours
        await resolve_inputs(storage, zimage_edit(), values, key_id="key_b")
    assert missing.value.param == "image" and stored.id in str(missing.value)
    with pytest.raises(UploadRefused) as text:  # a text would be read as a local path
        await resolve_inputs(storage, zimage_edit(), {"image": "/etc/passwd"}, key_id="key_a")
    assert text.value.param == "image"


def png_header(data: bytes) -> tuple[int, int]:
    """A PNG's bit depth and colour type (2: RGB, 6: RGBA), from its IHDR."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return data[24], data[25]


@pytest.mark.anyio
async def test_resolve_inputs_hands_comfyui_8_bit_rgb_pngs_within_the_pixel_limit(tmp_path):
    storage = LocalStorage(tmp_path)
    stored = await store_image(
        storage, "k", image_bytes((1, 1), fmt="JPEG"), "image", UploadLimits()
    )
    values = {"prompt": "x", "image": {"upload": stored.id}}
    resolved = await resolve_inputs(storage, zimage_edit(), values, key_id="k", max_pixels=1)
    assert png_header(resolved["image"]) == (8, 2)
    with pytest.raises(UploadRefused) as over:
        await resolve_inputs(storage, zimage_edit(), values, key_id="k", max_pixels=0)
    assert over.value.param == "image" and over.value.code == "limit_exceeded"


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to show
    return encoded(Image.new("RGB", (4, 2), "red"), "JPEG", exif=exif)


@pytest.mark.parametrize(
    ("data", "header", "size", "pixel"),
    [
        (image_bytes((1, 1), "red", fmt="JPEG"), (8, 2), (1, 1), (254, 0, 0)),
        (encoded(Image.new("I;16", (3, 2), 40000), "PNG"), (8, 2), (3, 2), (155, 155, 155)),
        (encoded(Image.new("L", (2, 2), 7), "PNG"), (8, 2), (2, 2), (7, 7, 7)),
        (encoded(Image.new("P", (2, 2), 0), "PNG", transparency=0), (8, 6), (2, 2), (0,) * 4),
        (encoded(Image.new("LA", (2, 2), (9, 99)), "PNG"), (8, 6), (2, 2), (9, 9, 9, 99)),
        (image_bytes((2, 2), (1, 2, 3, 4), fmt="WEBP", mode="RGBA"), (8, 6), (2, 2), None),
        (rotated_jpeg(), (8, 2), (2, 4), None),
    ],
    ids=["1x1-jpeg", "16-bit-grey", "grey", "palette", "grey-alpha", "webp", "exif-rotated"],
)
def test_what_is_not_an_8_bit_rgb_png_is_re_encoded_for_comfyui(data, header, size, pixel):
    out = for_comfyui(data, "image")
    assert png_header(out) == header
    with Image.open(io.BytesIO(out)) as image:
        assert image.size == size
        assert pixel is None or image.getpixel((0, 0)) == pixel


def test_an_8_bit_rgb_or_rgba_png_goes_to_comfyui_as_it_is():
    for mode in ("RGB", "RGBA"):
        data = image_bytes((5, 3), mode=mode)
        assert for_comfyui(data, "image") is data


# -- the typed endpoint and /v1/images/edits: checked before anything is queued ---------------


def job_count(gateway) -> int:
    with sqlite3.connect(gateway.root.parent / "g.db") as db:
        return db.execute("SELECT count(*) FROM cfn_jobs").fetchone()[0]


@pytest.mark.parametrize(
    ("request_args", "param", "code"),
    [
        ({"json": {"prompt": "x"}}, "image", None),
        ({"json": {"prompt": "x", "image": "not-base64-%%%"}}, "image", "invalid_image_value"),
        ({"json": {"prompt": "x", "image": "upl_" + "0" * 64}}, "image", "upload_not_found"),
        (
            {"files": {"image": ("a.png", b"nope")}, "data": {"prompt": "x"}},
            "image",
            "not_an_image",
        ),
        (
            {"files": {"image": ("a.png", image_bytes((8, 8)))}, "data": {"steps": "abc"}},
            "steps",
            None,
        ),
        ({"files": {"prompt": ("a.png", image_bytes((8, 8)))}}, "prompt", None),
    ],
    ids=["missing", "garbage", "unknown-id", "not-an-image", "bad-field", "file-for-text"],
)
def test_the_typed_endpoint_refuses_bad_images_before_queueing(offline, request_args, param, code):
    before = job_count(offline)
    answer = httpx.post(
        f"{offline.url}/v1/workflows/zimage-edit/jobs",
        headers=auth(offline.secret),
        timeout=30,
        **request_args,
    )
    assert answer.status_code == 422, answer.text
    assert error(answer)["param"] == param
    if code:
        assert error(answer)["code"] == code
    assert job_count(offline) == before


def test_another_key_cannot_use_my_upload_id(offline):
    mine = upload(offline, image_bytes((16, 16), "purple")).json()["id"]
    theirs = httpx.post(
        f"{offline.url}/v1/workflows/zimage-edit/jobs",
        json={"prompt": "x", "image": mine},
        headers=auth(offline.other),
    )
    assert theirs.status_code == 422 and error(theirs)["code"] == "upload_not_found"
    # the owner gets past every image check: only the missing ComfyUI server stops the job
    own = httpx.post(
        f"{offline.url}/v1/workflows/zimage-edit/jobs",
        json={"prompt": "x", "image": mine},
        headers=auth(offline.secret),
    )
    assert own.status_code == 503 and error(own)["code"] == "no_server"


def test_the_input_size_counts_against_the_cost_limits(offline):
    big = image_bytes((3000, 2000))  # 6,000,000 pixels, over 2048²
    for size in ({}, {"size": "64x64"}):  # ComfyUI holds the input whole, whatever the output
        answer = httpx.post(
            f"{offline.url}/v1/images/edits",
            files={"image": ("big.png", big, "image/png")},
            data={"prompt": "x", **size},
            headers=auth(offline.secret),
            timeout=60,
        )
        assert answer.status_code == 400, answer.text
        assert error(answer)["code"] == "limit_exceeded" and error(answer)["param"] == "image"
        assert "3000 × 2000 = 6,000,000 pixels" in error(answer)["message"]
    typed = httpx.post(
        f"{offline.url}/v1/workflows/zimage-edit/jobs",
        files={"image": ("big.png", big, "image/png")},
        data={"prompt": "x", "width": "64", "height": "64"},
        headers=auth(offline.secret),
        timeout=60,
    )
    assert typed.status_code == 422 and error(typed)["param"] == "image", typed.text
    sized = httpx.post(
        f"{offline.url}/v1/images/edits",
        files={"image": ("in.png", image_bytes((2000, 2000)), "image/png")},
        data={"prompt": "x", "size": "512x512"},
        headers=auth(offline.secret),
        timeout=60,
    )
    assert sized.status_code == 503, sized.text  # within the limits: no server to run it


@pytest.mark.parametrize(
    ("files", "data", "param"),
    [
        ({}, {"prompt": "x"}, "image"),
        ({"image": ("a.png", image_bytes((8, 8)))}, {}, "prompt"),
        (
            {"image": ("a.png", image_bytes((8, 8))), "mask": ("m.png", image_bytes((8, 8)))},
            {"prompt": "x"},
            "mask",
        ),
        ({"image": ("a.png", image_bytes((8, 8)))}, {"prompt": "x", "size": "big"}, "size"),
        (
            {"image": ("a.png", image_bytes((8, 8)))},
            {"prompt": "x", "model": "zimage-turbo"},
            "model",
        ),
        ({"image": ("a.png", image_bytes((8, 8)))}, {"prompt": "x", "denoise": "2"}, "denoise"),
    ],
    ids=["no-image", "no-prompt", "mask-without-a-mask-input", "size", "no-image-input", "denoise"],
)
def test_edits_errors_are_openai_400s_naming_the_parameter(offline, files, data, param):
    answer = httpx.post(
        f"{offline.url}/v1/images/edits",
        files=files or {"x": ("", b"")},
        data=data,
        headers=auth(offline.secret),
    )
    assert answer.status_code == 400, answer.text
    assert error(answer)["param"] == param
    assert error(answer)["type"] == "invalid_request_error"


def test_the_openapi_document_shows_images_as_files_and_urls(offline):
    doc = httpx.get(f"{offline.url}/openapi.json").json()
    run = doc["paths"]["/v1/workflows/zimage-edit/jobs"]["post"]["requestBody"]["content"]
    assert run["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    as_json = run["application/json"]["schema"]
    assert "image" in as_json["required"] and "URL" in as_json["properties"]["image"]["description"]
    uploads = doc["paths"]["/v1/uploads"]["post"]["requestBody"]["content"]
    assert uploads["multipart/form-data"]["schema"]["properties"]["file"]["format"] == "binary"
    assert "url" in uploads["application/json"]["schema"]["properties"]
    edits = doc["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert (
        edits["multipart/form-data"]["schema"]["properties"]["image"]["items"]["format"] == "binary"
    )
    models = httpx.get(f"{offline.url}/v1/models", headers=auth(offline.secret)).json()
    assert "zimage-edit" in {m["id"] for m in models["data"]}


def test_of_several_edit_images_the_first_is_used(offline):
    big, small = image_bytes((3000, 2000)), image_bytes((64, 64))
    answer = httpx.post(  # as the OpenAI SDK sends a list of images
        f"{offline.url}/v1/images/edits",
        files=[("image[]", ("big.png", big, "image/png")), ("image[]", ("s.png", small))],
        data={"prompt": "x"},
        headers=auth(offline.secret),
        timeout=60,
    )
    assert answer.status_code == 400 and "3000 × 2000" in error(answer)["message"]


def test_a_job_cannot_carry_an_input_image_as_text(offline):
    answer = httpx.post(
        f"{offline.url}/v1/jobs",
        json={"workflow": "zimage-edit", "params": {"prompt": "x", "image": "/etc/passwd"}},
        headers=auth(offline.secret),
    )
    assert answer.status_code == 422 and error(answer)["param"] == "params.image"
