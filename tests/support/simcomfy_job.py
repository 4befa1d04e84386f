"""One job on a simulated ComfyUI (tests/support/simcomfy.py): the messages ComfyUI 0.3.75's
PromptExecutor sends, in its order and shape, with sleeps where it would compute."""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
from typing import TYPE_CHECKING, Any

from tests.support.simcomfy_graph import model_inputs, output_size, plan, png, signatures

if TYPE_CHECKING:
    from tests.support.simcomfy import SimServer

__all__ = ["Job"]

#: What ComfyUI reports when loading a damaged model file (seen on the real engine).
_BROKEN = ("safetensors._safetensors_rust.SafetensorError", "Error while deserializing header")


def _steps(node: dict[str, Any]) -> int:
    """A sampler's step count (a positive integer ``steps`` input); 0 for other nodes."""
    steps = node.get("inputs", {}).get("steps")
    return steps if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else 0


class _Stop(Exception):
    """The job ends at this node: interrupted, or an error (``details`` set)."""

    def __init__(self, node_id: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(node_id)
        self.node_id = node_id
        self.details = details


class Job:
    def __init__(
        self,
        server: SimServer,
        prompt_id: str,
        prompt: dict[str, Any],
        outputs: list[str],
        client_id: str | None,
    ) -> None:
        self.server = server
        self.prompt_id = prompt_id
        self.prompt = prompt
        self.outputs = outputs
        self.client_id = client_id
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.progress: dict[str, dict[str, Any]] = {}  #: started nodes' progress, in order
        self.ui: dict[str, dict[str, Any]] = {}
        self.executed: list[str] = []
        self.outcome = "success"
        self.signs: dict[str, str] = {}
        self.charged = any(_steps(node) for node in prompt.values())  #: samplers pay the time
        self.models = frozenset(f for node in prompt.values() for f in model_inputs(node))

    # -- messages ---------------------------------------------------------------------

    def send(self, event: str | int, data: Any) -> None:
        self.server.emit(event, data, self.client_id)

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool = False) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.messages.append((event, data))
        if self.client_id is not None or broadcast:
            self.send(event, data)

    def progress_state(self, node_id: str, value: float, most: float, state: str) -> None:
        self.progress[node_id] = {"value": value, "max": most, "state": state}
        nodes = {
            n: {
                **p,
                "node_id": n,
                "prompt_id": self.prompt_id,
                "display_node_id": n,
                "parent_node_id": None,
                "real_node_id": n,
            }
            for n, p in self.progress.items()
        }
        self.send("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes})

    def finish_progress(self, node_id: str) -> None:
        most = self.progress.get(node_id, {}).get("max", 1.0)
        self.progress_state(node_id, most, most, "finished")

    def status(self) -> dict[str, Any]:
        ok = self.outcome == "success"
        return {
            "status_str": "success" if ok else "error",
            "completed": ok,
            "messages": [[event, data] for event, data in self.messages],
        }

    # -- running ----------------------------------------------------------------------

    async def execute(self) -> dict[str, Any]:
        """Run the job; returns its history result (``outputs`` and ``meta``)."""
        server = self.server
        server.interrupted = False
        server.client_id = self.client_id
        self.add_message("execution_start", {"prompt_id": self.prompt_id})
        signs = self.signs = signatures(self.prompt, self.prompt_id)
        cached = [n for n in self.prompt if signs[n] in server.cache]
        self.add_message("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id})
        cache_before = sorted(server.cache)
        try:
            for node_id in plan(self.prompt, self.outputs, server.info, set(cached)):
                await server.advancing.wait()  # (a test's hold of the running job)
                await self.node(node_id, node_id in cached)
        except _Stop as stop:
            self.stopped(stop, cache_before)
        else:
            self.add_message("execution_success", {"prompt_id": self.prompt_id})
        server.cache = {signs[n] for n in [*cached, *self.executed]}
        server.cached_ui = {k: v for k, v in server.cached_ui.items() if k in server.cache}
        server.last_node_id = None
        meta = {
            n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
            for n in self.ui
        }
        return {"outputs": self.ui, "meta": meta}

    def stopped(self, stop: _Stop, cache_before: list[str]) -> None:
        data = {
            "prompt_id": self.prompt_id,
            "node_id": stop.node_id,
            "node_type": self.prompt[stop.node_id]["class_type"],
            "executed": list(self.executed),
        }
        if stop.details is None:
            self.outcome = "interrupted"
            self.add_message("execution_interrupted", data, broadcast=True)
        else:
            self.outcome = "error"
            data |= {**stop.details, "current_outputs": cache_before}
            self.add_message("execution_error", data)

    def check_interrupt(self, node_id: str) -> None:
        if self.server.interrupted:
            raise _Stop(node_id)

    async def node(self, node_id: str, cached: bool) -> None:
        class_type = self.prompt[node_id]["class_type"]
        if cached:  # only output nodes are staged when cached: their old output is re-sent
            output = self.server.cached_ui.get(self.signs[node_id])
            if self.client_id is not None:
                self.send("executed", self.executed_data(node_id, output))
            if output is not None:
                self.ui[node_id] = output
            self.finish_progress(node_id)
            return
        self.progress_state(node_id, 0.0, 1.0, "running")
        if self.client_id is not None:
            self.server.last_node_id = node_id
            self.send(
                "executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id}
            )
        self.check_interrupt(node_id)
        await self.load(node_id)
        await self.sample(node_id)
        if self.server.info[class_type].get("output_node"):
            await self.output(node_id, class_type)
        self.finish_progress(node_id)
        self.executed.append(node_id)

    def executed_data(self, node_id: str, output: Any) -> dict[str, Any]:
        return {
            "node": node_id,
            "display_node": node_id,
            "output": output,
            "prompt_id": self.prompt_id,
        }

    async def load(self, node_id: str) -> None:
        """A loader: fails on a broken file; pays the load when the model set changed."""
        node = self.prompt[node_id]
        files = model_inputs(node)
        if not files:
            return
        if broken := [f for f in files if f in self.server.settings.broken_models]:
            kind, message = _BROKEN
            raise _Stop(
                node_id,
                {
                    "exception_message": f"{message}: {broken[0]}\n",
                    "exception_type": kind,
                    "traceback": ['  File "simcomfy", line 1, in load\n'],
                    "current_inputs": {k: [v] for k, v in node["inputs"].items()},
                },
            )
        if self.models == self.server.loaded:
            return
        ms = node["inputs"].get("load_milliseconds", self.server.settings.load_ms)
        self.server.loaded = self.models
        self.server.counters.loads += 1
        await asyncio.sleep(float(ms) / 1000)

    def job_ms(self, node_id: str, steps: int) -> float:
        inputs = self.prompt[node_id]["inputs"]
        if self.prompt[node_id]["class_type"] == "ComfyfnSleep":
            return float(inputs.get("milliseconds", 0))
        step_ms = self.server.settings.step_ms
        return step_ms * steps if step_ms is not None else self.server.settings.job_ms

    async def sample(self, node_id: str) -> None:
        """A sampler: its time in ``steps`` parts, a progress message after each."""
        steps = _steps(self.prompt[node_id])
        if not steps:
            return
        pause = self.job_ms(node_id, steps) / 1000 / steps
        for step in range(1, steps + 1):
            self.check_interrupt(node_id)
            await asyncio.sleep(pause)
            self.check_interrupt(node_id)
            self.progress_state(node_id, step, steps, "running")
            progress = {"value": step, "max": steps, "prompt_id": self.prompt_id, "node": node_id}
            self.send("progress", progress)

    async def output(self, node_id: str, class_type: str) -> None:
        server = self.server
        if not self.charged:  # no sampler: the job's time is spent on its first output
            self.charged = True
            await asyncio.sleep(server.settings.job_ms / 1000)
        width, height, batch = output_size(self.prompt, node_id)
        if class_type == "SaveImageWebsocket":
            self.frames(node_id, width, height, batch)
            return
        if class_type not in ("SaveImage", "PreviewImage"):
            return
        inputs = self.prompt[node_id]["inputs"]
        if class_type == "SaveImage":
            kind, prefix = "output", str(inputs.get("filename_prefix", "ComfyUI"))
        else:
            letters = "".join(random.choices(string.ascii_lowercase, k=5))
            kind, prefix = "temp", f"ComfyUI_temp_{letters}"
        subfolder, _, base = prefix.rpartition("/")
        images = []
        for _ in range(batch):
            server.prefix_counters[prefix] += 1
            name = f"{base}_{server.prefix_counters[prefix]:05}_.png"
            server.files[(kind, subfolder, name)] = (width, height)
            images.append({"filename": name, "subfolder": subfolder, "type": kind})
        output = {"images": images}
        self.ui[node_id] = output
        server.cached_ui[self.signs[node_id]] = output
        if self.client_id is not None:
            self.send("executed", self.executed_data(node_id, output))

    def frames(self, node_id: str, width: int, height: int, batch: int) -> None:
        """SaveImageWebsocket: one binary frame per image (with metadata if the client
        asked for it), between progress messages, as ComfyUI's progress hook sends them."""
        image = png(width, height)
        with_meta = self.server.supports_metadata(self.client_id)
        for step in range(batch):
            self.progress_state(node_id, step, batch, "running")
            progress = {"value": step, "max": batch, "prompt_id": self.prompt_id, "node": node_id}
            if with_meta:
                meta = {
                    "node_id": node_id,
                    "prompt_id": self.prompt_id,
                    "display_node_id": node_id,
                    "parent_node_id": None,
                    "real_node_id": node_id,
                    "image_type": "image/png",
                }
                encoded = json.dumps(meta).encode()
                self.send(4, len(encoded).to_bytes(4, "big") + encoded + image)
                self.send("progress", progress)
            else:
                self.send("progress", progress)
                self.send(1, (2).to_bytes(4, "big") + image)
