"""``comfyfn.models.pull``: downloads from a loopback HTTP server with Range support —
resumed after an interrupted transfer, verified before they get their final name, refused
on a wrong hash or size with nothing left under the final name, one writer per file."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from comfyfn.errors import ConfigError
from comfyfn.models import ChecksumMismatch, DownloadFailed, _download, pull, pull_file
from tests.support.modelserver import BODY, SHA, ModelServer, entry, leftovers


@pytest.fixture
def backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits before retries, recorded instead of slept (the clock is left alone)."""
    waits: list[float] = []
    fake = SimpleNamespace(sleep=waits.append, monotonic=time.monotonic)
    monkeypatch.setattr(_download, "time", fake)
    return waits


@pytest.fixture
def server() -> Iterator[ModelServer]:
    srv = ModelServer()
    srv.start()
    yield srv
    srv.stop()


def test_a_file_is_downloaded_verified_and_renamed(server, tmp_path):
    seen: list[tuple[int, int | None]] = []
    pulled = pull_file(entry(server), tmp_path, on_progress=lambda f, d, t: seen.append((d, t)))
    target = tmp_path / "checkpoints" / "tiny.safetensors"
    assert pulled.action == "downloaded" and pulled.path == target
    assert target.read_bytes() == BODY and pulled.sha256 == SHA
    assert pulled.received == len(BODY)
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert seen[0] == (0, len(BODY)) and seen[-1] == (len(BODY), len(BODY))
    assert leftovers(tmp_path) == ["tiny.safetensors"]  # no .part, no .lock
    assert server.requests[0]["accept-encoding"] == "identity"


def test_an_interrupted_transfer_resumes_with_a_range_request(server, tmp_path, backoff):
    server.cut_after = [1_000_000]
    pulled = pull_file(entry(server), tmp_path, retries=1)
    assert pulled.action == "resumed" and backoff == [0.5]
    assert (tmp_path / "checkpoints" / "tiny.safetensors").read_bytes() == BODY
    assert "range" not in server.requests[0]
    assert server.requests[1]["range"] == "bytes=1000000-"
    assert server.sent == len(BODY)  # no byte sent twice


def test_a_partial_file_left_by_an_earlier_pull_is_resumed(server, tmp_path):
    server.cut_after = [700_000]
    with pytest.raises(DownloadFailed, match=r"stopped after 700000 bytes.*pull again"):
        pull_file(entry(server), tmp_path, retries=0)
    part = tmp_path / "checkpoints" / ".tiny.safetensors.part"
    assert part.stat().st_size == 700_000
    assert not (tmp_path / "checkpoints" / "tiny.safetensors").exists()
    pulled = pull_file(entry(server), tmp_path)
    assert pulled.action == "resumed" and pulled.received == len(BODY) - 700_000
    assert server.requests[-1]["range"] == "bytes=700000-"
    assert (tmp_path / "checkpoints" / "tiny.safetensors").read_bytes() == BODY


def test_a_server_that_ignores_ranges_sends_it_whole_again(server, tmp_path, backoff):
    server.ranges, server.cut_after = False, [500_000]
    pulled = pull_file(entry(server), tmp_path, retries=1)
    assert pulled.action == "resumed"  # it tried; the server restarted from byte 0
    assert backoff == [0.5]
    assert (tmp_path / "checkpoints" / "tiny.safetensors").read_bytes() == BODY


def test_a_complete_part_is_finished_without_downloading(server, tmp_path):
    part = tmp_path / "checkpoints" / ".tiny.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY)
    pulled = pull_file(entry(server), tmp_path)
    assert pulled.received == 0 and server.sent == 0  # 416: the part is the whole file
    assert (tmp_path / "checkpoints" / "tiny.safetensors").read_bytes() == BODY


def test_a_wrong_hash_is_refused_and_nothing_is_left(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatch) as caught:
        pull_file(entry(server, sha256=wrong), tmp_path)
    err = caught.value
    assert err.what == "sha256" and err.expected == wrong and err.actual == SHA
    assert "checkpoints/tiny.safetensors" in str(err) and "deleted" in str(err)
    assert leftovers(tmp_path) == []  # no final file, no part


def test_a_resumed_part_with_wrong_bytes_is_refused(server, tmp_path):
    part = tmp_path / "checkpoints" / ".tiny.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # not the file's first 1000 bytes
    with pytest.raises(ChecksumMismatch, match="sha256"):
        pull_file(entry(server), tmp_path)
    assert not part.exists() and not (part.parent / "tiny.safetensors").exists()
    assert pull_file(entry(server), tmp_path).action == "downloaded"  # starts again


