"""Downloading model files: resumed, verified, atomic, one writer per file.

For each file of a manifest, :func:`pull_file`:

1. takes a lock on ``<folder>/.<name>.lock`` (``flock``), so two pulls of the same file — two
   threads or two processes — never write it at once: the second waits, then finds it there;
2. leaves a file already under its final name alone (checking its size where it is known,
   its sha256 too with ``verify_existing``);
3. downloads into ``<folder>/.<name>.part``, resuming what a previous attempt left there
   with an HTTP ``Range`` request (a server that ignores it sends everything again; an
   interrupted transfer is retried ``retries`` times, each resuming);
4. checks the size and sha256 — the manifest's, else those the server publishes for the
   file (Hugging Face's ``X-Linked-Size`` and ``X-Linked-ETag``, the sha256 of the stored
   object) — then fsyncs it and renames it to its final name, so a file under that name is
   always complete and verified.

The partial file: after an interrupted transfer it is kept as ``.<name>.part`` (hidden, not
a model extension, so ComfyUI never lists it) for the next pull to resume; on a size or hash
mismatch it is deleted, as resuming from wrong bytes would only repeat the error.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from comfyfn._files import current_umask, fsync_directory
from comfyfn.models._errors import ChecksumMismatch, DownloadFailed
from comfyfn.models._manifest import Manifest, ModelFile

__all__ = ["Progress", "Pulled", "pull", "pull_file"]

log = logging.getLogger("comfyfn.models")

#: ``on_progress(file, bytes_done, bytes_total_or_None)``, called as bytes arrive
Progress = Callable[[ModelFile, int, int | None], None]

_CHUNK = 1 << 20
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Pulled:
    file: ModelFile
    path: Path
    action: Literal["present", "downloaded", "resumed"]
    received: int  #: bytes received over the network by this pull
    sha256: str | None  #: the digest computed (None for a file that was already there)


@dataclass(frozen=True)
class _Published:
    """What the server says about the file (None: it does not say)."""

    sha256: str | None = None
    size: int | None = None


class _Retry(Exception):
    """The transfer stopped early but can be resumed."""


class _Part:
    """The partial file ``.<name>.part`` and the sha256 of the bytes it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.size = 0
        self.received = 0  #: bytes appended by this pull
        with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
            while block := fh.read(_CHUNK):
                self.digest.update(block)
                self.size += len(block)

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self.digest, self.size = hashlib.sha256(), 0


def pull(
    files: Manifest | Iterable[ModelFile],
    models_dir: str | os.PathLike[str],
    *,
    http: httpx.Client | None = None,
    on_progress: Progress | None = None,
    retries: int = 3,
    verify_existing: bool = False,
    environ: Mapping[str, str] | None = None,
) -> list[Pulled]:
    """Every file of a manifest into ``models_dir``, one after the other."""
    entries = files.files if isinstance(files, Manifest) else tuple(files)
    with _client(http) as client:
        return [
            pull_file(
                f,
                models_dir,
                http=client,
                on_progress=on_progress,
                retries=retries,
                verify_existing=verify_existing,
                environ=environ,
            )
            for f in entries
        ]


