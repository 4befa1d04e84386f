"""One running local ComfyUI: start on a free port, wait until ready, stop by pid.

An instance keeps its state in ``<home>/instances/<name>/``: ``state.json`` (pid, port,
url...), ``server.log``, and a ComfyUI base directory (input, output, temp, user, models,
custom_nodes), so the ComfyUI source itself is only read. ``up`` is idempotent, ignores a
stale state file whose pid is gone, and restarts a running instance that was started with
other settings than those asked for (saying which).
"""

from __future__ import annotations

import contextlib
import enum
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
from comfyfn.engine._device import Device, device_args, probe_accelerator
from comfyfn.engine.install import EngineInstall, assets, models_yaml, standin_dir
from comfyfn.errors import ConfigError, EngineError

__all__ = ["Engine", "EngineState", "PreviewMethod"]


class PreviewMethod(enum.StrEnum):
    """ComfyUI's ``--preview-method``: how samplers make the previews sent while they run
    (``none``: no previews, ComfyUI's default). ComfyUI 0.3.75 and 0.28 both take these."""

    none = "none"
    auto = "auto"
    latent2rgb = "latent2rgb"
    taesd = "taesd"


_READY_TIMEOUT = 180.0
_FRONTEND = "comfyui_frontend_package"


@dataclass(frozen=True)
class EngineState:
    pid: int
    port: int
    url: str
    log: str
    comfyui: str
    models_dir: str
    started_at: float
    device: str = Device.cpu.value  # as asked: cpu, cuda or auto
    python: str = ""
    preview_method: str = PreviewMethod.none.value


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


def _missing_modules(python: Path, names: set[str]) -> set[str]:
    """Which of ``names`` the interpreter ``python`` cannot import."""
    code = (
        "import importlib.util as u, sys; print(*[n for n in sys.argv[1:] if not u.find_spec(n)])"
    )
    try:
        probe = subprocess.run(
            [str(python), "-c", code, *sorted(names)], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"cannot run the engine's Python {python}: {exc}") from exc
    return set(probe.stdout.split()) if probe.returncode == 0 else set(names)


