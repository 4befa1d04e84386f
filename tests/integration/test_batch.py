"""Batches against real local servers, including the faults an overnight run meets."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

import comfyfn
from comfyfn.batch import map_rows
from comfyfn.cli._app import app
from comfyfn.engine import Engine
from tests.support.blocking import blocked
from tests.support.cli_proc import start_cli, stop
from tests.support.graphs import sleep_graph
from tests.support.polling import wait_for

pytestmark = pytest.mark.engine
runner = CliRunner()

SEED_CSV = """prompt,negative_prompt,seed,width,height
一位身着旗袍的女性漫步在上海外滩夜景,模糊，低质量,42,64,64
雨后的江南水乡，青石板路，油纸伞,,7,64,80
霓虹灯招牌上写着“深夜食堂”，赛博朋克街道,低质量,,80,64
A cozy coffee shop with a chalkboard that says "OPEN",blurry,1234,64,64
故宫红墙下的银杏树,,,64,64
,没有提示词,5,64,64
熊猫在竹林里吃竹子,,abc,64,64
长城日出,,8,1000,64
"""


@pytest.fixture(scope="module")
def second(engine):
    eng = Engine(f"{os.environ['COMFYFN_TEST_ENGINE']}-b", install=engine.install)
    eng.up()
    yield eng
    eng.down()


def manifest_states(out: Path) -> Counter:
    """Job states in the manifest ({} until the runner has created it)."""
    try:
        with sqlite3.connect(out / "manifest.sqlite") as db:
            return Counter(dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")))
    except sqlite3.OperationalError:  # the file exists, its table not yet
        return Counter()


def submitted_to(out: Path, url: str) -> int:
    with sqlite3.connect(out / "manifest.sqlite") as db:  # read once the batch is running
        (n,) = db.execute(
            "SELECT COUNT(*) FROM jobs WHERE state='submitted' AND server=?", (url,)
        ).fetchone()
    return n


def history_size(*servers: str) -> int:
    total = 0
    for url in servers:
        with comfyfn.Client(url) as c:
            total += len(c.history())
    return total


def successes(url: str) -> dict[int, list[float]]:
    """When each job (told apart by its EmptyImage color) that succeeded on ``url`` started
    there (seconds since the epoch, one per run)."""
    seen: dict[int, list[float]] = {}
    with comfyfn.Client(url) as c:
        for entry in c.history().values():
            graph = entry["prompt"][2]
            if graph.get("2", {}).get("class_type") == "ComfyfnSleep" and (
                entry["status"]["status_str"] == "success"
            ):
                events = dict(entry["status"]["messages"])
                started = events["execution_start"]["timestamp"] / 1000
                seen.setdefault(graph["1"]["inputs"]["color"], []).append(started)
    return seen


def successes_by_color(*servers: str) -> Counter:
    """How many times each job (told apart by its EmptyImage color) succeeded on servers."""
    seen: Counter = Counter()
    for url in servers:
        seen.update({color: len(runs) for color, runs in successes(url).items()})
    return seen


def sleep_batch(tmp_path: Path, colors: list[int], ms: int, *servers: str) -> list[str]:
    """Arguments of ``comfyfn batch`` for one simulated job per color, into tmp_path/out."""
    wf = tmp_path / "sleep.json"
    wf.write_text(json.dumps(sleep_graph(0, milliseconds=ms)))
    rows = tmp_path / "rows.csv"
    rows.write_text("1.color\n" + "\n".join(map(str, colors)) + "\n")
    args = [str(rows), "-o", str(tmp_path / "out"), "-w", str(wf)]
    for url in servers:
        args += ["-s", url]
    return args


_STARTED: list[subprocess.Popen] = []


def cli(*args: str) -> subprocess.Popen:
    proc = start_cli(*args)
    _STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_leftover_runners():
    """A failing test must not leave a batch runner behind."""
    yield
    while _STARTED:
        stop(_STARTED.pop())


def wait_done(out: Path, n: int) -> None:
    wait_for(lambda: manifest_states(out)["done"] >= n, timeout=60, what=f"{n} jobs done")


def test_seed_csv_over_two_servers(server, second, tmp_path):
    """Slow (~13 s with set-up): starts a second engine, then runs 5 Z-Image jobs on the CPU."""
    src = tmp_path / "prompts.csv"
    src.write_text(SEED_CSV, encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["batch", str(src), "-o", str(out), "-s", server, "-s", second.url, "--json"]
    )
    assert result.exit_code == 1, result.output  # three bad rows
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert (summary["done"], summary["invalid"], summary["failed"]) == (5, 3, 0)
    assert all(s["done"] > 0 for s in summary["servers"].values())  # both servers worked
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == ["000001.png", "000002.png", "000003.png", "000004.png", "000005.png"]
    meta = comfyfn.read_provenance(out / "images" / "000001.png")
    assert (meta["prompt"], meta["seed"]) == ("一位身着旗袍的女性漫步在上海外滩夜景", 42)
    assert "negative" not in meta  # Z-Image-Turbo at cfg 1 zeroes the negative (documented)
    assert comfyfn.Image((out / "images" / "000002.png").read_bytes(), None).height == 80
    sheet = (out / "index.html").read_text(encoding="utf-8")
    assert sheet.count("data:image/jpeg;base64,") == 5 and "霓虹灯招牌" in sheet
    assert "row 6, column &#x27;prompt&#x27;: is empty" in sheet
    assert "row 7, column &#x27;seed&#x27;: &#x27;abc&#x27; is not an integer" in sheet
    assert "row 8, column &#x27;width&#x27;: width 1000 is not a multiple of 16" in sheet
    assert json.loads((out / "summary.json").read_text())["done"] == 5

    # the same command again: everything finished is skipped, nothing is submitted
    before = history_size(server, second.url)
    again = runner.invoke(
        app, ["batch", str(src), "-o", str(out), "-s", server, "-s", second.url, "--json"]
    )
    summary = json.loads(again.stdout[again.stdout.index("{") :])
    assert (summary["done"], summary["skipped"], summary["invalid"]) == (0, 5, 3)
    assert history_size(server, second.url) == before


def test_runner_killed_mid_batch_resumes_without_running_anything_twice(server, unique, tmp_path):
    """Slow (~7 s): 16 simulated 300 ms jobs; the runner is killed while its rows wait on the
    server (behind a job of the server's own), and the next run re-attaches to them."""
    colors = [unique() for _ in range(16)]
    args = [*sleep_batch(tmp_path, colors, 300, server), "--prime", "2"]
    out = tmp_path / "out"
    with blocked(server, unique()):
        proc = cli("batch", *args)
        wait_for(lambda: manifest_states(out)["submitted"] >= 2, 60, "rows queued on the server")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    in_flight = manifest_states(out)["submitted"]
    assert in_flight >= 2
    resumed = cli("batch", *args, "--json")
    output, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, output
    states = manifest_states(out)
    assert states == Counter({"done": 16})
    assert len(list((out / "images").iterdir())) == 16
    counts = successes_by_color(server)
    assert all(counts[c] == 1 for c in colors), counts  # none ran twice, none is missing


@pytest.mark.one_version  # slow, and about the fleet, not the ComfyUI version
def test_server_killed_mid_batch(engine, server, unique, tmp_path):
    """Slow (~10 s): starts and kills an engine holding rows in its queue (behind a job of
    its own that would run for ten minutes), then waits out the 3 s HTTP timeout."""
    victim = Engine(f"{os.environ['COMFYFN_TEST_ENGINE']}-victim", install=engine.install)
    victim_url = victim.up().url
    assert victim_url is not None
    try:
        colors = [unique() for _ in range(20)]
        out = tmp_path / "out"
        with blocked(victim_url, unique()):  # the victim's share waits there until killed
            proc = cli(
                "batch",
                *sleep_batch(tmp_path, colors, 250, victim_url, server),
                "--json",
                "--http-timeout",
                "3",
            )
            wait_done(out, 4)
            wait_for(lambda: submitted_to(out, victim_url) >= 1, 60, "rows queued on the victim")
            state = victim.state()
            assert state is not None
            os.kill(state.pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
        assert manifest_states(out) == Counter({"done": 20})
        files = sorted((out / "images").iterdir())
        assert len(files) == 20
        summary = json.loads(output[output.index("{") :])
        assert summary["servers"][victim_url]["failures"] >= 1
        assert all(successes_by_color(server)[c] <= 1 for c in colors)
    finally:
        victim.down()


@pytest.mark.one_version  # slow, and about the fleet, not the ComfyUI version
def test_hanging_server_is_taken_out_and_put_back(second, server, unique, tmp_path):
    """Slow (~12 s): a SIGSTOPped server (rows queued on it behind a job of its own) is noticed
    only after the HTTP timeout, and put back only after it answers again."""
    colors = [unique() for _ in range(20)]
    out = tmp_path / "out"
    with blocked(second.url, unique()):  # rows placed on it wait there, however slow we are
        proc = cli(
            "batch",
            *sleep_batch(tmp_path, colors, 250, second.url, server),
            "--json",
            "--http-timeout",
            "2",
        )
        wait_done(out, 3)
        wait_for(lambda: submitted_to(out, second.url) >= 1, 60, "rows queued on the second")
        pid = second.state().pid
        hung_at = time.time()
        os.kill(pid, signal.SIGSTOP)  # the process hangs: connections open, nothing answers
        try:
            done_then = manifest_states(out)["done"]
            # its jobs are taken back and finished elsewhere while it hangs
            wait_for(
                lambda: (
                    submitted_to(out, second.url) == 0 and manifest_states(out)["done"] > done_then
                ),
                timeout=60,
                what="the hanging server's jobs moved and finished elsewhere",
            )
        finally:
            os.kill(pid, signal.SIGCONT)  # at once: it resumes the moment its jobs have moved
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert manifest_states(out) == Counter({"done": 20})
    summary = json.loads(output[output.index("{") :])
    assert summary["servers"][second.url]["failures"] >= 1
    # Our outputs exist once (above), and every row ran once on the servers: the hung one
    # was running its own job (the blocker), and the copies queued there behind it were
    # removed by the requests sent when they moved, which it reads as soon as it resumes,
    # before the blocker is interrupted.
    elsewhere, there = successes(server), successes(second.url)
    runs = {c: len(elsewhere.get(c, [])) + len(there.get(c, [])) for c in colors}
    assert set(runs.values()) == {1}, (hung_at, runs)


@pytest.mark.one_version  # slow, and about the fleet, not the ComfyUI version
def test_all_servers_down_then_back(engine, unique, tmp_path):
    """Slow (~11 s): stops the only engine (rows queued on it behind a job of its own) and
    starts it again on the same port."""
    lone = Engine(f"{os.environ['COMFYFN_TEST_ENGINE']}-lone", install=engine.install)
    state = lone.up()
    port, lone_url = state.port, state.url
    try:
        colors = [unique() for _ in range(12)]
        out = tmp_path / "out"
        with blocked(lone_url, unique()):  # no row can finish before the server goes down
            proc = cli(
                "batch",
                *sleep_batch(tmp_path, colors, 200, lone_url),
                "--json",
                "--http-timeout",
                "2",
            )
            wait_for(lambda: manifest_states(out)["submitted"] >= 1, 60, "rows queued on it")
            lone.down()
        assert proc.poll() is None  # the batch waits for a server
        lone.up(port=port)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
        assert manifest_states(out) == Counter({"done": 12})
    finally:
        lone.down()


def test_map_rows_gives_every_row_in_order(server, unique):
    rows = [
        {"prompt": "猫", "seed": unique(), "width": 64, "height": 64, "steps": 2},
        {"prompt": "狗", "seed": "nope", "width": 64, "height": 64},
        {"prompt": "鱼", "seed": unique(), "width": 80, "height": 64, "steps": 2},
    ]
    results = map_rows(rows, server=server, prime=2)
    assert [r.row for r in results] == [1, 2, 3]
    assert [r.state for r in results] == ["done", "invalid", "done"]
    first, third = results[0].generation, results[2].generation
    assert first is not None and third is not None and results[1].error is not None
    assert first.images[0].width == 64
    assert third.params["prompt"] == "鱼"
    assert "row 2, column 'seed': 'nope' is not an integer" in results[1].error


TINY_RECIPE = """description: 测试用的小尺寸社交配图
outputs:
  - name: weibo
    prompt: "{topic}，横幅配图"
    deliver: 120x68        # Weibo's 16:9, scaled down for the CPU engine
  - name: icon
    prompt: "{topic} 图标"
    deliver: 48x48
    count: 3
    fit: contain
defaults:
  steps: 2
"""


def test_recipe_run_delivers_exact_sizes(server, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE, encoding="utf-8")
    topics = tmp_path / "topics.txt"
    topics.write_text("# 话题\n中秋节\n\n春节 庙会\n", encoding="utf-8")
    out = tmp_path / "out"
    listed = runner.invoke(app, ["recipe", "list"])
    assert "social" in listed.stdout and "1242×1660" in listed.stdout
    batch_options = ["--retries", "1", "--job-timeout", "120", "--http-timeout", "10"]
    args = ["recipe", "run", str(recipe), str(topics), "-o", str(out), "-s", server, "--json"]
    result = runner.invoke(app, [*args, *batch_options, "--workflow", "zimage-turbo"])
    assert result.exit_code == 0, result.output
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert files == [
        "中秋节/icon_1.png",
        "中秋节/icon_2.png",
        "中秋节/icon_3.png",
        "中秋节/weibo.png",
        "春节-庙会/icon_1.png",
        "春节-庙会/icon_2.png",
        "春节-庙会/icon_3.png",
        "春节-庙会/weibo.png",
    ]
    weibo = comfyfn.Image((out / "中秋节" / "weibo.png").read_bytes(), None)
    assert (weibo.width, weibo.height) == (120, 68)
    icons = [(out / "中秋节" / f"icon_{k}.png").read_bytes() for k in (1, 2, 3)]
    assert len(set(icons)) == 3  # distinct seeds
    meta = comfyfn.read_provenance(out / "中秋节" / "weibo.png")
    assert meta["prompt"] == "中秋节，横幅配图"
    w, h = meta["width"], meta["height"]  # generated at ×16 with the same aspect, then cut
    assert w % 16 == h % 16 == 0 and w >= 120 and h >= 68
    assert abs(w / h - 120 / 68) / (120 / 68) < 0.01
    assert meta["delivery"] == {"width": 120, "height": 68, "fit": "cover", "from": [w, h]}
    # results.csv: one line per file, with the delivered size
    with (out / "results.csv").open(encoding="utf-8-sig") as fh:
        lines = list(csv.DictReader(fh))
    assert [(r["topic"], r["output"], r["size"], r["state"]) for r in lines[:4]] == [
        ("中秋节", "weibo", "120×68", "done"),
        ("中秋节", "icon", "48×48", "done"),
        ("中秋节", "icon", "48×48", "done"),
        ("中秋节", "icon", "48×48", "done"),
    ]
    assert lines[0]["file"] == "中秋节/weibo.png" and lines[0]["prompt"] == "中秋节，横幅配图"
    assert len(lines) == 8 and int(lines[0]["seed"]) == meta["seed"]
    # the contact sheet: a section per topic, each image labelled with output and delivered size
    sheet = (out / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<h2>(.*?)</h2>", sheet) == ["中秋节", "春节 庙会"]
    assert "<div class='output'>weibo<span class='size'>120×68</span></div>" in sheet
    assert f"{w}×{h}" not in sheet  # the generated size is not what is shown


def test_a_second_runner_on_the_same_folder_is_refused_at_once(server, unique, tmp_path):
    colors = [unique() for _ in range(6)]
    args = sleep_batch(tmp_path, colors, 400, server)
    out = tmp_path / "out"
    # a job holds the server, so the first runner is still running when the second starts,
    # however slow the machine; it is cancelled once the second is refused
    with blocked(server, unique()):
        first = cli("batch", *args)
        wait_for(lambda: manifest_states(out)["submitted"] >= 1, 60, "the first runner to submit")
        second = cli("batch", *args)
        # refused while the blocker holds the first runner: the second did not wait for it
        output, _ = second.communicate(timeout=60)
        assert second.returncode == 2, output
        assert f"{out} is in use by another comfyfn batch (pid {first.pid})" in output
        assert "Traceback" not in output
    first_output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, first_output
    assert manifest_states(out) == Counter({"done": 6})
    counts = successes_by_color(server)
    assert all(counts[c] == 1 for c in colors), counts


def test_resume_remakes_missing_or_damaged_files(server, unique, tmp_path):
    colors = [unique() for _ in range(3)]
    args = [*sleep_batch(tmp_path, colors, 0, server), "--json"]
    out = tmp_path / "out"
    assert runner.invoke(app, ["batch", *args]).exit_code == 0
    images = out / "images"
    good = (images / "000002.png").read_bytes()
    (images / "000001.png").unlink()  # missing
    (images / "000002.png").write_bytes(good[: len(good) // 2])  # damaged
    again = runner.invoke(app, ["batch", *args])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout[again.stdout.index("{") :])
    assert (summary["done"], summary["skipped"]) == (2, 1)
    for name in ("000001.png", "000002.png", "000003.png"):
        assert comfyfn.Image((images / name).read_bytes(), None).to_pil().size == (64, 48)
    again_pixels = comfyfn.Image((images / "000002.png").read_bytes(), None).to_pil().tobytes()
    assert again_pixels == comfyfn.Image(good, None).to_pil().tobytes()  # the same job


def test_jobs_cancelled_by_ctrl_c_are_done_by_the_next_run(server, unique, tmp_path):
    """Slow (~7 s): eight simulated 700 ms jobs, cancelled while waiting on the server (behind
    a job of the server's own) and resumed. A row is recorded ``submitted`` before its POST,
    so the Ctrl-C can come while the third submission is under way: the cancel must reach
    that prompt too once the server has it (it would wait behind the blocker otherwise)."""
    colors = [unique() for _ in range(8)]
    args = [*sleep_batch(tmp_path, colors, 700, server), "--prime", "2"]
    out = tmp_path / "out"
    with blocked(server, unique()):
        proc = cli("batch", *args, "--on-interrupt", "cancel")
        wait_for(lambda: manifest_states(out)["submitted"] == 3, 60, "three rows on the server")
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
        states = manifest_states(out)
        assert states["failed"] == 0 and states["submitted"] == 0, (states, output)
        assert states["pending"] == 8, states  # none ran: all wait for the next run
        with comfyfn.Client(server) as c:  # while the blocker still holds the server
            ours = {str(c_) for c_ in colors}
            queued = [
                i for i in c.queue()["queue_pending"] if str(i[2]["1"]["inputs"]["color"]) in ours
            ]
        assert queued == []  # cancelled on the server, not left behind
    resumed = cli("batch", *args, "--json")
    output, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, output
    assert manifest_states(out) == Counter({"done": 8})
    counts = successes_by_color(server)
    assert all(counts[c] == 1 for c in colors), counts
