"""Recipes: editable YAML files that turn a list of topics into image jobs (pure).

A recipe names a built-in workflow, default workflow parameters and a list of *outputs*
(one image, or ``count`` images, per topic each). An output has a prompt template, the exact
pixel size to *deliver* and the size to *generate* at (multiples of 16 with the same aspect
ratio, see :func:`nearest_generate_size`); :mod:`comfyfn.delivery` turns the generated image
into the delivered one.

Built-in recipes (``social``, ``ecommerce``, ``design``) are the ``*.yaml`` files next to
this module; copy one and edit it. A recipe is found by name in, in this order, the
``extra_dirs`` given, the directories in ``$COMFYFN_RECIPES`` (``os.pathsep``-separated,
read at call time) and the built-ins; or loaded from any path. The recipe's name is its
file's stem.

Prompt templates use ``{topic}`` (the whole topic line), ``{category}`` and ``{product}``
(a topic ``服装: 白色T恤`` is split on its first ``:`` or ``：``; without one the category is
empty and the product is the whole topic) and one placeholder per table in ``tables``
(looked up by category, falling back to the table's ``default``). Write ``{{`` and ``}}``
for literal braces.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from comfyfn._yaml import load_yaml
from comfyfn.errors import ConfigError

__all__ = [
    "ENV_VAR",
    "Output",
    "Recipe",
    "builtin_names",
    "list_recipes",
    "load_recipe",
    "nearest_generate_size",
    "slug",
]

ENV_VAR = "COMFYFN_RECIPES"
FITS = ("cover", "contain")
_RESERVED = ("prompt", "negative", "seed", "width", "height", "batch_size")
_TOP_FIELDS = ("description", "workflow", "defaults", "tables", "outputs")
_OUTPUT_FIELDS = (
    "name",
    "prompt",
    "negative",
    "deliver",
    "generate",
    "count",
    "fit",
    "background",
    "params",
)
_SIZE = re.compile(r"^\s*(\d+)\s*[xX×*]\s*(\d+)\s*$")
_OUTPUT_NAME = re.compile(r"\w[\w.-]{0,47}")  # fullmatch; ≤ 48 characters (≤ 192 bytes)
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
    fit: str = "cover"
    background: tuple[int, int, int] = (255, 255, 255)
    extra: Mapping[str, Any] = field(default_factory=dict)


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
        ``_recipe`` and ``_topic``. Seeds are a stable hash of (seed, topic, output, k),
        below 2**53, so the same inputs always give the same seeds.
        """
        for line in topics:
            topic = line.strip()
            if not topic or topic.startswith("#"):
                continue
            category, product = _split_topic(topic)
            values = {"topic": topic, "category": category, "product": product}
            folded = category.casefold()
            for table, entries in self.tables.items():
                match = next((v for k, v in entries.items() if k.casefold() == folded), None)
                values[table] = entries["default"] if match is None or not category else match
            base = slug(topic)
            for out in self.outputs:
                for k in range(1, out.count + 1):
                    yield self._row(out, values, base, k, seed)

    def _row(self, out: Output, values: dict, base: str, k: int, seed: int) -> dict[str, Any]:
        topic = values["topic"]
        row: dict[str, Any] = {"prompt": out.prompt_template.format_map(values)}
        if out.negative:
            row["negative"] = out.negative.format_map(values)
        row["width"], row["height"] = out.generate
        row["seed"] = _seed(seed, topic, out.name, k)
        row.update(self.defaults)
        row.update(out.extra)
        deliver: dict[str, Any] = {"width": out.deliver[0], "height": out.deliver[1]}
        deliver["fit"] = out.fit
        if out.fit == "contain":
            deliver["background"] = out.background
        suffix = f"_{k}" if out.count > 1 else ""
        row.update(
            _name=f"{base}/{out.name}{suffix}", _deliver=deliver, _recipe=self.name, _topic=topic
        )
        return row


# -- loading ----------------------------------------------------------------------------------


def builtin_names() -> list[str]:
    """Names of the recipes shipped with comfyfn."""
    root = resources.files(__name__)
    return sorted(p.name.rsplit(".", 1)[0] for p in root.iterdir() if p.name.endswith(_SUFFIXES))


def _user_dirs(extra_dirs: Iterable[str | os.PathLike]) -> list[Path]:
    env = [d for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d.strip()]
    return [Path(d).expanduser() for d in (*extra_dirs, *env)]


def load_recipe(
    name_or_path: str | os.PathLike, *, extra_dirs: Iterable[str | os.PathLike] = ()
) -> Recipe:
    """A recipe by name (``extra_dirs``, then ``$COMFYFN_RECIPES``, then built-ins) or path.

    Anything with a path separator or a ``.yaml``/``.yml`` suffix, or naming an existing
    file, is read as a path. Raises :class:`ConfigError` for unknown names and bad files.
    """
    text = os.fspath(name_or_path)
    as_path = Path(text).expanduser()
    if isinstance(name_or_path, os.PathLike) or as_path.suffix in _SUFFIXES or as_path.is_file():
        return _load_file(as_path)
    if os.sep in text or (os.altsep and os.altsep in text):
        return _load_file(as_path)
    for d in _user_dirs(extra_dirs):
        for suffix in _SUFFIXES:
            if (d / f"{text}{suffix}").is_file():
                return _load_file(d / f"{text}{suffix}")
    if text in builtin_names():
        return _builtin(text)
    known = sorted({r.name for r in list_recipes(extra_dirs)})
    raise ConfigError(f"unknown recipe {text!r}; choose from {', '.join(known)} or give a path")