def test_a_wrong_size_is_refused_before_downloading(server, tmp_path):
    server.slow = 0.01  # ~0.5 s for the whole file, unless the client hangs up
    with pytest.raises(ChecksumMismatch) as caught:
        pull_file(entry(server, size=len(BODY) + 1), tmp_path)
    assert caught.value.what == "size"
    assert leftovers(tmp_path) == []
    assert server.sent < len(BODY) // 4  # it hung up at once


def test_a_file_longer_than_published_stops_at_the_published_size(server, tmp_path):
    server.body = BODY + b"extra"
    with pytest.raises(ChecksumMismatch, match="size"):
        pull_file(entry(server, sha256=None), tmp_path)
    assert leftovers(tmp_path) == []


def test_without_a_manifest_hash_the_published_linked_etag_is_checked(server, tmp_path):
    server.linked = {"X-Linked-ETag": f'"{SHA}"', "X-Linked-Size": str(len(BODY))}
    good = entry(server, url=server.url("/redirect"), sha256=None, size=None)
    assert pull_file(good, tmp_path).sha256 == SHA
    server.linked = {"X-Linked-ETag": f'"{"ab" * 32}"'}
    with pytest.raises(ChecksumMismatch, match="sha256"):
        pull_file(
            entry(server, name="b.safetensors", url=server.url("/redirect"), sha256=None), tmp_path
        )
    assert not (tmp_path / "checkpoints" / "b.safetensors").exists()


def test_a_manifest_hash_that_contradicts_the_server_fails_before_downloading(server, tmp_path):
    server.linked, server.slow = {"X-Linked-ETag": f'"{"ab" * 32}"'}, 0.01
    with pytest.raises(ChecksumMismatch, match="published"):
        pull_file(entry(server, url=server.url("/redirect")), tmp_path)
    assert leftovers(tmp_path) == []
    assert server.sent < len(BODY) // 4


def test_an_http_error_names_the_url_and_leaves_nothing(server, tmp_path):
    server.status = 403
    with pytest.raises(DownloadFailed, match=r"HTTP 403 \(check the manifest's headers\)"):
        pull_file(entry(server), tmp_path)
    assert leftovers(tmp_path) == []


def test_a_server_error_is_retried(server, tmp_path, backoff):
    server.status = 503
    with pytest.raises(DownloadFailed, match="HTTP 503"):
        pull_file(entry(server), tmp_path, retries=2)
    assert len(server.requests) == 3
    assert backoff == [0.5, 1.0]  # waits that double


def test_headers_come_from_the_environment_and_a_missing_variable_is_named(server, tmp_path):
    private = entry(server, headers={"Authorization": "Bearer ${HUB_TOKEN}"})
    with pytest.raises(ConfigError, match=r"\$\{HUB_TOKEN\}, which is not set"):
        pull_file(private, tmp_path, environ={})
    assert server.requests == []
    pull_file(private, tmp_path, environ={"HUB_TOKEN": "s3cret"})
    assert server.requests[0]["authorization"] == "Bearer s3cret"


def test_a_file_already_there_is_left_alone(server, tmp_path):
    pull_file(entry(server), tmp_path)
    again = pull_file(entry(server), tmp_path, verify_existing=True)
    assert again.action == "present" and again.sha256 == SHA and len(server.requests) == 1
    (tmp_path / "checkpoints" / "tiny.safetensors").write_bytes(b"short")
    with pytest.raises(DownloadFailed, match=r"exists with 5 bytes.*remove it"):
        pull_file(entry(server), tmp_path)


def test_two_pulls_of_one_file_download_it_once(server, tmp_path):
    """Slow by design (~0.5 s): the transfer must last long enough for the second pull to
    arrive while the first still holds the file's lock."""
    server.slow = 0.01  # ~0.5 s for the whole file: the second pull arrives meanwhile
    results: list[object] = []

    def one() -> None:
        try:
            results.append(pull_file(entry(server), tmp_path).action)
        except Exception as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        if t.is_alive():
            pytest.fail("a concurrent pull did not finish within 60 s")
    assert sorted(map(str, results)) == ["downloaded", "present"]
    assert server.sent == len(BODY) and len(server.requests) == 1


def test_pull_takes_every_file_of_a_manifest(server, tmp_path):
    files = [entry(server), entry(server, name="sub/other.safetensors", folder="loras")]
    pulled = pull(files, tmp_path)
    assert [p.path.relative_to(tmp_path).as_posix() for p in pulled] == [
        "checkpoints/tiny.safetensors",
        "loras/sub/other.safetensors",
    ]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
