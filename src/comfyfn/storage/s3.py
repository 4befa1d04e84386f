"""Output files in an S3-compatible object store, through ``obstore`` (Rust, natively async).

``S3Storage.from_url("s3://bucket/prefix")`` reads the endpoint, region and credentials
from the usual AWS environment variables (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` or
``AWS_DEFAULT_REGION``); with ``AWS_PROFILE`` set and ``boto3`` installed the profile's
credentials are used instead. File URLs are presigned GET URLs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from comfyfn.errors import ConfigError

from .base import StorageError, StorageNotFound, StoredFile, validate_key

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config, S3CredentialProvider, S3Store

__all__ = ["S3Storage", "parse_s3_url"]

log = logging.getLogger("comfyfn.storage")

INSTALL_HINT = "S3 storage needs obstore: pip install 'comfyfn[s3]'"

CONNECT_TIMEOUT = 5.0  # seconds
REQUEST_TIMEOUT = 60.0  # seconds, for one whole request (a file of a few MB)
#: a store that is down fails a request within ~20 s, not obstore's default 3 minutes
_RETRIES: RetryConfig = {"max_retries": 3, "retry_timeout": timedelta(seconds=20)}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")`` (the prefix may be empty)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"storage URL {url!r} is not s3://bucket[/prefix]")
    prefix = parts.path.strip("/")
    if prefix:
        validate_key(prefix)
    return parts.netloc, prefix


def _config_from_env(env: Mapping[str, str]) -> S3Config:
    """The endpoint, region and credentials the AWS environment variables give."""
    config: S3Config = {}
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        config["access_key_id"] = env["AWS_ACCESS_KEY_ID"]
        config["secret_access_key"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            config["session_token"] = env["AWS_SESSION_TOKEN"]
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        config["endpoint"] = endpoint
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        config["region"] = region
    return config


def _client_options(config: S3Config) -> ClientConfig:
    """Bounded timeouts; plain HTTP allowed for an ``http://`` endpoint (a local server)."""
    options: ClientConfig = {
        "connect_timeout": timedelta(seconds=CONNECT_TIMEOUT),
        "timeout": timedelta(seconds=REQUEST_TIMEOUT),
    }
    if config.get("endpoint", "").startswith("http://"):
        options["allow_http"] = True
    return options


def _profile_credentials(env: Mapping[str, str]) -> S3CredentialProvider | None:
    """Credentials of ``AWS_PROFILE`` through boto3, if a profile is named."""
    profile = env.get("AWS_PROFILE")
    if not profile or env.get("AWS_ACCESS_KEY_ID"):
        return None
    try:
        # boto3 is optional and ships no type hints (import-not-found where it is absent)
        import boto3  # type: ignore[import-untyped, import-not-found, unused-ignore]
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError as exc:
        raise ConfigError(f"AWS_PROFILE={profile!r} needs boto3: pip install boto3") from exc
    return Boto3CredentialProvider(boto3.Session(profile_name=profile))


class S3Storage:
    """Files in ``bucket`` under ``prefix``; ``key`` ``a/b.png`` is object ``prefix/a/b.png``."""

    def __init__(self, store: S3Store, *, bucket: str, prefix: str = "") -> None:
        self.store = store
        self.bucket = bucket
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None) -> S3Storage:
        """The store ``s3://bucket/prefix`` names, configured from ``env`` (os.environ)."""
        try:
            from obstore.store import S3Store
        except ImportError as exc:
            raise ConfigError(INSTALL_HINT) from exc
        env = os.environ if env is None else env
        bucket, prefix = parse_s3_url(url)
        config = _config_from_env(env)
        store = S3Store(
            bucket,
            prefix=prefix or None,
            config=config,
            client_options=_client_options(config),
            retry_config=_RETRIES,
            credential_provider=_profile_credentials(env),
        )
        return cls(store, bucket=bucket, prefix=prefix)

    def __repr__(self) -> str:
        return f"S3Storage('s3://{self.bucket}/{self.prefix}')"

    async def put(self, key: str, data: bytes, content_type: str) -> StoredFile:
        import obstore

        validate_key(key)
        try:
            result = await obstore.put_async(
                self.store, key, data, attributes={"Content-Type": content_type}
            )
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise self._error("store", key, exc) from exc
        return StoredFile(key=key, size=len(data), etag=(result["e_tag"] or "").strip('"'))

    async def get(self, key: str) -> bytes:
        import obstore

        validate_key(key)
        try:
            answer = await obstore.get_async(self.store, key)
            return bytes(await answer.bytes_async())
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise self._error("read", key, exc) from exc

    async def exists(self, key: str) -> bool:
        import obstore

        validate_key(key)
        try:
            await obstore.head_async(self.store, key)
        except (obstore.exceptions.NotFoundError, FileNotFoundError):
            return False
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise self._error("look up", key, exc) from exc
        return True

    async def delete(self, key: str) -> None:
        import obstore

        validate_key(key)
        try:
            await obstore.delete_async(self.store, key)
        except (obstore.exceptions.NotFoundError, FileNotFoundError):
            return
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise self._error("delete", key, exc) from exc

    async def url(self, key: str, ttl: float) -> str | None:
        """A presigned GET URL valid for ``ttl`` seconds (signed locally, no request)."""
        import obstore

        validate_key(key)
        if ttl <= 0:
            raise StorageError(f"a presigned URL needs a positive ttl, not {ttl}", key=key)
        try:
            return await obstore.sign_async(self.store, "GET", key, timedelta(seconds=ttl))
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise self._error("sign", key, exc) from exc

    def _error(self, action: str, key: str, exc: Exception) -> StorageError:
        """The StorageError for an obstore failure (obstore raises FileNotFoundError too):
        what failed in our words; obstore's own text (requests, retries, the server's XML)
        goes to the log only."""
        import obstore

        where = f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}{key}"
        if isinstance(exc, (obstore.exceptions.NotFoundError, FileNotFoundError)):
            return StorageNotFound(f"no stored file {where}", key=key)
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]  # (then a debug dump)
        log.warning("storage %s failed for %s: %s", action, where, detail)
        store = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return StorageError(f"could not {action} {key} in {store}: {_reason(exc)}", key=key)


def _reason(exc: Exception) -> str:
    """Why an object store request failed, in a few words."""
    import obstore

    if isinstance(exc, obstore.exceptions.PermissionDeniedError):
        return "the object store denied access (check the credentials and the bucket)"
    if isinstance(exc, obstore.exceptions.UnauthenticatedError):
        return "the object store refused the credentials"
    text = str(exc)
    status = re.search(r"status code: (\d{3})", text)
    if status is not None:
        return f"the object store answered HTTP {status.group(1)}"
    if "error sending request" in text or "connect" in text.lower():
        return "the object store cannot be reached"
    if "timed out" in text.lower():
        return "the object store did not answer in time"
    return f"the object store failed ({type(exc).__name__})"
