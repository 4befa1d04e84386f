"""LocalStorage on a real folder, key validation, and choosing a backend from a URL."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import comfyfn.storage
from comfyfn.errors import ComfyError, ConfigError
from comfyfn.storage import (
    LocalStorage,
    S3Storage,
    StorageError,
    StorageNotFound,
    StoredFile,
    open_storage,
    parse_s3_url,
    validate_key,
)

pytestmark = pytest.mark.anyio

ESCAPING_KEYS = [
    "../x",
    "a/../../x",
    "a/..",
    "/etc/passwd",
    "a\x00b",
    "a\\..\\x",
    "",
    "a//b",
    "./a",
    "a\nb",
    "x" * 1025,
]


@pytest.mark.parametrize("key", ESCAPING_KEYS)
def test_keys_that_escape_or_are_malformed_are_refused(key: str) -> None:
    with pytest.raises(StorageError) as caught:
        validate_key(key)
    assert isinstance(caught.value, ComfyError)
    assert caught.value.key == key


@pytest.mark.parametrize("key", ["a.png", "job-1/0.png", "a/b/c d é.webp", ".hidden/x"])
def test_ordinary_keys_pass(key: str) -> None:
    assert validate_key(key) == key


async def test_local_round_trip(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "out")
    data = os.urandom(5000)
    stored = await storage.put("job/0.png", data, "image/png")
    assert stored == StoredFile("job/0.png", 5000, hashlib.md5(data).hexdigest())
    assert (tmp_path / "out" / "job" / "0.png").read_bytes() == data
    assert await storage.exists("job/0.png")
    assert await storage.get("job/0.png") == data
    assert await storage.url("job/0.png", ttl=60) is None
    await storage.put("job/0.png", b"new", "image/png")
    assert await storage.get("job/0.png") == b"new"
    await storage.delete("job/0.png")
    assert not await storage.exists("job/0.png")
    await storage.delete("job/0.png")  # deleting twice is not an error
    assert [p.name for p in (tmp_path / "out" / "job").iterdir()] == []  # no temp file left


async def test_local_missing_file_raises_not_found(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(StorageNotFound, match=r"no stored file 'nope\.png'"):
        await storage.get("nope.png")
    (tmp_path / "dir").mkdir()
    with pytest.raises(StorageNotFound):
        await storage.get("dir")
    assert not await storage.exists("dir")


@pytest.mark.parametrize("key", ESCAPING_KEYS)
async def test_local_refuses_escaping_keys_everywhere(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "root")
    for call in (
        storage.put(key, b"x", "image/png"),
        storage.get(key),
        storage.exists(key),
        storage.delete(key),
        storage.url(key, 60),
    ):
        with pytest.raises(StorageError):
            await call
    assert not (tmp_path / "x").exists()


async def test_local_refuses_a_symlink_out_of_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(outside, target_is_directory=True)
    storage = LocalStorage(tmp_path / "root")
    with pytest.raises(StorageError, match="leaves"):
        await storage.put("link/x.png", b"x", "image/png")
    assert list(outside.iterdir()) == []


async def test_local_write_failure_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    storage = LocalStorage(tmp_path)
    with pytest.raises(StorageError, match="could not write"):
        await storage.put("file/x.png", b"x", "image/png")  # a file where a folder must be


def test_open_storage_chooses_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = open_storage(tmp_path)
    assert isinstance(local, LocalStorage) and local.root == tmp_path.resolve()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    remote = open_storage("s3://bucket/out/run1")
    assert isinstance(remote, S3Storage)
    assert (remote.bucket, remote.prefix) == ("bucket", "out/run1")


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://b") == ("b", "")
    assert parse_s3_url("s3://b/") == ("b", "")
    assert parse_s3_url("s3://b/a/c/") == ("b", "a/c")
    for bad in ("s3:///x", "http://b/x", "s3://b/x?y=1", "s3://b/../x"):
        with pytest.raises((ConfigError, StorageError)):
            parse_s3_url(bad)


def test_storage_imports_no_layer_and_loads_obstore_only_for_s3() -> None:
    """comfyfn.storage is a leaf (errors, _files and _public only); obstore loads for s3://
    alone."""
    package = Path(comfyfn.storage.__file__).parent
    imported = {
        node.module
        for path in package.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    assert {m for m in imported if m.startswith("comfyfn")} == {
        "comfyfn.errors",
        "comfyfn._files",
        "comfyfn._public",
    }
    code = (
        "import sys, tempfile, comfyfn.storage as s; s.open_storage(tempfile.gettempdir()); "
        "print(any(m.startswith('obstore') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
