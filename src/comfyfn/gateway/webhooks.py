"""Webhook delivery: resolve once, check every address, connect to the address checked.

:func:`deliver_webhook` resolves the webhook's host a single time, refuses it unless every
address is public (:func:`comfyfn.gateway.security.check_webhook`; any address with
``allow_private``) and then sends each attempt to one of *those* addresses: the request URL
names the IP, the ``Host`` header the original host and port, and for https the TLS server
name (SNI) and the certificate check use the original host (httpcore's ``sni_hostname``).
Nothing is resolved again, so a host that answers a public address first and 127.0.0.1 later
(DNS rebinding) cannot reach the loopback. Environment proxies are ignored on purpose (a proxy
would resolve the host itself), and redirects are not followed (a 3xx is a failed delivery).

Each attempt is signed afresh (``X-Comfyfn-Timestamp``, ``X-Comfyfn-Signature``, see
:func:`comfyfn.gateway.security.sign_webhook`). Connection errors, 408, 425, 429 and 5xx are
retried with jittered exponential backoff (tenacity); other answers are final.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from comfyfn.errors import ComfyError
from comfyfn.gateway.errors import public_error
from comfyfn.gateway.security import (
    Resolver,
    WebhookRefused,
    WebhookTarget,
    check_webhook,
    resolve_host,
    sign_webhook,
)

if TYPE_CHECKING:
    from comfyfn.jobs import JobRecord, Notify, WorkerMetrics

__all__ = [
    "Delivery",
    "WebhookFailed",
    "WebhookRefused",
    "deliver_webhook",
    "webhook_payload",
    "webhook_sender",
]

log = logging.getLogger("comfyfn.gateway.webhooks")

_RETRY_STATUS = frozenset({408, 425, 429})


class WebhookFailed(ComfyError):
    """Every attempt failed, or the receiver gave a final non-2xx answer.

    ``url``; ``attempts`` made; ``status_code`` of the last answer (None if none came).
    """

    def __init__(
        self, url: str, message: str, *, attempts: int, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.url, self.attempts, self.status_code = url, attempts, status_code


@dataclass(frozen=True)
class Delivery:
    """A delivered webhook: the receiver's status, the attempts it took, the address used."""

    status_code: int
    attempts: int
    address: str


class _Retryable(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def webhook_payload(job: JobRecord) -> bytes:
    """The JSON body sent for a finished job (its error as the API shows it)."""
    return json.dumps(
        {
            "id": job.id,
            "state": job.state,
            "workflow": job.workflow,
            "outputs": job.outputs,
            "error": public_error(job.error),
        }
    ).encode()


def webhook_sender(metrics: WorkerMetrics, *, allow_private: bool) -> Notify:
    """What a worker calls for a finished job with a webhook (:data:`comfyfn.jobs.Notify`):
    POST it there, signed, pinned to the checked address; a delivery that fails is logged and
    counted (``WebhookFailed``), never raised."""

    async def send(job: JobRecord, secret: bytes) -> None:
        assert job.webhook is not None
        try:
            await deliver_webhook(
                job.webhook, webhook_payload(job), secret, allow_private=allow_private
            )
        except ComfyError as exc:
            metrics.failed("WebhookFailed")
            log.warning("webhook for %s failed: %s", job.id, exc)

    return send


async def deliver_webhook(
    url: str,
    body: bytes,
    secret: bytes,
    *,
    allow_private: bool,
    resolve: Resolver = resolve_host,
    attempts: int = 5,
    timeout: float = 10.0,
    wait_initial: float = 0.2,
    wait_max: float = 5.0,
    verify: bool | ssl.SSLContext = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Delivery:
    """POST ``body`` to ``url``, signed with ``secret``; see the module docstring.

    Returns a :class:`Delivery` on a 2xx answer. Raises :class:`WebhookRefused` (nothing was
    sent: bad URL, unresolvable host, an address that is not public) or
    :class:`WebhookFailed` (attempts used up, or a final non-2xx answer). ``resolve`` is
    called once, in a thread; ``verify`` is httpx's (True, or an ``ssl.SSLContext``);
    ``transport`` replaces httpx's (tests record the requests with it).
    """
    target = await asyncio.to_thread(
        check_webhook, url, allow_private=allow_private, resolve=resolve
    )
    retrying = AsyncRetrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential_jitter(multiplier=wait_initial, max=wait_max, jitter=wait_initial),
        retry=retry_if_exception_type((httpx.TransportError, _Retryable)),
        reraise=True,
    )
    tried, status = 0, None
    async with httpx.AsyncClient(
        timeout=timeout, trust_env=False, follow_redirects=False, verify=verify, transport=transport
    ) as http:
        try:
            async for attempt in retrying:
                with attempt:
                    address = target.addresses[tried % len(target.addresses)]
                    tried += 1
                    status = await _post(http, target, address, body, secret)
        except (httpx.TransportError, _Retryable) as exc:
            status = getattr(exc, "status_code", None)
            raise WebhookFailed(
                url,
                f"webhook {url} failed after {tried} attempts: {str(exc) or type(exc).__name__}",
                attempts=tried,
                status_code=status,
            ) from None
    assert status is not None  # the loop ran at least once, and ended in an answer
    if not 200 <= status < 300:
        raise WebhookFailed(
            url, f"webhook {url} answered {status}", attempts=tried, status_code=status
        )
    return Delivery(status, tried, address)


async def _post(
    http: httpx.AsyncClient, target: WebhookTarget, address: str, body: bytes, secret: bytes
) -> int:
    """One signed attempt to ``address``; the status, or _Retryable for a retryable one."""
    stamp = int(time.time())
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    response = await http.post(
        target.url_for(address),
        content=body,
        headers={
            "Host": target.host_header,
            "Content-Type": "application/json",
            "X-Comfyfn-Timestamp": str(stamp),
            "X-Comfyfn-Signature": sign_webhook(secret, body, stamp),
        },
        extensions=extensions,
    )
    if response.status_code in _RETRY_STATUS or response.status_code >= 500:
        log.info("webhook %s answered %s; retrying", target.url, response.status_code)
        raise _Retryable(response.status_code)
    return response.status_code
