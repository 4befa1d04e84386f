"""``comfyfn batch`` against hostile input and a hostile output folder, with the real engine:
every fault ends in a clear message and the documented exit code, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

import comfyfn
from comfyfn.cli._app import app
from tests.support.blocking import blocked
from tests.support.cli_proc import run_cli, start_cli, stop
from tests.support.graphs import sleep_graph
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.support.queues import take_off

# about the CLI's faults, not the ComfyUI version (each version's cancel route is
# test_current_comfyui's): run once, on the managed engine
pytestmark = [pytest.mark.engine, pytest.mark.one_version]
runner = CliRunner()
HOSTILE = "[/x] [batch, 3]"


def states(out: Path) -> Counter:
    try:
        with sqlite3.connect(out / "manifest.sqlite") as db:
            return Counter(dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")))
    except sqlite3.OperationalError:  # not created yet
        return Counter()


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The process failed with exit 2 and said why in one line, without a traceback."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text, text
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    return line


# -- hostile rows ------------------------------------------------------------------------------


def test_rich_markup_in_rows_is_printed_literally(server, tmp_path):
    src = tmp_path / "rows.csv"
    src.write_text(
        f'prompt,seed,width,"{HOSTILE}"\n"{HOSTILE}",1,1000,\np,"{HOSTILE}",64,\n'
        f'p,1,64,"{HOSTILE}"\n',
        encoding="utf-8",
    )
    result = runner.invoke(app, ["batch", str(src), "-o", str(tmp_path / "out"), "-s", server])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output
    assert "invalid row 1, column 'width': width 1000 is not a multiple of 16" in result.output
    assert f"invalid row 2, column 'seed': '{HOSTILE}' is not an integer" in result.output
    assert f"invalid row 3, column '{HOSTILE}': is not a parameter" in result.output


def test_hostile_rows_are_row_errors_and_the_rest_runs(server, unique, tmp_path):
    base = {"width": 64, "height": 64, "steps": 2}
    rows = [
        {"prompt": "ok", "seed": unique(), "_name": "sub/dir/ok", **base},
        {"prompt": "p", "_name": "../escaped", **base},
        {"prompt": "p", "_name": str(tmp_path / "absolute"), **base},
        {"prompt": "p", "_name": "a\\..\\..\\b", **base},
        {"prompt": "\ud800", **base},
        {"prompt": "p", "note": "n" * 1_000_000, **base},
        {"prompt": "{seed:>999999999}", **base},
    ]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(src), "-o", str(out), "-s", server, "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert (summary["done"], summary["invalid"], summary["failed"]) == (1, 6, 0)
    for n, column in [(2, "_name"), (3, "_name"), (4, "_name"), (5, "prompt"), (6, "note")]:
        assert f"invalid row {n}, column '{column}': " in result.output
    assert "row 7, column 'prompt': bad template: use plain {names}" in result.output
    assert (out / "sub" / "dir" / "ok.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "rows.jsonl"]


def test_billion_laughs_job_file_is_refused_quickly(tmp_path):
    laughs = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    job = tmp_path / "job.yaml"
    job.write_text(laughs + "rows: *i\n", encoding="utf-8")
    started = time.monotonic()
    proc = run_cli("batch", str(job), "-o", str(tmp_path / "out"), "-s", "http://127.0.0.1:9")
    assert time.monotonic() - started < 30  # the interpreter's start-up is most of it
    line = one_error_line(proc)
    assert line == f"error: {job}: line 2: YAML aliases (*a) are not allowed; write the value out"
    assert not (tmp_path / "out").exists()


def test_a_bad_job_file_names_file_and_setting_one_line_each(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("vary: {seed: 4..1}\nprime: -1\nrows: [{prompt: p}]\n", encoding="utf-8")
    proc = run_cli("batch", str(job), "-o", str(tmp_path / "out"), "-s", "http://127.0.0.1:9")
    line = one_error_line(proc)
    assert line == f"error: {job}: vary.seed: the range must go up, at most 100001 values"
    assert f"{job}: prime: must be at least 0, not -1" in proc.stderr.splitlines()
    assert not (tmp_path / "out").exists()


def test_a_bad_template_is_refused_before_anything_runs(tmp_path):
    src = tmp_path / "rows.csv"
    src.write_text("prompt\np\n")
    for template in ("{prompt", "{prompt:>999999999}"):
        args = ["-o", str(tmp_path / "out"), "-s", "http://127.0.0.1:9"]
        proc = run_cli("batch", str(src), "--template", template, *args)
        assert one_error_line(proc).startswith(f"error: --template {template!r}: bad template")


# -- the output folder -------------------------------------------------------------------------


def seed_rows(tmp_path: Path) -> Path:
    src = tmp_path / "rows.csv"
    src.write_text("prompt,width,height,steps\na,64,64,2\nb,64,64,2\n", encoding="utf-8")
    return src


def test_corrupt_manifest_exits_2_naming_the_folder(server, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.sqlite").write_bytes(b"this is not a database, it only has the name" * 100)
    proc = run_cli("batch", str(seed_rows(tmp_path)), "-o", str(out), "-s", server)
    line = one_error_line(proc)
    assert f"the output folder {out} holds a manifest.sqlite that is not a usable" in line, line
    assert "move it away or give another folder with -o" in line
    assert (out / "manifest.sqlite").read_bytes().startswith(b"this is not a database")


def test_read_only_output_folder_exits_2_naming_it(server, tmpfs, tmp_path):
    read_only = tmpfs("ro", "ro,size=64k")
    src = seed_rows(tmp_path)
    for out in (read_only, read_only / "new"):
        line = one_error_line(run_cli("batch", str(src), "-o", str(out), "-s", server))
        assert f"the output folder {out} is read-only (Read-only file system" in line, line


def test_full_output_disk_exits_2_naming_the_folder(server, tmpfs, tmp_path):
    disk = tmpfs("full", "size=64k")
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # fill it to the last block
        with pytest.raises(OSError) as full:
            while True:
                os.write(fd, b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    out = disk / "out"
    line = one_error_line(run_cli("batch", str(seed_rows(tmp_path)), "-o", str(out), "-s", server))
    assert f"the output folder {out} is on a full disk" in line, line
    assert "run the same command again to resume" in line


def test_disk_filling_during_the_run_exits_2_and_the_run_resumes(server, unique, tmpfs, tmp_path):
    disk = tmpfs("small", "size=200k")
    src = tmp_path / "rows.csv"
    rows = 24  # (their images alone need more than the disk: it fills mid-run, not at the report)
    src.write_text(
        "prompt,seed,width,height,steps\n" + "".join(f"p,{unique()},64,64,2\n" for _ in range(rows))
    )
    out = disk / "out"
    line = one_error_line(run_cli("batch", str(src), "-o", str(out), "-s", server))
    assert str(out) in line and ("full disk" in line or "No space left" in line), line
    assert states(out)["done"] < rows
    remount = ["mount", "-o", "remount,size=16m", str(disk)]
    subprocess.run(remount, check=True, capture_output=True)  # space freed
    again = run_cli("batch", str(src), "-o", str(out), "-s", server)
    assert again.returncode == 0, again.stdout + again.stderr
    assert states(out) == Counter({"done": rows})
    assert len(list((out / "images").iterdir())) == rows


# -- signals -----------------------------------------------------------------------------------


def test_sigterm_stops_the_batch_with_exit_130_and_it_resumes(server, unique, tmp_path):
    wf = tmp_path / "sleep.json"
    wf.write_text(json.dumps(sleep_graph(0, milliseconds=800)))
    src = tmp_path / "rows.csv"
    src.write_text("1.color\n" + "".join(f"{unique()}\n" for _ in range(6)))
    out = tmp_path / "out"
    args = ["batch", str(src), "-o", str(out), "-w", str(wf), "-s", server]
    proc = start_cli(*args)
    lines, reader = reading(proc)
    try:
        # rows wait on the server behind a job of its own until the stop is under way, so
        # the SIGTERM always meets a batch with work left, however slow this machine is
        with blocked(server, unique()):
            wait_for(lambda: states(out)["submitted"] >= 1, 60, "a row on the server")
            signal_until_said(proc, lines, signal.SIGTERM, "stopping:")
        proc.wait(timeout=60)
        reader.join(timeout=30)
    finally:
        stop(proc)
    output = "".join(lines)
    assert proc.returncode == 130, output
    assert "stopped before the end" in output, output
    assert "Traceback" not in output
    assert states(out)["done"] < 6
    again = run_cli(*args, "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert states(out) == Counter({"done": 6})


# -- a pool that never answers, and stopping (issue 11, points 1 and 5) -----------------------


class Silent:
    """A server that accepts connections and never answers (a hung server, or a firewall that
    swallows the reply); ``connected`` is set once a client has connected to it."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connected = threading.Event()
        self._held: list[socket.socket] = []  # open, never read from or written to
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                self._held.append(self._listener.accept()[0])
            except OSError:  # closed
                return
            self.connected.set()

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self._listener.close()
        self._accepting.join(timeout=10)
        for held in self._held:
            held.close()


