"""One running local ComfyUI: start on a free port, wait until ready, stop by pid.

An instance keeps its state in ``<home>/instances/<name>/``: ``state.json`` (pid, port,
url...), ``server.log``, and a ComfyUI base directory (input, output, temp, user, models,
custom_nodes). ``up`` is idempotent and ignores a stale state file whose pid is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from comfyfn._files import write_atomic
from comfyfn.engine.install import EngineInstall, assets, models_yaml
from comfyfn.errors import EngineError

__all__ = ["Engine", "EngineState"]

_READY_TIMEOUT = 180.0


@dataclass(frozen=True)
class EngineState:
    pid: int
    port: int
    url: str
    log: str
    comfyui: str
    models_dir: str
    started_at: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _gone(pid: int) -> bool:
    """The process has fully exited (all threads); reaps it if it is our child."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        return reaped == pid
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _missing_modules(python: str, names: set[str]) -> set[str]:
    """Which of ``names`` the interpreter ``python`` cannot import."""
    code = (
        "import importlib.util as u, sys; print(*[n for n in sys.argv[1:] if not u.find_spec(n)])"
    )
    probe = subprocess.run([python, "-c", code, *sorted(names)], capture_output=True, text=True)
    return set(probe.stdout.split()) if probe.returncode == 0 else set(names)


def _is_ours(pid: int, port: int) -> bool:
    """The pid is still a ComfyUI main.py on our port (pids get reused)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return _pid_alive(pid)
    args = cmdline.read_bytes().split(b"\0")
    return b"main.py" in args and str(port).encode() in args


class Engine:
    """A named local ComfyUI instance.

    Args:
        name: instance name; several can run side by side (each on its own port).
        comfyui_path: use an existing ComfyUI checkout instead of the managed one.
        models_dir: a models folder with real weights (``diffusion_models/``,
            ``text_encoders/``, ``vae/``) instead of the generated tiny ones.
        python: interpreter for ``comfyui_path`` (default: its ``venv``/``.venv``).
    """

    def __init__(
        self,
        name: str = "default",
        *,
        install: EngineInstall | None = None,
        comfyui_path: str | Path | None = None,
        models_dir: str | Path | None = None,
        python: str | Path | None = None,
    ) -> None:
        self.name = name
        self.install = install or EngineInstall.default()
        self.comfyui_path = Path(comfyui_path).resolve() if comfyui_path else None
        self.models_dir = Path(models_dir).resolve() if models_dir else None
        self._python = Path(python) if python else None
        self.dir = self.install.home / "instances" / name

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def log_file(self) -> Path:
        return self.dir / "server.log"

    @property
    def base(self) -> Path:
        """ComfyUI's base directory for this instance (input, output, models...)."""
        return self.dir / "base"

    def state(self) -> EngineState | None:
        """The running instance's state, or None (a stale state file is removed)."""
        try:
            state = EngineState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if _pid_alive(state.pid) and _is_ours(state.pid, state.port):
            return state
        self.state_file.unlink(missing_ok=True)
        return None

    @property
    def url(self) -> str | None:
        state = self.state()
        return state.url if state else None

    def up(
        self, *, port: int | None = None, report: Callable[[str], None] = lambda _msg: None
    ) -> EngineState:
        """Install what is missing, start the server and wait until it answers."""
        if (state := self.state()) is not None:
            return state
        if self.comfyui_path is None:
            self.install.install(report)
        comfyui = self.comfyui_path or self.install.comfyui
        self._prepare_base()
        port = port or _free_port()
        cmd = [
            str(self._interpreter()),
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
            "--disable-auto-launch",
            "--extra-model-paths-config",
            str(self.dir / "models.yaml"),
        ]
        env = dict(os.environ)
        missing = {"torchvision", "comfyui_frontend_package"}
        if self.comfyui_path is None:
            cmd += ["--base-directory", str(self.base)]
            cmd += ["--database-url", f"sqlite:///{self.base / 'user' / 'comfyui.db'}"]
        else:  # a user's ComfyUI: only stand in for what its interpreter lacks
            missing = _missing_modules(cmd[0], missing)
        if "comfyui_frontend_package" in missing:
            cmd += ["--front-end-root", str(self.install.empty_frontend)]
        if "torchvision" in missing:
            env["PYTHONPATH"] = str(self.install.stubs)
        report(f"engine: starting ComfyUI on 127.0.0.1:{port}")
        with open(self.log_file, "ab") as log:
            log.write(f"\n=== comfyfn engine up {time.ctime()} port {port} ===\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=comfyui,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        state = EngineState(
            proc.pid,
            port,
            f"http://127.0.0.1:{port}",
            str(self.log_file),
            str(comfyui),
            str(self._models()),
            time.time(),
        )
        try:
            self._wait_ready(proc, state)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        write_atomic(self.state_file, json.dumps(asdict(state), indent=1))
        return state

    def down(self, timeout: float = 15.0) -> bool:
        """Stop the server by its pid; True if one was running."""
        state = self.state()
        if state is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while not _gone(state.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _gone(state.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(state.pid, signal.SIGKILL)
            while not _gone(state.pid):
                time.sleep(0.05)
        self.state_file.unlink(missing_ok=True)
        return True

    def status(self) -> dict[str, object]:
        """What ``comfyfn engine status`` prints: url, pid, ComfyUI version, paths."""
        state = self.state()
        info: dict[str, object] = {
            "name": self.name,
            "running": state is not None,
            "installed": self.install.is_installed(),
        }
        if state is not None:
            info.update(
                url=state.url,
                pid=state.pid,
                port=state.port,
                log=state.log,
                comfyui=state.comfyui,
                models_dir=state.models_dir,
            )
            try:
                stats = httpx.get(f"{state.url}/system_stats", timeout=5).json()
                info["comfyui_version"] = stats["system"]["comfyui_version"]
            except (httpx.HTTPError, KeyError, ValueError):
                info["comfyui_version"] = None
        return info

    def log_tail(self, lines: int = 50) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- internals -------------------------------------------------------------------------

    def _models(self) -> Path:
        return self.models_dir or self.install.tiny_models

    def _interpreter(self) -> Path:
        if self._python:
            return self._python
        if self.comfyui_path:
            for cand in ("venv", ".venv"):
                if (self.comfyui_path / cand / "bin" / "python").exists():
                    return self.comfyui_path / cand / "bin" / "python"
            self.install.install()
        return self.install.python

    def _prepare_base(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "models.yaml").write_text(models_yaml(self._models()))
        if self.comfyui_path is not None:
            return
        for sub in ("input", "output", "temp", "user", "models", "custom_nodes"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        nodes = self.base / "custom_nodes"
        shutil.copy2(self.install.comfyui / "custom_nodes" / "websocket_image_save.py", nodes)
        for plugin in (assets() / "custom_nodes").glob("*.py"):
            shutil.copy2(plugin, nodes / plugin.name)

    def _wait_ready(self, proc: subprocess.Popen[bytes], state: EngineState) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EngineError(
                    f"ComfyUI exited with code {proc.returncode} while starting",
                    log_tail=self.log_tail(40),
                )
            try:
                if httpx.get(f"{state.url}/system_stats", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise EngineError(
            f"ComfyUI did not answer within {_READY_TIMEOUT:g}s", log_tail=self.log_tail(40)
        )
