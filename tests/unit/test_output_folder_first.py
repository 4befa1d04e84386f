"""An output folder that cannot be made is found before any job runs: generate names it
(exit 2) without reaching a server, so no image is made only to be lost."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from comfyfn._files import ready_folder
from comfyfn.cli._app import app
from comfyfn.errors import OutputUnusable


def test_a_folder_is_made_and_checked_writable(tmp_path):
    made = ready_folder(tmp_path / "a" / "b")
    assert made.is_dir() and list(made.iterdir()) == []  # the probe file is gone


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(OutputUnusable) as caught:
        ready_folder(tmp_path / "taken" / "out")
    assert caught.value.reason == "not-a-folder" and "cannot be made" in str(caught.value)
    with pytest.raises(OutputUnusable, match="is a file"):
        ready_folder(tmp_path / "taken")


def test_generate_names_an_unusable_folder_before_it_looks_for_a_server(tmp_path):
    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" / "images"
    # a server that refuses every connection: reaching it would be a different error
    done = CliRunner().invoke(
        app, ["generate", "a cat", "-o", str(out), "--server", "http://127.0.0.1:9"]
    )
    assert done.exit_code == 2, done.output
    text = " ".join(done.output.split())
    assert "output folder" in text and "cannot be made" in text and "127.0.0.1:9" not in text
