"""Rate limits, signed URLs, webhook rules, cost limits, request texts and what job errors
show API callers (pure)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest

from comfyfn.gateway.errors import public_error, public_message
from comfyfn.gateway.requests import text_problem
from comfyfn.gateway.security import (
    RateLimiter,
    sign_url,
    sign_webhook,
    verify_url,
    webhook_target_error,
)
from comfyfn.gateway.settings import GatewaySettings
from comfyfn.jobs import parse_rate
from tests.support.fake_clock import FakeClock


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
    clock = FakeClock()
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
    # (addresses as data for the guard; the resolver stub below connects to none of them)
    [
        ("http://127.0.0.1:8000/hook", False),
        ("http://localhost/hook", False),
        ("http://10.1.2.3/hook", False),
        ("http://192.168.0.5/hook", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://100.100.100.200/latest/meta-data", False),  # in 100.64.0.0/10
        ("http://100.64.0.1/hook", False),
        ("http://[::ffff:127.0.0.1]/hook", False),
        ("http://[::ffff:a9fe:a9fe]/hook", False),
        ("http://[::1]/hook", False),
        ("ftp://example.com/hook", False),
        ("http://!bad|host:x/", False),
        ("http://93.184.215.14/hook", True),
    ],
)
def test_webhook_targets(url, allowed):
    """Addresses as data only: the resolver stub answers literals (and localhost) itself and
    fails the test on any name that would need a DNS query; nothing is connected to."""

    def literal_only(host: str, port: int) -> list[str]:
        if host == "localhost":
            return ["127.0.0.1", "::1"]
        ipaddress.ip_address(host.strip("[]"))  # a name: ValueError, refused as unresolvable
        return [host.strip("[]")]

    error = webhook_target_error(url, allow_private=False, resolve=literal_only)
    assert (error is None) is allowed, error


def test_private_webhooks_can_be_allowed():
    assert webhook_target_error("http://127.0.0.1:9/hook", allow_private=True) is None


# -- what a job's error shows an API caller -------------------------------------------------------


def test_server_urls_are_removed_from_messages():
    text = public_message("cannot reach http://127.0.0.1:8188/prompt: connection refused")
    assert text == "cannot reach <server>: connection refused"
    text = public_message("POST 10.0.0.7:8188 timed out; gpu-1.internal:8188 and [::1]:8188 too")
    assert "10.0.0.7" not in text and "gpu-1.internal" not in text and "::1" not in text
    assert "8188" not in text


def test_server_model_lists_are_removed():
    comfy = (
        "Prompt outputs failed validation: UNETLoader: Value not in list: unet_name: "
        "'x.safetensors' not in ['a.safetensors', 'b.safetensors']"
    )
    text = public_message(comfy)
    assert "a.safetensors" not in text and "b.safetensors" not in text
    assert "'x.safetensors' not in [" in text  # what was asked for stays
    ours = (
        "the workflow is invalid for http://127.0.0.1:8188\n  - node 28 UNETLoader: unet_name "
        "'x.safetensors' is not on the server; put it in models/diffusion_models/ "
        "(the server has: 'a.safetensors', 'b.safetensors')"
    )
    text = public_message(ours)
    assert "a.safetensors" not in text and "127.0.0.1" not in text
    assert "put it in models/diffusion_models/" in text
    text = public_message("sampler 'x' is not one of the server's choices [a, b]")
    assert text == "sampler 'x' is not one of the server's choices […]"


def test_tracebacks_and_paths_are_removed():
    text = public_message(
        "node 9 SaveImage failed: OSError: [Errno 28] No space left on device: "
        "'/srv/comfy/output/x.png'\nTraceback (most recent call last):\n"
        '  File "/srv/comfy/execution.py", line 3, in run\nOSError: boom'
    )
    assert text == "node 9 SaveImage failed: OSError: [Errno 28] No space left on device: '<path>'"


def test_public_error_keeps_only_what_a_caller_may_see():
    stored = {
        "type": "ExecutionFailed",
        "message": "node 57:3 KSampler failed: RuntimeError: bad at http://127.0.0.1:8188",
        "node_id": "57:3",
        "class_type": "KSampler",
        "exception_type": "RuntimeError",
        "traceback": ['  File "/x/y.py"'],
        "server": "http://127.0.0.1:8188",
        "prompt_id": "abc",
    }
    assert public_error(stored) == {
        "type": "ExecutionFailed",
        "message": "node 57:3 KSampler failed: RuntimeError: bad at <server>",
        "node_id": "57:3",
        "class_type": "KSampler",
        "exception_type": "RuntimeError",
    }
    assert public_error(None) is None
    assert public_error({"type": "<script>", "message": ""}) == {
        "type": "error",
        "message": "no details",
    }


# -- texts that cannot be stored, cost limits ----------------------------------------------


def test_text_problem_finds_lone_surrogates_and_nul_anywhere():
    assert text_problem({"prompt": "旗袍 ok", "n": [1, "x"]}, "params") is None
    assert text_problem({"prompt": "a\ud800"}, "params") == "params.prompt"
    assert text_problem({"x": ["ok", {"y": "\udfff"}]}, "") == "x.1.y"
    assert text_problem({"\ud800": 1}, "params") == "params.\ud800"
    assert text_problem("http://h/\x00", "webhook") == "webhook"
    assert text_problem(None, "Idempotency-Key") is None


def limits(**kwargs) -> GatewaySettings:
    return GatewaySettings(servers=(), db_url="sqlite://", storage=".", **kwargs)


@pytest.mark.parametrize(
    ("values", "param"),
    [
        ({"width": 1024, "height": 1024, "batch_size": 4, "steps": 100}, None),
        ({"width": 2048, "height": 2048, "batch_size": 1, "steps": 8}, None),
        ({"width": 2064, "height": 2048, "batch_size": 1, "steps": 8}, "width"),
        ({"width": 16384, "height": 16384, "batch_size": 4096, "steps": 10000}, "width"),
        ({"width": 64, "height": 64, "batch_size": 5, "steps": 8}, "batch_size"),
        ({"width": 64, "height": 64, "batch_size": 1, "steps": 101}, "steps"),
        ({"steps": 8}, None),  # a workflow without a size is not limited on it
    ],
)
def test_default_cost_limits(values, param):
    found = limits().cost_error(values)
    assert (found and found[0]) == param


def test_total_pixels_per_request():
    settings = limits(max_total_pixels=1024 * 1024 * 2)
    assert settings.cost_error({"width": 1024, "height": 1024, "batch_size": 2}) is None
    refused = settings.cost_error({"width": 1024, "height": 1024, "batch_size": 3})
    assert refused is not None
    param, message = refused
    assert param == "batch_size" and "per request" in message


def test_image_inputs_are_upload_references_never_paths():
    """Bound from request text, an image value would be read as a path on the gateway host:
    a job's image parameter is only ever a reference to an upload of the caller's key."""
    import pydantic

    from comfyfn.gateway.registry import Registry
    from comfyfn.gateway.requests import UploadRef
    from comfyfn.workflow import builtin

    served = Registry().add("zimage-edit", builtin("zimage-edit"))
    assert served.model.model_fields["image"].annotation is UploadRef
    with pytest.raises(pydantic.ValidationError) as info:
        served.params({"prompt": "p", "image": "/etc/passwd"})
    assert info.value.errors()[0]["loc"] == ("image",)


def test_a_job_without_a_seed_gets_a_random_one_recorded_in_its_parameters():
    from comfyfn.gateway.registry import Registry
    from comfyfn.workflow import zimage_turbo

    served = Registry().add("zimage-turbo", zimage_turbo())
    drawn = [served.params({"prompt": "p"})["seed"] for _ in range(3)]
    assert all(isinstance(seed, int) for seed in drawn) and len(set(drawn)) == 3
    assert served.params({"prompt": "p", "seed": None})["seed"] not in drawn
    assert served.params({"prompt": "p", "seed": 7})["seed"] == 7
