from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "comfyui"


def load_sample(name: str):
    path = FIXTURES / name
    return json.loads(path.read_text()) if path.suffix == ".json" else path.read_bytes()


@pytest.fixture
def sample():
    return load_sample


@pytest.fixture
def anyio_backend():
    return "asyncio"
