"""Models where they are needed: which files a workflow needs and which servers have them,
downloading them from manifests, warming servers up, and what a workflow loads (its model
set and prompt key, by which :mod:`comfyfn.fleet` places jobs).

::

    needed = needed_models(workflow)                     # files by folder, with sources
    result = await check_server(client, "wf.json")       # what one server lacks
    pull(load_manifest("zimage-turbo"), "/data/models")  # resumed, verified, atomic
    pull([url_file(url, "loras", sha256)], "/data/models")  # one file by URL
    push_file("style.safetensors", url, folder="loras")  # onto a server, by its assets API
    pull_to_server(load_manifest("zimage-turbo"), url)   # pulled here, pushed there
    await check_servers(urls, "wf.json")                  # every server's gaps
    warm(client, "zimage-turbo")                         # the smallest job, once
    model_set(workflow), prompt_key(workflow)            # what its jobs load and encode

Built-in manifests (:data:`BUILTIN_MANIFESTS`): ``zimage-turbo``, ``zimage``,
``zimage-turbo-int8`` and ``zimage-int8``, with the file names, folders and URLs the
official ComfyUI templates publish (they publish no sha256 or sizes: those are null, and the
sha256 and size Hugging Face publishes for each file are checked instead).
"""

from comfyfn._public import present as _present
from comfyfn.models._check import (
    ModelSet,
    Needed,
    ServerModels,
    Source,
    check_server,
    check_servers,
    model_set,
    needed_models,
    prompt_key,
    sources_from,
)
from comfyfn.models._download import (
    PULL_MIN_RATE,
    PULL_STALL_SECONDS,
    DownloadProgress,
    Pulled,
    pull,
    pull_file,
    url_file,
)
from comfyfn.models._errors import ChecksumMismatch, DownloadFailed
from comfyfn.models._http import PushFailed
from comfyfn.models._manifest import BUILTIN_MANIFESTS, ModelFile, ModelManifest, load_manifest
from comfyfn.models._push import Pushed, PushProgress, blake3_of, pull_to_server, push_file
from comfyfn.models._warm import WARMUP_PREFIX, Warmed, awarm, warm, warm_job

__all__ = [
    "BUILTIN_MANIFESTS",
    "PULL_MIN_RATE",
    "PULL_STALL_SECONDS",
    "WARMUP_PREFIX",
    "ChecksumMismatch",
    "DownloadFailed",
    "DownloadProgress",
    "ModelFile",
    "ModelManifest",
    "ModelSet",
    "Needed",
    "Pulled",
    "PushFailed",
    "PushProgress",
    "Pushed",
    "ServerModels",
    "Source",
    "Warmed",
    "awarm",
    "blake3_of",
    "check_server",
    "check_servers",
    "load_manifest",
    "model_set",
    "needed_models",
    "prompt_key",
    "pull",
    "pull_file",
    "pull_to_server",
    "push_file",
    "sources_from",
    "url_file",
    "warm",
    "warm_job",
]

_present(__name__, globals(), __all__)
