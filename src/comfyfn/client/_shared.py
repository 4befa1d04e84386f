"""Node definitions shared by every client of the process.

``GET /object_info`` answers some 730 KB of JSON (6 MB parsed). Servers that answer the same
bytes share one parsed copy, keyed by a hash of the body, so a pool of identical servers
parses and keeps it once (and a full garbage collection walks it once). This cache and the
TLS context (:func:`comfyfn.client._http.tls_context`) are the client package's only
process-wide state; both are read-only once made: nobody may change a parsed copy. The last
:data:`KEPT` different bodies are kept.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from comfyfn.client._http import HttpSession, retried

__all__ = ["KEPT", "fetch_definitions"]

KEPT = 8  #: different definitions kept (servers of other versions or with other files)
_definitions: OrderedDict[bytes, dict[str, Any]] = OrderedDict()


async def fetch_definitions(session: HttpSession) -> dict[str, Any]:
    """The server's node definitions, parsed once per distinct answer in this process.

    Retried like :meth:`HttpSession.get_json`; an answer that is not a JSON object is a
    ProtocolError naming the route.
    """
    path = "/object_info"

    async def get() -> tuple[bytes, Any]:
        """The answer's key, and the definitions parsed already for it (else its JSON)."""
        response = await session.send("GET", path)
        key = hashlib.blake2b(response.content, digest_size=16).digest()
        known = _definitions.get(key)
        return key, known if known is not None else session.decode_json("GET", path, response)

    key, data = await retried(session.retries, f"GET {path}", get)
    if key in _definitions:
        _definitions.move_to_end(key)
        shared: dict[str, Any] = data
        return shared
    parsed: dict[str, Any] = session.check_type("GET", path, data, dict)
    _definitions[key] = parsed
    while len(_definitions) > KEPT:
        _definitions.popitem(last=False)
    return parsed
