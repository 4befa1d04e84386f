"""What a failing object store's StorageError says (it becomes a job's error): what failed,
in our words, never obstore's own text (its "Generic S3 error", the request it made, its
retries, the server's XML). A real store (SeaweedFS) refusing the credentials, and a port
where no store listens."""

from __future__ import annotations

import pytest

from comfyfn.storage import S3Storage, StorageError
from tests.support.ports import free_port
from tests.support.s3server import S3Server

pytestmark = pytest.mark.anyio


def store(s3: S3Server, **env: str) -> S3Storage:
    return S3Storage.from_url(f"s3://{s3.bucket}/errors", env={**s3.env(), **env})


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        (
            {"AWS_SECRET_ACCESS_KEY": "wrong" * 8},
            "the object store denied access (check the credentials and the bucket)",
        ),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}"}, "the object store cannot be reached"),
    ],
    ids=["wrong-credentials", "nobody-listening"],
)
async def test_a_failing_store_is_described_in_our_words(s3: S3Server, env, reason) -> None:
    storage = store(s3, **{k: v.format(port=free_port()) for k, v in env.items()})
    for action, call in (
        ("store", storage.put("a.png", b"x", "image/png")),
        ("read", storage.get("a.png")),
        ("look up", storage.exists("a.png")),
    ):
        with pytest.raises(StorageError) as caught:
            await call
        assert str(caught.value) == f"could not {action} a.png in s3://{s3.bucket}/errors: {reason}"
