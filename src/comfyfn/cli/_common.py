"""What every ``comfyfn`` subcommand shares: consoles, options, errors → exit codes.

Exit codes (as the README documents): 0 ok; 1 the generation or a server failed; 2 a usage
error (a bad option, size, workflow or file); 130 stopped by Ctrl-C or SIGTERM. Whatever a
command raises becomes one sentence on stderr and one of these codes — never a traceback,
unless ``--debug`` (or ``COMFYFN_DEBUG=1``) asks for it.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from comfyfn.client import resolve_server
from comfyfn.engine import Engine
from comfyfn.errors import ComfyError, ConfigError, OutputUnusable, WorkflowInvalid
from comfyfn.workflow import BUILTIN, server_source

DEBUG_ENV = "COMFYFN_DEBUG"
DEBUG = "comfyfn.debug"  #: the key of ``--debug`` in the click context's meta
#: the console width off a terminal: piped output and logs keep whole lines and tables
UNWRAPPED = 10_000


def _console(stream: TextIO, *, stderr: bool) -> Console:
    """A console that wraps only on a terminal: off one (a pipe, a file, CI), lines are never
    cut at 80 columns mid-sentence and tables take their natural width."""
    width = None if stream.isatty() else UNWRAPPED
    return Console(stderr=stderr, emoji=False, soft_wrap=True, width=width)


# Every message may hold user or server text (prompts, file names, URLs, errors): it is put
# in with esc() so rich prints it literally ('[/x]' would crash rich's markup parser, and
# '[batch, 3]' would vanish as an unknown style); emoji=False keeps ':smile:' as typed.
err = _console(sys.stderr, stderr=True)
out = _console(sys.stdout, stderr=False)


def esc(value: object) -> str:
    """``value`` as text that rich prints literally inside a markup string."""
    return escape(str(value))


ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server", "-s", help="ComfyUI URL. Default: $COMFYFN_SERVER, else the local engine."
    ),
]
ServersOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--server",
        "-s",
        help="A ComfyUI URL (repeat for a pool). Default: $COMFYFN_SERVER, else the local engine.",
    ),
]
ComfyOrgKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--comfy-org-key",
        metavar="KEY",
        show_default=False,
        help="Comfy.org API key for partner (paid cloud) nodes. Default: $COMFY_ORG_API_KEY. "
        "Never shown or recorded.",
    ),
]
EngineName = Annotated[
    str, typer.Option("--name", help="Engine instance name.", envvar="COMFYFN_ENGINE")
]


# -- errors → one sentence and an exit code ---------------------------------------------------


def exit_code(exc: BaseException) -> int:
    """2 for what the user can fix in the command (options, files, workflows), else 1."""
    return 2 if isinstance(exc, ConfigError | WorkflowInvalid | OutputUnusable | OSError) else 1


def sentence(exc: BaseException) -> str:
    """``exc`` as the one sentence the command prints."""
    if isinstance(exc, ComfyError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        if exc.filename is None:
            return exc.strerror
        return f"{os.fsdecode(exc.filename)}: {exc.strerror}"
    return (
        f"unexpected {type(exc).__name__}: {exc} (a bug in comfyfn: please report it with "
        "the output of the same command with --debug)"
    )


def fail(exc: BaseException) -> typer.Exit:
    """Print ``exc`` as one sentence; the :class:`typer.Exit` with its exit code."""
    err.print(f"[red]error:[/red] {esc(sentence(exc))}", highlight=False)
    return typer.Exit(exit_code(exc))


class Commands(TyperGroup):
    """The ``comfyfn`` group: an error escaping any command becomes :func:`fail`'s sentence
    and exit code; Ctrl-C (or SIGTERM, see :func:`sigterm_as_ctrl_c`) exits 130 saying so.
    With ``--debug`` the error is raised as it is, with its traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except Exception as exc:
            # click's own errors (bad options: typer prints them with usage) carry exit_code
            if hasattr(exc, "exit_code") or ctx.meta.get(DEBUG):
                raise
            raise fail(exc) from None


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (CI, systemd, containers) does what Ctrl-C does, for the duration."""
    if sys.platform == "win32":
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def warnings_once() -> Iterator[None]:
    """Print each distinct warning once, as ``warning: …`` (a batch binds every row, and
    would otherwise say the same thing for each)."""
    seen: set[str] = set()

    def show(message: Warning | str, *_args: object, **_kwargs: object) -> None:
        text = str(message)
        if text not in seen:
            seen.add(text)
            err.print(f"[yellow]warning:[/yellow] {esc(text)}", highlight=False)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


# -- servers and workflows --------------------------------------------------------------------


def server_url(server: str | None) -> str:
    """Resolve the server; with none given, install and start the local engine if needed."""
    try:
        return resolve_server(server)
    except ConfigError:
        if server or os.environ.get("COMFYFN_SERVER"):
            raise
    engine = Engine(os.environ.get("COMFYFN_ENGINE", "default"))
    err.print("no server given: using the local engine (first run installs it, ~1-2 min)")
    return engine.up(report=report).url


def report(message: object) -> None:
    """Progress messages of the engine (they name paths and URLs)."""
    err.print(esc(message), highlight=False)


def workflow_source(value: str) -> str:
    """``value`` if it is a built-in workflow name, a server's (``blueprint:NAME``,
    ``template:NAME``: loaded through the server) or an existing file; a name that is none
    of these is a usage error listing the built-in names (with the nearest one first)."""
    if value in BUILTIN or server_source(value) or Path(value).expanduser().exists():
        return value
    if Path(value).suffix.lower() in (".json", ".png") or os.sep in value:
        raise ConfigError(f"workflow file {value}: no such file")
    names = sorted(BUILTIN)
    near = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise ConfigError(
        f"unknown workflow {value!r}: not a built-in name nor a file; {hint}"
        f"built-in: {', '.join(names)}"
    )
