"""Putting model files onto a remote ComfyUI through its own assets API, verified by hash.

:func:`push_file` uploads one local file with ``POST /api/assets`` (multipart, tags
``models`` and ``model_type:<folder>``, as ComfyUI's assets API routes a model upload),
sending the file's BLAKE3 first: the server refuses bytes that hash otherwise
(``HASH_MISMATCH``), and a server that holds those bytes already takes no upload at all.
The push is verified: the hash and size the server reports must be the local file's, and
the file must then be listed by ``GET /models/<folder>``.

ComfyUI stores an uploaded model under its content hash (``<blake3 hex><ext>``, e.g.
``loras/3f…9a.safetensors``): :attr:`Pushed.stored_as` is that name, the one its loaders
(and a workflow) use; the local name is the asset's display name.

:func:`pull_to_server` gets files of a manifest onto a server. ComfyUI's assets API has no
route by which the server downloads a URL itself (0.33 has none), so the files are
downloaded here (:func:`~comfyfn.models.pull`: resumed, verified), then pushed.

Whether a server has the API is asked of it (``/features``, ``GET /api/assets``); one
without it (older ComfyUI, or started without ``--enable-assets``) is a
:class:`~comfyfn.workflow.RouteMissing` naming ``POST /api/assets``, before anything is
hashed or sent.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import blake3

from comfyfn.client import Credentials, public_url
from comfyfn.errors import ConfigError
from comfyfn.models._download import DownloadProgress, pull
from comfyfn.models._http import AssetsApi, PushFailed
from comfyfn.models._manifest import ModelFile, ModelManifest

__all__ = ["PushProgress", "Pushed", "blake3_of", "pull_to_server", "push_file"]

log = logging.getLogger("comfyfn.models")

#: ``on_progress(folder/name, bytes_sent, bytes_total)``, called as bytes are sent
PushProgress = Callable[[str, int, int], None]

#: the server hashes what it received before it answers: allow it this many bytes/s
_SERVER_HASH_RATE = 20e6
#: ComfyUI keeps an upload's extension up to this length (longer ones are dropped)
_MAX_SUFFIX = 16


@dataclass(frozen=True)
class Pushed:
    """One file on a server, verified: the hash and size it reports are the local file's."""

    server: str  #: the server's public URL
    folder: str
    name: str  #: the local file's name (the asset's display name)
    stored_as: str  #: the name its loaders use: what ``GET /models/<folder>`` lists
    blake3: str  #: ``blake3:<hex>``, the local file's and the server's
    size: int
    #: "present": the server held these bytes already, so none were sent
    action: Literal["uploaded", "present"]

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.stored_as}"


class _Reported(io.FileIO):
    """A file read for an upload, reporting the bytes read so far."""

    def __init__(self, path: Path, report: Callable[[int], None]) -> None:
        super().__init__(path, "rb")
        self.report, self.done = report, 0

    def read(self, size: int | None = -1) -> bytes:
        block = super().read(size)
        self.done += len(block or b"")
        self.report(self.done)
        return block or b""


def blake3_of(path: str | os.PathLike[str]) -> str:
    """``blake3:<hex>`` of the file (as ComfyUI's assets API names content)."""
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    hasher.update_mmap(path)
    return f"blake3:{hasher.hexdigest()}"


@dataclass(frozen=True)
class _Local:
    """The local file being pushed: where, into which folder, its hash and size."""

    path: Path
    folder: str
    digest: str  #: ``blake3:<hex>``
    size: int

    @property
    def label(self) -> str:
        return f"{self.folder}/{self.path.name}"

    @property
    def upload_name(self) -> str:
        """The name ComfyUI gives an upload of these bytes: ``<blake3 hex><ext>``."""
        suffix = self.path.suffix if 0 < len(self.path.suffix) <= _MAX_SUFFIX else ""
        return self.digest.removeprefix("blake3:") + suffix


