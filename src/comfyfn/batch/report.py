"""What a batch made: the summary (counts, rate, p50/p95, server busy fractions), a
``results.csv`` with one line per file (and per failed row), and a self-contained
``index.html`` contact sheet: thumbnails — grouped by topic, each labelled with its output
name and delivered size, for a recipe — and the failed rows."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from comfyfn._files import sweep_temporaries, write_atomic
from comfyfn.batch.manifest import Manifest, Record
from comfyfn.errors import ConfigError
from comfyfn.outputs import named_kind

if TYPE_CHECKING:
    from comfyfn.batch.runner import Batch
    from comfyfn.fleet import Pool

__all__ = [
    "CAPTION",
    "RESULT_COLUMNS",
    "Records",
    "Summary",
    "nearest_rank",
    "summarize",
    "write_contact_sheet",
    "write_report",
    "write_report_to",
    "write_results",
]

#: characters of a prompt shown under its thumbnail (cut before escaping: never half an entity)
CAPTION = 160
#: the columns of ``results.csv``: one line per file, or per row that made none
RESULT_COLUMNS = (
    "row",
    "topic",
    "output",
    "file",
    "seed",
    "prompt",
    "size",
    "state",
    "error",
    "executed_s",
    "turnaround_s",
)


class Records(Protocol):
    """A batch's rows as the report reads them: a run's manifest, or the shared store's
    jobs of a queued batch (:class:`comfyfn.batch.queued.StoredRecords`)."""

    def records(self, state: str | None = None) -> Iterator[Record]: ...

    def percentile(self, q: float, of: str = "executed") -> float | None: ...


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of ``values`` by nearest rank (None for none)."""
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


