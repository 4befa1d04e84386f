"""What a batch made: the summary (counts, rate, p50/p95, server busy fractions) and a
self-contained ``index.html`` contact sheet with thumbnails and the failed rows."""

from __future__ import annotations

import base64
import html
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfyfn._files import write_atomic
from comfyfn.batch.manifest import Manifest, Record
from comfyfn.errors import ConfigError

if TYPE_CHECKING:
    from comfyfn.batch.runner import Batch
    from comfyfn.fleet import Pool

__all__ = ["CAPTION", "Summary", "summarize", "write_contact_sheet", "write_report"]

#: characters of a prompt shown under its thumbnail (cut before escaping: never half an entity)
CAPTION = 160


@dataclass(frozen=True)
class Summary:
    done: int
    failed: int
    skipped: int
    invalid: int
    images: int
    seconds: float
    jobs_per_minute: float  #: jobs made by this run (a job may make several images)
    p50: float | None
    p95: float | None
    servers: dict[str, dict[str, Any]]

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.invalid == 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def summarize(manifest: Manifest, pool: Pool, seconds: float, counted: dict[str, int]) -> Summary:
    """``counted``: the states this run reported (done/failed/skipped/invalid)."""
    images = sum(len(r.files) for r in manifest.records("done"))
    made = counted.get("done", 0)
    per_server = {
        url: {
            "done": s.done,
            "failures": s.failures,
            "healthy": s.healthy,
            "busy_fraction": round(s.busy_seconds / seconds, 3) if seconds else 0.0,
        }
        for url, s in pool.states.items()
    }
    return Summary(
        made,
        counted.get("failed", 0),
        counted.get("skipped", 0),
        counted.get("invalid", 0),
        images,
        round(seconds, 3),
        round(made / seconds * 60, 1) if seconds else 0.0,
        manifest.percentile(0.5),
        manifest.percentile(0.95),
        per_server,
    )


def _thumbnail(path: Path, size: int = 192) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="JPEG", quality=80)
    except OSError:
        return None
    return base64.b64encode(buf.getvalue()).decode()


_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:8px;border-radius:6px}
img{width:100%;height:auto;display:block}figcaption{font-size:12px;color:#333;word-break:break-word}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}.meta{color:#777}"""


def write_contact_sheet(
    manifest: Manifest, output: Path, summary: Summary, *, limit: int = 500
) -> Path:
    """Write ``index.html``: up to ``limit`` thumbnails (inline), then every failed row."""
    esc = html.escape
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>comfyfn batch</title>"
        f"<style>{_STYLE}</style><h1>Batch results</h1>",
        f"<p>{summary.done} made, {summary.skipped} already done, {summary.failed} failed, "
        f"{summary.invalid} invalid rows · {summary.jobs_per_minute} jobs/min · "
        f"p50 {summary.p50 or 0:.2f}s · p95 {summary.p95 or 0:.2f}s</p><div class='grid'>",
    ]
    shown = 0
    for record in manifest.records("done"):
        for rel in record.files:
            if shown >= limit:
                break
            thumb = _thumbnail(output / rel)
            if thumb is None:
                continue
            parts.append(
                f"<figure><a href='{esc(rel)}'><img src='data:image/jpeg;base64,"
                f"{thumb}' alt=''></a><figcaption>{_caption(record)}</figcaption></figure>"
            )
            shown += 1
    parts.append("</div>")
    total = sum(len(r.files) for r in manifest.records("done"))
    if total > shown:
        parts.append(f"<p class='meta'>{total - shown} more images are in the folder.</p>")
    failed = [r for r in manifest.records() if r.state in ("failed", "invalid")]
    if failed:
        parts.append("<h2>Failed rows</h2><table><tr><th>row</th><th>state</th><th>error</th></tr>")
        parts += [
            f"<tr><td>{esc(r.label)}</td><td>{r.state}</td><td>{esc(r.error or '')}</td></tr>"
            for r in failed
        ]
        parts.append("</table>")
    return write_atomic(output / "index.html", "".join(parts))


def _caption(record: Record) -> str:
    """Prompt (cut to :data:`CAPTION` characters, then escaped), seed, size, server, time."""
    esc, p = html.escape, record.params
    return (
        f"<b>{esc(str(p.get('prompt', ''))[:CAPTION])}</b><br>"
        f"<span class='meta'>seed {esc(str(p.get('seed')))} · "
        f"{esc(str(p.get('width')))}×{esc(str(p.get('height')))} · "
        f"{esc(record.server or '')} · {record.seconds or 0:.2f}s · "
        f"{esc(record.label)}</span>"
    )


def write_report(
    batch: Batch, counted: dict[str, int], *, thumbnails: int = 500
) -> tuple[Summary, Path]:
    """After a run: the summary (also in ``summary.json``) and the contact sheet's path."""
    output = batch.output
    if output is None:
        raise ConfigError("a batch without an output folder has no report")
    manifest = Manifest(output / "manifest.sqlite")
    try:
        summary = summarize(manifest, batch.pool, time.monotonic() - batch.started, counted)
        write_atomic(output / "summary.json", summary.to_json())
        return summary, write_contact_sheet(manifest, output, summary, limit=thumbnails)
    finally:
        manifest.close()
