"""Gateway security primitives (pure): rate limits, signed URLs, webhook signing and targets."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "RateLimiter",
    "parse_rate",
    "sign_url",
    "sign_webhook",
    "verify_url",
    "webhook_target_error",
]

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str) -> tuple[int, float]:
    """``"60/min"`` → (60 requests, per 60 seconds)."""
    match = _RATE.match(text)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"rate {text!r} is not like 60/min, 10/s or 1000/hour")
    return int(match.group(1)), float(_PER[match.group(2)])


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets per key: ``rate`` requests per window, refilled continuously.

    Held in each gateway process (several replicas each allow the full rate).
    """

    def __init__(self, clock=time.monotonic) -> None:
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


def webhook_target_error(url: str, *, allow_private: bool) -> str | None:
    """Why a webhook URL is refused (None if allowed): http(s) only; no loopback, private,
    link-local or reserved addresses unless ``allow_private``."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return f"the webhook is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not host:
        return "the webhook must be an http(s) URL with a host"
    if allow_private:
        return None
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return f"the webhook host {host!r} does not resolve"
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if (
            ip.is_loopback
            or ip.is_private
            or ip.is_link_local
            or ip.is_reserved
            or (ip.is_multicast or ip.is_unspecified)
        ):
            return f"the webhook host {parts.hostname!r} is a private or loopback address"
    return None
