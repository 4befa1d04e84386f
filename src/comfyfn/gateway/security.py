"""Gateway security primitives: rate limits, signed URLs, webhook signing and webhook targets.

Webhook targets: a webhook URL is resolved once and every address it resolves to must be
globally routable (:func:`address_error`); the delivery then connects to exactly those
addresses (:mod:`comfyfn.gateway.webhooks`), so a host that answers differently the second
time (DNS rebinding) cannot steer it to 127.0.0.1 or a cloud metadata address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx

from comfyfn.errors import ComfyError
from comfyfn.jobs import parse_rate

__all__ = [
    "RateLimiter",
    "Resolver",
    "WebhookRefused",
    "WebhookTarget",
    "address_error",
    "check_webhook",
    "parse_webhook",
    "resolve_host",
    "sign_url",
    "sign_webhook",
    "verify_url",
    "webhook_target_error",
]


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets per key: ``rate`` requests per window, refilled continuously.

    Held in each gateway process (several replicas each allow the full rate).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.buckets: dict[str, _Bucket] = {}

    def check(self, key: str, rate: str) -> float:
        """0 if the request may go ahead (and is counted), else seconds until it may."""
        count, window = parse_rate(rate)
        now = self.clock()
        bucket = self.buckets.setdefault(key, _Bucket(float(count), now))
        bucket.tokens = min(count, bucket.tokens + (now - bucket.stamp) * count / window)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) * window / count


def _mac(secret: bytes, message: str) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def sign_url(secret: bytes, file_id: str, ttl: int, now: float | None = None) -> str:
    """Query string for a time-limited file URL: ``exp=…&sig=…``."""
    expires = int((now or time.time()) + ttl)
    return f"exp={expires}&sig={_mac(secret, f'{file_id}:{expires}')}"


def verify_url(secret: bytes, file_id: str, exp: str, sig: str, now: float | None = None) -> bool:
    try:
        expires = int(exp)
    except ValueError:
        return False
    if expires < (now or time.time()):
        return False
    return hmac.compare_digest(_mac(secret, f"{file_id}:{expires}"), sig)


def sign_webhook(secret: bytes, body: bytes, timestamp: int) -> str:
    """``X-Comfyfn-Signature`` value: ``sha256=`` HMAC of ``"<timestamp>.<body>"``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


#: ``resolve(host, port)`` → the host's IP addresses as text (``socket.getaddrinfo`` by default)
Resolver = Callable[[str, int], Iterable[str]]


class WebhookRefused(ComfyError):
    """A webhook URL the gateway will not call; ``reason`` says why, ``url`` is the URL."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(reason)
        self.url, self.reason = url, reason


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook URL taken apart, with the checked addresses its host resolved to."""

    url: str
    scheme: str
    host: str  #: ASCII (IDNA) host name or address literal, as sent in Host and SNI
    port: int
    target: str  #: path and query
    addresses: tuple[str, ...] = ()
    userinfo: str = ""  #: ``user:password`` of the URL, kept (sent as basic auth)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def url_for(self, address: str) -> str:
        """The URL with the host replaced by ``address`` (what is actually connected to)."""
        host = f"[{address}]" if ":" in address else address
        user = f"{self.userinfo}@" if self.userinfo else ""
        return f"{self.scheme}://{user}{host}:{self.port}{self.target}"


def resolve_host(host: str, port: int) -> list[str]:
    """The host's addresses (literals are returned as they are), without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: a translator of one network
_COMPAT = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible IPv6
#: IPv4 ranges refused whatever ``ipaddress`` says: its verdict on them changed between
#: patch releases (3.11.10 and 3.12.4 call 192.0.0.9 and 192.0.0.10 global)
_NEVER_V4 = (ipaddress.ip_network("192.0.0.0/24"),)  # IETF protocol assignments


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address may stand for (mapped, 6to4, NAT64, compatible);
    none if it is a plain IPv6 address. A local-use NAT64 prefix (64:ff9b:1::/48) may be
    any length RFC 6052 allows, which places the IPv4 address differently: every reading."""
    if ip.ipv4_mapped is not None:  # ::ffff:0:0/96
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip in _NAT64_LOCAL:
        packed = ip.packed
        without_u = packed[:8] + packed[9:]  # bits 64-71 (the "u" octet) never hold address
        readings = [without_u[n // 8 : n // 8 + 4] for n in (48, 56, 64)]
        return [ipaddress.IPv4Address(b) for b in [*readings, packed[12:]]]
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in n for n in _NEVER_V4):
        return False
    return ip.is_global and not ip.is_multicast


def address_error(address: str) -> str | None:
    """Why a webhook may not connect to ``address`` (None if it is globally routable).

    Refused: everything :attr:`ipaddress.IPv4Address.is_global` says is not global (loopback,
    private, shared 100.64.0.0/10, link-local, documentation, reserved...), 192.0.0.0/24
    whatever it says, and multicast. An IPv6 address that stands for an IPv4 address
    (``::ffff:127.0.0.1``, 6to4, NAT64, local-use NAT64) is judged as that IPv4 address
    (every reading of it), whatever ``ipaddress`` says of the IPv6 address itself.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    judged: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        judged = [*_embedded_ipv4(ip)] or judged
    if not all(_public(candidate) for candidate in judged):
        return f"{address} is not a public address"
    return None


def parse_webhook(url: str) -> WebhookTarget:
    """The URL taken apart (no addresses yet); :class:`WebhookRefused` if it is unusable."""
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, ValueError, UnicodeError, TypeError) as exc:
        raise WebhookRefused(url, f"the webhook is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise WebhookRefused(url, "the webhook must be an http(s) URL with a host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    target = parsed.raw_path.decode("ascii") or "/"
    userinfo = parsed.userinfo.decode("ascii")
    return WebhookTarget(url, parsed.scheme, host, port, target, userinfo=userinfo)


def check_webhook(
    url: str, *, allow_private: bool, resolve: Resolver = resolve_host
) -> WebhookTarget:
    """Resolve the webhook's host once and check every address (each must be public unless
    ``allow_private``); the target to connect to. :class:`WebhookRefused` otherwise."""
    target = parse_webhook(url)
    try:
        addresses = tuple(dict.fromkeys(str(a) for a in resolve(target.host, target.port)))
    except (OSError, UnicodeError, ValueError):
        raise WebhookRefused(url, f"the webhook host {target.host!r} does not resolve") from None
    if not addresses:
        raise WebhookRefused(url, f"the webhook host {target.host!r} does not resolve")
    for address in addresses:
        if not _is_ip(address):
            raise WebhookRefused(url, f"the resolver answered {address!r}, not an IP address")
        problem = None if allow_private else address_error(address)
        if problem is not None:
            raise WebhookRefused(url, f"the webhook host {target.host!r} is not public: {problem}")
    return WebhookTarget(**{**target.__dict__, "addresses": addresses})


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return True


def webhook_target_error(
    url: str, *, allow_private: bool, resolve: Resolver = resolve_host
) -> str | None:
    """Why a webhook URL is refused when a job is posted (None if allowed): the same rules
    as at delivery (:func:`check_webhook`). With ``allow_private`` only the URL's form is
    checked (the host is resolved, and pinned, when the webhook is delivered)."""
    try:
        if allow_private:
            parse_webhook(url)
        else:
            check_webhook(url, allow_private=False, resolve=resolve)
    except WebhookRefused as exc:
        return exc.reason
    return None
