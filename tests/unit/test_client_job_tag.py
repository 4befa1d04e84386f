"""Per-prompt metadata: every prompt carries its comfyfn job id in ``extra_data["metadata"]``;
where a server echoes it (newer servers put the prompt's metadata in every event that has a
``prompt_id``, as ``data["metadata"]``), a message whose metadata names another job is not
routed to ours. Without the echo, routing is by prompt id alone, as before.

The sessions are the real ComfyUI 0.3.75 recording (tests/fixtures/comfyui/ws_simple_run.json)
with the envelope added the way an echoing server adds it: to a copy of every payload that
has a ``prompt_id`` and no ``metadata`` of its own.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest

from comfyfn.client._job import JobSettings, post_prompt
from comfyfn.client._socket import JOB_TAG, EventSocket
from comfyfn.events import parse_message
from tests.support.fake_comfy import GOOD_PNG, GRAPH, FakeComfy, load_sample

RECORDED = "ws_simple_run.json"


def _recorded_prompt_id() -> str:
    return next(m["data"]["prompt_id"] for m in load_sample(RECORDED) if "prompt_id" in m["data"])


def _echoed(envelope: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The recorded session as a server echoing ``envelope`` sends it (None: as recorded)."""
    messages = []
    for message in copy.deepcopy(load_sample(RECORDED)):
        message.pop("t", None)
        data = message["data"]
        if envelope is not None and "prompt_id" in data and "metadata" not in data:
            message["data"] = {**data, "metadata": envelope}
        messages.append(message)
    return messages


def _routed(messages: list[dict[str, Any]], prompt_id: str) -> tuple[list[Any], EventSocket]:
    socket = EventSocket("ws://127.0.0.1:9/ws")
    queue = socket.subscribe(prompt_id)
    for message in messages:
        socket._route_json(json.dumps(message))
    routed = []
    while not queue.empty():
        routed.append(queue.get_nowait())
    return routed, socket


def _job_messages(routed: list[Any]) -> list[Any]:
    return [m for m in routed if m["type"] != "status"]


@pytest.mark.anyio
async def test_every_prompt_carries_its_job_id_beside_the_other_extra_data():
    fake = FakeComfy()
    prompt_id = str(uuid.uuid4())
    settings = JobSettings(client_id="c", extra_data={"api_key_comfy_org": "k"})
    await post_prompt(fake.session(), GRAPH, prompt_id, settings)
    ((body,),) = [fake.posted("/prompt")]
    assert body["extra_data"] == {"api_key_comfy_org": "k", "metadata": {JOB_TAG: prompt_id}}


def test_an_echoed_session_of_our_job_reaches_it_whole():
    prompt_id = _recorded_prompt_id()
    plain, _ = _routed(_echoed(None), prompt_id)
    echoed, _ = _routed(_echoed({JOB_TAG: prompt_id}), prompt_id)
    assert len(_job_messages(echoed)) == len(_job_messages(plain)) > 3
    types = {"1": "EmptyImage", "2": "SaveImage"}
    assert [parse_message(m, prompt_id, class_types=types) for m in echoed] == [
        parse_message(m, prompt_id, class_types=types) for m in plain
    ]


def test_a_message_whose_metadata_names_another_job_is_not_ours():
    prompt_id = _recorded_prompt_id()
    routed, _ = _routed(_echoed({JOB_TAG: str(uuid.uuid4())}), prompt_id)
    assert _job_messages(routed) == []
    assert [m["type"] for m in routed] == ["status"] * len(routed) != []  # queue news still come


def test_a_node_of_another_job_does_not_take_our_previews():
    """A legacy preview frame names no prompt: it goes to the job whose node runs now."""
    prompt_id = _recorded_prompt_id()
    messages = _echoed({JOB_TAG: str(uuid.uuid4())})
    running = next(i for i, m in enumerate(messages) if m["type"] == "executing")
    assert messages[running]["data"]["node"] is not None
    _, socket = _routed(messages[: running + 1], prompt_id)
    socket._route_frame((1).to_bytes(4, "big") + (2).to_bytes(4, "big") + GOOD_PNG)
    assert socket._subs[prompt_id].empty()


def test_metadata_without_our_tag_routes_by_prompt_id_as_before():
    prompt_id = _recorded_prompt_id()
    plain, _ = _routed(_echoed(None), prompt_id)
    tagged_by_others, _ = _routed(_echoed({"workflow_id": "w-1"}), prompt_id)
    assert len(tagged_by_others) == len(plain)
    assert [m["type"] for m in tagged_by_others] == [m["type"] for m in plain]
