"""How one run of a job on the fleet ended: exactly one of these comes back from
:meth:`comfyfn.fleet.Fleet.run`."""

from __future__ import annotations

from dataclasses import dataclass, field

from comfyfn.errors import ComfyError
from comfyfn.fleet.states import Transition
from comfyfn.result import Generation

__all__ = ["Cancelled", "Done", "Lost", "Moved", "Outcome", "Refused"]


@dataclass(frozen=True)
class Done:
    """The job made its outputs."""

    generation: Generation = field(repr=False)
    server: str
    seconds: float
    transition = Transition.SUCCEED


@dataclass(frozen=True)
class Refused:
    """The job itself failed (invalid graph, a node raised, no outputs): running it again
    elsewhere would fail the same way."""

    error: ComfyError
    server: str
    transition = Transition.FAIL


@dataclass(frozen=True)
class Cancelled:
    """Interrupted on its server (by a cancel, ours or someone else's)."""

    error: ComfyError
    server: str
    transition = Transition.CANCEL


@dataclass(frozen=True)
class Moved:
    """Its server failed or hung under it: run it elsewhere (retries permitting)."""

    error: ComfyError
    server: str
    transition = Transition.MOVE


@dataclass(frozen=True)
class Lost:
    """The server no longer knows the job (removed from its queue, or restarted)."""

    error: ComfyError
    server: str
    transition = Transition.LOSE


Outcome = Done | Refused | Cancelled | Moved | Lost
