from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.fileserver import FileServer

FIXTURES = Path(__file__).parent / "fixtures" / "comfyui"

# The local engines a test session starts are named after it (``pytest-<pid>``, and
# ``pytest-<pid>-sse`` etc.), so two sessions on one machine (a developer's beside CI's, or
# several at once) never stop or reuse each other's engine; COMFYFN_TEST_ENGINE names them.
os.environ.setdefault("COMFYFN_TEST_ENGINE", f"pytest-{os.getpid()}")


def load_sample(name: str):
    path = FIXTURES / name
    return json.loads(path.read_text()) if path.suffix == ".json" else path.read_bytes()


@pytest.fixture
def sample():
    return load_sample


@pytest.fixture
def file_server():
    """A loopback HTTP server serving what a test puts in its ``files``
    (tests/support/fileserver.py)."""
    with FileServer() as server:
        yield server


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def templates():
    """The official UI-format templates (PyPI comfyui-workflow-templates-json, a test dep)."""
    from importlib import resources

    root = resources.files("comfyui_workflow_templates_json") / "templates"
    return lambda name: json.loads((root / name).read_text(encoding="utf-8"))
