"""Tool results the way agents use them: a small JPEG preview of each image (the model sees
it), a resource link to the full file (a signed URL or a file:// URI), and the job — its
seed and parameters — as structured content (and as JSON text, for clients that read only
text). Errors are one sentence, flagged as the tool's error."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Sequence
from typing import Any

import mcp_types as types
from PIL import Image, UnidentifiedImageError

from comfyfn.mcp._backend import JobOutcome, OutputFile, ToolError

__all__ = [
    "MAX_PREVIEWS",
    "PREVIEW_SIDE",
    "data_result",
    "error_result",
    "jobs_result",
    "preview",
    "result",
]

log = logging.getLogger("comfyfn.mcp")

PREVIEW_SIDE = 512  #: the longer side of a preview, in pixels
MAX_PREVIEWS = 8  #: previews in one result (a batch links the rest)
_JPEG_QUALITY = 80


def preview(output: OutputFile) -> types.ImageContent | None:
    """The image at most :data:`PREVIEW_SIDE` pixels on its longer side, as JPEG; None if
    it is not a still image Pillow reads."""
    try:
        with Image.open(io.BytesIO(output.data)) as im:
            im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            buffer = io.BytesIO()
            im.convert("RGB").save(buffer, "JPEG", quality=_JPEG_QUALITY)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        log.warning("no preview of %s: %s", output.name, exc)
        return None
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return types.ImageContent(data=data, mime_type="image/jpeg")


def _link(output: OutputFile) -> types.ResourceLink:
    return types.ResourceLink(
        uri=output.uri,
        name=output.name,
        mime_type=output.content_type,
        size=len(output.data),
        description="the full image",
    )


def _summary(job: JobOutcome) -> str:
    if job.state == "succeeded":
        return (
            f"job {job.job_id} succeeded: {len(job.outputs)} image(s), "
            f"seed {job.params.get('seed')}"
        )
    return f"job {job.job_id} {job.state}" + (f": {job.error}" if job.error else "")


def _text(data: Any) -> types.TextContent:
    return types.TextContent(text=json.dumps(data, ensure_ascii=False))


def result(job: JobOutcome, *, previews: bool = True) -> types.CallToolResult:
    """One job: a failed or cancelled one is the tool's error (its reason said)."""
    content: list[types.ContentBlock] = [types.TextContent(text=_summary(job))]
    if previews:
        content += [p for p in map(preview, job.outputs[:MAX_PREVIEWS]) if p is not None]
    content += [_link(o) for o in job.outputs]
    structured = job.json()
    content.append(_text(structured))
    failed = job.state in ("failed", "cancelled")
    return types.CallToolResult(content=content, structured_content=structured, is_error=failed)


def jobs_result(jobs: Sequence[JobOutcome]) -> types.CallToolResult:
    """A batch: every job's links, previews of the first :data:`MAX_PREVIEWS` images; the
    tool's error only if no job succeeded."""
    outputs = [o for job in jobs for o in job.outputs]
    done = sum(job.state == "succeeded" for job in jobs)
    content: list[types.ContentBlock] = [
        types.TextContent(text=f"{done} of {len(jobs)} job(s) succeeded, {len(outputs)} image(s)")
    ]
    content += [p for p in map(preview, outputs[:MAX_PREVIEWS]) if p is not None]
    content += [_link(o) for o in outputs]
    structured = {"succeeded": done, "jobs": [job.json() for job in jobs]}
    content.append(_text(structured))
    return types.CallToolResult(
        content=content, structured_content=structured, is_error=bool(jobs) and done == 0
    )


def data_result(data: dict[str, Any]) -> types.CallToolResult:
    """Plain data (the list of workflows)."""
    return types.CallToolResult(content=[_text(data)], structured_content=data)


def error_result(exc: ToolError) -> types.CallToolResult:
    error = {"message": str(exc), "param": exc.param}
    return types.CallToolResult(
        content=[types.TextContent(text=str(exc))],
        structured_content={"error": error},
        is_error=True,
    )
