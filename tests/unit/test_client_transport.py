"""The client's HTTP/1.1 transport against a scripted loopback server: keep-alive, every way
a body can be framed, TLS, and each way an exchange can fail, as the errors above it need
them (nothing sent: unreachable; sent but unanswered: a lost answer)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import shutil
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from comfyfn.client._aiohttp import AiohttpTransport
from comfyfn.client._http import HttpSession
from comfyfn.errors import ServerUnreachable, TransportError

pytestmark = pytest.mark.anyio

Answer = Callable[[int], tuple[bytes, str]]  #: request number → (bytes to send, then what)
QUEUE: dict[str, list] = {"queue_running": [], "queue_pending": []}


def reply(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def json_reply(value: object = QUEUE) -> bytes:
    return reply(json.dumps(value).encode())


@dataclass
class Scripted:
    """A loopback HTTP server answering request n with ``answer(n)``: the bytes, then
    ``"keep"`` (the connection stays open), ``"close"`` or ``"hang"`` (never answers)."""

    answer: Answer
    requests: list[tuple[int, bytes, bytes]] = field(default_factory=list)  #: (conn, head, body)
    connections: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, tls: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length:")),
                    0,
                )  # fmt: skip
                self.requests.append((number, head, await reader.readexactly(length)))
                data, then = self.answer(len(self.requests))
                writer.write(data)
                await writer.drain()
                if then == "hang":
                    await asyncio.Event().wait()
                if then == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            self.handlers.discard(task)
            self.closed.set()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()


@pytest.fixture
async def scripted():
    made: list[Scripted] = []

    async def make(answer: Answer, tls: ssl.SSLContext | None = None) -> tuple[Scripted, str]:
        server = Scripted(answer)
        made.append(server)
        return server, await server.start(tls)

    yield make
    for server in made:
        await server.stop()


def session(url: str, *, retries: int = 0, timeout: float = 5.0, **kw) -> HttpSession:
    return HttpSession(url, httpx.Timeout(timeout), retries=retries, **kw)


async def test_the_session_speaks_through_the_lean_transport_unless_a_proxy_applies(
    monkeypatch,
):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    direct = session("http://127.0.0.1:9")
    assert isinstance(direct.client._transport, AiohttpTransport)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    proxied = session("http://gpu-1:8188")
    assert not isinstance(proxied.client._transport, AiohttpTransport)
    for s in (direct, proxied):
        await s.aclose()


async def test_requests_share_one_kept_alive_connection_and_arrive_whole(scripted):
    server, url = await scripted(lambda n: (json_reply({"n": n}), "keep"))
    s = session(url)
    answers = [await s.get_dict("/queue") for _ in range(3)]
    answers.append((await s.send("POST", "/prompt", json={"prompt": {"1": "é"}})).json())
    await s.send("GET", "/view", params={"filename": "a b.png", "type": "output"})
    await s.aclose()
    assert answers == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
    assert server.connections == 1
    heads = [head.split(b"\r\n")[0] for _, head, _ in server.requests]
    assert heads[0] == b"GET /queue HTTP/1.1" and heads[3] == b"POST /prompt HTTP/1.1"
    assert heads[4] == b"GET /view?filename=a+b.png&type=output HTTP/1.1"
    assert f"Host: {url.removeprefix('http://')}".encode() in server.requests[0][1]
    assert json.loads(server.requests[3][2]) == {"prompt": {"1": "é"}}


async def test_chunked_compressed_and_close_ended_bodies_are_read_whole(scripted):
    value = json.dumps({"x": list(range(2000))}).encode()
    packed = gzip.compress(value)
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (packed[:100], packed[100:]))
        + b"0\r\nX-Trailer: 1\r\n\r\n"
    )
    to_close = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + value
    answers = {1: (chunked, "keep"), 2: (to_close, "close"), 3: (json_reply(), "keep")}
    server, url = await scripted(lambda n: answers[n])
    s = session(url)
    assert (await s.get_dict("/a")) == (await s.get_dict("/b")) == json.loads(value)
    assert await s.get_dict("/c") == QUEUE
    await s.aclose()
    assert [conn for conn, _, _ in server.requests] == [1, 1, 2]  # a close-ended one is not reused


async def test_a_connection_the_server_closed_while_idle_is_not_used_again(scripted):
    server, url = await scripted(lambda n: (json_reply({"n": n}), "close"))
    s = session(url)
    assert await s.get_dict("/queue") == {"n": 1}
    await asyncio.wait_for(server.closed.wait(), 10)
    assert await s.get_dict("/queue") == {"n": 2}
    await s.aclose()
    assert server.connections == 2


async def test_a_cut_body_is_a_transport_error_and_retried_away(scripted):
    cut = reply(b'{"queue_running": []}')[:-5]
    server, url = await scripted(lambda n: (cut, "close") if n == 1 else (json_reply(), "keep"))
    s = session(url, retries=1)
    assert await s.get_dict("/queue") == QUEUE
    await s.aclose()
    bare = session(url)
    server.answer = lambda n: (cut, "close")
    with pytest.raises(TransportError, match=r"ReadError|RemoteProtocolError") as caught:
        await bare.get_dict("/queue")
    await bare.aclose()
    assert not isinstance(caught.value, ServerUnreachable)


async def test_a_request_sent_but_never_answered_is_not_called_unsent(scripted):
    """post_prompt looks a job up after a lost answer, and only a ConnectError means
    nothing was sent."""
    server, url = await scripted(lambda n: (b"", "close"))
    s = session(url)
    with pytest.raises(httpx.RemoteProtocolError):
        await s.client.post("/prompt", json={"prompt": {}})
    await s.aclose()
    assert len(server.requests) == 1


async def test_a_silent_server_is_a_read_timeout(scripted):
    _server, url = await scripted(lambda n: (b"HTTP/1.1 200 OK\r\n", "hang"))
    s = session(url, timeout=0.2)
    with pytest.raises(TransportError, match="ReadTimeout"):
        await s.send("GET", "/queue")
    await s.aclose()


async def test_nothing_listening_is_unreachable():
    with socket_on_loopback() as port:
        pass  # closed: nothing listens there now
    s = session(f"http://127.0.0.1:{port}")
    with pytest.raises(ServerUnreachable, match="cannot reach ComfyUI") as caught:
        await s.send("GET", "/queue")
    await s.aclose()
    assert "connection refused" in str(caught.value) and "ssl:default" not in str(caught.value)


async def test_an_answer_that_is_not_http_is_named(scripted):
    _server, url = await scripted(lambda n: (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "close"))
    s = session(url)
    with pytest.raises(TransportError, match=r"Bad status line"):
        await s.send("GET", "/queue")
    await s.aclose()


async def test_https_verifies_the_certificate(scripted, tmp_path):
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server, url = await scripted(lambda n: (json_reply({"n": n}), "keep"), tls=server_tls)
    trusted = session(url, transport=AiohttpTransport(ssl.create_default_context(cafile=cert)))
    assert [await trusted.get_dict("/queue") for _ in range(2)] == [{"n": 1}, {"n": 2}]
    await trusted.aclose()
    assert server.connections == 1
    stranger = session(url)  # the system's CAs do not know this certificate
    with pytest.raises(ServerUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        await stranger.get_dict("/queue")
    await stranger.aclose()


def _self_signed(root) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS test needs the openssl command (apt-get install openssl)")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return str(root / "cert.pem"), str(root / "key.pem")


class socket_on_loopback:
    """A loopback port that was free a moment ago (bound, then closed on exit)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


@pytest.mark.parametrize(
    ("base", "path", "url"),
    [
        ("http://127.0.0.1:8188", "/queue", "http://127.0.0.1:8188/queue"),
        ("https://gpu.example/comfy", "/history/a b", "https://gpu.example/comfy/history/a%20b"),
        ("http://[::1]:8188/a/", "/view", "http://[::1]:8188/a/view"),
    ],
)
async def test_a_route_is_joined_to_the_base_url_as_httpx_joins_it(base, path, url):
    s = session(base)
    assert s.url(path) == s.url(path) == httpx.URL(url)
    await s.aclose()