@dataclass(frozen=True)
class Summary:
    done: int
    failed: int
    skipped: int
    invalid: int
    images: int
    seconds: float
    jobs_per_minute: float  #: jobs made by this run (a job may make several images)
    p50: float | None  #: execution seconds on the server (its own timestamps)
    p95: float | None
    servers: dict[str, dict[str, Any]]
    turnaround_p50: float | None = None  #: seconds from submission to the outputs in hand
    turnaround_p95: float | None = None  #: (queued behind our own primed jobs included)
    #: the done rows' other outputs (animated images, videos, audio, text...); ``images``
    #: counts their still images
    other_files: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.invalid == 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def summarize(
    manifest: Records, pool: Pool | None, seconds: float, counted: dict[str, int]
) -> Summary:
    """``counted``: the states this run reported (done/failed/skipped/invalid); ``pool``:
    the servers this process drove (None: the work ran elsewhere)."""
    kinds = Counter(named_kind(f) for r in manifest.records("done") for f in r.files)
    made = counted.get("done", 0)
    per_server = {
        url: {
            "done": s.done,
            "failures": s.failures,
            "healthy": s.healthy,
            "busy_fraction": round(s.busy_seconds / seconds, 3) if seconds else 0.0,
        }
        for url, s in (pool.states.items() if pool is not None else ())
    }
    return Summary(
        made,
        counted.get("failed", 0),
        counted.get("skipped", 0),
        counted.get("invalid", 0),
        kinds.pop("image", 0),
        round(seconds, 3),
        round(made / seconds * 60, 1) if seconds else 0.0,
        manifest.percentile(0.5),
        manifest.percentile(0.95),
        per_server,
        manifest.percentile(0.5, "seconds"),
        manifest.percentile(0.95, "seconds"),
        sum(kinds.values()),
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


def size_of(params: dict[str, Any]) -> str:
    """The size of a job's files: delivered (a recipe's), else as generated."""
    width, height = params.get("delivered") or (params.get("width"), params.get("height"))
    return f"{width}×{height}"


def write_results(manifest: Records, output: Path) -> Path:
    """Write ``results.csv`` (UTF-8 with a BOM, so spreadsheet programs read the Chinese):
    :data:`RESULT_COLUMNS`, one line per file made and one per row that made none."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for record in manifest.records():
        p = record.params
        common = (record.row, p.get("topic", ""), p.get("output", ""))
        tail = (p.get("seed", ""), p.get("prompt", ""), size_of(p) if p else "")
        times = (_seconds(record.executed), _seconds(record.seconds))
        for file in record.files or [""]:
            writer.writerow((*common, file, *tail, record.state, record.error or "", *times))
    return write_atomic(output / "results.csv", "\ufeff" + buffer.getvalue())


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


#: the kinds shown as thumbnails on the contact sheet (the rest are links)
_PICTURES = ("image", "animated")
_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:8px;border-radius:6px}
img{width:100%;height:auto;display:block}figcaption{font-size:12px;color:#333;word-break:break-word}
.output{font-size:14px;font-weight:600}.size{float:right;color:#555;font-weight:400}
h2{font-size:18px;margin:1.5rem 0 .5rem}.files{font-size:12px;margin:4px 0 0;padding-left:1.2em}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}.meta{color:#777}"""


def write_contact_sheet(
    manifest: Records, output: Path, summary: Summary, *, limit: int = 500
) -> Path:
    """Write ``index.html``: up to ``limit`` thumbnails (inline), a section per topic for a
    recipe's images, then every failed row."""
    esc = html.escape
    recipes = {r.params.get("recipe") for r in manifest.records("done")}
    recipe = next(iter(recipes)) if len(recipes) == 1 else None
    title = f"Recipe {recipe}" if recipe else "Batch results"
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>comfyfn: {esc(title)}</title>"
        f"<style>{_STYLE}</style><h1>{esc(title)}</h1>",
        f"<p>{summary.done} made, {summary.skipped} already done, {summary.failed} failed, "
        f"{summary.invalid} invalid rows · {summary.jobs_per_minute} jobs/min · "
        f"ran p50 {summary.p50 or 0:.2f}s · p95 {summary.p95 or 0:.2f}s · turnaround p50 "
        f"{summary.turnaround_p50 or 0:.2f}s · p95 {summary.turnaround_p95 or 0:.2f}s</p>",
    ]
    stills = 0
    for topic, figures, shown in _sections(manifest, output, limit):
        parts.append(f"<section><h2>{esc(topic)}</h2>" if topic is not None else "<section>")
        parts.append(f"<div class='grid'>{''.join(figures)}</div></section>")
        stills += shown
    if summary.images > stills:
        parts.append(
            f"<p class='meta'>{summary.images - stills} more images are in the folder.</p>"
        )
    failed = [r for r in manifest.records() if r.state in ("failed", "invalid")]
    if failed:
        parts.append(
            "<h2>Failed rows</h2><table><tr><th>row</th><th>topic / output</th><th>state</th>"
            "<th>error</th></tr>"
        )
        parts += [
            f"<tr><td>{esc(r.label)}</td><td>{esc(_what(r))}</td><td>{r.state}</td>"
            f"<td>{esc(r.error or '')}</td></tr>"
            for r in failed
        ]
        parts.append("</table>")
    return write_atomic(output / "index.html", "".join(parts))


def _sections(
    manifest: Records, output: Path, limit: int
) -> Iterator[tuple[str | None, list[str], int]]:
    """``(topic, figures, still images among them)`` in row order: one section per topic of
    a recipe's images (they come topic by topic), one untitled section for rows without a
    topic; at most ``limit`` figures in all. A row's videos, audio and texts are links under
    its first figure (a row without an image gets a figure of links)."""
    topic: str | None = None
    figures: list[str] = []
    shown = stills = 0
    for record in manifest.records("done"):
        this = record.params.get("topic")
        if figures and this != topic:
            yield topic, figures, stills
            figures, stills = [], 0
        topic = this
        links = [rel for rel in record.files if named_kind(rel) not in _PICTURES]
        for rel in record.files:
            if shown >= limit:
                break
            thumb = _thumbnail(output / rel) if rel not in links else None
            if thumb is not None:
                figures.append(_figure(record, rel, thumb, links))
                shown, links = shown + 1, []
                stills += named_kind(rel) == "image"
        if links and shown < limit:
            figures.append(_figure(record, None, None, links))
            shown += 1
    if figures:
        yield topic, figures, stills


