"""``comfyfn batch`` off a terminal (``2>&1 | tee``, nohup, CI) prints a plain line per
finished row as it finishes, with the counts and the rate, and the counts again after
``--status-every`` seconds without a line; user text is printed literally (issue 16: such
runs used to print nothing until the summary)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from tests.support.cli_proc import start_cli, stop
from tests.support.polling import wait_for
from tests.support.tests_png import image_bytes

pytestmark = [pytest.mark.engine, pytest.mark.one_version]  # the CLI's output


class GatedImage:
    """A loopback server answering ``/gate.png`` with a PNG that it trickles one byte a
    second (so the client's read timeout never passes) until :attr:`gate` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        body = image_bytes((64, 64), "green")
        gate = self.gate

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                sent = 0
                while not gate.wait(1) and sent < len(body) - 1:
                    self.wfile.write(body[sent : sent + 1])
                    self.wfile.flush()
                    sent += 1
                self.wfile.write(body[sent:])
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/gate.png"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> GatedImage:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class Lines:
    """A child's output lines, read as they come by a thread."""

    def __init__(self, stream) -> None:
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.seen.append(line.rstrip("\n"))

    def having(self, text: str) -> list[str]:
        return [line for line in self.seen if text in line]


@pytest.fixture
def gated() -> Iterator[GatedImage]:
    with GatedImage() as server:
        yield server


def test_a_piped_batch_prints_a_line_per_row_as_it_finishes(server, unique, gated, tmp_path):
    (tmp_path / "a.png").write_bytes(image_bytes((64, 64), "red"))
    missing = "in/[/red] [bold]missing.png"  # rich markup, if it were read as such
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "prompt,image,steps,denoise,seed\n"
        f"a,a.png,1,0.5,{unique()}\n"
        f'b,"{missing}",1,0.5,{unique()}\n'
        f"c,{gated.url},1,0.5,{unique()}\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    proc = start_cli("batch", str(rows), "-o", str(out), "-s", server, "--status-every", "1")
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        wait_for(lambda: lines.having("done row 1 (ran "), 180, "the line of row 1")
        wait_for(lambda: lines.having(missing), 60, "the line of row 2")
        wait_for(lambda: lines.having("running · 2/3: done 1, "), 60, "a status line")
        # row 3 waits for its image: the lines came while the batch still runs
        assert proc.poll() is None, lines.seen
        gated.gate.set()
        assert proc.wait(timeout=180) == 1, lines.seen  # one row failed
        lines.thread.join(timeout=10)
    finally:
        stop(proc)
    (start,) = lines.having("batch: 3 jobs on ")
    assert server in start
    (first,) = lines.having("done row 1 (ran ")
    assert f"s on {server} · " in first
    (bad,) = lines.having(missing)
    assert bad.startswith(("invalid row 2, column 'image': ", "failed row 2"))
    (third,) = lines.having("done row 3 (ran ")
    assert " · 3/3: done 2, " in third and third.endswith("/min")
    assert lines.seen.index(first) < lines.seen.index(third)
    assert any(line.startswith("done 2 · ") for line in lines.seen)  # then the summary


def test_a_piped_recipe_run_prints_a_line_per_image(server, tmp_path):
    recipe = tmp_path / "one.yaml"
    recipe.write_text(
        "description: one small image per topic\n"
        "workflow: zimage-turbo\n"
        "defaults: {steps: 1}\n"
        "outputs:\n"
        "  - {name: icon, prompt: '{topic}', deliver: 64x64, seeds: [1]}\n",
        encoding="utf-8",
    )
    topics = tmp_path / "topics.txt"
    topics.write_text("猫 [bold]\n狗\n", encoding="utf-8")
    proc = start_cli(
        "recipe", "run", str(recipe), str(topics), "-o", str(tmp_path / "out"), "-s", server
    )
    try:
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        assert proc.wait(timeout=300) == 0, lines.seen
        lines.thread.join(timeout=10)
    finally:
        stop(proc)
    done = lines.having("done row ")
    assert len(done) == 2, lines.seen
    assert " · 2/2: done 2, failed 0, invalid 0 · " in done[-1]
