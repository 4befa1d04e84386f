"""Downloading model files: resumed, verified, atomic, one writer per file.

For each file of a manifest, :func:`pull_file`:

1. takes a lock on ``<folder>/.<name>.lock`` (``flock``), so two pulls of the same file — two
   threads or two processes — never write it at once: the second waits, then finds it there.
   The lock file is removed on every way out; one left by a killed pull blocks nothing (the
   kernel drops a dead process's ``flock``);
2. leaves a file already under its final name alone (checking its size where it is known,
   its sha256 too with ``verify_existing``);
3. downloads into ``<folder>/.<name>.part``, resuming what a previous attempt left there
   with an HTTP ``Range`` request (a server that ignores it sends everything again; an
   interrupted transfer is retried ``retries`` times, each resuming). A transfer averaging
   under ``min_rate`` bytes/s over ``stall_seconds`` (as curl's ``--speed-limit`` and
   ``--speed-time``) has stalled: it is stopped, and retried as an interrupted one;
4. checks the size and sha256 — the manifest's, else those the server publishes for the
   file (Hugging Face's ``X-Linked-Size`` and ``X-Linked-ETag``, the sha256 of the stored
   object) — then fsyncs it and renames it to its final name, so a file under that name is
   always complete and verified. A file for which neither publishes anything cannot be
   verified: it is refused before its body is read, unless ``allow_unverified`` (then it is
   downloaded with a warning, and :attr:`Pulled.verified` is None).

Redirects are followed by hand (:mod:`comfyfn.models._http`), so the manifest's headers
(tokens) go to the origin (scheme, host, port) of the entry's URL only, never to a CDN it
redirects to. A redirect loop is a :class:`DownloadFailed` naming the URL.

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
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import unquote

import httpx

from comfyfn._files import current_umask, fsync_directory
from comfyfn.client import public_url
from comfyfn.errors import ConfigError
from comfyfn.models._errors import ChecksumMismatch, DownloadFailed
from comfyfn.models._http import RateFloor, Retry, get
from comfyfn.models._manifest import ModelFile, ModelManifest

__all__ = [
    "PULL_MIN_RATE",
    "PULL_STALL_SECONDS",
    "DownloadProgress",
    "Pulled",
    "pull",
    "pull_file",
    "url_file",
]

log = logging.getLogger("comfyfn.models")

#: ``on_progress(file, bytes_done, bytes_total_or_None)``, called as bytes arrive
DownloadProgress = Callable[[ModelFile, int, int | None], None]

_CHUNK = 1 << 20
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: a transfer averaging fewer bytes/s over :data:`PULL_STALL_SECONDS` has stalled (10 GB at
#: this rate would take almost four months: a working link, however slow, is far faster)
PULL_MIN_RATE = 1024
PULL_STALL_SECONDS = 60.0


@dataclass(frozen=True)
class Pulled:
    file: ModelFile
    path: Path
    action: Literal["present", "downloaded", "resumed"]
    received: int  #: bytes received over the network by this pull
    sha256: str | None  #: the digest computed (None for a file that was already there)
    #: what the bytes were checked against (the manifest's or the server's published value);
    #: None: nothing was published, so nothing was checked
    verified: Literal["sha256", "size"] | None = None


@dataclass(frozen=True)
class _Published:
    """What the server says about the file (None: it does not say)."""

    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class _Job:
    """One file's download: from where, to where, and the rules it follows."""

    file: ModelFile
    target: Path  #: the final file name
    http: httpx.Client
    headers: Mapping[str, str]  #: the manifest's, for the origin of ``file.url`` only
    on_progress: DownloadProgress | None
    min_rate: float
    stall_seconds: float
    allow_unverified: bool


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


def url_file(url: str, folder: str, sha256: str | None = None) -> ModelFile:
    """The manifest entry for one file by URL (a LoRA, say), named by the URL's last path
    segment and checked as a manifest's entries are: a bad URL, folder or sha256 is a
    :class:`ConfigError` naming the field."""
    from comfyfn._yaml import validate_settings
    from comfyfn.models._schema import EntrySpec

    try:
        name = unquote(PurePosixPath(httpx.URL(url).path).name)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{url!r} is not a URL ({exc})") from None
    entry = {"name": name, "folder": folder, "url": url, "sha256": sha256}
    spec = validate_settings(entry, public_url(url), EntrySpec)
    return ModelFile(spec.name, spec.folder, spec.url, spec.sha256)


