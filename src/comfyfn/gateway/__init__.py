"""``comfyfn serve``: an authenticated image-generation service in front of ComfyUI servers.

OpenAI-compatible ``/v1/images/generations`` and ``/v1/models``, async ``/v1/jobs`` (with
server-sent events, cancel, idempotency keys and signed webhooks), one typed endpoint per
workflow, signed file URLs, ``/healthz``, ``/readyz`` and Prometheus ``/metrics``. Job state
lives in SQLAlchemy (SQLite embedded, PostgreSQL for several replicas).
"""

from comfyfn._public import present as _present
from comfyfn.gateway.app import create_app
from comfyfn.gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]

_present(__name__, globals(), __all__)
