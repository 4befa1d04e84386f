"""Webhook targets and delivery: only public addresses, resolved once, connected to as checked.

Traffic goes only to loopback listeners. Public addresses (93.184.216.34, example.com's old
address) appear only as data: a resolver stub answers them and a recording transport stands
in for the network, so nothing is ever sent to them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from comfyfn.errors import ComfyError
from comfyfn.gateway.security import address_error, check_webhook, webhook_target_error
from comfyfn.gateway.webhooks import (
    WebhookFailed,
    WebhookRefused,
    deliver_webhook,
    webhook_payload,
)
from tests.support.job_records import job_record

PUBLIC = "93.184.216.34"
SECRET = b"s" * 32
BODY = b'{"id": "job_1", "state": "succeeded"}'


class Resolver:
    """Answers each call with the next list of addresses (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


class Recorder(httpx.AsyncBaseTransport):
    """Stands in for the network: records each request's target, answers ``statuses``."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses) or [200]
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.statuses[min(len(self.requests), len(self.statuses)) - 1])


class Listener:
    """A loopback HTTP(S) server recording every request; answers ``statuses`` in turn."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *statuses: int, tls=None) -> None:
        self.statuses = list(statuses) or [200]
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.seen.append((self.path, dict(self.headers), body))
                index = min(len(owner.seen), len(owner.statuses)) - 1
                self.send_response(owner.statuses[index])
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    made: list[Listener] = []

    def make(*statuses: int, host: str = "127.0.0.1", port: int = 0, tls=None) -> Listener:
        made.append(Listener(host, port, *statuses, tls=tls))
        return made[-1]

    yield make
    for one in made:
        one.close()


def signed(headers, body: bytes) -> bool:
    headers = {k.lower(): v for k, v in headers.items()}
    stamp = headers["x-comfyfn-timestamp"].encode()
    mac = hmac.new(SECRET, stamp + b"." + body, hashlib.sha256).hexdigest()
    return headers["x-comfyfn-signature"] == f"sha256={mac}"


# -- which addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.5",
        "100.64.0.1",  # shared address space (carrier-grade NAT)
        "100.100.100.200",  # a cloud metadata address inside 100.64.0.0/10
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",  # multicast (ipaddress calls it global)
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",  # IPv4-mapped IPv6
        "::ffff:169.254.169.254",
        "::ffff:100.100.100.200",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "::127.0.0.1",  # IPv4-compatible
        "2001:db8::1",
        "not-an-ip",
        # refused whatever the running Python's ipaddress says (its verdicts on these
        # changed between patch releases: 3.11.7 calls all of them global)
        "192.0.0.8",
        "192.0.0.9",  # PCP anycast: "global" to ipaddress since 3.11.10 / 3.12.4
        "192.0.0.10",  # TURN anycast: likewise
        "192.0.0.255",
        "::ffff:192.0.0.9",  # IPv4-mapped: judged as the IPv4 address
        "64:ff9b:1::7f00:1",  # local-use NAT64 of 127.0.0.1 (a /96 prefix)
        "64:ff9b:1::a9fe:a9fe",  # ... of 169.254.169.254
        "64:ff9b:1:a00:1:808:808:808",  # 10.0.0.1 read with a /48 prefix
        "64:ff9b:1::808:808",  # 8.8.8.8 with a /96 prefix, but 0.0.0.0 with a /48 one
    ],
)
def test_addresses_that_are_not_public_are_refused(address):
    assert address_error(address) is not None


@pytest.mark.parametrize(
    "address",
    [
        PUBLIC,
        "8.8.8.8",
        "2606:2800:220:1:248:1893:25c8:1946",
        "::ffff:93.184.216.34",
        "64:ff9b::808:808",
        "64:ff9b:1:808:8:808:808:808",  # 8.8.8.8 whatever the local NAT64 prefix's length
    ],
)
def test_public_addresses_are_allowed(address):
    assert address_error(address) is None


def test_api_time_check_uses_the_same_rules_and_the_injected_resolver():
    ok = Resolver([PUBLIC])
    assert webhook_target_error("https://hook.test/x", allow_private=False, resolve=ok) is None
    assert ok.calls == [("hook.test", 443)]
    shared = Resolver([PUBLIC, "100.64.0.1"])  # every address must be public
    problem = webhook_target_error("http://hook.test:8080/", allow_private=False, resolve=shared)
    assert problem is not None and "100.64.0.1" in problem and shared.calls == [("hook.test", 8080)]
    mapped = Resolver(["::ffff:127.0.0.1"])
    assert webhook_target_error("http://hook.test/", allow_private=False, resolve=mapped)

    def unresolvable(host, port):
        raise socket.gaierror("no such host")

    problem = webhook_target_error("http://no.test/", allow_private=False, resolve=unresolvable)
    assert "does not resolve" in (problem or "")
    assert "http(s)" in (
        webhook_target_error("ftp://hook.test/", allow_private=False, resolve=ok) or ""
    )
    assert webhook_target_error("http://\ud800/", allow_private=False, resolve=ok) is not None


