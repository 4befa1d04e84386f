"""``comfyfn models pull`` against a hostile or broken hub (issue 16): manifest headers never
reach another origin, a redirect loop and a stalled transfer are errors naming the URL, a
header value with a line break is a manifest error, no lock file is left behind, and a file
nothing is published for is not called verified."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from comfyfn.cli._app import app
from comfyfn.errors import ConfigError
from comfyfn.models import DownloadFailed, _download, load_manifest, pull, pull_file
from tests.support.modelserver import BODY, SHA, ModelServer, entry, leftovers
from tests.support.polling import wait_for

runner = CliRunner()
SECRET = {"TOKEN": "s3cret"}
PRIVATE = {"X-Api-Key": "${TOKEN}", "Authorization": "Bearer ${TOKEN}"}


@pytest.fixture
def server() -> Iterator[ModelServer]:
    srv = ModelServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def cdn() -> Iterator[ModelServer]:
    """A second origin (another port on loopback)."""
    srv = ModelServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits before retries, recorded instead of slept (the clock is left alone)."""
    waits: list[float] = []
    fake = SimpleNamespace(sleep=waits.append, monotonic=time.monotonic)
    monkeypatch.setattr(_download, "time", fake)
    return waits


# -- 1. manifest headers go to the manifest URL's origin only ---------------------------------


def test_manifest_headers_are_not_sent_to_another_origin_after_a_redirect(server, cdn, tmp_path):
    server.redirects = {"/redirect": cdn.url()}
    private = entry(server, url=server.url("/redirect"), headers=PRIVATE)
    pulled = pull_file(private, tmp_path, environ=SECRET)
    assert pulled.sha256 == SHA and server.paths == ["/redirect"] and len(cdn.requests) == 1
    assert server.requests[0]["x-api-key"] == "s3cret"
    assert server.requests[0]["authorization"] == "Bearer s3cret"
    assert "x-api-key" not in cdn.requests[0] and "authorization" not in cdn.requests[0]
    assert cdn.requests[0]["accept-encoding"] == "identity"  # comfyfn's own headers still go


def test_manifest_headers_follow_a_redirect_within_the_origin(server, cdn, tmp_path):
    cdn.redirects = {"/away": server.url("/redirect")}  # away and back: the origin's again
    private = entry(server, url=server.url("/redirect"), headers=PRIVATE)
    pull_file(private, tmp_path, environ=SECRET)
    assert server.paths == ["/redirect", "/model.safetensors"]
    assert [r["x-api-key"] for r in server.requests] == ["s3cret", "s3cret"]


def test_a_resumed_transfer_after_a_redirect_keeps_its_range(server, cdn, tmp_path, backoff):
    server.redirects = {"/redirect": cdn.url()}
    cdn.cut_after = [1_000_000]
    pull_file(entry(server, url=server.url("/redirect")), tmp_path, retries=1)
    assert cdn.requests[1]["range"] == "bytes=1000000-"
    assert (tmp_path / "checkpoints" / "tiny.safetensors").read_bytes() == BODY


# -- 2. a redirect loop ---------------------------------------------------------------------------


def test_a_redirect_loop_is_an_error_naming_the_url(server, tmp_path):
    server.redirects = {"/loop": "/loop"}
    looping = entry(server, url=server.url("/loop"))
    with pytest.raises(DownloadFailed, match=r"/loop redirects more than 20 times") as caught:
        pull_file(looping, tmp_path)
    assert caught.value.url == looping.url
    assert len(server.requests) == 21  # not retried: a loop does not mend itself
    assert leftovers(tmp_path) == []


