"""The asynchronous client: every ComfyUI route, and jobs as handles, events or results.

:class:`AsyncClient` is the only place that does I/O; :class:`comfyfn.Client` drives it from
synchronous code. Server: argument > ``COMFYFN_SERVER`` > the local engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from comfyfn.client import _config
from comfyfn.client._async_job import AsyncJob
from comfyfn.client._credentials import Credentials, public_url, split_url
from comfyfn.client._definitions import Definitions
from comfyfn.client._http import DEFAULT_TIMEOUT, HttpSession
from comfyfn.client._inputs import fetch_urls, upload_inputs
from comfyfn.client._job import JobSettings, JobSpec, check_prompt_id, post_prompt
from comfyfn.client._lookup import cancel, find_graph, queue_position
from comfyfn.client._socket import EventSocket
from comfyfn.client._upload import upload_image
from comfyfn.client._workflows import WorkflowSource, default_workflow, load_workflow, served_names
from comfyfn.errors import ComfyError
from comfyfn.events import Event
from comfyfn.result import Generation
from comfyfn.workflow import Workflow, signature_for

__all__ = ["AsyncClient"]

log = logging.getLogger("comfyfn")


def _ws_url(server: str, client_id: str) -> str:
    parts = urlsplit(server)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, f"clientId={client_id}", ""))


class AsyncClient:
    """Talks to one ComfyUI server.

    Creating a client does no I/O. It opens with ``async with AsyncClient() as c:`` or
    ``await c.open()`` — or by itself at its first request — and closes with
    :meth:`aclose` (or the end of the ``async with``); a closed client raises
    :class:`~comfyfn.ComfyError` and cannot be opened again.

    Args:
        server: base URL such as ``http://gpu-1:8188``. Default: ``COMFYFN_SERVER``, else
            the local engine (started, when the client opens, if it is installed but not
            running). The URL may carry a protected server's credentials:
            ``https://user:password@host`` (Basic auth), ``https://host/?token=…`` (every
            query parameter goes on every request and the websocket URL).
        timeout: per-request HTTP timeouts (an :class:`httpx.Timeout` or seconds).
        job_timeout: default deadline for a whole job, in seconds (``None`` = none); on
            expiry the job is interrupted or dequeued, then
            :class:`~comfyfn.GenerationTimeout` is raised.
        check_interval: with a live websocket, how long silence lasts before the client
            asks the server about the job (catches jobs deleted from the queue).
        retries: how often an idempotent request is retried after a transient failure.
        transport: replaces httpx's network transport (e.g. an :class:`httpx.MockTransport`).
        auth: :class:`Credentials` for a server behind a reverse proxy (Bearer or Basic auth,
            extra headers, query parameters), sent on every HTTP request and the websocket
            upgrade; they take precedence over those in the URL. Never shown: ``server``,
            errors, logs and reprs give the URL without credentials.
        comfy_org_key: the Comfy.org API key partner (paid cloud) nodes run with; default
            ``$COMFY_ORG_API_KEY``, read at use. It goes only with jobs that have partner
            nodes, and is never shown, logged or recorded.
    """

    #: Private seam: the websocket class (tests replace it to replay or refuse messages).
    _socket_class: type[EventSocket] = EventSocket

    def __init__(
        self,
        server: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        job_timeout: float | None = None,
        check_interval: float = 5.0,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        auth: Credentials | None = None,
        comfy_org_key: str | None = None,
    ) -> None:
        self._server_arg = server
        self._auth = auth
        self._comfy_org_key = comfy_org_key
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self.job_timeout = job_timeout
        self.check_interval = check_interval
        self.retries = retries
        self._transport = transport
        self._client_id = uuid.uuid4().hex
        self._session: HttpSession | None = None
        self._socket: EventSocket | None = None
        self._definitions = Definitions(self._http)
        self._uploaded: dict[str, set[str]] = {}  #: server → input images uploaded there
        self._opening = asyncio.Lock()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Resolve the server and prepare the connection (the websocket opens at the first job).

        With no server given and no ``COMFYFN_SERVER``, this finds the local engine and
        starts it if needed. Opening an open client does nothing; a closed one raises.
        """
        async with self._opening:
            if self._closed:
                raise ComfyError("the client is closed; create a new one")
            if self._session is not None:
                return
            server, from_url = split_url(await _config.aresolve_server(self._server_arg))
            credentials = from_url.merged(self._auth)
            self._session = HttpSession(
                server,
                self._timeout,
                retries=self.retries,
                transport=self._transport,
                credentials=credentials,
            )
            self._socket = self._socket_class(
                _ws_url(server, self.client_id),
                credentials=credentials,
                connect_timeout=self._timeout.connect or 5.0,
            )

    async def aclose(self) -> None:
        """Close the websocket and the HTTP connections; the client cannot be used again."""
        self._closed = True
        socket, session = self._socket, self._session
        self._socket = self._session = None
        if socket is not None:
            await socket.close()
        if session is not None:
            await session.aclose()

    async def _connection(self) -> tuple[HttpSession, EventSocket]:
        """The open connection, opening the client first if it is not open."""
        if self._session is None or self._socket is None:
            await self.open()
        assert self._session is not None and self._socket is not None
        return self._session, self._socket

    async def _http(self) -> HttpSession:
        return (await self._connection())[0]

    @property
    def client_id(self) -> str:
        """The id this client gives ComfyUI (it sends a job's events only to its client)."""
        return self._client_id

    def __repr__(self) -> str:
        try:
            where = self.server
        except ComfyError:
            where = "the local engine"
        return f"<{type(self).__name__} {where}>"

    @property
    def server(self) -> str:
        """The server's base URL, without credentials: known before the client opens only if
        it was given (as an argument or in ``COMFYFN_SERVER``); the local engine is looked up
        when it opens."""
        if self._session is not None:
            return self._session.server
        if (url := _config.explicit_server(self._server_arg)) is not None:
            return public_url(url)
        raise ComfyError(
            "the server is not known yet: with no server= and no COMFYFN_SERVER it is the "
            "local engine, looked up when the client opens"
        )

    # -- jobs ------------------------------------------------------------------------------

    async def workflow(self, source: WorkflowSource | Workflow) -> Workflow:
        """Load a workflow (built-in name, path, PNG, dict; API or UI format; a blueprint or
        template the server serves: ``"blueprint:NAME"``, ``"template:NAME"``) with this
        server's node definitions, so UI conversion and parameter types match the server."""
        return await load_workflow(source, await self.object_info(), self._http)

    async def served_workflows(self, kind: str) -> list[str]:
        """The names of the blueprints (``kind="blueprint"``) or templates (``"template"``)
        the server serves, to load as ``"KIND:NAME"``.

        A server without the route raises :class:`~comfyfn.workflow.RouteMissing`."""
        return await served_names(kind, self._http)

    async def submit(
        self,
        prompt: str | None = None,
        *,
        workflow: WorkflowSource | Workflow | None = None,
        timeout: float | None = None,
        cancel_on_exit: bool = True,
        **params: Any,
    ) -> AsyncJob:
        """Bind the parameters to a workflow (default: Z-Image-Turbo) and submit it.

        Returns as soon as the server has queued the job. ``params`` are the workflow's
        parameters (``seed``, ``width``, ``height``, ``steps``, ``negative``... or
        ``"node.input"`` paths); ``size=(w, h)`` or ``"WxH"`` sets both sides; ``seed``
        defaults to a random one. ``timeout`` is the job's deadline from now;
        ``cancel_on_exit``: see :class:`AsyncJob`. Input images (``image=``, ``mask=`` or
        the path of a LoadImage input) are a path, bytes, a PIL image, an :class:`Image` or an
        http(s) URL. With no workflow, it is ``zimage-control`` given ``control_image=``, else
        ``zimage-edit`` given ``image=``, else ``zimage-turbo``.
        """
        wf = await self.workflow(workflow if workflow is not None else default_workflow(params))
        if prompt is not None:
            params["prompt"] = prompt
        params.setdefault("seed", None)
        return await self.submit_graph(
            await self._bind(wf, params), timeout=timeout, cancel_on_exit=cancel_on_exit
        )

    async def _bind(self, wf: Workflow, params: Mapping[str, Any]) -> Workflow:
        """``wf`` with ``params`` bound, input images given by URL fetched first."""
        return wf.bind(**await fetch_urls(wf, params))

    async def submit_graph(
        self,
        workflow: Workflow | Mapping[str, Any],
        *,
        timeout: float | None = None,
        validate: bool = True,
        prompt_id: str | None = None,
        cancel_on_exit: bool = True,
    ) -> AsyncJob:
        """Submit a workflow (or API-format graph) as it is; returns once it is queued.

        With ``validate`` (the default) the graph is first checked against the server's node
        definitions, so a bad graph fails with every problem listed before anything is sent.
        ``prompt_id`` sets the job's id (so a caller can record it before submitting): a UUID
        in canonical form, as ``str(uuid.uuid4())`` gives (:class:`~comfyfn.ConfigError`
        otherwise, before anything is sent). A submission cancelled midway (or failing with
        its outcome unknown) is cancelled on the server, unless ``cancel_on_exit`` is False.
        """
        if prompt_id is not None:
            check_prompt_id(prompt_id)
        wf = workflow if isinstance(workflow, Workflow) else Workflow.load(workflow)
        session, socket = await self._connection()
        if wf.uploads:  # on this job's server, before the graph naming them is checked
            await upload_inputs(session, wf.uploads, self._uploaded.setdefault(self.server, set()))
        key = _config.comfy_org_key(self._comfy_org_key)
        if validate:
            await self._definitions.validate(wf, server=self.server, partner_key=key is not None)
        extra = await self._definitions.extra_data(wf, key)
        spec = self._spec(prompt_id or str(uuid.uuid4()), wf, timeout, cancel_on_exit, extra)
        subscription = socket.subscribe(spec.prompt_id) if await socket.ensure() else None
        try:
            await post_prompt(session, spec.graph, spec.prompt_id, spec.settings)
        except BaseException:
            if subscription is not None:
                socket.unsubscribe(spec.prompt_id, subscription)
            if cancel_on_exit:  # it may be queued: do not leave a GPU job behind
                with contextlib.suppress(Exception):
                    await asyncio.shield(cancel(session, spec.prompt_id))
            raise
        return AsyncJob(self, spec, socket=socket, subscription=subscription)

    async def attach(
        self,
        prompt_id: str,
        *,
        workflow: Workflow | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        cancel_on_exit: bool = True,
    ) -> AsyncJob:
        """A handle on a job submitted elsewhere (another process, an earlier run): nothing
        is submitted; its events are followed and its outputs fetched.

        ``workflow`` is what was submitted, for the provenance of its images and the size
        check; without it the graph is read from the server's queue or history. A job the
        server does not know ends with :class:`~comfyfn.Stopped` (``error.lost``).
        ``timeout`` counts from now.
        """
        session = await self._http()
        if workflow is None:
            graph = await find_graph(session, prompt_id)
            wf = Workflow.load(graph) if graph else Workflow({})
        else:
            wf = workflow if isinstance(workflow, Workflow) else Workflow.load(workflow)
        return AsyncJob(self, self._spec(prompt_id, wf, timeout, cancel_on_exit))

    def _spec(
        self,
        prompt_id: str,
        wf: Workflow,
        timeout: float | None,
        cancel_on_exit: bool,
        extra_data: Mapping[str, str] | None = None,
    ) -> JobSpec:
        settings = JobSettings(
            client_id=self.client_id,
            timeout=timeout if timeout is not None else self.job_timeout,
            check_interval=self.check_interval,
            extra_data=extra_data or {},
            cancel_on_exit=cancel_on_exit,
            expect_size=wf.expected_size,
        )
        return JobSpec(prompt_id, wf.to_api(), wf.provenance(), settings)

    async def stream(
        self,
        prompt: str | None = None,
        *,
        workflow: WorkflowSource | Workflow | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> AsyncGenerator[Event, None]:
        """Bind the parameters to a workflow (default: Z-Image-Turbo), run it, yield events.

        :meth:`submit`, then :meth:`AsyncJob.events`: the last event is
        :class:`~comfyfn.Succeeded`, :class:`~comfyfn.Failed` or :class:`~comfyfn.Stopped`;
        what keeps a job from ending so is raised (see :meth:`AsyncJob.events`). Leaving the
        stream early (closing it, cancelling the task) cancels the job on the server.
        """
        job = await self.submit(prompt, workflow=workflow, timeout=timeout, **params)
        async with contextlib.aclosing(job.events()) as events:
            async for event in events:
                yield event

    async def stream_graph(
        self,
        workflow: Workflow | Mapping[str, Any],
        *,
        timeout: float | None = None,
        validate: bool = True,
    ) -> AsyncGenerator[Event, None]:
        """Run a workflow (or API-format graph) as it is, yielding its events.

        :meth:`submit_graph`, then :meth:`AsyncJob.events` (final events and errors as in
        :meth:`stream`). Leaving the stream early cancels the job on the server.
        """
        job = await self.submit_graph(workflow, timeout=timeout, validate=validate)
        async with contextlib.aclosing(job.events()) as events:
            async for event in events:
                yield event

    async def generate(
        self,
        prompt: str | None = None,
        *,
        workflow: WorkflowSource | Workflow | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> Generation:
        """Run a job and return its :class:`~comfyfn.Generation`; failures raise."""
        job = await self.submit(prompt, workflow=workflow, timeout=timeout, **params)
        return await job.result()

    async def run(
        self,
        workflow: WorkflowSource | Workflow,
        *,
        timeout: float | None = None,
        validate: bool = True,
        **params: Any,
    ) -> Generation:
        """Run a workflow bound with ``params`` and return its Generation; as with
        generate(), a seed not given is drawn at random."""
        wf = await self.workflow(workflow)
        params.setdefault("seed", None)
        wf = await self._bind(wf, params)
        job = await self.submit_graph(wf, timeout=timeout, validate=validate)
        return await job.result()

    def function(self, workflow: Workflow) -> Callable[..., Awaitable[Generation]]:
        """A callable taking the workflow's parameters as keyword arguments."""

        async def call(**params: Any) -> Generation:
            return await self.run(workflow, **params)

        return signature_for(workflow, call)

    async def cancel(self, prompt_id: str) -> str:
        """Dequeue a pending job or interrupt a running one.

        Returns ``"dequeued"``, ``"interrupted"`` or ``"absent"`` (already finished). On a
        server with the job routes (ComfyUI 0.28) this is one atomic, repeatable
        ``POST /api/jobs/{id}/cancel``; on older ones a look at the queue, then a dequeue or
        an interrupt.
        """
        session, socket = await self._connection()
        outcome = await cancel(session, prompt_id)
        socket.nudge(prompt_id)
        return outcome

    async def _drop_websocket(self) -> None:
        """Test hook: close the event socket as a network failure would (jobs then poll)."""
        if self._socket is not None:
            await self._socket.drop()

    # -- ComfyUI routes --------------------------------------------------------------------

    async def system_stats(self) -> dict[str, Any]:
        """The server's system, Python, PyTorch and devices (``GET /system_stats``)."""
        return await (await self._http()).get_dict("/system_stats")

    async def features(self) -> dict[str, Any]:
        """The server's feature flags (``GET /features``)."""
        return await (await self._http()).get_dict("/features")

    async def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """Node definitions: fetched once per client (again only when a graph names a class
        or a value they do not know), and parsed once per process for servers that answer
        the same. The answer is shared: do not change it."""
        info = await self._definitions.get()
        if node_class is None:
            return info
        found: dict[str, Any] = info.get(node_class, {})
        return found

    async def models(self, folder: str | None = None) -> list[str]:
        """Model folder names, or the files in one folder (``diffusion_models``, ``vae``...)."""
        path = f"/models/{folder}" if folder else "/models"
        return [str(name) for name in await (await self._http()).get_list(path)]

    async def queue(self) -> dict[str, Any]:
        """The running and pending jobs (``GET /queue``)."""
        return await (await self._http()).get_dict("/queue")

    async def queue_position(self, prompt_id: str) -> int | None:
        """Jobs ahead of ``prompt_id`` (0 = running or next); None if it is not queued."""
        return queue_position(await self.queue(), prompt_id, server=self.server)

    async def delete_from_queue(self, *prompt_ids: str) -> None:
        """Remove pending jobs from the queue (running ones are left: see :meth:`interrupt`)."""
        await (await self._http()).send("POST", "/queue", json={"delete": list(prompt_ids)})

    async def clear_queue(self) -> None:
        """Remove every pending job from the queue."""
        await (await self._http()).send("POST", "/queue", json={"clear": True})

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running job (only if it is ``prompt_id``, when given)."""
        body = {"prompt_id": prompt_id} if prompt_id else {}
        await (await self._http()).send("POST", "/interrupt", json=body)

    async def history(
        self, prompt_id: str | None = None, *, max_items: int | None = None
    ) -> dict[str, Any]:
        """Finished jobs by prompt id (``GET /history``), or one job's entry (``{}`` if none)."""
        session = await self._http()
        if prompt_id is not None:
            return await session.get_dict(f"/history/{prompt_id}")
        params = {"max_items": max_items} if max_items else None
        return await session.get_dict("/history", params=params)

    async def delete_history(self, *prompt_ids: str, clear: bool = False) -> None:
        """Delete these jobs' history entries (all of them with ``clear=True``)."""
        body = {"clear": True} if clear else {"delete": list(prompt_ids)}
        await (await self._http()).send("POST", "/history", json=body)

    async def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """Ask the server to unload models and drop its cache (``POST /free``).

        Needed after replacing a model file under its name. ComfyUI applies it in its prompt
        thread, after this call returns and between prompts: a prompt submitted at once may
        still run with the cache (the flag can wait until that prompt ends).
        """
        body = {"unload_models": unload_models, "free_memory": free_memory}
        await (await self._http()).send("POST", "/free", json=body)

    async def view(self, filename: str, *, subfolder: str = "", type: str = "output") -> bytes:
        """The bytes of one file the server made or was given (``GET /view``)."""
        params = {"filename": filename, "subfolder": subfolder, "type": type}
        return (await (await self._http()).idempotent("GET", "/view", params=params)).content

    async def upload_image(
        self,
        image: bytes | str | Path,
        *,
        name: str | None = None,
        subfolder: str = "",
        overwrite: bool = False,
    ) -> str:
        """Upload an input image; returns the name to use in a LoadImage node."""
        return await upload_image(self._http, image, name, subfolder, overwrite)
