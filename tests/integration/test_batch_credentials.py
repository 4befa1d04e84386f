"""A server URL with credentials works, and the credentials are written nowhere: not in
the manifest, the summary, the contact sheet or a result."""

from __future__ import annotations

from typing import Any

import pytest

from comfyfn.batch import Batch, Row, run_batch
from tests.support.graphs import sleep_graph

pytestmark = pytest.mark.engine


def test_credentials_in_a_server_url_are_used_but_never_recorded(server, unique, tmp_path):
    host = server.removeprefix("http://")
    secret = "s3cr3t-pw"
    rows = [Row(i, {"1.color": unique()}) for i in (1, 2)]
    batch = Batch(
        rows,
        tmp_path / "out",
        servers=[f"http://alice:{secret}@{host}/?token=t0k3n"],
        workflow=sleep_graph(0, milliseconds=10),
    )
    results: list[Any] = []
    summary = run_batch(batch, on_result=results.append)
    assert summary.done == 2
    assert {r.server for r in results} == {server}
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and b"t0k3n" not in data, path
