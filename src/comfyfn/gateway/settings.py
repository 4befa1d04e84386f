"""Gateway settings: argument > environment variable > documented default, resolved at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfn.jobs import WorkerSettings, new_worker_id

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_DECODED_BYTES",
    "MAX_UPLOAD_PIXELS",
    "UPLOAD_FETCH_TIMEOUT",
    "GatewaySettings",
    "default_data_dir",
    "pixel_problem",
    "storage_location",
]


def default_data_dir() -> Path:
    env = os.environ.get("COMFYFN_GATEWAY_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("comfyfn")) / "gateway"


def storage_location(value: str | os.PathLike[str]) -> str | Path:
    """``s3://bucket/prefix`` as given; anything else a folder :class:`Path`."""
    text = os.fspath(value)
    return text if text.startswith("s3://") else Path(text)


MAX_UPLOAD_BYTES = 20 * 1024 * 1024  #: bytes of one input image
MAX_UPLOAD_PIXELS = 40_000_000  #: width × height of one input image
#: bytes one input image holds once decoded (width × height × bands × bytes per sample)
MAX_UPLOAD_DECODED_BYTES = 64 * 1024 * 1024
UPLOAD_FETCH_TIMEOUT = 20.0  #: seconds for fetching an image by URL, connect to last byte


