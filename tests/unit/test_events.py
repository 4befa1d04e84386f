"""Parsing real ComfyUI websocket messages and history entries into typed events."""

from __future__ import annotations

import json
import struct

import pytest

from comfyfn.errors import ExecutionFailed, Interrupted
from comfyfn.events import (
    Done,
    Failed,
    NodeCached,
    NodeFinished,
    NodeStarted,
    Progress,
    Started,
    Stopped,
    events_from_history,
    parse_binary_frame,
    parse_message,
)


def _prompt_id(messages):
    return next(m["data"]["prompt_id"] for m in messages if m["type"] == "execution_start")


def _events(messages, **kw):
    pid = _prompt_id(messages)
    return [ev for m in messages for ev in parse_message(m, pid, **kw)]


def test_simple_run_sequence(sample):
    messages = sample("ws_simple_run.json")
    events = _events(messages, class_types={"1": "EmptyImage", "2": "SaveImage"})
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Started", "NodeStarted", "NodeStarted", "NodeFinished", "Done"]
    finished = events[3]
    assert isinstance(finished, NodeFinished)
    assert finished.class_type == "SaveImage"
    assert finished.output["images"][0]["filename"] == "t_00001_.png"
    assert events[1] == NodeStarted(events[0].prompt_id, "1", "EmptyImage")


def test_other_prompts_and_status_messages_give_nothing(sample):
    messages = sample("ws_simple_run.json")
    assert [ev for m in messages for ev in parse_message(m, "someone-else")] == []
    status = {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}}
    assert parse_message(status, "x") == []


def test_progress_is_typed_with_fraction():
    msg = {"type": "progress", "data": {"value": 3, "max": 8, "prompt_id": "p", "node": "8"}}
    (ev,) = parse_message(msg, "p", class_types={"8": "KSampler"})
    assert ev == Progress("p", "8", 3, 8, "KSampler")
    assert ev.fraction == pytest.approx(0.375)


def test_execution_error_becomes_execution_failed(sample):
    messages = sample("ws_execution_error.json")
    events = _events(messages, server="http://s")
    failed = [e for e in events if isinstance(e, Failed)]
    assert len(failed) == 1
    error = failed[0].error
    assert isinstance(error, ExecutionFailed)
    assert (error.node_id, error.class_type) == ("1", "VAELoader")
    assert error.exception_type.endswith("SafetensorError")
    assert "header too large" in error.exception_message
    assert error.traceback and error.server == "http://s"
    assert str(error).startswith("node 1 VAELoader failed: ")


def test_interrupt_message(sample):
    events = _events(sample("ws_interrupted.json"))
    stopped = [e for e in events if isinstance(e, Stopped)]
    assert len(stopped) == 1
    assert isinstance(stopped[0].error, Interrupted) and not stopped[0].error.lost
    assert stopped[0].error.class_type == "ImageBlur"
    assert str(stopped[0].error) == "the job was interrupted at node 11 ImageBlur"


def test_cached_run_reports_cached_nodes(sample):
    events = _events(sample("ws_cached_run.json"))
    cached = [e for e in events if isinstance(e, NodeCached)]
    assert cached and cached[0].node_ids == ("1", "2")


@pytest.mark.parametrize(
    ("name", "terminal"),
    [
        ("history_ok.json", Done),
        ("history_cached.json", Done),
        ("history_interrupted.json", Stopped),
        ("history_execution_error.json", Failed),
    ],
)
def test_history_replay_ends_in_the_right_terminal(sample, name, terminal):
    body = sample(name)
    ((pid, entry),) = body.items()
    events = events_from_history(entry, pid)
    assert isinstance(events[0], Started)
    assert isinstance(events[-1], terminal)
    outputs = [e for e in events if isinstance(e, NodeFinished)]
    assert len(outputs) == len(entry["outputs"])


def test_history_replay_of_unfinished_entry_has_no_done():
    entry = {
        "status": {"completed": False, "messages": [["execution_start", {"timestamp": 1}]]},
        "outputs": {},
    }
    events = events_from_history(entry, "p")
    assert not any(isinstance(e, Done) for e in events)


def test_legacy_binary_frame(sample):
    frame = parse_binary_frame(sample("ws_binary_frame_0.bin"))
    assert frame is not None
    assert frame.image_type == "image/png"
    assert frame.data == sample("ws_binary_frame_0.png")
    assert frame.prompt_id is None


def test_metadata_binary_frame(sample):
    meta = sample("ws_binary_type4.json")[0]["metadata"]
    png = sample("ws_binary_frame_0.png")
    raw_meta = json.dumps(meta).encode()
    frame = parse_binary_frame(struct.pack(">II", 4, len(raw_meta)) + raw_meta + png)
    assert frame is not None
    assert (frame.node_id, frame.prompt_id) == ("2", meta["prompt_id"])
    assert frame.data == png


def test_non_image_binary_frames_are_ignored():
    assert parse_binary_frame(struct.pack(">II", 3, 1) + b"9hello") is None
    assert parse_binary_frame(b"\x00") is None


def test_events_are_frozen():
    ev = Started("p")
    with pytest.raises(AttributeError):
        ev.prompt_id = "q"  # type: ignore[misc]
