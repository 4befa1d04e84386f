"""The one way to read a settings file a user hands us (batch job files and recipes): YAML
without aliases, then a pydantic model, every problem a :class:`ConfigError` naming the file
and the field.

**Aliases.** ``yaml.safe_load`` only limits which Python types are built; it still expands
aliases. A "billion laughs" file of a few hundred bytes (``b: [*a, *a, …]``, ``c: [*b, *b, …]``…)
is then a tiny object graph that turns into billions of items as soon as anything walks it
(printing, ``json.dumps``, hashing a row, writing the manifest, validating it).

This loader refuses aliases outright, at the first ``*name`` it meets, rather than counting
expansions: job files and recipes are short hand-written settings with no use for them,
refusing costs nothing and needs no threshold, and a count would still let a file just under
the threshold blow up later (the cost is in the consumer, not the parser). Anchors alone
(``&name``) are harmless and allowed. Merge keys (``<<: *defaults``) are aliases too, so they
are refused with the same message. It is the pure-Python ``SafeLoader`` on purpose: the
libyaml ``CSafeLoader`` composes in C, where the alias hook below would not run.

**Schemas.** A file's model derives from :class:`Settings` (strict types, unknown keys
refused with the known ones listed); :func:`validate_settings` turns pydantic's
``ValidationError`` into one line per problem, ``<file>: <field.path>: <sentence>``, e.g.
``social.yaml: outputs[1].count: must be at least 1, not 0``. Importing
this module imports pydantic (about 80 ms), so the loaders import it when a file is read,
not when the CLI starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails

from comfyfn.errors import ConfigError

__all__ = ["NoAliasLoader", "Settings", "described", "load_yaml", "shown", "validate_settings"]

#: the most problems one error lists (a file with thousands of bad entries stays readable)
MAX_PROBLEMS = 20

M = TypeVar("M", bound="Settings")


class _AliasRefused(Exception):
    def __init__(self, event: yaml.AliasEvent) -> None:
        super().__init__(event.anchor)
        self.anchor, self.problem_mark = event.anchor, event.start_mark


class NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that stops at the first alias instead of expanding it."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise _AliasRefused(self.current_event)  # the event check_event just peeked at
        return super().compose_node(parent, index)


def load_yaml(text: str, label: str) -> Any:
    """Parse ``text``; any problem is a :class:`ConfigError` naming ``label`` and the line."""
    loader = NoAliasLoader(text)
    try:
        return loader.get_single_data()
    except _AliasRefused as exc:
        where = _where(exc)
        problem = f"YAML aliases (*{exc.anchor}) are not allowed; write the value out"
        raise ConfigError(f"{label}: {where}{problem}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{label}: {_where(exc)}not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"{label}: not valid YAML (nested too deeply)") from None
    finally:
        loader.dispose()


def _where(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"line {mark.line + 1}: " if mark is not None else ""


# -- schemas ----------------------------------------------------------------------------------


class Settings(BaseModel):
    """Base of a settings file's models: strict types (YAML already typed every value, so
    ``"4"`` is not a number and ``yes`` is not text), unknown keys refused, frozen.

    ``shape`` says what the section must be, for the message when it is not a mapping."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    shape: ClassVar[str] = "a mapping"

    @model_validator(mode="before")
    @classmethod
    def _known_keys_only(cls, data: Any) -> Any:
        # Before the fields: a typo ('deliever') is reported alone, not also as the missing
        # field it was meant to be.
        if not isinstance(data, Mapping):
            raise ValueError(f"must be {cls.shape}, not {described(data)}")
        known = list(cls.model_fields)
        unknown = [shown(str(key)) for key in data if key not in known]
        if unknown:
            which = "field" if len(unknown) == 1 else "fields"
            listed = ", ".join(f"'{key}'" for key in unknown)
            raise ValueError(f"unknown {which} {listed}; known: {', '.join(known)}")
        return data


def validate_settings(
    data: Any, label: str, model: type[M], *, context: Mapping[str, Any] | None = None
) -> M:
    """``data`` (from :func:`load_yaml`; None, an empty file, is an empty mapping) checked
    against ``model``. ``context`` reaches the model's validators as ``info.context``."""
    try:
        return model.model_validate({} if data is None else data, context=context)
    except ValidationError as exc:
        raise ConfigError(_problem_lines(exc, label)) from None


def _problem_lines(exc: ValidationError, label: str) -> str:
    """One ``<label>: <path>: <sentence>`` line per problem, never pydantic's own dump."""
    problems = exc.errors(include_url=False)
    lines = [_line(label, problem) for problem in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"{label}: … and {len(problems) - MAX_PROBLEMS} more problems")
    return "\n".join(lines)


def _line(label: str, problem: ErrorDetails) -> str:
    loc = list(problem["loc"])
    is_key = bool(loc) and loc[-1] == "[key]"  # a mapping's key itself: (…, key, '[key]')
    if is_key:
        loc.pop()
        loc[-1] = str(loc[-1])  # a key, even a number, is not a list index
    if problem["type"] == "missing":
        message = f"missing field '{loc.pop()}'"
    elif is_key and problem["type"] == "string_type":  # YAML made a number or true of it
        loc.pop()
        message = f"the name {described(problem['input'])} is not text; put it in quotes"
    else:
        message = _sentence(problem)
    path = _path(loc)
    return f"{label}: {path}: {message}" if path else f"{label}: {message}"


def _sentence(problem: ErrorDetails) -> str:
    kind, value, ctx = problem["type"], problem.get("input"), problem.get("ctx") or {}
    if kind == "value_error":  # our validators' own sentences
        return str(ctx["error"])
    if kind in _MUST_BE:
        return f"must be {_MUST_BE[kind]}{_not(value)}"
    if kind == "literal_error":
        return f"must be {ctx['expected']}{_not(value)}"
    if kind in _BOUNDS:
        word, key = _BOUNDS[kind]
        return f"must be {word} {ctx[key]}{_not(value)}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    # a check no model here makes yet: pydantic's own sentence is still one line
    return problem["msg"][:1].lower() + problem["msg"][1:]


_MUST_BE = {
    "string_type": "text",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "list_type": "a list",
}
_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("more than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}


def _path(loc: list[int | str]) -> str:
    """``('outputs', 0, 'deliver')`` → ``outputs[0].deliver``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{shown(part)}"
    return text.lstrip(".")


def _not(value: Any) -> str:
    if value is None:
        return " (it is empty)"
    return f", not {described(value)}"


def described(value: Any) -> str:
    """How a YAML value is named in a message: ``'text'``, ``4``, ``true``, ``a list``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        text = shown(value)
        return f"'{text[:60]}…'" if len(text) > 60 else f"'{text}'"
    if value is None:
        return "empty"
    if isinstance(value, Mapping):
        return "a mapping"
    return "a list" if isinstance(value, list) else type(value).__name__


def shown(text: str) -> str:
    """``text`` safe to print on one line: control characters and lone surrogates escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
