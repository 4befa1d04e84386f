"""The errors of model provisioning (each a :class:`~comfyfn.errors.ComfyError`)."""

from __future__ import annotations

from pathlib import Path

from comfyfn.errors import ComfyError

__all__ = ["ChecksumMismatch", "DownloadFailed"]


class DownloadFailed(ComfyError):
    """A model file could not be downloaded (HTTP status, network, disk); ``url`` and
    ``path`` (the final file name) say which. Nothing was left under ``path``."""

    def __init__(self, message: str, *, url: str, path: Path) -> None:
        super().__init__(message)
        self.url = url
        self.path = path


class ChecksumMismatch(DownloadFailed):
    """The downloaded bytes are not the published ones: ``what`` (``"sha256"`` or
    ``"size"``) was ``actual``, not ``expected``. The partial file was deleted."""

    def __init__(
        self, message: str, *, url: str, path: Path, what: str, expected: str, actual: str
    ) -> None:
        super().__init__(message, url=url, path=path)
        self.what = what
        self.expected = expected
        self.actual = actual