@pytest.fixture
def silent():
    server = Silent()
    yield server
    server.close()


@pytest.fixture
def silent_server(silent: Silent) -> str:
    return silent.url


def test_a_pool_that_never_answers_fails_within_seconds_naming_each_url(tmp_path):
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    started = time.monotonic()
    proc = run_cli(
        "batch", str(seed_rows(tmp_path)), "-o", str(tmp_path / "out"), "-s", urls[0], "-s", urls[1]
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert elapsed < 30, elapsed  # 600 s before issue 11; twice the connect timeout now
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: no ComfyUI server answered in "), line
    for url in urls:
        assert f"{url}: connection refused" in line, line


def test_a_silent_server_fails_after_its_timeouts_naming_it(silent_server, tmp_path):
    started = time.monotonic()
    proc = run_cli(
        "batch",
        str(seed_rows(tmp_path)),
        "-o",
        str(tmp_path / "out"),
        "-s",
        silent_server,
        "--http-timeout",
        "2",
    )
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 40
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert f"{silent_server}: " in line and "ReadTimeout" in line, line


def test_ctrl_c_while_waiting_for_a_server_stops_at_once(silent, tmp_path):
    """The batch connects to the server from inside its run (its Ctrl-C handling in place)
    and waits for an answer that would take 600 s to time out; Ctrl-C ends it well within
    the wait for its exit."""
    args = ["batch", str(seed_rows(tmp_path)), "-o", str(tmp_path / "out"), "-s", silent.url]
    proc = start_cli(*args, "--http-timeout", "600")
    try:
        assert silent.connected.wait(60), "the batch did not connect to the server"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)  # not the 600 s timeout
    finally:
        stop(proc)
    assert proc.returncode == 130, output
    assert "stopping:" in output and "Traceback" not in output


