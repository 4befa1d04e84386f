"""Batch input, streamed: CSV, JSONL or a YAML job file → rows of parameters, with variations.

Nothing here holds more than one input row at a time (variations multiply one row at a time).

- CSV: a header row; the seed project's columns ``prompt,negative_prompt,seed,width,height``
  or any column named after a workflow parameter (``steps``, ``cfg``, ``57:3.denoise``...).
  Other columns are template variables for ``--template "{prompt}, {style}"``.
- JSONL: one JSON object per line, same keys.
- YAML job file: ``workflow``, ``defaults``, ``template``, ``vary`` and either ``rows`` (a
  list) or ``input`` (a CSV/JSONL path relative to the job file).
- Variations: ``seed=1..8`` (inclusive range), ``style=watercolor,ink,photo`` (a list); several
  are combined as a cartesian product, each combination a row of its own.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyfn.errors import ConfigError

__all__ = ["RawRows", "Row", "RowError", "expand", "parse_vary", "read_job_file", "read_rows"]

_ALIASES = {"negative_prompt": "negative", "neg": "negative", "positive": "prompt"}
_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


@dataclass(frozen=True)
class Row:
    """One job's input: where it came from, and its values (parameters and variables)."""

    index: int  #: 1-based data row (CSV: the header is not counted)
    values: Mapping[str, Any]
    variant: int = 0  #: which combination of the variations (0 without variations)
    combo: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.combo.items())
        return f"row {self.index}" + (f" [{extra}]" if extra else "")

    @property
    def stem(self) -> str:
        return f"{self.index:06d}" + (f"-{self.variant:03d}" if self.combo else "")


@dataclass(frozen=True)
class RowError:
    """A row that cannot become a job; the rest of the batch goes on."""

    index: int
    column: str | None
    message: str
    variant: int = 0

    def __str__(self) -> str:
        where = f"row {self.index}" + (f", column '{self.column}'" if self.column else "")
        return f"{where}: {self.message}"


def _clean(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key is None:
            continue
        key = str(key).strip()
        name = _ALIASES.get(key, key)
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                continue
        if value is None:
            continue
        out[name] = value
    return out


RawRows = Iterable[tuple[int, dict[str, Any] | RowError]]


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(row number, values) of a CSV or JSONL file, one at a time (UTF-8; BOM accepted)."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        try:
            yield from _parse(path, handle)
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path} is not UTF-8 ({exc.reason} at byte {exc.start}); "
                "save it as UTF-8 (Excel: 'CSV UTF-8')"
            ) from exc
        except csv.Error as exc:
            raise ConfigError(f"{path}: not a readable CSV: {exc}") from exc


def _parse(path: Path, handle: Any) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, RowError(n, None, f"not JSON: {exc.msg}")
                continue
            if isinstance(obj, dict):
                yield n, _clean(obj)
            else:
                yield n, RowError(n, None, "not a JSON object")
        return
    reader = csv.DictReader(handle)
    if not reader.fieldnames:
        raise ConfigError(f"{path}: no header row")
    for n, row in enumerate(reader, 1):
        if None in row:
            yield n, RowError(n, None, "more cells than header columns")
            continue
        yield n, _clean(row)


def parse_vary(spec: str) -> tuple[str, list[Any]]:
    """``"seed=1..8"`` → ``("seed", [1, …, 8])``; ``"style=ink,photo"`` → a list of text."""
    name, sep, values = spec.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise ConfigError(f"--vary {spec!r}: expected name=a,b,c or name=1..8")
    match = _RANGE.match(values)
    if match:
        low, high = int(match.group(1)), int(match.group(2))
        if high < low or high - low > 100_000:
            raise ConfigError(f"--vary {spec!r}: the range must go up, at most 100001 values")
        return name.strip(), list(range(low, high + 1))
    return name.strip(), [v.strip() for v in values.split(",") if v.strip()]


def _placeholders(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def expand(
    rows: RawRows,
    *,
    vary: Sequence[tuple[str, Sequence[Any]]] = (),
    template: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Iterator[Row | RowError]:
    """Rows × variations, with the prompt template filled; errors name row and column."""
    names = [n for n, _ in vary]
    combos = list(itertools.product(*(values for _, values in vary))) if vary else [()]
    for index, raw in rows:
        if isinstance(raw, RowError):
            yield raw
            continue
        for variant, combo in enumerate(combos):
            values = {**(defaults or {}), **raw, **dict(zip(names, combo, strict=True))}
            text = template if template is not None else values.get("prompt")
            if isinstance(text, str) and _placeholders(text):
                bad = [f for f in _placeholders(text) if not f.isidentifier()]
                if bad:
                    yield RowError(
                        index,
                        "prompt",
                        f"bad template: use plain {{names}}, not {{{bad[0]}}}",
                        variant,
                    )
                    continue
                try:
                    values["prompt"] = text.format_map(values)
                except KeyError as exc:
                    yield RowError(
                        index,
                        exc.args[0],
                        "the prompt template uses this column, which the row lacks",
                        variant,
                    )
                    continue
                except (ValueError, IndexError) as exc:
                    yield RowError(index, "prompt", f"bad template: {exc}", variant)
                    continue
            yield Row(index, values, variant, dict(zip(names, combo, strict=True)))


def read_job_file(path: str | Path) -> dict[str, Any]:
    """A YAML job file, checked; returns its settings with ``rows`` as an iterator."""
    import yaml

    path = Path(path)
    try:
        job = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the job file {path}: {exc}") from exc
    if not isinstance(job, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    unknown = set(job) - {"workflow", "defaults", "template", "vary", "rows", "input", "prime"}
    if unknown:
        raise ConfigError(f"{path}: unknown settings {', '.join(sorted(unknown))}")
    vary = []
    for name, values in (job.get("vary") or {}).items():
        if isinstance(values, str):
            vary.append(parse_vary(f"{name}={values}"))
        elif isinstance(values, list):
            vary.append((name, values))
        else:
            raise ConfigError(f"{path}: vary.{name} must be a list or 'a..b'")
    if "input" in job:
        rows: RawRows = read_rows(path.parent / job["input"])
    elif isinstance(job.get("rows"), list):
        rows = (
            (i, _clean(r) if isinstance(r, dict) else RowError(i, None, "not a mapping"))
            for i, r in enumerate(job["rows"], 1)
        )
    else:
        raise ConfigError(f"{path}: give either 'rows' (a list) or 'input' (a CSV/JSONL file)")
    return {**job, "rows": rows, "vary": vary}
