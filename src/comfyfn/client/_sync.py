"""The synchronous client: :class:`AsyncClient` driven from a private event-loop thread.

Nothing is reimplemented here: each method forwards to the async one, with the same
signature and docstring summary (tests/unit/test_client_api.py compares them), and event
streams are pulled one event at a time. Ctrl-C while waiting cancels the job on the server
(interrupt or dequeue) before re-raising. The loop thread starts at the first request; it is
a daemon, so a client that is never closed does not keep the interpreter from exiting.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx

from comfyfn.client._async import AsyncClient
from comfyfn.client._async_job import AsyncJob, CancelOutcome
from comfyfn.client._credentials import Credentials
from comfyfn.client._http import DEFAULT_TIMEOUT
from comfyfn.client._loop import LoopThread
from comfyfn.client._workflows import WorkflowSource
from comfyfn.errors import ComfyError
from comfyfn.events import Event
from comfyfn.result import Generation
from comfyfn.workflow import Workflow, signature_for

__all__ = ["Client", "Job"]

P = ParamSpec("P")
T = TypeVar("T")


class Client:
    """Synchronous twin of :class:`~comfyfn.AsyncClient`; takes the same arguments.

    Creating a client does no I/O. It opens with ``with Client() as c:`` or ``c.open()`` —
    or by itself at its first request — and closes with :meth:`close` (or the end of the
    ``with``); a closed client raises :class:`~comfyfn.ComfyError` and cannot be opened
    again. ::

        with comfyfn.Client() as c:
            gen = c.generate("a red apple", seed=42, width=1024, height=768)
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
        auth: Credentials | None = None,
        comfy_org_key: str | None = None,
    ) -> None:
        self._async = AsyncClient(
            server,
            timeout=timeout,
            job_timeout=job_timeout,
            check_interval=check_interval,
            retries=retries,
            transport=transport,
            auth=auth,
            comfy_org_key=comfy_org_key,
        )
        self._thread: LoopThread | None = None
        self._stop_thread: Callable[[], object] = lambda: None
        self._lock = threading.Lock()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Client:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Resolve the server and prepare the connection (the websocket opens at the first job)."""
        self._run(self._async.open)

    def close(self) -> None:
        """Close the websocket and the HTTP connections; the client cannot be used again."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        try:
            thread.call(self._async.aclose)
        finally:
            self._stop_thread()

    def _loop(self) -> LoopThread:
        with self._lock:
            if self._closed:
                raise ComfyError("the client is closed; create a new one")
            if self._thread is None:
                self._thread = LoopThread()
                self._stop_thread = weakref.finalize(self, self._thread.stop)
            return self._thread

    def _run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        return self._loop().call(fn, *args, **kwargs)

    def _iterate(self, events: AsyncIterator[T]) -> Generator[T, None, None]:
        """Pull an async iterator from the loop thread; closing this closes it there."""
        try:
            while True:
                try:
                    yield self._run(events.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None and not self._closed:
                with contextlib.suppress(RuntimeError):  # still closing after a Ctrl-C
                    self._run(aclose)

    def __repr__(self) -> str:
        return repr(self._async).replace("<AsyncClient", "<Client", 1)

    @property
    def server(self) -> str:
        """The server's base URL, without credentials (see :attr:`AsyncClient.server`)."""
        return self._async.server

    @property
    def client_id(self) -> str:
        """The id this client gives ComfyUI (it sends a job's events only to its client)."""
        return self._async.client_id

    # -- jobs ------------------------------------------------------------------------------

    def workflow(self, source: WorkflowSource | Workflow) -> Workflow:
        """Load a workflow (built-in name, path, PNG, dict; API or UI format; a blueprint or
        template the server serves: ``"blueprint:NAME"``, ``"template:NAME"``) with this
        server's node definitions, so UI conversion and parameter types match the server."""
        return self._run(self._async.workflow, source)

    def served_workflows(self, kind: str) -> list[str]:
        """The names of the blueprints (``kind="blueprint"``) or templates (``"template"``)
        the server serves, to load as ``"KIND:NAME"``.

        See :meth:`AsyncClient.served_workflows`."""
        return self._run(self._async.served_workflows, kind)

    def submit(
        self,
        prompt: str | None = None,
        *,
        workflow: WorkflowSource | Workflow | None = None,
        timeout: float | None = None,
        cancel_on_exit: bool = True,
        **params: Any,
    ) -> Job:
        """Bind the parameters to a workflow (default: Z-Image-Turbo) and submit it.

        Returns as soon as the server has queued the job; see :meth:`AsyncClient.submit`.
        """
        job = self._run(
            self._async.submit,
            prompt,
            workflow=workflow,
            timeout=timeout,
            cancel_on_exit=cancel_on_exit,
            **params,
        )
        return Job(self, job)

    def submit_graph(
        self,
        workflow: Workflow | Mapping[str, Any],
        *,
        timeout: float | None = None,
        validate: bool = True,
        prompt_id: str | None = None,
        cancel_on_exit: bool = True,
    ) -> Job:
        """Submit a workflow (or API-format graph) as it is; returns once it is queued."""
        job = self._run(
            self._async.submit_graph,
            workflow,
            timeout=timeout,
            validate=validate,
            prompt_id=prompt_id,
            cancel_on_exit=cancel_on_exit,
        )
        return Job(self, job)

    def attach(
        self,
        prompt_id: str,
        *,
        workflow: Workflow | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        cancel_on_exit: bool = True,
    ) -> Job:
        """A handle on a job submitted elsewhere (another process, an earlier run): nothing
        is submitted; its events are followed and its outputs fetched."""
        job = self._run(
            self._async.attach,
            prompt_id,
            workflow=workflow,
            timeout=timeout,
            cancel_on_exit=cancel_on_exit,
        )
        return Job(self, job)

    def stream(
        self,
        prompt: str | None = None,
        *,
        workflow: WorkflowSource | Workflow | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> Generator[Event, None, None]:
        """Bind the parameters to a workflow (default: Z-Image-Turbo), run it, yield events.

        See :meth:`AsyncClient.stream`: the same events, the same final-event rule, and
        leaving the stream early (closing it, Ctrl-C) cancels the job on the server.
        """
        return self._iterate(
            self._async.stream(prompt, workflow=workflow, timeout=timeout, **params)
        )

    def stream_graph(
        self,
        workflow: Workflow | Mapping[str, Any],
        *,
        timeout: float | None = None,
        validate: bool = True,
    ) -> Generator[Event, None, None]:
        """Run a workflow (or API-format graph) as it is, yielding its events."""
        return self._iterate(self._async.stream_graph(workflow, timeout=timeout, validate=validate))

    def generate(
        self,
        prompt: str | None = None,
        *,
        workflow: WorkflowSource | Workflow | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> Generation:
        """Run a job and return its :class:`~comfyfn.Generation`; failures raise."""
        return self._run(self._async.generate, prompt, workflow=workflow, timeout=timeout, **params)

    def run(
        self,
        workflow: WorkflowSource | Workflow,
        *,
        timeout: float | None = None,
        validate: bool = True,
        **params: Any,
    ) -> Generation:
        """Run a workflow bound with ``params`` and return its Generation; as with
        generate(), a seed not given is drawn at random."""
        return self._run(self._async.run, workflow, timeout=timeout, validate=validate, **params)

    def function(self, workflow: Workflow) -> Callable[..., Generation]:
        """A callable taking the workflow's parameters as keyword arguments."""

        def call(**params: Any) -> Generation:
            return self.run(workflow, **params)

        return signature_for(workflow, call)

    def cancel(self, prompt_id: str) -> str:
        """Dequeue a pending job or interrupt a running one.

        Returns ``"dequeued"``, ``"interrupted"`` or ``"absent"`` (already finished); see
        :meth:`AsyncClient.cancel`.
        """
        return self._run(self._async.cancel, prompt_id)

    def _drop_websocket(self) -> None:
        """Test hook: close the event socket as a network failure would (jobs then poll)."""
        self._run(self._async._drop_websocket)

    # -- ComfyUI routes --------------------------------------------------------------------

    def system_stats(self) -> dict[str, Any]:
        """The server's system, Python, PyTorch and devices (``GET /system_stats``)."""
        return self._run(self._async.system_stats)

    def features(self) -> dict[str, Any]:
        """The server's feature flags (``GET /features``)."""
        return self._run(self._async.features)

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """Node definitions: fetched once per client (again only when a graph names a class
        or a value they do not know), and parsed once per process for servers that answer
        the same. The answer is shared: do not change it."""
        return self._run(self._async.object_info, node_class)

    def models(self, folder: str | None = None) -> list[str]:
        """Model folder names, or the files in one folder (``diffusion_models``, ``vae``...)."""
        return self._run(self._async.models, folder)

    def queue(self) -> dict[str, Any]:
        """The running and pending jobs (``GET /queue``)."""
        return self._run(self._async.queue)

    def queue_position(self, prompt_id: str) -> int | None:
        """Jobs ahead of ``prompt_id`` (0 = running or next); None if it is not queued."""
        return self._run(self._async.queue_position, prompt_id)

    def delete_from_queue(self, *prompt_ids: str) -> None:
        """Remove pending jobs from the queue (running ones are left: see :meth:`interrupt`)."""
        self._run(self._async.delete_from_queue, *prompt_ids)

    def clear_queue(self) -> None:
        """Remove every pending job from the queue."""
        self._run(self._async.clear_queue)

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running job (only if it is ``prompt_id``, when given)."""
        self._run(self._async.interrupt, prompt_id)

    def history(
        self, prompt_id: str | None = None, *, max_items: int | None = None
    ) -> dict[str, Any]:
        """Finished jobs by prompt id (``GET /history``), or one job's entry (``{}`` if none)."""
        return self._run(self._async.history, prompt_id, max_items=max_items)

    def delete_history(self, *prompt_ids: str, clear: bool = False) -> None:
        """Delete these jobs' history entries (all of them with ``clear=True``)."""
        self._run(self._async.delete_history, *prompt_ids, clear=clear)

    def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """Ask the server to unload models and drop its cache (``POST /free``).

        ComfyUI applies it between prompts, after this call returns: see
        :meth:`AsyncClient.free`.
        """
        self._run(self._async.free, unload_models=unload_models, free_memory=free_memory)

    def view(self, filename: str, *, subfolder: str = "", type: str = "output") -> bytes:
        """The bytes of one file the server made or was given (``GET /view``)."""
        return self._run(self._async.view, filename, subfolder=subfolder, type=type)

    def upload_image(
        self,
        image: bytes | str | Path,
        *,
        name: str | None = None,
        subfolder: str = "",
        overwrite: bool = False,
    ) -> str:
        """Upload an input image; returns the name to use in a LoadImage node."""
        return self._run(
            self._async.upload_image, image, name=name, subfolder=subfolder, overwrite=overwrite
        )


class Job:
    """Synchronous twin of :class:`~comfyfn.AsyncJob`: a job on one ComfyUI server.

    :meth:`Client.submit` / :meth:`~Client.submit_graph` return one once the job is queued;
    :meth:`Job.attach` (or :meth:`Client.attach`) makes one for a job submitted elsewhere.
    Leaving :meth:`events` early (closing it, ``break``, Ctrl-C) or Ctrl-C in :meth:`result`
    cancels the job, unless ``cancel_on_exit=False`` was given.
    """

    def __init__(self, client: Client, job: AsyncJob) -> None:
        """Made by the client (:meth:`Client.submit`, :meth:`Client.attach`)."""
        self._client = client
        self._job = job

    @classmethod
    def attach(
        cls,
        client: Client,
        prompt_id: str,
        *,
        workflow: Workflow | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        cancel_on_exit: bool = True,
    ) -> Job:
        """A handle on a job submitted elsewhere; see :meth:`AsyncClient.attach`."""
        return client.attach(
            prompt_id, workflow=workflow, timeout=timeout, cancel_on_exit=cancel_on_exit
        )

    @property
    def prompt_id(self) -> str:
        return self._job.prompt_id

    @property
    def server(self) -> str:
        return self._job.server

    @property
    def cancel_on_exit(self) -> bool:
        """Whether leaving :meth:`events` or :meth:`result` early cancels the job."""
        return self._job.cancel_on_exit

    def __repr__(self) -> str:
        return repr(self._job).replace("<AsyncJob", "<Job", 1)

    def events(self) -> Generator[Event, None, None]:
        """Yield the job's events, :class:`~comfyfn.Queued` first.

        The same events, final-event rule and errors as :meth:`AsyncJob.events`.
        """
        return self._client._iterate(self._job.events())

    def result(self) -> Generation:
        """Wait for the job and return its :class:`~comfyfn.Generation`; failures raise
        (the error of a Failed or Stopped end, or what :meth:`events` raises)."""
        return self._client._run(self._job.result)

    def cancel(self) -> CancelOutcome:
        """Dequeue the job if it waits, interrupt it if it runs; whoever follows it then sees
        it end with :class:`~comfyfn.Stopped`. Returns ``"dequeued"``, ``"interrupted"`` or
        ``"absent"`` (already over): a :data:`CancelOutcome`."""
        return self._client._run(self._job.cancel)
