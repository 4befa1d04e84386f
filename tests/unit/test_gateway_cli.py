"""``comfyfn serve`` and ``comfyfn keys`` without the gateway extra (or, for a PostgreSQL
database, without the postgres extra): one sentence naming the extra to install, exit 2.

The CLI runs in a subprocess whose import system refuses the hidden libraries, as on an
install without them (so each case takes ~0.4 s: a fresh interpreter importing the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import comfyfn

RUN_HIDING = """
import sys
from importlib.abc import MetaPathFinder

HIDDEN = set(sys.argv[1].split(","))


class Hide(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ImportError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, Hide())
sys.argv = ["comfyfn", *sys.argv[2:]]
from comfyfn.cli import main

main()
"""
PG_URL = "postgresql://nobody@127.0.0.1:9/nothing"


def comfyfn_hiding(hidden: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(comfyfn.__file__).parents[1]),
        "COMFYFN_GATEWAY_DIR": str(tmp_path),  # a default database would go here
        "COMFYFN_DB": "",
    }
    return subprocess.run(
        [sys.executable, "-c", RUN_HIDING, hidden, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


EVERY = "fastapi,uvicorn,sqlalchemy,prometheus_client,sse_starlette"  # the gateway extra


def one_sentence(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--server", "http://127.0.0.1:9"),
        ("keys", "create", "alice"),
        ("keys", "list"),
        ("keys", "revoke", "alice"),
    ],
)
def test_without_fastapi_one_sentence_says_to_install_the_gateway_extra(args, tmp_path):
    message = one_sentence(comfyfn_hiding("fastapi", *args, tmp_path=tmp_path))
    assert "fastapi" in message and "pip install 'comfyfn[gateway]'" in message
    assert not any(tmp_path.iterdir())  # nothing was opened or made


def test_the_sentence_names_every_missing_library(tmp_path):
    message = one_sentence(comfyfn_hiding(EVERY, "serve", tmp_path=tmp_path))
    assert all(name in message for name in EVERY.split(","))
    assert "pip install 'comfyfn[gateway]'" in message


@pytest.mark.parametrize("args", [("serve", "--server", "http://127.0.0.1:9"), ("keys", "list")])
def test_a_postgresql_database_without_psycopg_names_the_postgres_extra(args, tmp_path):
    message = one_sentence(comfyfn_hiding("psycopg", *args, "--db", PG_URL, tmp_path=tmp_path))
    assert "pip install 'comfyfn[postgres]'" in message


def test_the_rest_of_the_cli_works_without_the_gateway_extra(tmp_path):
    done = comfyfn_hiding(EVERY, "--help", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "serve" in done.stdout and "keys" in done.stdout
