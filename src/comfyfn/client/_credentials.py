"""Credentials for a ComfyUI behind a reverse proxy, and keeping them out of sight (pure).

A protected server wants one or more of: ``Authorization: Bearer <token>``, Basic auth,
extra headers (``X-API-Key: …``), query parameters (``?token=…``). They come from
:class:`Credentials` or from the server URL itself (``https://user:password@host`` is Basic
auth; every ``?name=value`` of the URL goes on every request and the websocket URL), and
are sent on every HTTP request and the websocket upgrade. What comfyfn shows — errors, logs,
``server`` attributes, image provenance, reprs — is the URL without user, password or query
(:func:`public_url`), and :meth:`Credentials.redact` blanks any secret in text that came from
elsewhere (exception messages, a proxy's error page, websocket debug lines).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit, urlunsplit

from comfyfn.errors import ConfigError

__all__ = ["Credentials", "public_url", "split_url"]

_HIDDEN = "***"
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  #: an HTTP header name (RFC 9110 token)


@dataclass(frozen=True, repr=False)
class Credentials:
    """How to get past the reverse proxy in front of a ComfyUI server.

    Everything set here goes on every HTTP request and on the websocket upgrade; nothing
    of it is ever shown (``repr`` names only what kinds are set).

    Args:
        bearer: sent as ``Authorization: Bearer <bearer>``.
        basic: ``(user, password)`` for Basic auth.
        headers: extra headers, e.g. ``{"X-API-Key": "…"}``.
        query: extra query parameters on every URL, e.g. ``{"token": "…"}``.

    Bearer and Basic both use the ``Authorization`` header: give at most one of them, and
    no ``Authorization`` in ``headers`` beside either.
    """

    bearer: str | None = None
    basic: tuple[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", dict(self.headers))
        object.__setattr__(self, "query", dict(self.query))
        if self.bearer is not None and self.basic is not None:
            raise ConfigError("credentials: give bearer or basic, not both (one Authorization)")
        if self._has_authorization_header and (self.bearer is not None or self.basic is not None):
            raise ConfigError(
                "credentials: an Authorization header beside bearer/basic (one Authorization)"
            )
        for name, value in self.headers.items():
            if not _TOKEN.match(name):
                raise ConfigError(f"credentials: {name!r} is not a valid header name")
            if "\r" in value or "\n" in value:
                raise ConfigError(f"credentials: the value of header {name!r} has a line break")
        if self.basic is not None and ":" in self.basic[0]:
            raise ConfigError("credentials: a Basic auth user name cannot contain ':'")

    @property
    def _has_authorization_header(self) -> bool:
        return any(name.lower() == "authorization" for name in self.headers)

    def __bool__(self) -> bool:
        return bool(self.bearer or self.basic or self.headers or self.query)

    def __repr__(self) -> str:
        kinds = [kind for kind in ("bearer", "basic") if getattr(self, kind) is not None]
        kinds += [f"headers={sorted(self.headers)}"] if self.headers else []
        kinds += [f"query={sorted(self.query)}"] if self.query else []
        return f"Credentials({', '.join(kinds)})"

    def merged(self, over: Credentials | None) -> Credentials:
        """These credentials with ``over``'s taking precedence: an Authorization of ``over``
        (bearer, basic or the header) replaces this one; headers and query parameters are
        merged name by name."""
        if over is None:
            return self
        bearer, basic = self.bearer, self.basic
        if over.bearer is not None or over.basic is not None or over._has_authorization_header:
            bearer, basic = over.bearer, over.basic
        return replace(
            self,
            bearer=bearer,
            basic=basic,
            headers={**self.headers, **over.headers},
            query={**self.query, **over.query},
        )

    def http_headers(self) -> dict[str, str]:
        """The headers to add to every request (Authorization first)."""
        headers = {}
        if self.bearer is not None:
            headers["Authorization"] = f"Bearer {self.bearer}"
        elif self.basic is not None:
            headers["Authorization"] = f"Basic {_basic_blob(*self.basic)}"
        return {**headers, **self.headers}

    def secrets(self) -> tuple[str, ...]:
        """Every string that must never be shown, longest first (also as URLs encode them)."""
        plain = [self.bearer or "", *self.headers.values(), *self.query.values()]
        if self.basic is not None:
            user, password = self.basic
            plain += [password, f"{user}:{password}", _basic_blob(user, password)]
        forms = (str, quote, lambda s: quote(s, safe=""), quote_plus)
        found = {form(s) for s in plain if s for form in forms}
        return tuple(sorted(found, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self.secrets():
            text = text.replace(secret, _HIDDEN)
        return text


def _basic_blob(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def split_url(url: str) -> tuple[str, Credentials]:
    """A server URL as its public part and the credentials it carries.

    ``https://user:pass@host:8188/comfy/?token=T`` → ``("https://host:8188/comfy",
    Credentials(basic=("user", "pass"), query={"token": "T"}))``; user and password are
    percent-decoded.
    """
    parts = urlsplit(url)
    basic = None
    if parts.username is not None or parts.password is not None:
        basic = (unquote(parts.username or ""), unquote(parts.password or ""))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return public_url(url), Credentials(basic=basic, query=query)


def public_url(url: str) -> str:
    """The URL as comfyfn shows it: no user, password, query or fragment, no trailing ``/``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
