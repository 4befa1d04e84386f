"""Rows × variations: ``--vary`` specs (``seed=1..8``, ``style=ink,photo``), each input row
multiplied by their cartesian product one row at a time, with the prompt template filled in
and the ``priority`` column read. What cannot become a job is a :class:`RowError` naming row
and column; the rest of the batch goes on (see :mod:`comfyfn.batch.rows` for the input)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from comfyfn.batch.rows import (
    RawRows,
    Row,
    RowError,
    _NotPlain,
    _shown,
    _text_problem,
    template_fields,
    values_problem,
    variation_problem,
)
from comfyfn.errors import ConfigError

__all__ = ["expand", "parse_vary", "vary_values"]

_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*$")


def parse_vary(spec: str) -> tuple[str, list[Any]]:
    """``"seed=1..8"`` → ``("seed", [1, …, 8])``; ``"style=ink,photo"`` → a list of text."""
    name, sep, values = spec.partition("=")
    if not sep or not name.strip() or not values.strip():
        raise ConfigError(f"--vary {spec!r}: expected name=a,b,c or name=1..8")
    try:
        return name.strip(), vary_values(values)
    except ValueError as exc:
        raise ConfigError(f"--vary {spec!r}: {exc}") from None


def vary_values(text: str) -> list[Any]:
    """``"1..8"`` → ``[1, …, 8]`` (inclusive); ``"ink, photo"`` → ``["ink", "photo"]``.
    A ValueError says why ``text`` gives no values."""
    match = _RANGE.match(text)
    if match:
        low, high = int(match.group(1)), int(match.group(2))
        if high < low or high - low > 100_000:
            raise ValueError("the range must go up, at most 100001 values")
        return list(range(low, high + 1))
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError("no values; expected a,b,c or 1..8")
    return values


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
            yield _fill(index, variant, values, template, dict(zip(names, combo, strict=True)))


def _fill(
    index: int,
    variant: int,
    values: dict[str, Any],
    template: str | None,
    combo: dict[str, Any],
) -> Row | RowError:
    """One combination: checked values, the template filled into ``prompt``."""
    bad_value = values_problem(values)
    if bad_value is not None:
        return RowError(index, *bad_value, variant)
    text = template if template is not None else values.get("prompt")
    fields: list[str] = []
    if isinstance(text, str) and "{" in text:
        try:
            fields = template_fields(text)
        except _NotPlain as exc:
            return RowError(index, "prompt", f"bad template: {exc}", variant)
        except ValueError as exc:  # unbalanced braces: a template must not, a prompt may
            if template is not None:
                return RowError(index, "prompt", f"bad template: {exc}", variant)
    for name in combo:
        if (problem := variation_problem(name, fields)) is not None:
            return RowError(index, name, f"(a --vary name) {problem}", variant)
    if fields:
        assert isinstance(text, str)
        try:
            values["prompt"] = text.format_map(values)
        except KeyError as exc:
            return RowError(
                index,
                _shown(str(exc.args[0])),
                "the prompt template uses this column, which the row lacks",
                variant,
            )
        except (ValueError, IndexError) as exc:
            return RowError(index, "prompt", f"bad template: {exc}", variant)
        problem = _text_problem(values["prompt"])
        if problem is not None:
            return RowError(index, "prompt", f"filled from the template, {problem}", variant)
    priority = _priority(values.get("_priority", 0))
    if priority is None:
        return RowError(index, "priority", "must be a whole number", variant)
    return Row(index, values, variant, combo, priority)


def _priority(value: Any) -> int | None:
    """A row's priority from its cell (``"5"``, ``5``, ``-1``), or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,9}\s*", value):
        return int(value)
    return None
