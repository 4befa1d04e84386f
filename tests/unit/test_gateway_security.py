"""Rate limits, signed URLs and webhook rules of the gateway (pure)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from comfyfn.gateway.security import (
    RateLimiter,
    parse_rate,
    sign_url,
    sign_webhook,
    verify_url,
    webhook_target_error,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "expected"),
    [("60/min", (60, 60.0)), ("5/s", (5, 1.0)), ("1000 / hour", (1000, 3600.0))],
)
def test_parse_rate(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["60", "0/min", "x/min", "5/week"])
def test_bad_rates(text):
    with pytest.raises(ValueError, match="is not like"):
        parse_rate(text)


def test_token_bucket_allows_the_rate_then_says_how_long_to_wait():
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.check("k", "3/min") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.check("k", "3/min")
    assert wait == pytest.approx(20.0)
    assert limiter.check("other", "3/min") == 0.0  # keys are independent
    clock.now += 20.0
    assert limiter.check("k", "3/min") == 0.0


def test_signed_urls_expire_and_cannot_be_forged():
    secret = b"s" * 32
    query = dict(p.split("=") for p in sign_url(secret, "file_1", 60, now=100).split("&"))
    assert verify_url(secret, "file_1", query["exp"], query["sig"], now=150)
    assert not verify_url(secret, "file_1", query["exp"], query["sig"], now=161)  # expired
    assert not verify_url(secret, "file_2", query["exp"], query["sig"], now=150)  # other file
    assert not verify_url(b"x" * 32, "file_1", query["exp"], query["sig"], now=150)
    assert not verify_url(secret, "file_1", "soon", query["sig"], now=150)


def test_webhook_signature_is_hmac_of_timestamp_and_body():
    body = b'{"id": "job_1"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign_webhook(b"k", body, 1700000000) == f"sha256={expected}"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8000/hook", False),
        ("http://localhost/hook", False),
        ("http://10.1.2.3/hook", False),
        ("http://192.168.0.5/hook", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://[::1]/hook", False),
        ("ftp://example.com/hook", False),
        ("http://!bad|host:x/", False),
        ("http://93.184.215.14/hook", True),
    ],
)
def test_webhook_targets(url, allowed):
    assert (webhook_target_error(url, allow_private=False) is None) is allowed


def test_private_webhooks_can_be_allowed():
    assert webhook_target_error("http://127.0.0.1:9/hook", allow_private=True) is None
