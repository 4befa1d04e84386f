"""The web app: a page at ``/`` where people sign in with an API key and make, edit and
collect images, served by the gateway (``comfyfn serve``; off with ``--no-ui``).

Plain HTML, CSS and JavaScript modules shipped in this package (``static/``; no build step,
no third-party requests), served with a strict Content-Security-Policy. The page talks to
``/ui/api/…`` (:mod:`comfyfn.gateway.ui._api`), which runs every request through the same
functions as the ``/v1`` routes, authenticated by the session cookie that signing in sets
(:mod:`comfyfn.gateway.ui._session`): the API key in an HttpOnly, SameSite=Strict cookie
that page scripts cannot read, and unsafe methods need the app's own request header, which
no cross-site form or simple request can send.
"""

from __future__ import annotations

from fastapi import APIRouter

from comfyfn.gateway.ui import _api, _pages, _session

__all__ = ["router"]

#: everything the web app adds to the gateway: ``app.include_router(ui.router)``
router = APIRouter(include_in_schema=False)
router.include_router(_pages.router)
router.include_router(_session.router)
router.include_router(_api.router)