def test_special_ranges_are_refused_at_the_api_and_at_delivery_from_literals():
    """192.0.0.0/24 and IPv6 standing for a non-public IPv4 (mapped, local-use NAT64), as a
    resolver (a stub: nothing is resolved or connected to) or the URL itself gives them."""
    for address in ("192.0.0.9", "::ffff:192.0.0.10", "64:ff9b:1::7f00:1"):
        resolver = Resolver([PUBLIC, address])
        problem = webhook_target_error("https://hook.test/", allow_private=False, resolve=resolver)
        assert problem is not None and address in problem
        with pytest.raises(WebhookRefused):
            check_webhook("https://hook.test/", allow_private=False, resolve=Resolver([address]))
        literal = f"http://[{address}]/" if ":" in address else f"http://{address}/"
        assert webhook_target_error(literal, allow_private=False) is not None


def test_a_literal_address_is_checked_too():
    assert webhook_target_error("http://100.100.100.200/latest", allow_private=False) is not None
    assert webhook_target_error("http://[::ffff:a9fe:a9fe]/", allow_private=False) is not None
    assert webhook_target_error(f"http://{PUBLIC}/hook", allow_private=False) is None


# -- delivery: pinned to the checked address ----------------------------------------------------


@pytest.mark.anyio
async def test_rebinding_host_is_reached_only_at_the_address_that_was_checked(listener):
    """The resolver answers a public address first and the loopback second: the one request
    goes to the public address (a recording transport, not the network), never to the
    loopback listener, and the host is not resolved again."""
    loopback = listener()
    rebinding = Resolver([PUBLIC], ["127.0.0.1"])
    network = Recorder(200)
    url = f"http://rebind.test:{loopback.port}/hook?x=1"
    done = await deliver_webhook(
        url, BODY, SECRET, allow_private=False, resolve=rebinding, transport=network
    )
    assert done.address == PUBLIC and done.attempts == 1
    assert rebinding.calls == [("rebind.test", loopback.port)]
    [request] = network.requests
    assert (request.url.host, request.url.port) == (PUBLIC, loopback.port)
    assert request.url.raw_path == b"/hook?x=1"
    assert request.headers["host"] == f"rebind.test:{loopback.port}"
    assert signed(request.headers, request.content)
    assert loopback.seen == []


@pytest.mark.anyio
async def test_retries_stay_on_the_checked_address(listener):
    """Every retry goes to the address checked first, though the host now says 127.0.0.1."""
    rebinding = Resolver([PUBLIC], ["127.0.0.1"])
    network = Recorder(503, 502, 200)
    done = await deliver_webhook(
        "https://rebind.test/hook",
        BODY,
        SECRET,
        allow_private=False,
        resolve=rebinding,
        transport=network,
        wait_initial=0.01,
    )
    assert done.attempts == 3 and len(rebinding.calls) == 1
    assert {(r.url.scheme, r.url.host, r.url.port) for r in network.requests} == {
        ("https", PUBLIC, None)  # None: the default port, 443
    }
    assert {r.headers["host"] for r in network.requests} == {"rebind.test"}
    assert {r.extensions["sni_hostname"] for r in network.requests} == {"rebind.test"}


@pytest.mark.anyio
async def test_a_host_resolving_to_a_private_address_gets_nothing(listener):
    loopback = listener()
    network = Recorder(200)
    for answer in (["127.0.0.1"], [PUBLIC, "100.100.100.200"], ["::ffff:127.0.0.1"]):
        with pytest.raises(WebhookRefused) as refused:
            await deliver_webhook(
                f"http://evil.test:{loopback.port}/",
                BODY,
                SECRET,
                allow_private=False,
                resolve=Resolver(answer),
                transport=network,
            )
        assert isinstance(refused.value, ComfyError) and "not public" in str(refused.value)
    assert network.requests == [] and loopback.seen == []


