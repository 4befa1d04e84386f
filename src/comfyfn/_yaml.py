"""The one YAML loader for files a user hands us (batch job files and recipes).

``yaml.safe_load`` only limits which Python types are built; it still expands aliases. A
"billion laughs" file of a few hundred bytes (``b: [*a, *a, …]``, ``c: [*b, *b, …]``…) is
then a tiny object graph that turns into billions of items as soon as anything walks it
(printing, ``json.dumps``, hashing a row, writing the manifest).

This loader refuses aliases outright, at the first ``*name`` it meets, rather than counting
expansions: job files and recipes are short hand-written settings with no use for them,
refusing costs nothing and needs no threshold, and a count would still let a file just under
the threshold blow up later (the cost is in the consumer, not the parser). Anchors alone
(``&name``) are harmless and allowed. Merge keys (``<<: *defaults``) are aliases too, so they
are refused with the same message. It is the pure-Python ``SafeLoader`` on purpose: the
libyaml ``CSafeLoader`` composes in C, where the alias hook below would not run.
"""

from __future__ import annotations

from typing import Any

import yaml

from comfyfn.errors import ConfigError

__all__ = ["NoAliasLoader", "load_yaml"]


class _AliasRefused(yaml.composer.ComposerError):
    pass


class NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that stops at the first alias instead of expanding it."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(
                None,
                None,
                f"aliases (*{event.anchor}) are not allowed; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def load_yaml(text: str, label: str) -> Any:
    """Parse ``text``; any problem is a :class:`ConfigError` naming ``label`` and the line."""
    loader = NoAliasLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, _AliasRefused):
            raise ConfigError(f"{label}: {where}YAML {problem}") from None
        raise ConfigError(f"{label}: {where}not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"{label}: not valid YAML (nested too deeply)") from None
    finally:
        loader.dispose()
