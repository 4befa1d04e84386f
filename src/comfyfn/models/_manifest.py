"""Model manifests: which files to download, into which ``models/`` folder, from where.

A manifest is a YAML or JSON file: a list of entries, or a mapping with ``models`` (that
list) and optionally ``description``, ``total_size`` and ``headers`` (for every entry)::

    - name: z_image_turbo_bf16.safetensors      # file name (a sub/path is allowed)
      folder: diffusion_models                   # models/ folder it goes in
      url: https://huggingface.co/…/z_image_turbo_bf16.safetensors
      sha256: null                               # 64 hex digits, or null: not published
      size: null                                 # bytes, or null: not published
      headers:                                   # optional, for private hubs
        Authorization: "Bearer ${HF_TOKEN}"      # ${NAME}: read from the environment

Header values name environment variables (``${NAME}``) instead of holding secrets; a
variable that is not set when the file is downloaded is an error naming it, and so is a
value that is not one line of printable ASCII (a CR/LF could forge further headers). The
headers go to the origin (scheme, host, port) of the entry's ``url`` only: a redirect to
another host (a CDN) gets none of them. Built-in
manifests (:data:`BUILTIN_MANIFESTS`) hold the official Z-Image files as the ComfyUI
templates publish them (see ``data/*.json``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from comfyfn.errors import ConfigError

__all__ = ["BUILTIN_MANIFESTS", "ModelFile", "ModelManifest", "load_manifest"]

#: built-in manifest name → its data file (next to this module, in ``data/``)
BUILTIN_MANIFESTS: Mapping[str, str] = MappingProxyType(
    {
        "zimage-turbo": "zimage-turbo.json",
        "zimage": "zimage.json",
        "zimage-turbo-int8": "zimage-turbo-int8.json",
        "zimage-int8": "zimage-int8.json",
    }
)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NOT_IN_A_HEADER = re.compile(r"[^\t\x20-\x7e]")  # a header value is one line of printable ASCII


def header_value_problem(text: str) -> str | None:
    """Why ``text`` cannot be sent as an HTTP header value; None if it can."""
    bad = _NOT_IN_A_HEADER.search(text)
    if bad is None:
        return None
    what = "a line break (CR/LF)" if bad[0] in "\r\n" else f"the character {bad[0]!a}"
    return f"holds {what}; a header value must be one line of printable ASCII"


@dataclass(frozen=True)
class ModelFile:
    """One file of a manifest. ``sha256``/``size`` are None where they are not published."""

    name: str
    folder: str
    url: str
    sha256: str | None = None
    size: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    source: str | None = None  #: where the entry comes from (e.g. a template and node)

    @property
    def relpath(self) -> str:
        """``folder/name``, as messages show it."""
        return f"{self.folder}/{self.name}"

    def path(self, models_dir: str | os.PathLike[str]) -> Path:
        """Where the file goes under ``models_dir`` (names were checked: no ``..``)."""
        return Path(models_dir, self.folder, *PurePosixPath(self.name).parts)

    def request_headers(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The headers with every ``${NAME}`` filled from the environment; a
        :class:`ConfigError` names a variable that is not set or a value that cannot be sent."""
        env = os.environ if environ is None else environ

        def value(match: re.Match[str]) -> str:
            name = match[1]
            if name not in env:
                raise ConfigError(
                    f"{self.relpath}: its headers need ${{{name}}}, which is not set "
                    "in the environment"
                )
            return env[name]

        filled = {key: _VARIABLE.sub(value, text) for key, text in self.headers.items()}
        for key, text in filled.items():
            if problem := header_value_problem(text):
                names = ", ".join(f"${{{m[1]}}}" for m in _VARIABLE.finditer(self.headers[key]))
                source = f" (filled from {names})" if names else ""
                raise ConfigError(f"{self.relpath}: header {key}{source}: its value {problem}")
        return filled


@dataclass(frozen=True)
class ModelManifest:
    name: str
    files: tuple[ModelFile, ...]
    description: str = ""
    total_size: int | None = None  #: the published total of all files, if any (informative)

    def find(self, folder: str, name: str) -> ModelFile | None:
        return next((f for f in self.files if (f.folder, f.name) == (folder, name)), None)


def load_manifest(source: str | os.PathLike[str]) -> ModelManifest:
    """A built-in manifest by name (``"zimage-turbo"``...) or a YAML/JSON file; every
    problem is a :class:`ConfigError` naming the file and the field
    (``my.yaml: models[1].sha256: must be 64 hexadecimal digits, not 'abc'``)."""
    text = str(source)
    if text in BUILTIN_MANIFESTS:
        data = resources.files("comfyfn.models").joinpath("data", BUILTIN_MANIFESTS[text])
        return parse_manifest(data.read_text(encoding="utf-8"), text, name=text)
    path = Path(source)
    if not path.is_file():
        known = ", ".join(BUILTIN_MANIFESTS)
        raise ConfigError(f"{text}: neither a manifest file nor a built-in manifest ({known})")
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc})") from None
    return parse_manifest(content, path.name, name=path.stem)


def parse_manifest(text: str, label: str, *, name: str) -> ModelManifest:
    """A manifest from YAML or JSON ``text`` (JSON is YAML); ``label`` names it in errors."""
    from comfyfn._yaml import load_yaml, validate_settings
    from comfyfn.models._schema import ManifestSpec

    data = load_yaml(text, label)
    if isinstance(data, list):
        data = {"models": data}
    spec = validate_settings(data, label, ManifestSpec)
    files = tuple(
        ModelFile(
            e.name,
            e.folder,
            e.url,
            e.sha256,
            e.size,
            MappingProxyType({**spec.headers, **e.headers}),
            e.source,
        )
        for e in spec.models
    )
    return ModelManifest(name, files, spec.description, spec.total_size)


def manifest_json(manifest: ModelManifest) -> str:
    """The manifest as the JSON a file holds (what the built-in data files are)."""
    data = {
        "description": manifest.description,
        "total_size": manifest.total_size,
        "models": [
            {
                "name": f.name,
                "folder": f.folder,
                "url": f.url,
                "sha256": f.sha256,
                "size": f.size,
                **({"headers": dict(f.headers)} if f.headers else {}),
                **({"source": f.source} if f.source else {}),
            }
            for f in manifest.files
        ],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
