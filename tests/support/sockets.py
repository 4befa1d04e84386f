"""Stand-ins for the client's event websocket (its ``EventSocket``, swapped in through the
private ``AsyncClient._socket_class`` seam): one that never connects, so jobs are followed by
polling, and one that replays the messages a real ComfyUI 0.3.75 sent
(tests/fixtures/comfyui/``ws_*.json``), re-keyed to a job."""

from __future__ import annotations

import json

from comfyfn.client._socket import LOST, EventSocket
from tests.support.fake_comfy import FIXTURES, load_sample

FRAME = (FIXTURES / "ws_binary_frame_0.bin").read_bytes()  # a legacy SaveImageWebsocket frame


class NoSocket(EventSocket):
    """The websocket cannot connect: jobs are followed by polling."""

    async def ensure(self) -> bool:
        return False


class ReplaySocket(EventSocket):
    """A websocket that is always up and says what it is told: recorded messages."""

    async def ensure(self) -> bool:
        return True

    def say(self, recording: str, prompt_id: str, *, until: str | None = None) -> None:
        """Route the recorded messages (up to the first of type ``until``) as if received."""
        messages = load_sample(recording)
        recorded_id = next(m["data"]["prompt_id"] for m in messages if "execution_start" in str(m))
        for message in messages:
            if "binary" in message:
                self._route_frame(FRAME)
                continue
            if message["type"] == until:
                return
            raw = json.dumps({"type": message["type"], "data": message["data"]})
            self._route_json(raw.replace(recorded_id, prompt_id))

    def lose(self) -> None:
        """The connection drops: every job falls back to polling."""
        for queue in self._subs.values():
            queue.put_nowait(LOST)
