"""The manifest file's schema (pydantic): what :func:`comfyfn.models.load_manifest` accepts."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, model_validator

from comfyfn._yaml import Settings, described, shown
from comfyfn.models._manifest import header_value_problem

__all__ = ["EntrySpec", "ManifestSpec"]

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_FOLDER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*", re.IGNORECASE)
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _file_name(value: str) -> str:
    parts = PurePosixPath(value).parts
    if (
        not value
        or value.startswith("/")
        or "\\" in value
        or "\0" in value
        or any(p in (".", "..") for p in value.split("/"))
        or not parts
    ):
        raise ValueError(f"'{shown(value)}' is not a file name inside its folder")
    return value


def _folder(value: str) -> str:
    if not _FOLDER.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"'{shown(value)}' is not a models/ folder name (e.g. diffusion_models)")
    return value


def _url(value: str) -> str:
    if not _URL.fullmatch(value):
        raise ValueError(f"{described(value)} is not an http(s) URL")
    return value


def _sha256(value: str | None) -> str | None:
    if value is not None and not _HEX64.fullmatch(value):
        raise ValueError(f"must be 64 hexadecimal digits, not {described(value)}")
    return value.lower() if value else None


def _headers(value: dict[str, str]) -> dict[str, str]:
    for key, text in value.items():
        if not _HEADER.fullmatch(key):
            raise ValueError(f"'{shown(key)}' is not an HTTP header name")
        if problem := header_value_problem(text):
            raise ValueError(f"{key}: its value {problem}")
        for match in _PLACEHOLDER.finditer(text):
            if not (match[0].endswith("}") and _NAME.fullmatch(match[1])):
                raise ValueError(
                    f"{key}: '{shown(match[0])}' is not ${{NAME}} (an environment variable)"
                )
    return value


Headers = Annotated[dict[str, str], AfterValidator(_headers)]


class EntrySpec(Settings):
    name: Annotated[str, AfterValidator(_file_name)]
    folder: Annotated[str, AfterValidator(_folder)]
    url: Annotated[str, AfterValidator(_url)]
    sha256: Annotated[str | None, AfterValidator(_sha256)] = None
    size: Annotated[int | None, Field(ge=0)] = None
    headers: Headers = Field(default_factory=dict)
    source: str | None = None


class ManifestSpec(Settings):
    shape: ClassVar[str] = "a list of model entries, or a mapping with 'models'"

    description: str = ""
    total_size: Annotated[int | None, Field(ge=0)] = None
    headers: Headers = Field(default_factory=dict)
    models: Annotated[list[EntrySpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique(self) -> Any:
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(self.models):
            key = (entry.folder, entry.name)
            if key in seen:
                raise ValueError(f"models[{i}]: {entry.folder}/{entry.name} is listed twice")
            seen.add(key)
        return self