def _is_ours(pid: int, port: int) -> bool:
    """The pid is still a ComfyUI main.py on our port (pids get reused)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return _pid_alive(pid)
    args = cmdline.read_bytes().split(b"\0")
    return b"main.py" in args and str(port).encode() in args


def _preview_method(value: PreviewMethod | str | None) -> PreviewMethod | None:
    """``value`` as a preview method, or a :class:`ConfigError` naming the choices."""
    if value is None:
        return None
    try:
        return PreviewMethod(value)
    except ValueError:
        choices = ", ".join(m.value for m in PreviewMethod)
        raise ConfigError(f"--preview-method {value!r}: choose one of {choices}") from None


def _existing_dir(path: str | Path, option: str) -> Path:
    where = Path(path).expanduser()
    if not where.is_dir():
        raise ConfigError(
            f"{option} {where}: {'not a directory' if where.exists() else 'no such directory'}"
        )
    return where.resolve()


class Engine:
    """A named local ComfyUI instance.

    Args:
        name: instance name; several can run side by side (each on its own port).
        install: the install to run (default: the managed ComfyUI 0.3.75).
        comfyui_path: run this ComfyUI source tree instead (checked now: a
            :class:`ConfigError` if it is not one); its venv is built on first use.
        models_dir: a models folder with real weights (``diffusion_models/``,
            ``text_encoders/``, ``vae/``) instead of the generated tiny ones (checked now).
        python: an interpreter with torch for the ComfyUI (default: the tree's own
            ``venv``/``.venv``, else the venv comfyfn builds).
        device: ``cpu``, ``cuda`` or ``auto`` (GPU if the interpreter's torch sees one).
            Default: ``auto`` for a source tree, ``cpu`` for the managed engine.
        preview_method: ComfyUI's ``--preview-method`` (default ``none``: no previews), so
            clients get ``Preview`` events while samplers run.

    Settings given here are compared with a running instance's: ``up`` restarts it if
    one differs. Settings left out accept whatever the running instance has.
    """

    def __init__(
        self,
        name: str = "default",
        *,
        install: EngineInstall | None = None,
        comfyui_path: str | Path | None = None,
        models_dir: str | Path | None = None,
        python: str | Path | None = None,
        device: Device | str | None = None,
        preview_method: PreviewMethod | str | None = None,
    ) -> None:
        self.name = name
        base = install or EngineInstall.default()
        if comfyui_path is not None or python is not None:
            base = base.for_tree(comfyui_path, python=python)
        self.install = base
        self.models_dir = _existing_dir(models_dir, "--models-dir") if models_dir else None
        self.device = Device.parse(device) if device is not None else None
        self.preview_method = _preview_method(preview_method)
        self._asked_source = install is not None or comfyui_path is not None
        self._asked_python = python is not None
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

    def differences(self, state: EngineState, port: int | None = None) -> list[str]:
        """How the running ``state`` differs from the settings asked for, one phrase each."""
        asked: list[tuple[str, str, str | None]] = [
            ("ComfyUI", state.comfyui, str(self.install.comfyui) if self._asked_source else None),
            ("--models-dir", state.models_dir, str(self.models_dir) if self.models_dir else None),
            ("--device", state.device, self.device.value if self.device else None),
            ("--python", state.python, str(self.install.python) if self._asked_python else None),
            ("--port", str(state.port), str(port) if port else None),
            (
                "--preview-method",
                state.preview_method,
                self.preview_method.value if self.preview_method else None,
            ),
        ]
        return [
            f"{what} {running} (asked: {wanted})"
            for what, running, wanted in asked
            if wanted is not None and wanted != running
        ]

    def up(
        self, *, port: int | None = None, report: Callable[[str], None] = lambda _msg: None
    ) -> EngineState:
        """Install what is missing, start the server and wait until it answers.

        A running instance is kept as it is, unless it was started with settings that
        differ from those given: then it is stopped and started anew (``report`` says why)
        once the new one is installed and its device decided.
        """
        running = self.state()
        changed = self.differences(running, port) if running else []
        if running is not None and not changed:
            return running
        self.install.install(report, weights=self.models_dir is None)
        port = port or _free_port()
        cmd, env, device = self._command(port)
        if running is not None:
            report(f"engine {self.name!r} is running with {'; '.join(changed)}: restarting it")
            self.down()
        self._prepare_base()
        on = "cpu" if "--cpu" in cmd else "GPU"
        report(f"engine: starting ComfyUI {self.install.version} on 127.0.0.1:{port} ({on})")
        return self._start(cmd, env, port, device)

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
                device=state.device,
                python=state.python,
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

    def _command(self, port: int) -> tuple[list[str], dict[str, str], Device]:
        """ComfyUI's command line and environment, and the device asked for."""
        python = self.install.python
        device = self.device or (Device.auto if self.install.tree else Device.cpu)
        accelerator = None if device is Device.cpu else probe_accelerator(python)
        cmd = [str(python), "main.py", *device_args(device, accelerator, python)]
        cmd += self._server_args(port)
        env = dict(os.environ)
        missing = _missing_modules(python, {*self.install.standins, _FRONTEND})
        if _FRONTEND in missing:
            cmd += ["--front-end-root", str(self.install.empty_frontend)]
        if standins := tuple(sorted(missing - {_FRONTEND})):
            paths = [str(standin_dir(self.install.home, standins)), env.get("PYTHONPATH", "")]
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        return cmd, env, device

    def _server_args(self, port: int) -> list[str]:
        return [
            *("--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch"),
            *("--base-directory", str(self.base)),
            *("--database-url", f"sqlite:///{self.base / 'user' / 'comfyui.db'}"),
            *("--extra-model-paths-config", str(self.dir / "models.yaml")),
            *("--preview-method", (self.preview_method or PreviewMethod.none).value),
        ]

    def _prepare_base(self) -> None:
        """The instance's folders; ``custom_nodes`` holds exactly comfyfn's plugins."""
        self.dir.mkdir(parents=True, exist_ok=True)
        custom_nodes = self.install.comfyui / "custom_nodes"
        write_atomic(self.dir / "models.yaml", models_yaml(self._models(), custom_nodes))
        for sub in ("input", "output", "temp", "user", "models"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        ours = self.base / "custom_nodes"
        shutil.rmtree(ours, ignore_errors=True)
        ours.mkdir()
        for plugin in (assets() / "custom_nodes").glob("*.py"):
            shutil.copy2(plugin, ours / plugin.name)

    def _start(self, cmd: list[str], env: dict[str, str], port: int, device: Device) -> EngineState:
        with open(self.log_file, "ab") as log:
            log.write(f"\n=== comfyfn engine up {time.ctime()} port {port} ===\n".encode())
            log.flush()
            proc = subprocess.Popen(
                cmd,
                cwd=self.install.comfyui,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        state = EngineState(
            pid=proc.pid,
            port=port,
            url=f"http://127.0.0.1:{port}",
            log=str(self.log_file),
            comfyui=str(self.install.comfyui),
            models_dir=str(self._models()),
            started_at=time.time(),
            device=device.value,
            python=cmd[0],
            preview_method=(self.preview_method or PreviewMethod.none).value,
        )
        try:
            self._wait_ready(proc, state)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        write_atomic(self.state_file, json.dumps(asdict(state), indent=1))
        return state

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