def pull_file(
    file: ModelFile,
    models_dir: str | os.PathLike[str],
    *,
    http: httpx.Client | None = None,
    on_progress: Progress | None = None,
    retries: int = 3,
    verify_existing: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Pulled:
    """One file into ``models_dir/<folder>/<name>``, verified; see the module docstring."""
    target = file.path(models_dir)
    headers = file.request_headers(environ)  # a missing variable fails before any I/O
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadFailed(
            f"{file.relpath}: cannot create {target.parent}: {exc.strerror}",
            url=file.url,
            path=target,
        ) from None
    with _locked(target, file) as lock, _client(http) as client:
        if target.exists():
            pulled = _present(file, target, verify_existing)
        else:
            pulled = _download(file, target, client, headers, on_progress, retries)
        # Once the file is there nobody writes it again, so the lock may go (while held).
        lock.unlink(missing_ok=True)
        return pulled


@contextlib.contextmanager
def _client(http: httpx.Client | None) -> Iterator[httpx.Client]:
    if http is not None:
        yield http
        return
    timeout = httpx.Timeout(30.0, connect=10.0)
    with httpx.Client(follow_redirects=True, timeout=timeout) as client:
        yield client


@contextlib.contextmanager
def _locked(target: Path, file: ModelFile) -> Iterator[Path]:
    """Hold ``.<name>.lock`` beside ``target`` (other pulls of this file wait)."""
    lock = target.with_name(f".{target.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another pull is downloading it; waiting for it", file.relpath)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield lock
    finally:
        os.close(fd)


def _present(file: ModelFile, target: Path, verify: bool) -> Pulled:
    size = target.stat().st_size
    if file.size is not None and size != file.size:
        raise DownloadFailed(
            f"{file.relpath}: {target} exists with {size} bytes, not the {file.size} published; "
            "remove it to download it again",
            url=file.url,
            path=target,
        )
    digest = None
    if verify and file.sha256:
        digest = _Part(target).digest.hexdigest()
        if digest != file.sha256:
            raise DownloadFailed(
                f"{file.relpath}: {target} has sha256 {digest}, not the published "
                f"{file.sha256}; remove it to download it again",
                url=file.url,
                path=target,
            )
    return Pulled(file, target, "present", 0, digest)


def _download(
    file: ModelFile,
    target: Path,
    http: httpx.Client,
    headers: dict[str, str],
    on_progress: Progress | None,
    retries: int,
) -> Pulled:
    part = _Part(target.with_name(f".{target.name}.part"))
    resumed = part.size > 0
    for attempt in range(retries + 1):
        try:
            published = _fetch(file, target, part, http, headers, on_progress)
            break
        except (_Retry, httpx.TransportError) as exc:
            if attempt == retries:
                raise DownloadFailed(
                    f"{file.relpath}: the transfer from {file.url} stopped after "
                    f"{part.size} bytes ({exc}); pull again to resume it",
                    url=file.url,
                    path=target,
                ) from None
            log.warning("%s: transfer stopped (%s); resuming at %d", file.relpath, exc, part.size)
            time.sleep(min(0.5 * 2**attempt, 8.0))
            resumed = resumed or part.size > 0
    digest = _verify(file, target, part, published)
    _publish(part.path, target)
    log.info("%s: %d bytes, sha256 %s", file.relpath, part.size, digest)
    return Pulled(file, target, "resumed" if resumed else "downloaded", part.received, digest)


def _fetch(
    file: ModelFile,
    target: Path,
    part: _Part,
    http: httpx.Client,
    headers: dict[str, str],
    on_progress: Progress | None,
) -> _Published:
    """One request: append what is missing to ``part``; :class:`_Retry` if it stops early."""
    asked = {**headers, "Accept-Encoding": "identity"}
    if part.size:
        asked["Range"] = f"bytes={part.size}-"
    with http.stream("GET", file.url, headers=asked) as answer:
        published = _published(answer)
        _check_published(file, target, part, published)
        total = _start(file, target, part, answer)
        if total is None and answer.status_code == 416:
            return published  # the part already holds the whole file
        expected = file.size if file.size is not None else published.size
        if expected is not None and total is not None and total != expected:
            part.reset()
            raise _mismatch(file, target, "size", str(expected), str(total))
        _free_space(file, target, (total or 0) - part.size)
        _receive(file, target, part, answer, expected, total, on_progress)
    if total is not None and part.size < total:
        raise _Retry(f"got {part.size} of {total} bytes")
    return published


def _start(file: ModelFile, target: Path, part: _Part, answer: httpx.Response) -> int | None:
    """Match the answer to what ``part`` holds; the file's total size if the server says."""
    status, offset = answer.status_code, part.size
    content_range = _CONTENT_RANGE.fullmatch(answer.headers.get("content-range", "").strip())
    if status == 416 and offset:
        whole = content_range[2] if content_range else None
        if whole is not None and whole.isdigit() and int(whole) == offset:
            return None
        part.reset()  # the part is longer than the file now: start again
        raise _Retry("the partial file does not fit the file on the server")
    if status == 206 and offset:
        if content_range is None or content_range[1] is None or int(content_range[1]) != offset:
            part.reset()
            raise _Retry("the server resumed at another offset")
        return int(content_range[2]) if content_range[2].isdigit() else None
    if status == 200:
        if offset:
            log.info("%s: the server ignores ranges; downloading it whole", file.relpath)
            part.reset()
        length = answer.headers.get("content-length", "")
        return int(length) if length.isdigit() else None
    if status in _RETRY_STATUS:
        raise _Retry(f"HTTP {status}")
    hint = " (check the manifest's headers)" if status in (401, 403) else ""
    raise DownloadFailed(
        f"{file.relpath}: {file.url} answered HTTP {status}{hint}", url=file.url, path=target
    )


def _receive(
    file: ModelFile,
    target: Path,
    part: _Part,
    answer: httpx.Response,
    expected: int | None,
    total: int | None,
    on_progress: Progress | None,
) -> None:
    try:
        with part.path.open("ab") as fh:
            if on_progress is not None:
                on_progress(file, part.size, total)
            for block in answer.iter_raw():  # as it arrives: an early end keeps it all
                fh.write(block)
                part.digest.update(block)
                part.size += len(block)
                part.received += len(block)
                if expected is not None and part.size > expected:
                    part.reset()
                    raise _mismatch(file, target, "size", str(expected), f"more than {expected}")
                if on_progress is not None:
                    on_progress(file, part.size, total)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise DownloadFailed(
            f"{file.relpath}: cannot write {part.path}: {exc.strerror}", url=file.url, path=target
        ) from None


def _verify(file: ModelFile, target: Path, part: _Part, published: _Published) -> str:
    expected_size = file.size if file.size is not None else published.size
    if expected_size is not None and part.size != expected_size:
        part.reset()
        raise _mismatch(file, target, "size", str(expected_size), str(part.size))
    digest = part.digest.hexdigest()
    expected_sha = file.sha256 or published.sha256
    if expected_sha is not None and digest != expected_sha:
        part.reset()
        raise _mismatch(file, target, "sha256", expected_sha, digest)
    if expected_sha is None:
        log.warning("%s: no sha256 is published for it; only its size was checked", file.relpath)
    return digest


def _publish(part: Path, target: Path) -> None:
    """Give the verified part normal permissions and its final name, durably."""
    os.chmod(part, 0o666 & ~current_umask())
    os.replace(part, target)
    fsync_directory(target.parent)


def _published(answer: httpx.Response) -> _Published:
    """The sha256 and size a Hugging Face-style server publishes (on the redirect or the
    answer itself): ``X-Linked-ETag`` (the stored object's sha256) and ``X-Linked-Size``."""
    sha, size = None, None
    for response in (*answer.history, answer):
        etag = response.headers.get("x-linked-etag", "").removeprefix("W/").strip('"').lower()
        sha = etag if _HEX64.fullmatch(etag) else sha
        linked = response.headers.get("x-linked-size", "")
        size = int(linked) if linked.isdigit() else size
    return _Published(sha, size)


def _check_published(file: ModelFile, target: Path, part: _Part, published: _Published) -> None:
    """A manifest that contradicts the server fails before any byte is downloaded."""
    if (file.sha256 and published.sha256 and file.sha256 != published.sha256) or (
        file.size is not None and published.size is not None and file.size != published.size
    ):
        part.reset()
    if file.sha256 and published.sha256 and file.sha256 != published.sha256:
        raise _mismatch(file, target, "sha256", file.sha256, f"{published.sha256} (published)")
    if file.size is not None and published.size is not None and file.size != published.size:
        raise _mismatch(file, target, "size", str(file.size), f"{published.size} (published)")


def _free_space(file: ModelFile, target: Path, needed: int) -> None:
    free = shutil.disk_usage(target.parent).free
    if needed > free:
        raise DownloadFailed(
            f"{file.relpath}: needs {needed} more bytes, {target.parent} has {free} free",
            url=file.url,
            path=target,
        )


def _mismatch(
    file: ModelFile, target: Path, what: str, expected: str, actual: str
) -> ChecksumMismatch:
    return ChecksumMismatch(
        f"{file.relpath}: the {what} from {file.url} is {actual}, not {expected}; "
        f"nothing was saved as {target.name} (the partial download was deleted)",
        url=file.url,
        path=target,
        what=what,
        expected=expected,
        actual=actual,
    )
