"""Batch input, streamed: CSV, JSONL or a YAML job file → rows of parameters, with variations.

Nothing here holds more than one input row at a time (variations multiply one row at a time).

- CSV: a header row; the seed project's columns ``prompt,negative_prompt,seed,width,height``
  or any column named after a workflow parameter (``steps``, ``cfg``, ``57:3.denoise``...).
  Other columns are template variables for ``--template "{prompt}, {style}"``.
- JSONL: one JSON object per line, same keys.
- YAML job file (:mod:`comfyfn.batch.jobfile`): ``workflow``, ``defaults``, ``template``,
  ``vary`` and either ``rows`` (a list) or ``input`` (a CSV/JSONL path relative to it).
- ``priority`` (a whole number, default 0): rows with a higher one run first.
- Variations: ``seed=1..8`` (inclusive range), ``style=watercolor,ink,photo`` (a list); several
  are combined as a cartesian product, each combination a row of its own
  (:mod:`comfyfn.batch.variations`).

Hostile input is a row error naming row and column, never a crash of the whole run: a value
that is not valid Unicode (a lone surrogate such as JSON's ``"\\ud800"``), a value over
:data:`MAX_CELL` characters, a ``_name`` that would leave the output folder
(:func:`output_name_problem`), a template with format specs. Only what makes the whole file
unreadable is a :class:`ConfigError`: bytes that are not UTF-8, a line over :data:`MAX_LINE`
characters in a CSV (memory stays bounded), a YAML job file with aliases (see
:mod:`comfyfn._yaml`).
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import json
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from comfyfn.errors import ConfigError
from comfyfn.outputs import OTHER_NAME
from comfyfn.workflow import MEANINGS

__all__ = [
    "MAX_CELL",
    "MAX_LINE",
    "RawRows",
    "Row",
    "RowError",
    "clean_values",
    "count_rows",
    "csv_columns",
    "output_name_problem",
    "prompt_placeholders",
    "read_rows",
    "template_fields",
    "template_problem",
    "values_problem",
    "variation_problem",
]

#: The longest value (in characters) a row may hold; a longer one is a row error. Prompts are a
#: few hundred characters; 100,000 leaves room for anything real and stays far below what
#: would strain the manifest, the contact sheet or a server.
MAX_CELL = 100_000
#: The longest physical line (in characters) read from an input file, so memory stays bounded
#: however the file is made. In a CSV a longer line is a file error (the rest of the line
#: cannot be skipped safely inside quotes); in JSONL it is a row error and the line is skipped.
MAX_LINE = 16 * 1024 * 1024
#: Bytes per component of ``_name``: the usual 255-byte file-name limit, less room for the
#: ``_12.png`` the writer appends.
MAX_NAME_PART = 240

_ALIASES = {
    "negative_prompt": "negative",
    "neg": "negative",
    "positive": "prompt",
    "priority": "_priority",  # ours, not the workflow's: never bound
}


@dataclass(frozen=True)
class Row:
    """One job's input: where it came from, and its values (parameters and variables)."""

    index: int  #: 1-based data row (CSV: the header is not counted)
    values: Mapping[str, Any]
    variant: int = 0  #: which combination of the variations (0 without variations)
    combo: Mapping[str, Any] = field(default_factory=dict)
    priority: int = 0  #: higher runs first (the ``priority`` column)

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