def test_a_second_ctrl_c_stops_at_once_and_the_next_run_resumes(server, unique, tmp_path):
    """Slow (~20 s): jobs of 8 s each; the second Ctrl-C does not wait for them."""
    wf = tmp_path / "sleep.json"
    wf.write_text(json.dumps(sleep_graph(0, milliseconds=8000, steps=40)))
    colors = [unique() for _ in range(3)]
    src = tmp_path / "rows.csv"
    src.write_text("1.color\n" + "".join(f"{c}\n" for c in colors))
    out = tmp_path / "out"
    args = ["batch", str(src), "-o", str(out), "-w", str(wf), "-s", server, "--prime", "1"]
    proc = start_cli(*args)
    lines, reader = reading(proc)
    try:
        wait_for(lambda: states(out)["submitted"] >= 2, 60, "two jobs on the server")
        signal_until_said(proc, lines, signal.SIGINT, "Ctrl-C again")
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        proc.wait(timeout=30)
        reader.join(timeout=30)
    finally:
        stop(proc)
    output = "".join(lines)
    assert time.monotonic() - started < 6, output  # not the 8 s jobs, nor the 10 s timeout
    assert proc.returncode == 130, output
    assert "stopping now: cancelling running jobs" in output
    assert "stopped at once" in output and "Traceback" not in output
    wait_for(lambda: not ours_on(server, colors), 60, "the cancelled jobs to leave the server")
    again = run_cli(*args, "--json", timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert states(out) == Counter({"done": 3})
    with comfyfn.Client(server) as c:
        made = Counter(
            e["prompt"][2].get("1", {}).get("inputs", {}).get("color")
            for e in c.history().values()
            if e["status"]["status_str"] == "success"
        )
    assert all(made[c] == 1 for c in colors), made  # each made once, by the second run


def reading(proc: subprocess.Popen[str]) -> tuple[list[str], threading.Thread]:
    """``proc``'s output lines as they come (read by a thread), for a test to wait on one."""
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True)
    reader.start()
    return lines, reader