def push_file(
    path: str | os.PathLike[str],
    server: str,
    *,
    folder: str,
    credentials: Credentials | None = None,
    on_progress: PushProgress | None = None,
) -> Pushed:
    """Put the file at ``path`` into the server's ``models/<folder>/``; see the module."""
    given = _local_file(Path(path))
    with AssetsApi(server, credentials) as api:
        api.require()
        if folder not in (api.folder() or []):
            raise ConfigError(f"ComfyUI at {api.server} has no models/{folder}/ folder")
        local = _Local(given, folder, blake3_of(given), given.stat().st_size)
        if api.has_content(local.digest):  # nothing to send, if it is in the folder already
            pushed = _listed(api, local, local.upload_name, "present")
        else:
            pushed = _verified(api, _upload(api, local, on_progress), local)
    log.info("%s: on %s as %s (%s)", local.label, pushed.server, pushed.relpath, pushed.blake3)
    return pushed


def _local_file(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ConfigError(f"{path}: the file is empty")
    return path


def _upload(api: AssetsApi, local: _Local, on_progress: PushProgress | None) -> Any:
    """``POST /api/assets`` of the file, its hash first (the server checks the bytes)."""
    fields = {
        "hash": local.digest,
        "tags": json.dumps(["models", f"model_type:{local.folder}"]),
        "name": local.path.name,
    }
    report = on_progress or (lambda _label, _done, _total: None)
    with _Reported(local.path, lambda done: report(local.label, done, local.size)) as fh:
        return api.upload(fields, fh, 60.0 + local.size / _SERVER_HASH_RATE)


def _verified(api: AssetsApi, asset: Any, local: _Local) -> Pushed:
    """The push, once ``asset`` (the server's account of the upload) has the local file's
    hash and size, and its folder lists it."""
    asset = asset if isinstance(asset, Mapping) else {}
    if asset.get("hash") != local.digest or asset.get("size") != local.size:
        raise PushFailed(
            f"{local.label}: ComfyUI at {api.server} reports {asset.get('hash')} "
            f"({asset.get('size')} bytes), not the local file's {local.digest} "
            f"({local.size} bytes)"
        )
    stored = asset.get("loader_path")
    created = bool(asset.get("created_new"))
    return _listed(
        api,
        local,
        stored if isinstance(stored, str) else local.upload_name,
        "uploaded" if created else "present",
    )


def _listed(
    api: AssetsApi, local: _Local, stored: str, action: Literal["uploaded", "present"]
) -> Pushed:
    """The push, once ``GET /models/<folder>`` lists the file as ``stored``."""
    if stored not in (api.folder(local.folder) or []):
        raise PushFailed(
            f"{local.label}: ComfyUI at {api.server} holds these bytes already, but not in "
            f"models/{local.folder}/ (its assets API does not copy bytes it holds into "
            "another folder: put the file there another way)"
        )
    return Pushed(
        api.server, local.folder, local.path.name, stored, local.digest, local.size, action
    )


def pull_to_server(
    files: ModelManifest | Iterable[ModelFile],
    server: str,
    *,
    models_dir: str | os.PathLike[str] | None = None,
    credentials: Credentials | None = None,
    on_pull: DownloadProgress | None = None,
    on_push: PushProgress | None = None,
    allow_unverified: bool = False,
    environ: Mapping[str, str] | None = None,
) -> list[Pushed]:
    """Every file of a manifest onto the server: downloaded into ``models_dir`` (kept
    there), or into a temporary folder (removed after), verified, then pushed. A server
    without the assets API fails before anything is downloaded."""
    with AssetsApi(server, credentials) as api:
        api.require()
    log.info(
        "ComfyUI's assets API has no server-side download: pulling here, then pushing to %s",
        public_url(server),
    )
    with tempfile.TemporaryDirectory(prefix="comfyfn-push-") as scratch:
        where = Path(models_dir) if models_dir is not None else Path(scratch)
        pulled = pull(
            files, where, on_progress=on_pull, allow_unverified=allow_unverified, environ=environ
        )
        return [
            push_file(
                p.path,
                server,
                folder=p.file.folder,
                credentials=credentials,
                on_progress=on_push,
            )
            for p in pulled
        ]
