"""A handle on one job: follow its events, wait for its result, cancel it."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from comfyfn.client._job import JobSpec, Subscription, follow
from comfyfn.client._socket import EventSocket
from comfyfn.errors import ComfyError, GenerationError
from comfyfn.events import Event, Failed, FinalEvent, Stopped, Succeeded
from comfyfn.result import Generation
from comfyfn.workflow import Workflow

if TYPE_CHECKING:
    from comfyfn.client._async import AsyncClient

__all__ = ["AsyncJob", "CancelOutcome"]

CancelOutcome = Literal["dequeued", "interrupted", "absent"]
"""What a cancel did: took the waiting job off the server's queue (``"dequeued"``), stopped
it running (``"interrupted"``), or found it no longer there, already over (``"absent"``)."""


class AsyncJob:
    """A job on one ComfyUI server (the shape of fal_client's request handles).

    :meth:`AsyncClient.submit` and :meth:`~AsyncClient.submit_graph` return one as soon as
    the server has queued the job; :meth:`AsyncJob.attach` (or :meth:`AsyncClient.attach`)
    makes one for a job submitted elsewhere, by its prompt id. Nothing is followed until
    :meth:`events` or :meth:`result` is called; a job nobody follows runs on regardless.

    **Leaving early cancels the job**: closing :meth:`events` before its final event, or
    cancelling the task awaiting :meth:`result` (Ctrl-C in the sync :class:`Job`), dequeues
    or interrupts the job on the server — unless ``cancel_on_exit=False`` was given, which
    leaves it there to be followed again (call :meth:`events` or :meth:`result` again) or
    cancelled. An async generator is closed when it is garbage-collected, or at once with
    ``async with contextlib.aclosing(job.events()) as events:``.
    """

    def __init__(
        self,
        client: AsyncClient,
        spec: JobSpec,
        *,
        socket: EventSocket | None = None,
        subscription: Subscription | None = None,
    ) -> None:
        """Made by the client (:meth:`AsyncClient.submit`, :meth:`AsyncClient.attach`)."""
        self._client = client
        self._server = client.server
        self._spec = spec
        self._subscription = subscription
        self._end: FinalEvent | None = None
        self._error: GenerationError | None = None
        self._following = False
        if socket is not None and subscription is not None:  # never followed: stop routing
            weakref.finalize(self, socket.unsubscribe, spec.prompt_id, subscription)

    @classmethod
    async def attach(
        cls,
        client: AsyncClient,
        prompt_id: str,
        *,
        workflow: Workflow | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        cancel_on_exit: bool = True,
    ) -> AsyncJob:
        """A handle on a job submitted elsewhere; see :meth:`AsyncClient.attach`."""
        return await client.attach(
            prompt_id, workflow=workflow, timeout=timeout, cancel_on_exit=cancel_on_exit
        )

    @property
    def prompt_id(self) -> str:
        return self._spec.prompt_id

    @property
    def server(self) -> str:
        return self._server

    @property
    def cancel_on_exit(self) -> bool:
        """Whether leaving :meth:`events` or :meth:`result` early cancels the job."""
        return self._spec.settings.cancel_on_exit

    def __repr__(self) -> str:
        ended = self._end or self._error
        state = "following" if self._following else type(ended).__name__ if ended else "waiting"
        return f"<AsyncJob {self.prompt_id} on {self._server} ({state})>"

    async def events(self) -> AsyncGenerator[Event, None]:
        """Yield the job's events, :class:`~comfyfn.Queued` first.

        The last event is :class:`~comfyfn.Succeeded`, :class:`~comfyfn.Failed` or
        :class:`~comfyfn.Stopped`: the job's end as the server reports it. When the job
        cannot be followed to such an end, this raises instead:
        :class:`~comfyfn.TransportError` (:class:`~comfyfn.ServerUnreachable`,
        :class:`~comfyfn.HTTPStatusError`, :class:`~comfyfn.ProtocolError`) when the server
        cannot be asked — the job may still be running: call again to follow it again;
        :class:`~comfyfn.GenerationTimeout` when the deadline passed (the job was cancelled
        first); :class:`~comfyfn.CorruptOutput` or :class:`~comfyfn.NoOutputs` when it
        finished without usable images. Once the job has ended, this yields only the final
        event again (or raises the same error). One caller follows a job at a time.
        """
        if self._error is not None:
            raise self._error
        if self._end is not None:
            yield self._end
            return
        if self._following:
            raise ComfyError(
                f"job {self.prompt_id} is already being followed (by events() or result() "
                "elsewhere, or by an events() iterator that was left but not yet closed)"
            )
        self._following = True
        try:
            session, socket = await self._client._connection()
            subscription, self._subscription = self._subscription, None
            # aclosing: leaving this generator must close follow() at once (it cancels the job)
            async with contextlib.aclosing(follow(session, socket, self._spec, subscription)) as f:
                async for event in f:
                    if isinstance(event, Succeeded | Failed | Stopped):
                        self._end = event
                    yield event
        except GenerationError as exc:  # the job is over: a deadline, unusable outputs
            self._error = exc
            raise
        finally:
            self._following = False

    async def result(self) -> Generation:
        """Wait for the job and return its :class:`~comfyfn.Generation`; failures raise
        (the error of a Failed or Stopped end, or what :meth:`events` raises)."""
        async with contextlib.aclosing(self.events()) as events:
            async for _event in events:
                pass
        if isinstance(self._end, Succeeded):
            return self._end.generation
        if isinstance(self._end, Failed | Stopped):
            raise self._end.error
        raise ComfyError(f"job {self.prompt_id} ended without a final event")  # pragma: no cover

    async def cancel(self) -> CancelOutcome:
        """Dequeue the job if it waits, interrupt it if it runs; whoever follows it then sees
        it end with :class:`~comfyfn.Stopped`. Returns ``"dequeued"``, ``"interrupted"`` or
        ``"absent"`` (already over): a :data:`CancelOutcome`."""
        return cast(CancelOutcome, await self._client.cancel(self.prompt_id))