def clean_values(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A row's values with names trimmed (``negative_prompt`` read as ``negative``…) and
    empty cells dropped."""
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


# -- hostile values ---------------------------------------------------------------------------


def output_name_problem(name: str) -> str | None:
    """Why ``name`` (a ``_name``: an output path relative to the output folder, without the
    suffix) is unsafe, or None. Only plain relative paths with ``/`` between folders pass:
    never absolute, never a drive, no ``.``/``..`` or empty component, no NUL, backslash or
    control character, no lone surrogate, no component over :data:`MAX_NAME_PART` bytes."""
    if not isinstance(name, str):
        return f"must be text, not {type(name).__name__}"
    if not name:
        return "is empty"
    if "\x00" in name:
        return "contains a NUL character"
    if "\\" in name:
        return "contains a backslash; separate folders with '/'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    if _surrogate(name) is not None:
        return "is not valid Unicode (it contains a lone surrogate)"
    if name.startswith("/"):
        return "is an absolute path; it must be relative to the output folder"
    if PureWindowsPath(name).drive:
        return f"starts with a drive ({PureWindowsPath(name).drive!r}); it must be relative"
    parts = name.split("/")
    if "" in parts:
        return "has an empty path component (a leading, trailing or doubled '/')"
    if any(part in (".", "..") for part in parts):
        return "has a '.' or '..' component; it must stay inside the output folder"
    if any(len(part.encode("utf-8")) > MAX_NAME_PART for part in parts):
        return f"has a path component longer than {MAX_NAME_PART} bytes"
    ending = OTHER_NAME.search(parts[-1])
    if ending is not None:
        return (
            f"ends like the name of a row's other output ({ending.group(0)!r}, as in "
            "'<name>_video0.mp4'); choose a name that does not"
        )
    return None


def _surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in ``text`` (text that cannot be UTF-8), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _shown(text: str) -> str:
    """``text`` with lone surrogates as ``\\udXXX`` escapes, so it can be printed and stored."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _text_problem(text: str) -> str | None:
    if len(text) > MAX_CELL:
        return f"is {len(text):,} characters long; the limit is {MAX_CELL:,}"
    at = _surrogate(text)
    if at is not None:
        return f"is not valid Unicode: a lone surrogate ({_shown(text[at])}) at character {at + 1}"
    return None


def values_problem(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first unusable value of a row as ``(column, message)``, or None: a column name or a
    text (also inside lists and mappings) that is not valid Unicode or longer than
    :data:`MAX_CELL` characters, or a ``_name`` that :func:`output_name_problem` refuses."""
    for key, value in values.items():
        column = _shown(str(key))
        problem = _text_problem(str(key))
        if problem is not None:
            return column[:80], f"the column name {problem}"
        problem = _nested_problem(value)
        if problem is None and key == "_name":
            problem = output_name_problem(value)
        if problem is not None:
            return column, problem
    return None


def _nested_problem(value: Any) -> str | None:
    stack = [value]  # iterative: JSON may nest as deep as the parser allows
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem is not None:
                return problem
        elif isinstance(item, Mapping):
            stack.extend(str(k) for k in item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


# -- reading ----------------------------------------------------------------------------------


def _lines(handle: Any) -> Iterator[str | None]:
    """Physical lines of at most :data:`MAX_LINE` characters; None for a longer line (whose
    rest is read and dropped in bounded pieces)."""
    while line := handle.readline(MAX_LINE + 1):
        if len(line) <= MAX_LINE:
            yield line
            continue
        while line and not line.endswith(("\n", "\r")):
            line = handle.readline(MAX_LINE)
        yield None


def _open(path: Path) -> Any:
    try:
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def _file_errors(path: Path, exc: Exception) -> ConfigError:
    if isinstance(exc, UnicodeDecodeError):
        return ConfigError(
            f"{path} is not UTF-8 ({exc.reason} at byte {exc.start}); "
            "save it as UTF-8 (Excel: 'CSV UTF-8')"
        )
    return ConfigError(f"{path}: not a readable CSV: {exc}")


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """(row number, values) of a CSV or JSONL file, one at a time (UTF-8; BOM accepted)."""
    path = Path(path)
    with _open(path) as handle:
        try:
            yield from _parse(path, handle)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise _file_errors(path, exc) from exc


def count_rows(path: str | Path) -> int:
    """How many rows :func:`read_rows` will give (a fast pass over the whole file); a file
    :func:`read_rows` would fail on mid-way (not UTF-8...) fails here, before anything runs."""
    path = Path(path)
    with _open(path) as handle:
        try:
            if _is_jsonl(path):
                return sum(1 for line in _lines(handle) if line is None or line.strip())
            return sum(1 for _ in _csv_rows(path, handle))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise _file_errors(path, exc) from exc


def csv_columns(path: str | Path) -> list[str] | None:
    """The columns a CSV file's header names (``negative_prompt`` read as ``negative``…);
    None for a JSONL file."""
    path = Path(path)
    if _is_jsonl(path):
        return None
    with _open(path) as handle:
        try:
            header = next(csv.reader(line for line in _lines(handle) if line is not None), [])
        except (UnicodeDecodeError, csv.Error) as exc:
            raise _file_errors(path, exc) from exc
    return [_ALIASES.get(name.strip(), name.strip()) for name in header]


def _is_jsonl(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson")


def _parse(path: Path, handle: Any) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    if _is_jsonl(path):
        yield from _jsonl_rows(handle)
        return
    for n, row in _csv_rows(path, handle):
        if isinstance(row, RowError):
            yield n, row
        elif None in row:
            yield n, RowError(n, None, "more cells than header columns")
        else:
            yield n, clean_values(row)


def _jsonl_rows(handle: Any) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    for n, line in enumerate(_lines(handle), 1):
        if line is None:
            yield n, RowError(n, None, f"the line is longer than {MAX_LINE:,} characters")
            continue
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, RowError(n, None, f"not JSON: {exc.msg}")
            continue
        except RecursionError:
            yield n, RowError(n, None, "not usable JSON: nested too deeply")
            continue
        if isinstance(obj, dict):
            yield n, clean_values(obj)
        else:
            yield n, RowError(n, None, "not a JSON object")


def _csv_rows(path: Path, handle: Any) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    # The csv module's own cell limit (131,072 characters by default, process-wide) fails the
    # whole file; MAX_CELL is checked per row instead, so it is raised (never lowered) to the
    # line limit, which bounds memory.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE))

    def lines() -> Iterator[str]:
        for k, line in enumerate(_lines(handle), 1):
            if line is None:
                raise ConfigError(f"{path}: line {k} is longer than {MAX_LINE:,} characters")
            yield line

    reader = csv.DictReader(lines())
    if not reader.fieldnames:
        raise ConfigError(f"{path}: no header row")
    n = 0
    while True:
        n += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # this record only; the reader goes on at the next line
            yield n, RowError(n, None, f"not readable CSV: {exc}")
            continue
        yield n, row


# -- templates --------------------------------------------------------------------------------


def template_fields(template: str) -> list[str]:
    """The placeholder names of ``template``. Only plain ``{name}`` fields are allowed (a
    ValueError otherwise): a format spec such as ``{seed:>999999999}`` in a row's prompt would
    build a string of any size. Unbalanced braces are a ValueError too."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None or (name == "" and not spec and not conversion):
            continue  # literal text, or '{}' (formatting then fails: a bad template)
        if not name.isidentifier() or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            raise _NotPlain(f"use plain {{names}}, not {_shown(shown)[:80]}")
        names.append(name)
    return names


class _NotPlain(ValueError):
    pass


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot fill prompts (unbalanced braces, a format spec...), or None."""
    try:
        template_fields(template)
    except ValueError as exc:
        return f"bad template: {exc}"
    return None


def variation_problem(name: str, placeholders: Iterable[str]) -> str | None:
    """Why varying ``name`` would change nothing (None if it would): a variation must be a
    workflow parameter (``steps``, a ``node.input`` path…) or a placeholder of the prompt
    template, else every combination is the same job (``--vary stepz=4,8``). The message
    suggests the closest parameter or placeholder name."""
    placeholders = list(placeholders)
    if name in MEANINGS or "." in name or name in placeholders:
        return None
    near = difflib.get_close_matches(name, [*MEANINGS, *placeholders], n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return (
        "is neither a workflow parameter nor a placeholder of the prompt template, so every "
        f"variation would be the same job; {hint}parameters: {', '.join(MEANINGS)} "
        "(or node.input)"
    )


def prompt_placeholders(
    rows: RawRows, wanted: Iterable[str], defaults: Mapping[str, Any] | None = None
) -> set[str]:
    """The ``{placeholders}`` the rows' prompts use (without ``--template`` each row's prompt
    is its own template; a row without a prompt has the default one). Reads ``rows`` only
    until every ``wanted`` name is among them."""
    targets, found = set(wanted), set[str]()
    default = (defaults or {}).get("prompt")
    for _, raw in rows:
        text = default if isinstance(raw, RowError) else raw.get("prompt", default)
        if isinstance(text, str) and "{" in text:
            with contextlib.suppress(ValueError):  # a bad template: that row's own error
                found.update(template_fields(text))
            if targets <= found:
                break
    return found