def list_recipes(extra_dirs: Iterable[str | os.PathLike] = ()) -> list[Recipe]:
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
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read recipe: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return _parse(text, str(path), path.stem, str(path))


def _parse(text: str, label: str, name: str, source: str) -> Recipe:
    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"{label}: {where}: {message}" if where else f"{label}: {message}")

    data = load_yaml(text, label)  # refuses aliases: see comfyfn._yaml
    if not isinstance(data, dict):
        raise fail("", "must be a mapping with an 'outputs' list")
    _unknown(data, _TOP_FIELDS, "", fail)
    description = data.get("description") or ""
    workflow = data.get("workflow", "zimage-turbo")
    for key, value in (("description", description), ("workflow", workflow)):
        if not isinstance(value, str):
            raise fail(key, f"'{value}' is not text")
    defaults = _params(data.get("defaults"), "defaults", fail)
    tables = _tables(data.get("tables"), fail)
    outs = data.get("outputs")
    if not isinstance(outs, list) or not outs:
        raise fail("outputs", "must be a non-empty list")
    placeholders = {"topic", "category", "product", *tables}
    outputs = tuple(_output(o, f"outputs[{i}]", placeholders, fail) for i, o in enumerate(outs))
    names = [o.name for o in outputs]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise fail(f"outputs[{i}].name", f"'{n}' is used twice")
    return Recipe(name, description.strip(), workflow, defaults, outputs, tables, source)


def _unknown(data: Mapping, known: Sequence[str], where: str, fail) -> None:
    for key in data:
        if key not in known:
            raise fail(where, f"unknown field '{key}'; known: {', '.join(known)}")


def _params(value: Any, where: str, fail) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise fail(where, "must be a mapping of workflow parameters")
    for key in value:
        if not isinstance(key, str):
            raise fail(where, f"parameter name '{key}' is not text")
        if key in _RESERVED:
            hint = "use count" if key == "batch_size" else "the recipe sets it"
            raise fail(f"{where}.{key}", f"cannot be set here ({hint})")
    return MappingProxyType(dict(value))


def _tables(value: Any, fail) -> Mapping[str, Mapping[str, str]]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise fail("tables", "must map table names to {category: text} mappings")
    tables = {}
    for tname, entries in value.items():
        where = f"tables.{tname}"
        if not isinstance(tname, str) or not tname.isidentifier():
            raise fail(where, "table names must be identifiers (they are placeholders)")
        if tname in ("topic", "category", "product"):
            raise fail(where, f"'{tname}' is a built-in placeholder")
        if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
            raise fail(where, "must map categories to text")
        if "default" not in entries:
            raise fail(where, "needs a 'default' entry")
        tables[tname] = MappingProxyType({str(k): v for k, v in entries.items()})
    return MappingProxyType(tables)


def _output(data: Any, where: str, placeholders: set[str], fail) -> Output:
    if not isinstance(data, dict):
        raise fail(where, "must be a mapping with name, prompt and deliver")
    _unknown(data, _OUTPUT_FIELDS, where, fail)
    for key in ("name", "prompt", "deliver"):
        if key not in data:
            raise fail(where, f"missing field '{key}'")
    name = data["name"]
    if not isinstance(name, str) or not _OUTPUT_NAME.fullmatch(name):
        raise fail(f"{where}.name", f"'{name}' must be up to 48 letters, digits, '_', '.', '-'")
    prompt = _template(data["prompt"], f"{where}.prompt", placeholders, fail)
    negative = data.get("negative")
    if negative is not None:
        negative = _template(negative, f"{where}.negative", placeholders, fail) or None
    deliver = _size(data["deliver"], f"{where}.deliver", fail)
    if data.get("generate") is None:
        generate = nearest_generate_size(*deliver)
    else:
        generate = _size(data["generate"], f"{where}.generate", fail)
        if generate[0] % 16 or generate[1] % 16:
            raise fail(f"{where}.generate", f"'{data['generate']}' is not multiples of 16")
    count = data.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1000:
        raise fail(f"{where}.count", f"'{count}' is not a whole number from 1 to 1000")
    fit = data.get("fit", "cover")
    if fit not in FITS:
        raise fail(f"{where}.fit", f"'{fit}' is not one of {', '.join(FITS)}")
    background = _colour(data.get("background", "#ffffff"), f"{where}.background", fail)
    extra = _params(data.get("params"), f"{where}.params", fail)
    return Output(name, prompt, deliver, generate, negative, count, fit, background, extra)


def _template(value: Any, where: str, placeholders: set[str], fail) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(where, "must be non-empty text")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError as e:
        raise fail(where, f"bad template ({e}); write {{{{ and }}}} for literal braces") from None
    for f in fields:
        if f not in placeholders:
            known = ", ".join("{" + p + "}" for p in sorted(placeholders))
            raise fail(where, f"unknown placeholder {{{f}}}; known: {known}")
    return value.strip()


def _size(value: Any, where: str, fail) -> tuple[int, int]:
    m = _SIZE.match(value) if isinstance(value, str) else None
    if not m or int(m[1]) <= 0 or int(m[2]) <= 0 or max(int(m[1]), int(m[2])) > 16384:
        raise fail(where, f"'{value}' is not WIDTHxHEIGHT (e.g. 1080x1920)")
    return int(m[1]), int(m[2])


def _colour(value: Any, where: str, fail) -> tuple[int, int, int]:
    if isinstance(value, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(c, int) and 0 <= c <= 255 for c in value)
    ):
        return value[0], value[1], value[2]
    raise fail(where, f"'{value}' is not a colour ('#rrggbb' or [r, g, b])")
