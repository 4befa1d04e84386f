"""Recipes: editable YAML files that turn a list of topics into image jobs (pure).

A recipe names a built-in workflow, default workflow parameters and a list of *outputs*
(one image, or ``count`` images, per topic each). An output has a prompt template, the exact
pixel size to *deliver* and the size to *generate* at (multiples of 16 with the same aspect
ratio, see :func:`nearest_generate_size`); :mod:`comfyfn.delivery` turns the generated
image into the delivered one. The file's fields and their checks are in
:mod:`comfyfn.recipes._schema`; a bad file is a :class:`ConfigError` with one line per problem,
naming the file and the field.

Built-in recipes (``social``, ``ecommerce``, ``design``) are the ``*.yaml`` files next to
this module; copy one and edit it. A recipe is found by name in, in this order, the
``extra_dirs`` given, the directories in ``$COMFYFN_RECIPES`` (``os.pathsep``-separated,
read at call time) and the built-ins; or loaded from any path. The recipe's name is its
file's stem.

Prompt templates use ``{topic}`` (the whole topic line), ``{category}`` and ``{product}``
(a topic ``服装: 白色T恤`` is split on its first ``:`` or ``：``; without one the category is
empty and the product is the whole topic) and one placeholder per table in ``tables``
(looked up by category, case-insensitively, falling back to the table's ``default``; a
category the table lacks warns, naming the ones it has). A table key may list aliases,
``鞋类, shoes, footwear``. Write ``{{`` and ``}}`` for literal braces.

Seeds are a stable hash of (base seed, topic, output, k), unless an output fixes them
(``seed_base: 1000`` → 1000, 1001, … for its ``count`` images; or a ``seeds`` list).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from comfyfn._public import present as _present
from comfyfn.errors import ConfigError
from comfyfn.recipes._plan import TopicPlan, plan_topics, read_topics
from comfyfn.workflow import ComfyWarning

__all__ = [
    "ENV_VAR",
    "Fit",
    "Output",
    "Recipe",
    "TopicPlan",
    "builtin_names",
    "list_recipes",
    "load_recipe",
    "nearest_generate_size",
    "plan_topics",
    "read_topics",
    "recipe_text",
    "slug",
]

ENV_VAR = "COMFYFN_RECIPES"
#: how a generated image becomes the delivered size (see :mod:`comfyfn.delivery`)
Fit = Literal["cover", "contain"]
_SLUG_BYTES = 200  # a topic's folder name, in UTF-8 bytes (file names allow 255)
_SUFFIXES = (".yaml", ".yml")


# -- sizes ------------------------------------------------------------------------------------


def nearest_generate_size(
    width: int,
    height: int,
    multiple: int = 16,
    max_pixels: int | None = None,
    *,
    tolerance: float = 0.005,
) -> tuple[int, int]:
    """The size to generate at for a ``width`` × ``height`` delivery.

    Rule: both sides are multiples of ``multiple`` and at least the delivery size rounded
    *up* to the multiple, so a cover-crop only ever shrinks (or keeps) the image. Among
    those (up to 32 multiples larger on each side), the smallest area whose aspect ratio is
    within ``tolerance`` (relative, default 0.5%) of ``width / height`` wins; if none is, the
    closest aspect ratio wins. Examples: 1080×1080 → 1088×1088, 1200×675 → 1248×704,
    1080×1920 → 1088×1936, 1242×1660 → 1248×1664, 1920×1080 → 1936×1088, 800×600 → 832×624.

    With ``max_pixels``, candidates above that area are dropped; if that leaves none, the
    delivery size is scaled down to ``max_pixels`` and the same rule picks the *largest*
    fitting size instead (the delivery step then upsamples).
    """
    for label, v in (("width", width), ("height", height), ("multiple", multiple)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{label} must be a positive integer, not {v!r}")
    aspect = width / height

    def error(size: tuple[int, int]) -> float:
        return abs(size[0] / size[1] - aspect) / aspect

    def grid(lo_w: int, lo_h: int) -> list[tuple[int, int]]:
        span = range(33)
        sizes = [(lo_w + i * multiple, lo_h + j * multiple) for i in span for j in span]
        return [s for s in sizes if s[0] > 0 and s[1] > 0]

    def fits(s: tuple[int, int]) -> bool:
        return max_pixels is None or s[0] * s[1] <= max_pixels

    up = [s for s in grid(_ceil(width, multiple), _ceil(height, multiple)) if fits(s)]
    if up:
        close = [s for s in up if error(s) <= tolerance]
        if close:
            return min(close, key=lambda s: (s[0] * s[1], error(s)))
        return min(up, key=lambda s: (error(s), s[0] * s[1]))
    assert max_pixels is not None
    scale = math.sqrt(max_pixels / (width * height))
    top_w = max(multiple, int(width * scale) // multiple * multiple)
    top_h = max(multiple, int(height * scale) // multiple * multiple)
    down = [s for s in grid(top_w - 16 * multiple, top_h - 16 * multiple) if fits(s)]
    if not down:
        raise ConfigError(f"max_pixels={max_pixels} is too small for multiples of {multiple}")
    close = [s for s in down if error(s) <= tolerance]
    if close:
        return max(close, key=lambda s: (s[0] * s[1], -error(s)))
    return min(down, key=lambda s: (error(s), -s[0] * s[1]))


def _ceil(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# -- names and seeds --------------------------------------------------------------------------


def slug(text: str, max_len: int = 60) -> str:
    """A file-name-safe form of ``text``: letters (CJK included), digits, ``_``, ``.`` and
    ``-`` are kept; runs of anything else (spaces, ``/``, ``\\``, ``:``, control characters,
    lone surrogates...) become one ``-``. Leading/trailing ``-`` and ``.`` are dropped, so
    the result is never ``.``, ``..`` or empty. Over ``max_len`` characters (or 200 UTF-8
    bytes) the text is cut and a short hash of the whole text is appended so distinct long
    topics stay distinct. The result always passes
    :func:`comfyfn.batch.rows.output_name_problem`."""
    s = re.sub(r"[^\w.-]+", "-", text, flags=re.UNICODE).strip("-.")
    s = re.sub(r"-{2,}", "-", s)
    if len(s) > max_len or len(s.encode("utf-8")) > _SLUG_BYTES:
        blob = text.encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(blob, digest_size=4).hexdigest()
        cut = s[:max_len]
        while len(cut.encode("utf-8")) > _SLUG_BYTES - 9:
            cut = cut[:-1]
        s = cut.rstrip("-.") + "-" + digest
    return s or "topic"


def _seed(base: int, topic: str, output: str, k: int) -> int:
    key = "\x1f".join((str(base), topic, output, str(k))).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 11


def _split_topic(topic: str) -> tuple[str, str]:
    m = re.search(r"[:：]", topic)
    if m:
        category, product = topic[: m.start()].strip(), topic[m.end() :].strip()
        if category and product:
            return category, product
    return "", topic


# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """One kind of image a recipe makes per topic."""

    name: str
    prompt_template: str
    deliver: tuple[int, int]
    generate: tuple[int, int]
    negative: str | None = None
    count: int = 1
    fit: Fit = "cover"
    background: tuple[int, int, int] = (255, 255, 255)
    extra: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None  #: fixed seeds, one per image (else stable hashes)


@dataclass(frozen=True)
class Recipe:
    """A named list of outputs plus the workflow and default parameters they run with."""

    name: str
    description: str = ""
    workflow: str = "zimage-turbo"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    outputs: tuple[Output, ...] = ()
    tables: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    source: str = field(default="", compare=False)

    @property
    def images_per_topic(self) -> int:
        """How many rows :meth:`rows` yields for each topic."""
        return sum(o.count for o in self.outputs)

    def rows(self, topics: Iterable[str], *, seed: int = 0) -> Iterator[dict[str, Any]]:
        """One job dict per image, streamed topic by topic (``topics`` is never listed).

        Blank topics and topics starting with ``#`` are skipped. Each row holds the
        workflow parameters (``prompt``, ``negative`` if set, ``width``/``height`` = the
        generate size, ``seed``, the recipe defaults, the output's params) and, under
        ``_``-keys, ``_name`` (``<topic slug>/<output>[_<k>]``, k from 1 when count > 1),
        ``_deliver`` (``width``, ``height``, ``fit`` and, for contain, ``background``),
        ``_recipe``, ``_topic`` and ``_output`` (the output's name). Seeds are the
        output's fixed ones, else a stable hash of (seed, topic, output, k), below 2**53,
        so the same inputs always give the same seeds.
        """
        warned: set[tuple[str, str]] = set()
        for line in topics:
            topic = line.strip()
            if not topic or topic.startswith("#"):
                continue
            category, product = _split_topic(topic)
            values: dict[str, str] = {"topic": topic, "category": category, "product": product}
            for table, entries in self.tables.items():
                values[table] = self._look_up(table, entries, category, warned)
            base = slug(topic)
            for out in self.outputs:
                for k in range(1, out.count + 1):
                    yield self._row(out, values, base, k, seed)

    def _look_up(
        self,
        table: str,
        entries: Mapping[str, str],
        category: str,
        warned: set[tuple[str, str]],
    ) -> str:
        """The table's entry for ``category`` (any case); else its default, warning once per
        category that the table does not know it."""
        if not category:
            return entries["default"]
        folded = category.casefold()
        match = next((v for k, v in entries.items() if k.casefold() == folded), None)
        if match is not None:
            return match
        if (table, folded) not in warned:
            warned.add((table, folded))
            known = ", ".join(k for k in entries if k != "default")
            warnings.warn(
                f"recipe {self.name}: category {category!r} is not in its {table!r} table, "
                f"so its default is used; known: {known}",
                ComfyWarning,
                stacklevel=3,
            )
        return entries["default"]

    def _row(
        self, out: Output, values: dict[str, str], base: str, k: int, seed: int
    ) -> dict[str, Any]:
        topic = values["topic"]
        row: dict[str, Any] = {"prompt": out.prompt_template.format_map(values)}
        if out.negative:
            row["negative"] = out.negative.format_map(values)
        row["width"], row["height"] = out.generate
        row["seed"] = out.seeds[k - 1] if out.seeds else _seed(seed, topic, out.name, k)
        row.update(self.defaults)
        row.update(out.extra)
        deliver: dict[str, Any] = {"width": out.deliver[0], "height": out.deliver[1]}
        deliver["fit"] = out.fit
        if out.fit == "contain":
            deliver["background"] = out.background
        suffix = f"_{k}" if out.count > 1 else ""
        row.update(
            _name=f"{base}/{out.name}{suffix}",
            _deliver=deliver,
            _recipe=self.name,
            _topic=topic,
            _output=out.name,
        )
        return row


# -- loading ----------------------------------------------------------------------------------


def builtin_names() -> list[str]:
    """Names of the recipes shipped with comfyfn."""
    root = resources.files(__name__)
    return sorted(p.name.rsplit(".", 1)[0] for p in root.iterdir() if p.name.endswith(_SUFFIXES))


def _user_dirs(extra_dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    env = [d for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d.strip()]
    return [Path(d).expanduser() for d in (*extra_dirs, *env)]


def load_recipe(
    name_or_path: str | os.PathLike[str], *, extra_dirs: Iterable[str | os.PathLike[str]] = ()
) -> Recipe:
    """A recipe by name (``extra_dirs``, then ``$COMFYFN_RECIPES``, then built-ins) or path.

    Anything with a path separator or a ``.yaml``/``.yml`` suffix, or naming an existing
    file, is read as a path. Raises :class:`ConfigError` for unknown names and bad files.
    """
    path, name = _locate(name_or_path, extra_dirs)
    if path is None:
        return _builtin(name)
    return _load_file(path)


def recipe_text(
    name_or_path: str | os.PathLike[str], *, extra_dirs: Iterable[str | os.PathLike[str]] = ()
) -> str:
    """The YAML text of the recipe :func:`load_recipe` would load: to copy and edit."""
    path, name = _locate(name_or_path, extra_dirs)
    if path is None:
        return resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return _read(path)


def _locate(
    name_or_path: str | os.PathLike[str], extra_dirs: Iterable[str | os.PathLike[str]]
) -> tuple[Path | None, str]:
    """Where a recipe is: ``(path, name)``, or ``(None, name)`` for a built-in one."""
    text = os.fspath(name_or_path)
    as_path = Path(text).expanduser()
    if isinstance(name_or_path, os.PathLike) or as_path.suffix in _SUFFIXES or as_path.is_file():
        return as_path, as_path.stem
    if os.sep in text or (os.altsep and os.altsep in text):
        return as_path, as_path.stem
    for d in _user_dirs(extra_dirs):
        for suffix in _SUFFIXES:
            if (d / f"{text}{suffix}").is_file():
                return d / f"{text}{suffix}", text
    if text in builtin_names():
        return None, text
    known = sorted({r.name for r in list_recipes(extra_dirs)})
    raise ConfigError(f"unknown recipe {text!r}; choose from {', '.join(known)} or give a path")


def list_recipes(extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> list[Recipe]:
    """Every recipe that :func:`load_recipe` can find by name, sorted by name (a user
    recipe hides a built-in one of the same name)."""
    found: dict[str, Recipe] = {}
    for d in _user_dirs(extra_dirs):
        if not d.is_dir():
            continue
        for path in sorted(d.iterdir()):
            if path.suffix in _SUFFIXES and path.is_file() and path.stem not in found:
                found[path.stem] = _load_file(path)
    for name in builtin_names():
        if name not in found:
            found[name] = _builtin(name)
    return [found[n] for n in sorted(found)]


def _builtin(name: str) -> Recipe:
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return _parse(text, f"{name}.yaml", name, "builtin")


def _load_file(path: Path) -> Recipe:
    return _parse(_read(path), str(path), path.stem, str(path))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read recipe: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


def _parse(text: str, label: str, name: str, source: str) -> Recipe:
    from comfyfn.recipes._schema import parse_recipe  # pydantic: only when a recipe is read

    spec = parse_recipe(text, label)
    outputs = tuple(
        Output(
            name=out.name,
            prompt_template=out.prompt,
            deliver=out.deliver,
            generate=out.generate or nearest_generate_size(*out.deliver),
            negative=out.negative,
            count=out.count,
            fit=out.fit,
            background=out.background,
            extra=MappingProxyType(dict(out.params or {})),
            seeds=out.fixed_seeds(),
        )
        for out in spec.outputs
    )
    tables = {t: MappingProxyType(dict(entries)) for t, entries in (spec.tables or {}).items()}
    return Recipe(
        name=name,
        description=(spec.description or "").strip(),
        workflow=spec.workflow,
        defaults=MappingProxyType(dict(spec.defaults or {})),
        outputs=outputs,
        tables=MappingProxyType(tables),
        source=source,
    )


_present(__name__, globals(), __all__)
