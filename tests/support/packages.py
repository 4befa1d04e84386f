"""The packages of comfyfn whose ``__all__`` is public API (the CLI's is its commands)."""

from __future__ import annotations

import pkgutil

import comfyfn

PACKAGES = [
    "comfyfn",
    *(
        f"comfyfn.{m.name}"
        for m in pkgutil.iter_modules(comfyfn.__path__)
        if m.ispkg and m.name != "cli"
    ),
]