@pytest.mark.anyio
async def test_real_delivery_connects_to_the_resolved_address_with_the_original_host(listener):
    """Real sockets: the host resolves to 127.0.0.1 first and 127.0.0.2 after; the signed POST
    (first answered 503, so retried) all lands on 127.0.0.1, with the original Host."""
    first = listener(503, 200)
    second = listener(host="127.0.0.2", port=first.port)
    resolver = Resolver(["127.0.0.1"], ["127.0.0.2"])
    done = await deliver_webhook(
        f"http://hook.test:{first.port}/in?job=1",
        BODY,
        SECRET,
        allow_private=True,
        resolve=resolver,
        wait_initial=0.01,
    )
    assert (done.status_code, done.attempts, done.address) == (200, 2, "127.0.0.1")
    assert len(resolver.calls) == 1 and second.seen == []
    assert [path for path, _, _ in first.seen] == ["/in?job=1", "/in?job=1"]
    _, headers, body = first.seen[-1]
    assert headers["Host"] == f"hook.test:{first.port}" and body == BODY
    assert signed(headers, body)


@pytest.mark.anyio
async def test_final_answers_and_exhausted_retries_raise_webhook_failed(listener):
    gone = listener(404)
    with pytest.raises(WebhookFailed) as failed:
        await deliver_webhook(
            f"http://hook.test:{gone.port}/",
            BODY,
            SECRET,
            allow_private=True,
            resolve=Resolver(["127.0.0.1"]),
        )
    assert (failed.value.status_code, failed.value.attempts, len(gone.seen)) == (404, 1, 1)
    down = listener(500)
    with pytest.raises(WebhookFailed) as failed:
        await deliver_webhook(
            f"http://hook.test:{down.port}/",
            BODY,
            SECRET,
            allow_private=True,
            resolve=Resolver(["127.0.0.1"]),
            attempts=3,
            wait_initial=0.01,
        )
    assert (failed.value.status_code, failed.value.attempts, len(down.seen)) == (500, 3, 3)
    moved = listener(302)  # a redirect is not followed: it could point anywhere
    with pytest.raises(WebhookFailed):
        await deliver_webhook(
            f"http://hook.test:{moved.port}/",
            BODY,
            SECRET,
            allow_private=True,
            resolve=Resolver(["127.0.0.1"]),
        )
    assert len(moved.seen) == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for hook.test (openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS webhook test needs the openssl command (apt-get install openssl)")
    root = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=hook.test",
            "-addext", "subjectAltName=DNS:hook.test",
            "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return root / "cert.pem", root / "key.pem"


@pytest.mark.anyio
async def test_https_checks_the_certificate_against_the_original_host(listener, certificate):
    """Connected to 127.0.0.1, TLS still sends SNI hook.test and verifies the certificate
    for hook.test; the same address under another name fails verification."""
    cert, key = certificate
    names: list[str | None] = []
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server_tls.sni_callback = lambda _sock, name, _ctx: names.append(name)
    secure = listener(200, tls=server_tls)
    trust = ssl.create_default_context(cafile=str(cert))
    done = await deliver_webhook(
        f"https://hook.test:{secure.port}/tls",
        BODY,
        SECRET,
        allow_private=True,
        resolve=Resolver(["127.0.0.1"]),
        verify=trust,
    )
    assert done.status_code == 200 and names == ["hook.test"]
    assert secure.seen[0][1]["Host"] == f"hook.test:{secure.port}"
    with pytest.raises(WebhookFailed):
        await deliver_webhook(
            f"https://other.test:{secure.port}/tls",
            BODY,
            SECRET,
            allow_private=True,
            resolve=Resolver(["127.0.0.1"]),
            verify=trust,
            attempts=1,
        )
    assert len(secure.seen) == 1


def test_check_webhook_pins_every_checked_address():
    target = check_webhook(
        "http://Hook.Test/a", allow_private=False, resolve=Resolver([PUBLIC, PUBLIC, "8.8.8.8"])
    )
    assert target.addresses == (PUBLIC, "8.8.8.8") and target.host == "hook.test"
    assert target.url_for("2606:2800:220:1::1") == "http://[2606:2800:220:1::1]:80/a"
    with_user = check_webhook(
        "https://u:p%40ss@hook.test/", allow_private=False, resolve=Resolver([PUBLIC])
    )
    assert with_user.url_for(PUBLIC) == f"https://u:p%40ss@{PUBLIC}:443/"


def test_webhook_payload_shows_only_the_public_error():
    job = job_record(
        key_id="k",
        state="failed",
        server="http://x:8188",
        prompt_id="p",
        webhook="http://h/",
        error={
            "type": "ServerUnreachable",
            "message": "http://127.0.0.1:8188 refused",
            "traceback": ["File x"],
        },
    )
    payload = json.loads(webhook_payload(job))
    assert payload["error"] == {"type": "ServerUnreachable", "message": "<server> refused"}
    assert "8188" not in json.dumps(payload)
