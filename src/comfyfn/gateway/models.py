"""Request bodies of the gateway's fixed routes (workflow bodies are built per workflow)."""

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["ImagesRequest", "JobRequest"]


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
    steps: int | None = Field(default=None, ge=1, le=200)


class JobRequest(BaseModel):
    workflow: str = "zimage-turbo"
    params: dict[str, Any] = Field(default_factory=dict)
    webhook: str | None = Field(default=None, pattern=r"^https?://\S+$")
