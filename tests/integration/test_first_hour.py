"""A newcomer's first hour (issue 11): the shipped examples run, and the recipe contact sheet,
opened in a real headless browser, shows each topic with its labelled outputs
(``COMFYFN_SCREENSHOT=/some/file.png`` keeps the browser's screenshot there)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from typer.testing import CliRunner

from comfyfn.cli._app import app
from comfyfn.recipes import recipe_text

pytestmark = pytest.mark.engine
runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def small_social(folder: Path) -> Path:
    """The built-in social recipe with its sizes divided by 10 (the CPU engine is slow)."""
    text = re.sub(
        r"deliver: (\d+)x(\d+)",
        lambda m: f"deliver: {int(m[1]) // 10}x{int(m[2]) // 10}",
        recipe_text("social"),
    )
    path = folder / "social.yaml"
    path.write_text(text.replace("steps: 8", "steps: 2"), encoding="utf-8")
    return path


def browser(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium, offline (the page is self-contained), with a throw-away profile."""
    assert BROWSER is not None
    quiet = [
        "--headless=new",
        "--no-sandbox",  # tests may run as root
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run(
        [BROWSER, *quiet, *args], capture_output=True, text=True, timeout=120, check=True
    )


@pytest.fixture(scope="module")
def recipe_run(server, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("first-hour")
    topics = folder / "topics.txt"
    shutil.copyfile(EXAMPLES / "topics.txt", topics)
    out = folder / "out"
    args = ["recipe", "run", str(small_social(folder)), str(topics), "-o", str(out), "-s", server]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_the_example_topics_make_every_output_at_its_delivered_size(recipe_run):
    made = sorted(str(p.relative_to(recipe_run)) for p in recipe_run.rglob("*.png"))
    assert made == [
        f"{topic}/{name}.png"
        for topic in ("中秋节团圆", "春节-庙会")
        for name in ("douyin", "wechat", "weibo", "xiaohongshu")
    ]
    with Image.open(recipe_run / "春节-庙会" / "weibo.png") as image:
        assert image.size == (120, 67)


@pytest.mark.skipif(BROWSER is None, reason="no chromium here (Debian: apt-get install chromium)")
def test_the_contact_sheet_in_a_real_browser(recipe_run, tmp_path):
    page = (recipe_run / "index.html").as_uri()
    dom = browser("--dump-dom", page, profile=tmp_path / "profile").stdout
    sections = re.findall(r"<section>(.*?)</section>", dom, re.S)
    titles = [re.findall(r"<h2>(.*?)</h2>", s)[:1] for s in sections]
    assert titles == [["中秋节团圆"], ["春节 庙会"]]
    for section in sections:
        labels = re.findall(
            r"<div class=\"output\">(\w+)<span class=\"size\">(.*?)</span>", section
        )
        assert labels == [
            ("wechat", "108×108"),
            ("weibo", "120×67"),
            ("douyin", "108×192"),
            ("xiaohongshu", "124×166"),
        ]
    shot = Path(os.environ.get("COMFYFN_SCREENSHOT", tmp_path / "contact-sheet.png"))
    browser(f"--screenshot={shot}", "--window-size=1280,1400", page, profile=tmp_path / "p2")
    with Image.open(shot) as image:
        assert image.size == (1280, 1400)
        spread = ImageStat.Stat(image.convert("L")).stddev[0]
    assert spread > 10  # thumbnails and text were drawn, not a blank page