def _figure(record: Record, rel: str | None, thumb: str | None, links: list[str]) -> str:
    """A row's figure: its thumbnail linking to ``rel`` (if it has one) and links to
    ``links``, its files of other kinds."""
    esc = html.escape
    picture = (
        f"<a href='{_href(rel)}'><img src='data:image/jpeg;base64,{thumb}' alt=''></a>"
        if rel is not None and thumb is not None
        else ""
    )
    files = "".join(
        f"<li><a href='{_href(link)}'>{esc(named_kind(link))}: {esc(Path(link).name)}</a></li>"
        for link in links
    )
    listed = f"<ul class='files'>{files}</ul>" if files else ""
    return f"<figure>{picture}<figcaption>{_caption(record)}</figcaption>{listed}</figure>"


def _href(rel: str) -> str:
    """A file's relative link: every character outside a path's percent-encoded (so a name
    holding ``:``, ``#`` or ``?`` is a file beside the sheet, never a scheme or a fragment),
    then escaped for the attribute."""
    return html.escape(quote(rel))


def _what(record: Record) -> str:
    p = record.params
    return " / ".join(str(p[k]) for k in ("topic", "output") if p.get(k))


def _caption(record: Record) -> str:
    """A recipe image: its output name and delivered size first. Then the prompt (cut to
    :data:`CAPTION` characters, then escaped), seed, size, server, time and row."""
    esc, p = html.escape, record.params
    head = ""
    if p.get("output"):
        head = (
            f"<div class='output'>{esc(str(p['output']))}"
            f"<span class='size'>{esc(size_of(p))}</span></div>"
        )
    return (
        f"{head}<b>{esc(str(p.get('prompt', ''))[:CAPTION])}</b><br>"
        f"<span class='meta'>seed {esc(str(p.get('seed')))} · {esc(size_of(p))} · "
        f"{esc(record.server or '')} · {_took(record)} · "
        f"{esc(record.label)}</span>"
    )


def _took(record: Record) -> str:
    """Execution time, and the turnaround where it differs (queued behind our own jobs)."""
    if record.executed is None:
        return f"{record.seconds or 0:.2f}s"
    return f"ran {record.executed:.2f}s (turnaround {record.seconds or 0:.2f}s)"


def write_report(
    batch: Batch, counted: dict[str, int], *, thumbnails: int = 500
) -> tuple[Summary, Path]:
    """After a run: the summary (also in ``summary.json``), ``results.csv``, and the contact
    sheet's path."""
    output = batch.output
    if output is None:
        raise ConfigError("a batch without an output folder has no report")
    manifest = Manifest(output / "manifest.sqlite")
    try:
        seconds = time.monotonic() - batch.started
        return write_report_to(manifest, output, batch.pool, seconds, counted, thumbnails)
    finally:
        manifest.close()


def write_report_to(
    records: Records,
    output: Path,
    pool: Pool | None,
    seconds: float,
    counted: dict[str, int],
    thumbnails: int = 500,
) -> tuple[Summary, Path]:
    """The summary (also in ``summary.json``), ``results.csv`` and the contact sheet of
    ``records``, written into ``output``; the summary and the contact sheet's path. The
    temporary files of writers that died mid-write (a worker killed) are swept first."""
    sweep_temporaries(output)
    summary = summarize(records, pool, seconds, counted)
    write_atomic(output / "summary.json", summary.to_json())
    write_results(records, output)
    return summary, write_contact_sheet(records, output, summary, limit=thumbnails)
