"""The recipe file's schema (pydantic): what :func:`comfyfn.recipes.load_recipe` accepts.

Sizes (``deliver: 1200x675``) and colours (``background: "#102030"``) are parsed here;
prompt templates are checked against the placeholders the file offers (``{topic}``,
``{category}``, ``{product}`` and one per table). Every problem names the file and the field:
``social.yaml: outputs[1].deliver: 'big' is not WIDTHxHEIGHT (e.g. 1080x1920)``.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from comfyfn._yaml import Settings, described, load_yaml, shown, validate_settings
from comfyfn.recipes import Fit

__all__ = ["BUILTIN_PLACEHOLDERS", "RESERVED", "OutputSpec", "RecipeFile", "parse_recipe"]

#: what a prompt template may always use; each table adds its own name
BUILTIN_PLACEHOLDERS = ("topic", "category", "product")
#: parameters a recipe sets per image, so ``defaults`` and ``params`` cannot
RESERVED = ("prompt", "negative", "seed", "width", "height", "batch_size")
_SIZE = re.compile(r"^\s*(\d+)\s*[xX×*]\s*(\d+)\s*$")
_OUTPUT_NAME = re.compile(r"\w[\w.-]{0,47}")  # fullmatch; ≤ 48 characters (≤ 192 bytes)
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_ALIASES = re.compile(r"\s*[,，]\s*")
SEED_MAX = 2**53 - 1  #: seeds survive JSON round-trips in every language


def _size(value: Any) -> tuple[int, int]:
    m = _SIZE.match(value) if isinstance(value, str) else None
    if not m or int(m[1]) <= 0 or int(m[2]) <= 0 or max(int(m[1]), int(m[2])) > 16384:
        raise ValueError(f"{described(value)} is not WIDTHxHEIGHT (e.g. 1080x1920)")
    return int(m[1]), int(m[2])


def _multiples_of_16(size: tuple[int, int]) -> tuple[int, int]:
    if size[0] % 16 or size[1] % 16:
        raise ValueError(f"{size[0]}x{size[1]} is not multiples of 16")
    return size


def _colour(value: Any) -> tuple[int, int, int]:
    if isinstance(value, str) and _COLOUR.fullmatch(value):
        return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    ):
        return value[0], value[1], value[2]
    raise ValueError(f"{described(value)} is not a colour ('#rrggbb' or [r, g, b])")


def _output_name(name: str) -> str:
    if not _OUTPUT_NAME.fullmatch(name):
        raise ValueError(f"'{shown(name)}' must be up to 48 letters, digits, '_', '.', '-'")
    return name


def _parameter(name: str) -> str:
    if name in RESERVED:
        hint = "use count" if name == "batch_size" else "the recipe sets it"
        raise ValueError(f"cannot be set here ({hint})")
    return name


def _table_name(name: str) -> str:
    if not name.isidentifier():
        raise ValueError("table names must be identifiers (they are placeholders)")
    if name in BUILTIN_PLACEHOLDERS:
        raise ValueError(f"'{name}' is a built-in placeholder")
    return name


def _aliases(entries: dict[str, str]) -> dict[str, str]:
    """``{"鞋类, shoes": text}`` → ``{"鞋类": text, "shoes": text}``; every name once."""
    flat: dict[str, str] = {}
    for key, text in entries.items():
        for name in filter(None, _ALIASES.split(key.strip())):
            if name.casefold() in (k.casefold() for k in flat):
                raise ValueError(f"'{shown(name)}' is listed twice")
            flat[name] = text
    if "default" not in flat:
        raise ValueError("needs a 'default' entry")
    return flat


Size = Annotated[tuple[int, int], BeforeValidator(_size)]
GenerateSize = Annotated[tuple[int, int], BeforeValidator(_size), AfterValidator(_multiples_of_16)]
Colour = Annotated[tuple[int, int, int], BeforeValidator(_colour)]
#: workflow parameters by name (``steps``, ``57:3.denoise``), minus those a recipe sets
Params = dict[Annotated[str, AfterValidator(_parameter)], Any]
#: a category as the topic line writes it (``2024: …`` makes the number a category too)
Category = Annotated[str, BeforeValidator(lambda key: key if isinstance(key, str) else str(key))]
Table = Annotated[dict[Category, str], AfterValidator(_aliases)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


class OutputSpec(Settings):
    """One entry of ``outputs``."""

    shape: ClassVar[str] = "a mapping with name, prompt and deliver"

    name: Annotated[str, AfterValidator(_output_name)]
    prompt: str
    negative: str | None = None
    deliver: Size
    generate: GenerateSize | None = None
    count: int = Field(1, ge=1, le=1000)
    fit: Fit = "cover"
    background: Colour = (255, 255, 255)
    params: Params | None = None
    seed_base: Seed | None = None  #: seeds seed_base, seed_base + 1, … for the images
    seeds: list[Seed] | None = None  #: one seed per image

    def fixed_seeds(self) -> tuple[int, ...] | None:
        """The output's own seeds, one per image; None for the recipe's stable hashes."""
        if self.seeds is not None:
            return tuple(self.seeds)
        if self.seed_base is not None:
            return tuple(self.seed_base + i for i in range(self.count))
        return None

    @model_validator(mode="after")
    def _one_seed_rule(self) -> OutputSpec:
        if self.seeds is not None and self.seed_base is not None:
            raise ValueError("give seed_base or seeds, not both")
        if self.seeds is not None and len(self.seeds) != self.count:
            raise ValueError(f"seeds lists {len(self.seeds)} seeds for count {self.count}")
        if self.seed_base is not None and self.seed_base + self.count - 1 > SEED_MAX:
            raise ValueError(f"seed_base + count must stay below {SEED_MAX + 1}")
        return self

    @field_validator("prompt", "negative")
    @classmethod
    def _template(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Non-empty text whose ``{placeholders}`` the recipe offers (``info.context``)."""
        if value is None:
            return None
        if not value.strip():
            raise ValueError("must be non-empty text")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as e:
            hint = "write {{ and }} for literal braces"
            raise ValueError(f"bad template ({e}); {hint}") from None
        offered = (info.context or {}).get("placeholders", BUILTIN_PLACEHOLDERS)
        for f in fields:
            if f not in offered:
                known = ", ".join("{" + p + "}" for p in sorted(offered))
                raise ValueError(f"unknown placeholder {{{shown(f)}}}; known: {known}")
        return value.strip()


