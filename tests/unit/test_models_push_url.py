"""``comfyfn models pull URL --folder F --sha256 HEX``: one file (a LoRA, say) by URL,
verified by the sha256 given, from a loopback hub (tests/support/modelserver.py); a missing or bad
hash is a clear error before anything is downloaded."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from comfyfn.cli._models import models_app
from comfyfn.errors import ConfigError
from comfyfn.models import url_file
from tests.support.modelserver import SHA, ModelServer

runner = CliRunner()


@pytest.fixture
def hub() -> Iterator[ModelServer]:
    server = ModelServer()
    server.start()
    yield server
    server.stop()


def pull(*argv: str):
    return runner.invoke(models_app, ["pull", *argv])


def test_a_lora_by_url_lands_in_its_folder_verified(hub, tmp_path):
    url = hub.url("/model.safetensors?download=true")
    result = pull(url, "--folder", "loras", "--sha256", SHA.upper(), "--models-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    saved = tmp_path / "loras" / "model.safetensors"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == SHA
    assert f"sha256 {SHA}" in result.stdout


def test_a_url_without_a_sha256_is_refused_before_any_request(hub, tmp_path):
    result = pull(hub.url(), "--folder", "loras", "--models-dir", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert "needs --sha256 HEX" in result.output
    assert hub.paths == [] and not (tmp_path / "loras").exists()


def test_a_bad_sha256_names_the_field(hub, tmp_path):
    result = pull(hub.url(), "--folder", "loras", "--sha256", "abc", "--models-dir", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert "sha256: must be 64 hexadecimal digits" in result.output
    assert hub.paths == []


def test_bytes_that_are_not_the_sha256_given_are_not_kept(hub, tmp_path):
    wrong = hashlib.sha256(b"other").hexdigest()
    result = pull(hub.url(), "--folder", "loras", "--sha256", wrong, "--models-dir", str(tmp_path))
    assert result.exit_code == 1, result.output
    assert f"sha256 from {hub.url()} is {SHA}, not {wrong}" in " ".join(result.output.split())
    assert list((tmp_path / "loras").iterdir()) == []


def test_a_url_needs_a_folder_and_a_manifest_takes_neither_option(tmp_path):
    no_folder = pull("http://127.0.0.1:9/x.safetensors", "--sha256", SHA)
    assert no_folder.exit_code == 2 and "needs --folder" in no_folder.output
    both = pull("zimage-turbo", "--folder", "loras", "--models-dir", str(tmp_path))
    assert both.exit_code == 2 and "for one file by URL" in both.output


def test_url_file_is_checked_as_a_manifest_entry():
    file = url_file("http://127.0.0.1:9/a/b%20c.safetensors?token=T", "loras", SHA)
    assert (file.name, file.folder, file.sha256) == ("b c.safetensors", "loras", SHA)
    with pytest.raises(ConfigError, match=r"folder: '\.\.' is not a models/ folder name"):
        url_file("http://127.0.0.1:9/x.safetensors", "..", SHA)
    with pytest.raises(ConfigError, match="is not a file name") as info:
        url_file("http://127.0.0.1:9/", "loras", SHA)
    assert "token" not in str(info.value)  # the URL is shown without its query
