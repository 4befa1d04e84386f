"""The exception tree. Every error comfyfn raises is a :class:`ComfyError`.

::

    ComfyError
    ├── ConfigError                 bad argument or environment value (names it)
    │   └── SchemaTooNew            a database a newer comfyfn migrated (left untouched)
    ├── TransportError              talking to a server failed
    │   ├── ServerUnreachable       connect refused / DNS / connect timeout
    │   ├── HTTPStatusError         a non-2xx answer (status and body kept)
    │   └── ProtocolError           an answer that is not what ComfyUI sends (not JSON, wrong shape)
    ├── WorkflowInvalid             the graph was rejected (by us or by ComfyUI's 400)
    ├── GenerationError             a submitted job did not produce images
    │   ├── ExecutionFailed         a node raised while running
    │   ├── Interrupted             the job was interrupted or removed from the queue
    │   ├── GenerationTimeout       the whole-job deadline passed (job cancelled first)
    │   ├── NoOutputs               the job finished but produced no images
    │   └── CorruptOutput           an output image is damaged or has the wrong size
    ├── OutputUnusable              the output folder (or store) cannot take the outputs
    └── EngineError                 the local engine could not be installed or started

Each error carries its context as attributes (``server``, ``prompt_id``, ``node_id``,
``class_type``, ``status_code``...) so callers never have to parse messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ComfyError",
    "ConfigError",
    "CorruptOutput",
    "EngineError",
    "ExecutionFailed",
    "GenerationError",
    "GenerationTimeout",
    "HTTPStatusError",
    "Interrupted",
    "NoOutputs",
    "NodeProblem",
    "OutputUnusable",
    "ProtocolError",
    "SchemaTooNew",
    "ServerUnreachable",
    "TransportError",
    "WorkflowInvalid",
]


class ComfyError(Exception):
    """Root of every comfyfn error."""

    def __init__(self, message: str, *, server: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.server = server

    def __str__(self) -> str:
        return self.message


class ConfigError(ComfyError, ValueError):
    """An argument or environment variable has a value comfyfn cannot use."""


class SchemaTooNew(ConfigError):
    """A database (the job store, a batch manifest) is at a schema revision this
    comfyfn does not know: a newer comfyfn migrated it, so it is refused, nothing changed."""


class TransportError(ComfyError):
    """A request to a ComfyUI server failed."""


class ServerUnreachable(TransportError):
    """The server could not be reached at all (refused, DNS, connect timeout)."""


class HTTPStatusError(TransportError):
    """The server answered with a non-success status."""

    def __init__(
        self,
        message: str,
        *,
        server: str | None,
        status_code: int,
        body: str,
        method: str,
        path: str,
    ) -> None:
        super().__init__(message, server=server)
        self.status_code = status_code
        self.body = body
        self.method = method
        self.path = path


class ProtocolError(TransportError):
    """The server answered, but not with what ComfyUI sends: not JSON, or JSON of the wrong shape.

    ``method`` and ``path`` name the route; ``body`` keeps the start of the answer.
    """

    def __init__(
        self, message: str, *, server: str | None, method: str, path: str, body: str = ""
    ) -> None:
        super().__init__(message, server=server)
        self.method = method
        self.path = path
        self.body = body


@dataclass(frozen=True)
class NodeProblem:
    """One problem with one node input, as one readable line."""

    node_id: str | None
    class_type: str | None
    input_name: str | None
    message: str
    kind: str = "invalid"
    #: the parameter the value was bound as (a name or ``node.input`` path), when it was
    param: str | None = None

    def __str__(self) -> str:
        where = []
        if self.node_id is not None:
            where.append(f"node {self.node_id}")
        if self.class_type:
            where.append(self.class_type)
        head = " ".join(where)
        return f"{head}: {self.message}" if head else self.message


class WorkflowInvalid(ComfyError, ValueError):
    """The workflow was rejected before it ran: by comfyfn's checks or ComfyUI's validation."""

    def __init__(
        self,
        problems: Sequence[NodeProblem],
        *,
        server: str | None = None,
        summary: str = "workflow is invalid",
        raw: object = None,
    ) -> None:
        self.problems = tuple(problems)
        self.raw = raw
        lines = [summary] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines), server=server)


class GenerationError(ComfyError):
    """A job was accepted but did not give images."""

    def __init__(self, message: str, *, server: str | None = None, prompt_id: str | None = None):
        super().__init__(message, server=server)
        self.prompt_id = prompt_id


class ExecutionFailed(GenerationError):
    """A node raised an exception while the job ran."""

    def __init__(
        self,
        *,
        server: str | None,
        prompt_id: str | None,
        node_id: str | None,
        class_type: str | None,
        exception_type: str,
        exception_message: str,
        traceback: Sequence[str] = (),
    ) -> None:
        self.node_id = node_id
        self.class_type = class_type
        self.exception_type = exception_type
        self.exception_message = exception_message.strip()
        self.traceback = tuple(traceback)
        where = f"node {node_id} {class_type}" if node_id else "the job"
        super().__init__(
            f"{where} failed: {exception_type}: {self.exception_message}",
            server=server,
            prompt_id=prompt_id,
        )


class Interrupted(GenerationError):
    """The job was interrupted while running, or deleted from the queue before it ran.

    A job's event stream ends with :class:`comfyfn.events.Stopped` carrying this error;
    ``lost`` is True when the server no longer knows the job (deleted, or a restart).
    """

    def __init__(
        self,
        message: str = "the job was interrupted",
        *,
        server: str | None = None,
        prompt_id: str | None = None,
        node_id: str | None = None,
        class_type: str | None = None,
        lost: bool = False,
    ) -> None:
        super().__init__(message, server=server, prompt_id=prompt_id)
        self.node_id = node_id
        self.class_type = class_type
        #: True when the server no longer knows the job (deleted, or lost in a restart)
        self.lost = lost


class GenerationTimeout(GenerationError, TimeoutError):
    """The whole-generation deadline passed; the job was interrupted or dequeued first."""

    def __init__(self, *, server: str | None, prompt_id: str | None, timeout: float) -> None:
        super().__init__(
            f"the job did not finish within {timeout:g}s and was cancelled",
            server=server,
            prompt_id=prompt_id,
        )
        self.timeout = timeout


class NoOutputs(GenerationError):
    """The job completed but its history holds no images."""


class CorruptOutput(GenerationError):
    """An output image could not be fetched intact (after re-fetching), or has the wrong size.

    ``reason`` says what was wrong; for a size mismatch ``expected_size`` and ``actual_size``
    are ``(width, height)``.
    """

    def __init__(
        self,
        reason: str,
        *,
        server: str | None,
        prompt_id: str | None,
        node_id: str | None,
        filename: str | None,
        expected_size: tuple[int, int] | None = None,
        actual_size: tuple[int, int] | None = None,
    ) -> None:
        self.node_id = node_id
        self.filename = filename
        self.reason = reason
        self.expected_size = expected_size
        self.actual_size = actual_size
        what = f"{filename} from node {node_id}" if filename else f"the image from node {node_id}"
        super().__init__(
            f"output {what} of job {prompt_id} is unusable: {reason}",
            server=server,
            prompt_id=prompt_id,
        )


class OutputUnusable(ComfyError):
    """The output folder or object store cannot take the outputs: on a full disk,
    read-only, not writable, holding a manifest that is not one, or a store that refuses
    writes. Nothing already made is lost; the message says what to do."""

    def __init__(self, message: str, *, folder: str, reason: str) -> None:
        super().__init__(message)
        self.folder = folder  #: the folder (or store URL) it names
        #: ``full``, ``read-only``, ``not-writable``, ``not-a-manifest``, ``manifest``,
        #: or ``storage``
        self.reason = reason


class EngineError(ComfyError):
    """The local ComfyUI engine could not be installed, started or stopped."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        full = f"{message}\n--- engine log (last lines) ---\n{log_tail}" if log_tail else message
        super().__init__(full)
        self.log_tail = log_tail
