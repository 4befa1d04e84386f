"""Request bodies of the gateway's fixed routes (workflow bodies are built per workflow), and
the check that every text in a request can be stored and sent on (:func:`text_problem`)."""

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from comfyfn.jobs.schema import MAX_PRIORITY

__all__ = [
    "UPLOAD_ID_PATTERN",
    "EditsRequest",
    "ImagesRequest",
    "JobRequest",
    "UploadRef",
    "UploadRequest",
    "text_problem",
]

UPLOAD_ID_PATTERN = r"^upl_[0-9a-f]{64}$"


class ImagesRequest(BaseModel):
    """OpenAI's ``POST /v1/images/generations`` body, plus seed/negative_prompt/steps."""

    model: str = "zimage-turbo"
    prompt: str = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=10)
    size: str | None = Field(default=None, description="WIDTHxHEIGHT, multiples of 16")
    response_format: Literal["url", "b64_json"] = "url"
    user: str | None = None
    quality: str | None = None
    style: str | None = None
    seed: int | None = Field(default=None, ge=0, le=2**53)
    negative_prompt: str | None = None
    steps: int | None = Field(default=None, ge=1, description="at most the gateway's max_steps")


class EditsRequest(BaseModel):
    """OpenAI's ``POST /v1/images/edits`` form fields (the images are its file parts), plus
    seed/negative_prompt/steps/denoise."""

    model: str = "zimage-edit"
    prompt: str = Field(min_length=1)
    n: int = Field(default=1, ge=1, le=10)
    size: str | None = Field(
        default=None, description="WIDTHxHEIGHT, multiples of 16 (default: the input's size)"
    )
    response_format: Literal["url", "b64_json"] = "url"
    user: str | None = None
    quality: str | None = None
    seed: int | None = Field(default=None, ge=0, le=2**53)
    negative_prompt: str | None = None
    steps: int | None = Field(default=None, ge=1, description="at most the gateway's max_steps")
    denoise: float | None = Field(default=None, ge=0, le=1)


class JobRequest(BaseModel):
    workflow: str = "zimage-turbo"
    params: dict[str, Any] = Field(default_factory=dict)
    webhook: str | None = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")
    priority: StrictInt = Field(
        default=0,
        ge=-MAX_PRIORITY,
        le=MAX_PRIORITY,
        description="higher runs first among waiting jobs; at most the API key's maximum",
    )


class UploadRef(BaseModel):
    """An input image in a job's parameters: the id of an upload of the job's key."""

    model_config = ConfigDict(extra="forbid")
    upload: str = Field(pattern=UPLOAD_ID_PATTERN, description="an id from POST /v1/uploads")


class UploadRequest(BaseModel):
    """``POST /v1/uploads`` as JSON: the image as base64, or an http(s) URL to fetch."""

    model_config = ConfigDict(extra="forbid")
    b64_json: str | None = Field(default=None, description="the image, base64 (data: URL too)")
    url: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://\S+$",
        description="an http(s) URL the gateway fetches (public hosts only)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "UploadRequest":
        if (self.b64_json is None) == (self.url is None):
            raise ValueError("give exactly one of b64_json and url")
        return self


def _unstorable(text: str) -> bool:
    """Lone surrogates (JSON's ``"\\ud800"``: not encodable as UTF-8) or NUL (PostgreSQL
    text cannot hold it)."""
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_problem(value: Any, where: str) -> str | None:
    """The path (``where``, ``where.key``, ``where.0``) of the first text in ``value``, a
    key included, that cannot be stored or sent on; None if all can."""
    if isinstance(value, str):
        return where if _unstorable(value) else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and _unstorable(key):
                return path
            found = text_problem(item, path)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = text_problem(item, f"{where}.{i}" if where else str(i))
            if found is not None:
                return found
    return None