def test_the_cli_reports_a_redirect_loop_as_one_sentence(server, tmp_path):
    server.redirects = {"/loop": "/loop"}
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"- name: tiny.safetensors\n  folder: checkpoints\n  url: {server.url('/loop')}\n"
        f"  sha256: {SHA}\n"
    )
    result = runner.invoke(app, ["models", "pull", str(manifest), "--models-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "redirects more than 20 times" in result.output
    assert "bug" not in result.output and "Traceback" not in result.output


# -- 3. a header value with a line break ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "environ", "named"),
    [
        ("k\r\nX-Forged: 1", {}, r"header X-Api-Key: .*line break"),
        ("${TOKEN}", {"TOKEN": "k\nX-Forged: 1"}, r"header X-Api-Key \(filled from \$\{TOKEN\}\)"),
        ("clé", {}, r"header X-Api-Key: .*'\\xe9'"),
    ],
)
def test_a_header_value_that_cannot_be_sent_is_refused_before_any_request(
    server, tmp_path, backoff, value, environ, named
):
    bad = entry(server, headers={"X-Api-Key": value})
    with pytest.raises(ConfigError, match=rf"checkpoints/tiny.safetensors: {named}") as caught:
        pull_file(bad, tmp_path, environ=environ, retries=2)
    assert "X-Forged" not in str(caught.value)  # (nor any secret: the value is not shown)
    assert server.requests == [] and backoff == []


def test_every_entrys_headers_are_checked_before_the_first_download(server, tmp_path):
    files = [entry(server), entry(server, name="b.safetensors", headers={"K": "${UNSET}"})]
    with pytest.raises(ConfigError, match=r"b.safetensors: .*\$\{UNSET\}"):
        pull(files, tmp_path, environ={})
    assert server.requests == []


def test_a_manifest_file_with_a_line_break_in_a_header_names_the_entry(tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "- name: a.safetensors\n  folder: checkpoints\n  url: http://127.0.0.1:9/a\n"
        '  headers:\n    X-Api-Key: "k\\r\\nX-Forged: 1"\n'
    )
    with pytest.raises(ConfigError, match=r"m.yaml: models\[0\].headers: X-Api-Key: .*line"):
        load_manifest(manifest)


# -- 4. the lock file -----------------------------------------------------------------------------


def test_a_failed_pull_leaves_its_part_but_no_lock(server, tmp_path):
    server.cut_after = [700_000]
    with pytest.raises(DownloadFailed, match="pull again"):
        pull_file(entry(server), tmp_path, retries=0)
    assert leftovers(tmp_path) == [".tiny.safetensors.part"]


def test_a_lock_left_by_a_killed_pull_does_not_block_the_next(server, tmp_path):
    """The kernel drops a dead process's flock: a lock file it left is free to take."""
    lock = tmp_path / "checkpoints" / ".tiny.safetensors.lock"
    lock.parent.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert lock.exists()
    assert pull_file(entry(server), tmp_path).action == "downloaded"
    assert leftovers(tmp_path) == ["tiny.safetensors"]


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(600)
"""


def test_a_waiting_pull_takes_the_lock_file_that_is_there_not_the_removed_one(tmp_path, caplog):
    """The holder removes the lock file as it leaves; the pull that waited on it must then
    hold the lock under that name, or a third pull could take it at the same time."""
    target = tmp_path / "checkpoints" / "tiny.safetensors"
    target.parent.mkdir()
    lock = target.with_name(".tiny.safetensors.lock")
    file = SimpleNamespace(relpath="checkpoints/tiny.safetensors")
    inside, leave = threading.Event(), threading.Event()

    def waiter() -> None:
        with _download._locked(target, file):  # type: ignore[arg-type]
            inside.set()
            leave.wait(60)

    caplog.set_level(logging.INFO, "comfyfn.models")
    with _download._locked(target, file):  # type: ignore[arg-type]
        thread = threading.Thread(target=waiter)
        thread.start()
        wait_for(lambda: "waiting for it" in caplog.text, 30, "the second pull waits")
    try:
        wait_for(inside.is_set, 30, "the waiting pull takes the lock")
        fd = os.open(lock, os.O_RDWR)  # the lock file under its name now is held
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        leave.set()
        thread.join(timeout=30)
    assert not lock.exists()


# -- 5. a stalled transfer ------------------------------------------------------------------------


def test_a_trickling_server_fails_as_stalled_naming_the_url(server, tmp_path):
    server.block, server.slow = 1, 0.01  # at most 100 bytes/s
    with pytest.raises(DownloadFailed, match=r"from http://127.0.0.1:\d+/model.safetensors") as e:
        pull_file(entry(server), tmp_path, retries=0, min_rate=1_000, stall_seconds=0.3)
    assert "stalled" in str(e.value) and "under the minimum of 1000 bytes/s over 0.3 s" in str(
        e.value
    )
    assert leftovers(tmp_path) == [".tiny.safetensors.part"]  # kept: a later pull resumes it


def test_a_stalled_transfer_is_resumed_by_the_retry(server, tmp_path, backoff):
    serve = server.serve

    def trickle_once(handler):  # the first request trickles, the next is served at full speed
        server.block, server.slow = (1, 0.01) if len(server.requests) == 1 else (65536, 0.0)
        serve(handler)

    server.serve = trickle_once  # type: ignore[method-assign]
    pulled = pull_file(entry(server), tmp_path, retries=1, min_rate=1_000, stall_seconds=0.3)
    assert pulled.action == "resumed" and backoff == [0.5]
    assert server.requests[1]["range"].startswith("bytes=")
    assert (tmp_path / "checkpoints" / "tiny.safetensors").read_bytes() == BODY


def test_the_cli_takes_the_minimum_rate_and_window(server, tmp_path, backoff):
    server.block, server.slow = 1, 0.01
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"- name: tiny.safetensors\n  folder: checkpoints\n  url: {server.url()}\n  sha256: {SHA}\n"
    )
    args = ["--min-rate", "1000", "--stall-seconds", "0.3", "--models-dir", str(tmp_path)]
    result = runner.invoke(app, ["models", "pull", str(manifest), *args])
    assert result.exit_code == 1, result.output
    assert "stalled" in result.output and server.url() in result.output


# -- 6. nothing published to verify against -------------------------------------------------------


def test_a_file_nothing_is_published_for_is_refused(server, tmp_path):
    with pytest.raises(DownloadFailed, match=r"neither the manifest nor .* publishes its sha256"):
        pull_file(entry(server, sha256=None, size=None), tmp_path)
    assert leftovers(tmp_path) == []


def test_an_unverified_download_when_allowed_says_so(server, tmp_path, caplog):
    pulled = pull_file(entry(server, sha256=None, size=None), tmp_path, allow_unverified=True)
    assert pulled.verified is None and pulled.sha256 == SHA
    assert f"NOT verified: neither the manifest nor {server.url()}" in caplog.text
    assert pull_file(entry(server, name="s", sha256=None), tmp_path).verified == "size"
    assert pull_file(entry(server, name="h", size=None), tmp_path).verified == "sha256"


def test_the_cli_refuses_an_unverifiable_file_unless_allowed(server, tmp_path):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"- name: x.safetensors\n  folder: checkpoints\n  url: {server.url()}\n")
    command = ["models", "pull", str(manifest), "--models-dir", str(tmp_path)]
    refused = runner.invoke(app, command)
    assert refused.exit_code == 1 and "--allow-unverified" in refused.output
    allowed = runner.invoke(app, [*command, "--allow-unverified"])
    assert allowed.exit_code == 0, allowed.output
    assert "NOT verified" in allowed.stdout and Path(tmp_path, "checkpoints/x.safetensors").exists()
