"""Gateway settings: argument > environment variable > documented default, resolved at start."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["GatewaySettings", "default_data_dir"]


def default_data_dir() -> Path:
    env = os.environ.get("COMFYFN_GATEWAY_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("comfyfn")) / "gateway"


@dataclass(frozen=True)
class GatewaySettings:
    """Everything ``comfyfn serve`` can be told.

    | setting | environment | default |
    |---|---|---|
    | ``db_url`` | ``COMFYFN_DB`` | SQLite file ``gateway.db`` in the data dir |
    | ``storage`` | ``COMFYFN_GATEWAY_DIR`` (+ ``/files``) | user data dir ``/files`` |
    """

    servers: tuple[str, ...]
    db_url: str
    storage: Path
    workflows: tuple[tuple[str, str], ...] = (("zimage-turbo", "zimage-turbo"),)
    prime: int = 1
    max_body_bytes: int = 1_000_000
    max_prompt_chars: int = 4_000
    max_images: int = 4
    cors_origins: tuple[str, ...] = ()
    allow_private_webhooks: bool = False
    url_ttl: int = 3600  #: seconds a signed file URL stays valid
    sync_timeout: float = 300.0  #: how long /v1/images/generations waits for its job
    job_timeout: float | None = None
    stale_after: float = 30.0  #: a running job without heartbeat this long is taken over
    heartbeat: float = 5.0
    worker_id: str = field(default_factory=lambda: f"w-{os.getpid()}-{os.urandom(3).hex()}")

    @classmethod
    def resolve(
        cls,
        *,
        servers: list[str],
        db_url: str | None = None,
        storage: str | Path | None = None,
        **kwargs,
    ) -> GatewaySettings:
        data = default_data_dir()
        db = db_url or os.environ.get("COMFYFN_DB") or f"sqlite:///{data / 'gateway.db'}"
        if db.startswith("sqlite:///"):
            Path(db.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return cls(
            servers=tuple(servers),
            db_url=db,
            storage=Path(storage) if storage else data / "files",
            **kwargs,
        )
