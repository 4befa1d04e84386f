"""A small HTTP proxy in front of a real ComfyUI that can lose POST /prompt traffic.

The real server cannot show a lost answer to POST /prompt, so this proxy forwards real
requests and, on demand, drops the request before it reaches the server or drops the answer
after the server accepted the job. Websocket upgrades are refused (clients poll instead).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import httpx


@dataclass
class FaultProxy:
    upstream: str
    drop_requests: int = 0  #: lose this many POST /prompt requests before forwarding them
    drop_answers: int = 0  #: forward this many, then lose the server's answer
    seen_prompt_posts: int = 0
    forwarded_prompt_posts: int = 0
    port: int = 0
    _server: asyncio.Server | None = field(default=None, repr=False)
    _client: httpx.AsyncClient | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=30)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()
        await self._client.aclose()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            lowered = {k.lower(): v for k, v in headers.items()}
            if lowered.get("upgrade", "").lower() == "websocket":
                return
            body = await reader.readexactly(int(lowered.get("content-length", 0)))
            is_prompt = method == "POST" and target.split("?")[0] == "/prompt"
            if is_prompt:
                self.seen_prompt_posts += 1
                if self.drop_requests > 0:
                    self.drop_requests -= 1
                    return
            keep = {k: v for k, v in headers.items() if k.lower() in ("content-type",)}
            response = await self._client.request(method, target, content=body, headers=keep)
            if is_prompt:
                self.forwarded_prompt_posts += 1
                if self.drop_answers > 0:
                    self.drop_answers -= 1
                    return
            payload = response.content
            writer.write(
                f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n"
                f"Content-Type: {response.headers.get('content-type', 'application/octet-stream')}"
                f"\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