def signal_until_said(
    proc: subprocess.Popen[str], lines: list[str], signum: int, text: str
) -> None:
    """Send ``proc`` the signal, then wait (60 s at most) until a line of its output (as
    :func:`reading` collects it) contains ``text``: its answer to the signal."""
    proc.send_signal(signum)
    wait_for(lambda: any(text in line for line in lines), 60, f"{text!r} after the signal")


def ours_on(server: str, colors: list[int]) -> list[str]:
    """Prompt ids of our jobs still queued or running on the server."""
    with comfyfn.Client(server) as c:
        queue = c.queue()
    items = queue["queue_running"] + queue["queue_pending"]
    return [i[1] for i in items if i[2].get("1", {}).get("inputs", {}).get("color") in colors]


def test_a_second_ctrl_c_leaves_none_of_our_jobs_to_run_on_the_server(server, unique, tmp_path):
    """The primed job queued behind the running one is dequeued, the running one
    interrupted: nothing of ours runs to its end after the CLI has exited."""
    wf = tmp_path / "sleep.json"
    # (jobs far longer than the two Ctrl-Cs take, however slow the machine: the first lets
    # the running one go on)
    wf.write_text(json.dumps(sleep_graph(0, milliseconds=60_000, steps=600)))
    colors = [unique() for _ in range(3)]
    src = tmp_path / "rows.csv"
    src.write_text("1.color\n" + "".join(f"{c}\n" for c in colors))
    out = tmp_path / "out"
    args = ["batch", str(src), "-o", str(out), "-w", str(wf), "-s", server, "--prime", "1"]
    proc = start_cli(*args)
    lines, reader = reading(proc)
    try:
        try:
            wait_for(lambda: len(ours_on(server, colors)) >= 2, 60, "a running and a queued job")
            signal_until_said(proc, lines, signal.SIGINT, "Ctrl-C again")
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
            reader.join(timeout=30)
        finally:
            stop(proc)
        output = "".join(lines)
        assert proc.returncode == 130, output
        wait_for(lambda: not ours_on(server, colors), 60, "the cancelled jobs to leave the server")
    finally:  # (a failed cancel must not keep the shared engine busy for minutes)
        take_off(server, ours_on(server, colors))
    with comfyfn.Client(server) as c:
        made = [
            e["prompt"][2]["1"]["inputs"]["color"]
            for e in c.history().values()
            if e["status"]["status_str"] == "success"
            and e["prompt"][2].get("1", {}).get("inputs", {}).get("color") in colors
        ]
    assert made == [], output  # none ran to its end after we left
