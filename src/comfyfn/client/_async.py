"""The asynchronous client: every ComfyUI route, and jobs as events or results.

:class:`AsyncClient` is the only place that does I/O; :class:`comfyfn.Client` drives it from
synchronous code. Server: argument > ``COMFYFN_SERVER`` > the local engine.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from comfyfn.client import _config
from comfyfn.client._http import DEFAULT_TIMEOUT, HttpSession
from comfyfn.client._job import JobSettings, cancel, queue_position, run_job
from comfyfn.client._socket import EventSocket
from comfyfn.errors import ComfyError, NoOutputs, WorkflowInvalid
from comfyfn.events import Event, Failed, Interrupted, Succeeded
from comfyfn.result import Generation
from comfyfn.workflow._builtin import BUILTIN, builtin
from comfyfn.workflow._graph import ApiGraph
from comfyfn.workflow._signature import signature_for
from comfyfn.workflow._workflow import Workflow

__all__ = ["AsyncClient"]

log = logging.getLogger("comfyfn")

WorkflowSource = str | Path | Mapping[str, Any]


def _ws_url(server: str, client_id: str) -> str:
    parts = urlsplit(server)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, f"clientId={client_id}", ""))


class AsyncClient:
    """Talks to one ComfyUI server.

    Args:
        server: base URL such as ``http://gpu-1:8188``. Default: ``COMFYFN_SERVER``, else
            the local engine (started if it is installed but not running).
        timeout: per-request HTTP timeouts (an :class:`httpx.Timeout` or seconds).
        job_timeout: default deadline for a whole generation, in seconds (``None`` = none);
            on expiry the job is interrupted or dequeued, then
            :class:`~comfyfn.GenerationTimeout` is raised.
        check_interval: with a live websocket, how long silence lasts before the client
            asks the server about the job (catches jobs deleted from the queue).
    """

    def __init__(
        self,
        server: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        job_timeout: float | None = None,
        check_interval: float = 5.0,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._server_arg = server
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.job_timeout = job_timeout
        self.check_interval = check_interval
        self.retries = retries
        self._transport = transport
        self.client_id = uuid.uuid4().hex
        self._session: HttpSession | None = None
        self._socket: EventSocket | None = None
        self._object_info: dict[str, Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Resolve the server and prepare the connection (the websocket opens lazily)."""
        if self._session is not None:
            return
        server = await _config.resolve_server(self._server_arg)
        self._session = HttpSession(
            server, self._timeout, retries=self.retries, transport=self._transport
        )
        self._socket = EventSocket(
            _ws_url(server, self.client_id), connect_timeout=self._timeout.connect or 5.0
        )

    async def aclose(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._session is not None:
            await self._session.aclose()
        self._session = self._socket = None

    @property
    def server(self) -> str:
        return self._http.server

    @property
    def _http(self) -> HttpSession:
        if self._session is None:
            raise ComfyError("the client is not open: use `async with AsyncClient() as c:`")
        return self._session

    # -- generation ------------------------------------------------------------------------

    async def workflow(self, source: WorkflowSource | Workflow) -> Workflow:
        """Load a workflow (built-in name, path, PNG, dict; API or UI format) with this
        server's node definitions, so UI conversion and parameter types match the server."""
        info = await self.object_info()
        if isinstance(source, Workflow):
            return source.with_definitions(info)
        if isinstance(source, str) and source in BUILTIN:
            return builtin(source).with_definitions(info)
        return Workflow.load(source, object_info=info)

    async def stream(
        self,
        prompt: str | None = None,
        *,
        workflow: WorkflowSource | Workflow | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> AsyncIterator[Event]:
        """Bind the parameters to a workflow (default: Z-Image-Turbo), run it, yield events.

        ``params`` are the workflow's parameters (``seed``, ``width``, ``height``, ``steps``,
        ``negative``... or ``"node.input"`` paths); ``size=(w, h)`` or ``"WxH"`` sets both
        sides; ``seed`` defaults to a random one. The last event is :class:`Succeeded`,
        :class:`Failed` or :class:`Interrupted`.
        """
        wf = await self.workflow(workflow if workflow is not None else "zimage-turbo")
        if prompt is not None:
            params["prompt"] = prompt
        params.setdefault("seed", None)
        async for event in self.stream_graph(wf.bind(**params), timeout=timeout):
            yield event

    async def stream_graph(
        self,
        workflow: Workflow | ApiGraph,
        *,
        timeout: float | None = None,
        validate: bool = True,
        prompt_id: str | None = None,
        attach: bool = False,
        cancel_on_exit: bool = True,
    ) -> AsyncIterator[Event]:
        """Run a workflow (or API-format graph) as it is, yielding its events.

        With ``validate`` (the default) the graph is first checked against the server's node
        definitions, so a bad graph fails with every problem listed before anything is sent.
        ``prompt_id`` sets the job's id (so a caller can record it before submitting);
        with ``attach`` that job was already submitted and is only followed. Leaving the
        stream before the job ends (closing it, cancelling the task, an error while following
        it) cancels the job on the server, unless ``cancel_on_exit`` is False: then the job
        is left there for the caller to re-attach or cancel (as the fleet does).
        """
        wf = workflow if isinstance(workflow, Workflow) else Workflow.load(workflow)
        if validate and not attach:
            await self._validate(wf)
        settings = JobSettings(
            client_id=self.client_id,
            timeout=timeout if timeout is not None else self.job_timeout,
            check_interval=self.check_interval,
            cancel_on_exit=cancel_on_exit,
            expect_size=wf.expected_size,
        )
        session, socket = self._http, self._socket
        assert socket is not None
        async for event in run_job(
            session,
            socket,
            wf.to_api(),
            wf.provenance(),
            settings,
            prompt_id=prompt_id,
            attach=attach,
        ):
            yield event

    async def _validate(self, wf: Workflow) -> None:
        try:
            wf.validate(await self.object_info(), server=self.server)
        except WorkflowInvalid:
            # Files appear on servers (uploads, new models): judge by fresh definitions.
            self._object_info = None
            wf.validate(await self.object_info(), server=self.server)

    async def generate(
        self,
        prompt: str | None = None,
        *,
        workflow: WorkflowSource | Workflow | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> Generation:
        """Run a job and return its :class:`~comfyfn.Generation`; failures raise."""
        return await _result(self.stream(prompt, workflow=workflow, timeout=timeout, **params))

    async def run(
        self,
        workflow: WorkflowSource | Workflow,
        *,
        timeout: float | None = None,
        validate: bool = True,
        **params: Any,
    ) -> Generation:
        """Run a workflow (bound with ``params``, if any) and return its Generation."""
        wf = await self.workflow(workflow)
        if params:
            wf = wf.bind(**params)
        return await _result(self.stream_graph(wf, timeout=timeout, validate=validate))

    def function(self, workflow: Workflow) -> Callable[..., Awaitable[Generation]]:
        """An async callable taking the workflow's parameters as keyword arguments."""

        async def call(**params: Any) -> Generation:
            return await self.run(workflow, **params)

        return signature_for(workflow, call)

    async def cancel(self, prompt_id: str) -> str:
        """Dequeue a pending job or interrupt a running one.

        Returns ``"dequeued"``, ``"interrupted"`` or ``"absent"`` (already finished).
        """
        outcome = await cancel(self._http, prompt_id)
        if self._socket is not None:
            self._socket.nudge(prompt_id)
        return outcome

    async def drop_websocket(self) -> None:
        """Close the event socket as a network failure would (jobs fall back to polling)."""
        if self._socket is not None:
            await self._socket.drop()

    # -- ComfyUI routes --------------------------------------------------------------------

    async def system_stats(self) -> dict[str, Any]:
        return await self._http.get_json("/system_stats", expect=dict)

    async def features(self) -> dict[str, Any]:
        return await self._http.get_json("/features", expect=dict)

    async def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """Node definitions (all of them are fetched once and cached per client)."""
        if self._object_info is None:
            self._object_info = await self._http.get_json("/object_info", expect=dict)
        if node_class is None:
            return self._object_info
        return self._object_info.get(node_class, {})

    async def models(self, folder: str | None = None) -> list[str]:
        """Model folder names, or the files in one folder (``diffusion_models``, ``vae``...)."""
        return await self._http.get_json(f"/models/{folder}" if folder else "/models", expect=list)

    async def queue(self) -> dict[str, Any]:
        return await self._http.get_json("/queue", expect=dict)

    async def queue_position(self, prompt_id: str) -> int | None:
        return queue_position(await self.queue(), prompt_id, server=self.server)

    async def delete_from_queue(self, *prompt_ids: str) -> None:
        await self._http.send("POST", "/queue", json={"delete": list(prompt_ids)})

    async def clear_queue(self) -> None:
        await self._http.send("POST", "/queue", json={"clear": True})

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running job (only if it is ``prompt_id``, when given)."""
        body = {"prompt_id": prompt_id} if prompt_id else {}
        await self._http.send("POST", "/interrupt", json=body)

    async def history(
        self, prompt_id: str | None = None, *, max_items: int | None = None
    ) -> dict[str, Any]:
        if prompt_id is not None:
            return await self._http.get_json(f"/history/{prompt_id}", expect=dict)
        params = {"max_items": max_items} if max_items else None
        return await self._http.get_json("/history", params=params, expect=dict)

    async def delete_history(self, *prompt_ids: str, clear: bool = False) -> None:
        body = {"clear": True} if clear else {"delete": list(prompt_ids)}
        await self._http.send("POST", "/history", json=body)

    async def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """Unload models / free memory (needed after replacing a model file under its name)."""
        body = {"unload_models": unload_models, "free_memory": free_memory}
        await self._http.send("POST", "/free", json=body)

    async def view(self, filename: str, *, subfolder: str = "", type: str = "output") -> bytes:
        params = {"filename": filename, "subfolder": subfolder, "type": type}
        return (await self._http.idempotent("GET", "/view", params=params)).content

    async def upload_image(
        self,
        image: bytes | str | Path,
        *,
        name: str | None = None,
        subfolder: str = "",
        overwrite: bool = False,
    ) -> str:
        """Upload an input image; returns the name to use in a LoadImage node."""
        if isinstance(image, bytes):
            data, filename = image, name or f"comfyfn-{uuid.uuid4().hex[:12]}.png"
        else:
            path = Path(image)
            data, filename = path.read_bytes(), name or path.name
        files = {"image": (filename, data, "application/octet-stream")}
        form = {"subfolder": subfolder, "type": "input", "overwrite": str(overwrite).lower()}
        response = await self._http.send("POST", "/upload/image", files=files, data=form)
        answer = self._http.decode_json("POST", "/upload/image", response, dict)
        name, subfolder = answer.get("name"), answer.get("subfolder")
        if not isinstance(name, str) or not name:
            raise self._http.protocol_error("POST", "/upload/image", "an answer without a name")
        return f"{subfolder}/{name}" if subfolder else name


async def _result(events: AsyncIterator[Event]) -> Generation:
    async for event in events:
        if isinstance(event, Succeeded):
            return event.generation
        if isinstance(event, Failed | Interrupted):
            raise event.error
    raise NoOutputs("the job ended without a result")  # pragma: no cover - run_job ends in one