@dataclass(frozen=True)
class GatewaySettings:
    """Everything ``comfyfn serve`` can be told.

    | setting | environment | default |
    |---|---|---|
    | ``db_url`` | ``COMFYFN_DB`` | SQLite file ``gateway.db`` in the data dir |
    | ``storage`` — a folder or ``s3://bucket/prefix`` | ``COMFYFN_STORAGE`` | data dir ``/files`` |
    | ``warm`` — workflows run once on every server at start | — | none |
    | ``url_ttl`` — seconds a file URL (signed, presigned) stays valid | — | 3600 |

    The data dir is ``$COMFYFN_GATEWAY_DIR``, else the user data dir's ``comfyfn/gateway``.
    An S3 store takes its endpoint, region and credentials from the usual AWS environment
    variables (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``; or ``AWS_PROFILE``
    with boto3): see :class:`comfyfn.storage.S3Storage`. Its file URLs answer with a
    redirect (307) to a presigned URL valid for ``url_ttl`` seconds at most.

    Cost limits, checked on every route before a job is queued (:meth:`cost_error`): a
    request over one is refused naming the parameter (422 on ``/v1/jobs`` and the typed
    endpoints, 400 on ``/v1/images/generations`` like all its errors). Parameters not given
    count with the workflow's defaults.

    | limit | default |
    |---|---|
    | ``max_pixels`` — width × height of one image | 4,194,304 (2048 × 2048) |
    | ``max_batch_size`` — images per job (``batch_size``) | 4 |
    | ``max_steps`` — sampling steps | 100 |
    | ``max_images`` — ``n`` of ``/v1/images/generations`` | 4 |
    | ``max_total_pixels`` — width × height × batch_size of one request | 16,777,216 |
    | ``max_upload_bytes`` — one input image (upload, edit, typed endpoint) | 20 MiB |
    | ``max_upload_pixels`` — width × height of one input image | 40,000,000 |
    | ``max_upload_decoded_bytes`` — one input image decoded, known from its header | 64 MiB |

    An input image's width × height counts against ``max_pixels`` too, naming its field,
    whatever output size is asked: ComfyUI holds the input as it is before scaling it.
    """

    servers: tuple[str, ...]
    db_url: str
    storage: str | Path  #: a folder, or ``s3://bucket/prefix`` (:func:`storage_location`)
    workflows: tuple[tuple[str, str], ...] = (
        ("zimage-turbo", "zimage-turbo"),
        ("zimage-edit", "zimage-edit"),
    )
    prime: int | None = None  #: jobs queued per server beyond the running one; None: adaptive
    max_body_bytes: int = 1_000_000  #: of a request without images
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_upload_pixels: int = MAX_UPLOAD_PIXELS
    max_upload_decoded_bytes: int = MAX_UPLOAD_DECODED_BYTES
    upload_fetch_timeout: float = UPLOAD_FETCH_TIMEOUT
    max_prompt_chars: int = 4_000
    max_images: int = 4  #: n of /v1/images/generations
    max_pixels: int = 4_194_304  #: width × height of one image (2048²)
    max_batch_size: int = 4  #: batch_size of one job
    max_steps: int = 100  #: sampling steps of one job
    max_total_pixels: int = 16_777_216  #: width × height × batch_size of one request
    cors_origins: tuple[str, ...] = ()
    allow_private_webhooks: bool = False
    url_ttl: int = 3600  #: seconds a signed file URL (and a presigned one) stays valid
    warm: tuple[str, ...] = ()  #: workflows (served names, built-ins or files) warmed at start
    sync_timeout: float = 300.0  #: how long /v1/images/generations waits for its job
    # the worker's (:class:`comfyfn.jobs.WorkerSettings`, which documents them)
    job_timeout: float | None = WorkerSettings.job_timeout
    http_timeout: float = WorkerSettings.http_timeout
    retries: int = WorkerSettings.retries
    comfy_org_key: str | None = field(default=None, repr=False)
    stale_after: float = WorkerSettings.stale_after
    heartbeat: float = WorkerSettings.heartbeat
    worker_id: str = field(default_factory=new_worker_id)

    def worker_settings(self) -> WorkerSettings:
        """What this gateway's worker is told (its servers, timeouts, claims)."""
        return WorkerSettings(
            servers=self.servers,
            worker_id=self.worker_id,
            prime=self.prime,
            job_timeout=self.job_timeout,
            http_timeout=self.http_timeout,
            retries=self.retries,
            comfy_org_key=self.comfy_org_key,
            stale_after=self.stale_after,
            heartbeat=self.heartbeat,
        )

    def cost_error(self, values: Mapping[str, Any]) -> tuple[str, str] | None:
        """(parameter, message) for the first cost limit ``values`` break, else None.

        ``values`` are a job's parameters with the workflow's defaults filled in; a workflow
        without width/height/batch_size/steps parameters is not limited on them.
        """
        width, height = _count(values, "width"), _count(values, "height")
        batch, steps = _count(values, "batch_size"), _count(values, "steps")
        pixels = width * height if width is not None and height is not None else None
        if pixels is not None and pixels > self.max_pixels:
            return "width", (
                f"width × height = {width} × {height} = {pixels:,} pixels is over this "
                f"gateway's limit of {self.max_pixels:,} per image"
            )
        if batch is not None and batch > self.max_batch_size:
            return "batch_size", (
                f"batch_size {batch} is over this gateway's limit of {self.max_batch_size}"
            )
        if steps is not None and steps > self.max_steps:
            return "steps", f"steps {steps} is over this gateway's limit of {self.max_steps}"
        total = (pixels or 0) * (batch or 1)
        if total > self.max_total_pixels:
            return "batch_size", (
                f"width × height × batch_size = {total:,} pixels is over this gateway's "
                f"limit of {self.max_total_pixels:,} per request"
            )
        return None

    @classmethod
    def resolve(
        cls,
        *,
        servers: list[str],
        db_url: str | None = None,
        storage: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> GatewaySettings:
        """Settings with argument > environment variable > default applied (see the table)."""
        data = default_data_dir()
        db = db_url or os.environ.get("COMFYFN_DB") or f"sqlite:///{data / 'gateway.db'}"
        if db.startswith("sqlite:///"):
            Path(db.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return cls(
            servers=tuple(servers),
            db_url=db,
            storage=storage_location(
                storage or os.environ.get("COMFYFN_STORAGE") or data / "files"
            ),
            **kwargs,
        )


def pixel_problem(param: str, size: tuple[int, int], max_pixels: int) -> str | None:
    """Why an input image of ``size`` given for ``param`` is over ``max_pixels`` (the
    gateway's ``max_pixels``), or None."""
    (width, height), pixels = size, size[0] * size[1]
    if pixels <= max_pixels:
        return None
    return (
        f"{param}: the input image's {width} × {height} = {pixels:,} pixels are over this "
        f"gateway's limit of {max_pixels:,} per image"
    )


def _count(values: Mapping[str, Any], name: str) -> int | None:
    value = values.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