class RecipeFile(Settings):
    """A whole recipe file."""

    shape: ClassVar[str] = "a mapping with an 'outputs' list"

    description: str | None = None
    workflow: str = "zimage-turbo"
    defaults: Params | None = None
    tables: dict[Annotated[str, AfterValidator(_table_name)], Table] | None = None
    outputs: list[OutputSpec] = Field(min_length=1)

    @field_validator("outputs")
    @classmethod
    def _distinct_names(cls, outputs: list[OutputSpec]) -> list[OutputSpec]:
        first: dict[str, int] = {}
        for i, out in enumerate(outputs):
            if out.name in first:
                raise ValueError(
                    f"outputs[{first[out.name]}] and outputs[{i}] are both named '{out.name}'"
                )
            first[out.name] = i
        return outputs


def parse_recipe(text: str, label: str) -> RecipeFile:
    """``text`` checked; a :class:`~comfyfn.errors.ConfigError` names ``label`` and fields."""
    data = load_yaml(text, label)  # refuses aliases: see comfyfn._yaml
    return validate_settings(data, label, RecipeFile, context={"placeholders": _offered(data)})


def _offered(data: Any) -> frozenset[str]:
    """The placeholders the file's templates may use: the built-ins and the table names
    (read before validation, so each output is checked against them in the same pass)."""
    tables = data.get("tables") if isinstance(data, dict) else None
    names = [n for n in tables if isinstance(n, str)] if isinstance(tables, dict) else []
    return frozenset((*BUILTIN_PLACEHOLDERS, *names))