def pull(
    files: ModelManifest | Iterable[ModelFile],
    models_dir: str | os.PathLike[str],
    *,
    http: httpx.Client | None = None,
    on_progress: DownloadProgress | None = None,
    retries: int = 3,
    verify_existing: bool = False,
    environ: Mapping[str, str] | None = None,
    min_rate: float = PULL_MIN_RATE,
    stall_seconds: float = PULL_STALL_SECONDS,
    allow_unverified: bool = False,
) -> list[Pulled]:
    """Every file of a manifest into ``models_dir``, one after the other (every entry's
    headers are checked first: a missing variable or a bad value fails before any request)."""
    entries = files.files if isinstance(files, ModelManifest) else tuple(files)
    for f in entries:
        f.request_headers(environ)
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
                min_rate=min_rate,
                stall_seconds=stall_seconds,
                allow_unverified=allow_unverified,
            )
            for f in entries
        ]


def pull_file(
    file: ModelFile,
    models_dir: str | os.PathLike[str],
    *,
    http: httpx.Client | None = None,
    on_progress: DownloadProgress | None = None,
    retries: int = 3,
    verify_existing: bool = False,
    environ: Mapping[str, str] | None = None,
    min_rate: float = PULL_MIN_RATE,
    stall_seconds: float = PULL_STALL_SECONDS,
    allow_unverified: bool = False,
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
    with _locked(target, file), _client(http) as client:
        if target.exists():
            return _present(file, target, verify_existing)
        job = _Job(
            file, target, client, headers, on_progress, min_rate, stall_seconds, allow_unverified
        )
        return _download(job, retries)


@contextlib.contextmanager
def _client(http: httpx.Client | None) -> Iterator[httpx.Client]:
    if http is not None:
        yield http
        return
    timeout = httpx.Timeout(30.0, connect=10.0)
    with httpx.Client(follow_redirects=False, timeout=timeout) as client:
        yield client


@contextlib.contextmanager
def _locked(target: Path, file: ModelFile) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``target`` (other pulls of this file wait); remove it on
    the way out, whatever happened, while still holding it."""
    lock = target.with_name(f".{target.name}.lock")
    fd = _take_lock(lock, file)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _take_lock(lock: Path, file: ModelFile) -> int:
    """A descriptor holding the ``flock`` of the file named ``lock`` now. A pull that waited
    may get the lock of a file its holder removed meanwhile: it tries again with the file
    under that name (so two pulls never both hold "the" lock)."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("%s: another pull is downloading it; waiting for it", file.relpath)
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _is_named(fd, lock):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _is_named(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is the one named ``path``."""
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


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
    checked: Literal["sha256", "size"] | None = "size" if file.size is not None else None
    if verify and file.sha256:
        digest = _Part(target).digest.hexdigest()
        if digest != file.sha256:
            raise DownloadFailed(
                f"{file.relpath}: {target} has sha256 {digest}, not the published "
                f"{file.sha256}; remove it to download it again",
                url=file.url,
                path=target,
            )
        checked = "sha256"
    return Pulled(file, target, "present", 0, digest, checked)


def _download(job: _Job, retries: int) -> Pulled:
    file, target = job.file, job.target
    part = _Part(target.with_name(f".{target.name}.part"))
    resumed = part.size > 0
    for attempt in range(retries + 1):
        try:
            expected = _fetch(job, part)
            break
        except (Retry, httpx.TransportError) as exc:
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
    digest, checked = _verify(file, target, part, expected)
    _publish(part.path, target)
    log.info("%s: %d bytes, sha256 %s", file.relpath, part.size, digest)
    action: Literal["downloaded", "resumed"] = "resumed" if resumed else "downloaded"
    return Pulled(file, target, action, part.received, digest, checked)


def _fetch(job: _Job, part: _Part) -> _Published:
    """One request: append what is missing to ``part``; :class:`Retry` if it stops early.
    The sha256 and size the file must have (the manifest's, else the server's)."""
    file, target = job.file, job.target
    ours = {"Accept-Encoding": "identity"}
    if part.size:
        ours["Range"] = f"bytes={part.size}-"
    with get(job.http, file, target, job.headers, ours) as answer:
        published = _published(answer)
        _check_published(file, target, part, published)
        size = file.size if file.size is not None else published.size
        expected = _Published(file.sha256 or published.sha256, size)
        if expected == _Published() and not job.allow_unverified:
            raise _unverifiable(file, target)
        total = _start(file, target, part, answer)
        if total is None and answer.status_code == 416:
            return expected  # the part already holds the whole file
        if size is not None and total is not None and total != size:
            part.reset()
            raise _mismatch(file, target, "size", str(size), str(total))
        _free_space(file, target, (total or 0) - part.size)
        _receive(job, part, answer, size, total)
    if total is not None and part.size < total:
        raise Retry(f"got {part.size} of {total} bytes")
    return expected


def _unverifiable(file: ModelFile, target: Path) -> DownloadFailed:
    return DownloadFailed(
        f"{file.relpath}: neither the manifest nor {file.url} publishes its sha256 or size, "
        "so a download could not be verified; add its sha256 (or at least its size) to the "
        "manifest entry, or allow unverified downloads (--allow-unverified)",
        url=file.url,
        path=target,
    )


def _start(file: ModelFile, target: Path, part: _Part, answer: httpx.Response) -> int | None:
    """Match the answer to what ``part`` holds; the file's total size if the server says."""
    status, offset = answer.status_code, part.size
    content_range = _CONTENT_RANGE.fullmatch(answer.headers.get("content-range", "").strip())
    if status == 416 and offset:
        whole = content_range[2] if content_range else None
        if whole is not None and whole.isdigit() and int(whole) == offset:
            return None
        part.reset()  # the part is longer than the file now: start again
        raise Retry("the partial file does not fit the file on the server")
    if status == 206 and offset:
        if content_range is None or content_range[1] is None or int(content_range[1]) != offset:
            part.reset()
            raise Retry("the server resumed at another offset")
        return int(content_range[2]) if content_range[2].isdigit() else None
    if status == 200:
        if offset:
            log.info("%s: the server ignores ranges; downloading it whole", file.relpath)
            part.reset()
        length = answer.headers.get("content-length", "")
        return int(length) if length.isdigit() else None
    if status in _RETRY_STATUS:
        raise Retry(f"HTTP {status}")
    hint = " (check the manifest's headers)" if status in (401, 403) else ""
    raise DownloadFailed(
        f"{file.relpath}: {file.url} answered HTTP {status}{hint}", url=file.url, path=target
    )


def _receive(
    job: _Job, part: _Part, answer: httpx.Response, expected: int | None, total: int | None
) -> None:
    file, target, on_progress = job.file, job.target, job.on_progress
    floor = RateFloor(job.min_rate, job.stall_seconds)
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
                floor.add(len(block))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise DownloadFailed(
            f"{file.relpath}: cannot write {part.path}: {exc.strerror}", url=file.url, path=target
        ) from None


def _verify(
    file: ModelFile, target: Path, part: _Part, expected: _Published
) -> tuple[str, Literal["sha256", "size"] | None]:
    """The sha256 of ``part``, and what it was checked against (a mismatch raises)."""
    if expected.size is not None and part.size != expected.size:
        part.reset()
        raise _mismatch(file, target, "size", str(expected.size), str(part.size))
    digest = part.digest.hexdigest()
    if expected.sha256 is not None and digest != expected.sha256:
        part.reset()
        raise _mismatch(file, target, "sha256", expected.sha256, digest)
    if expected.sha256 is not None:
        return digest, "sha256"
    if expected.size is not None:
        log.warning("%s: no sha256 is published for it; only its size was checked", file.relpath)
        return digest, "size"
    log.warning(
        "%s: NOT verified: neither the manifest nor %s publishes its sha256 or size "
        "(its sha256 is %s: add it to the manifest entry)",
        file.relpath,
        file.url,
        digest,
    )
    return digest, None


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
    if file.sha256 and published.sha256 and file.sha256 != published.sha256:
        part.reset()
        raise _mismatch(file, target, "sha256", file.sha256, f"{published.sha256} (published)")
    if file.size is not None and published.size is not None and file.size != published.size:
        part.reset()
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
