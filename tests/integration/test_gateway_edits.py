"""Image inputs through a running gateway on the local engine: the official OpenAI SDK's
``images.edit``, the typed endpoint with an upload made from a URL on a loopback server,
and a job naming another key's upload."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator

import httpx
import openai
import pytest
from PIL import Image

from tests.support.gateway_proc import Gateway, auth, make_key, sqlite_gateway
from tests.support.polling import wait_for
from tests.support.tests_png import image_bytes

pytestmark = pytest.mark.engine

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def gw(server, tmp_path_factory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("edits")
    workflows = ("-w", "zimage-turbo", "-w", "zimage-edit")
    # --allow-private-webhooks also lets uploads fetch from the loopback server
    with sqlite_gateway([server], root, *workflows, "--allow-private-webhooks") as gateway:
        gateway.key = make_key(gateway.db, "edits")
        gateway.other = make_key(gateway.db, "other")
        yield gateway


def sdk(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.key, max_retries=0, timeout=300)


def final_job(gw: Gateway, key: str, job_id: str, timeout: float = 240.0) -> dict:
    def final() -> dict | None:
        job = httpx.get(f"{gw.url}/v1/jobs/{job_id}", headers=auth(key)).json()
        return job if job["state"] in FINAL else None

    return wait_for(final, timeout, f"job {job_id} to end")


def test_the_openai_sdk_edits_an_image_at_the_size_asked(gw, engine, tmp_path, unique):
    data = image_bytes((100, 75), "orange")
    path = tmp_path / "my holiday photo.png"
    path.write_bytes(data)
    with sdk(gw) as client, path.open("rb") as image:
        result = client.images.edit(
            image=image,
            prompt="a cat on a sofa",
            size="64x48",
            response_format="b64_json",
            extra_body={"steps": 2, "seed": unique(), "denoise": 0.5},
        )
    assert result.data is not None
    (out,) = result.data
    assert Image.open(io.BytesIO(base64.b64decode(out.b64_json or ""))).size == (64, 48)
    # on the ComfyUI server the image is named by its content, never by the caller's name
    inputs = engine.base / "input"
    stored = inputs / "comfyfn" / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
    assert stored.read_bytes() == data
    assert not list(inputs.rglob("*holiday*"))


def test_without_a_size_the_output_has_the_inputs_size_rounded_to_16(gw, tmp_path, unique):
    path = tmp_path / "in.png"
    path.write_bytes(image_bytes((100, 75), "teal"))
    with sdk(gw) as client, path.open("rb") as image:
        result = client.images.edit(
            image=image, prompt="a boat", n=2, extra_body={"steps": 2, "seed": unique()}
        )
    assert result.data is not None and len(result.data) == 2
    for item in result.data:
        assert item.url is not None
        answer = httpx.get(item.url, timeout=30)
        assert answer.status_code == 200
        assert Image.open(io.BytesIO(answer.content)).size == (96, 80)


def test_an_upload_by_url_runs_on_the_typed_endpoint(gw, file_server, unique):
    base, files = file_server.url, file_server.files
    files["/product.png"] = image_bytes((64, 64), "navy")
    made = httpx.post(
        f"{gw.url}/v1/uploads", json={"url": f"{base}/product.png"}, headers=auth(gw.key)
    )
    assert made.status_code == 201, made.text
    upload_id = made.json()["id"]
    answer = httpx.post(
        f"{gw.url}/v1/workflows/zimage-edit/jobs",
        json={"prompt": "a vase", "image": upload_id, "steps": 2, "seed": unique()},
        headers=auth(gw.key),
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["params"]["image"] == {"upload": upload_id}  # a reference, no bytes
    job = final_job(gw, gw.key, answer.json()["id"])
    assert job["state"] == "succeeded", job["error"]
    (output,) = job["outputs"]
    png = httpx.get(output["url"], timeout=30)
    assert Image.open(io.BytesIO(png.content)).size == (64, 64)


def test_a_job_naming_another_keys_upload_fails_naming_the_parameter(gw):
    mine = httpx.post(
        f"{gw.url}/v1/uploads",
        files={"file": ("a.png", image_bytes((32, 32), "gold"), "image/png")},
        headers=auth(gw.key),
    ).json()["id"]
    # /v1/jobs takes the reference as it is; the worker finds no such upload for this key
    answer = httpx.post(
        f"{gw.url}/v1/jobs",
        json={"workflow": "zimage-edit", "params": {"prompt": "x", "image": {"upload": mine}}},
        headers=auth(gw.other),
    )
    assert answer.status_code == 202, answer.text
    job = final_job(gw, gw.other, answer.json()["id"], timeout=60)
    assert job["state"] == "failed"
    assert job["error"]["type"] == "UploadMissing"
    assert "image" in job["error"]["message"] and mine in job["error"]["message"]


def edit(gw: Gateway, data: bytes, seed: int) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/images/edits",
        files={"image": ("in", data, "application/octet-stream")},
        data={"prompt": "x", "size": "32x32", "steps": "2", "seed": str(seed)},
        headers=auth(gw.key),
        timeout=300,
    )


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        image_bytes((1, 1), "red", fmt="JPEG"),
        image_bytes((1, 1), 90, fmt="JPEG", mode="L"),
        image_bytes((1, 1), (1, 2, 3, 4), fmt="JPEG", mode="CMYK"),
        image_bytes((1, 1), "red", fmt="WEBP"),
        image_bytes((3, 2), 9, mode="L"),
        encoded(Image.new("I;16", (5, 3), 40000), "PNG"),
        encoded(Image.new("P", (7, 5), 1), "PNG", transparency=0),
    ],
    ids=[
        "1x1-jpeg",
        "1x1-grey-jpeg",
        "1x1-cmyk-jpeg",
        "1x1-webp",
        "grey-png",
        "16-bit-png",
        "palette-png",
    ],
)
def test_tiny_grey_and_16_bit_inputs_edit_on_every_comfyui(gw, data, unique):
    # ComfyUI 0.28 reads inputs through PyAV, which fails on all but 8-bit RGB(A) here (500)
    answer = edit(gw, data, unique())
    assert answer.status_code == 200, answer.text
    (image,) = answer.json()["data"]
    assert Image.open(io.BytesIO(httpx.get(image["url"], timeout=30).content)).size == (32, 32)


def test_an_input_the_server_cannot_read_is_a_422_naming_the_field(gw, engine, unique):
    data = image_bytes((16, 16), unique())
    assert edit(gw, data, 1).status_code == 200
    # the worker's client remembers the server has the image; spoil the server's copy
    stored = engine.base / "input" / "comfyfn" / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
    stored.write_bytes(b"not an image any more")
    answer = edit(gw, data, 2)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["param"] == "image" and error["code"] == "unreadable_image"
    assert error["message"].startswith("image: the ComfyUI server could not read this image")
