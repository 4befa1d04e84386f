"""The README runs as written: every ``python`` block as a script of its own, every ``bash``
block as a ``bash -e`` script, in a fresh folder, against the test engine.

The substitutions (documented in the README's Development section): ``http://gpu-1:8188`` and
``http://gpu-2:8188`` become the test engine's URL, as do ``$COMFYFN_SERVER`` and
``$COMFYFN_ENGINE``; the folder holds a copy of ``examples/`` (as a clone does: a block may
read no other file it has not made itself), and the sizes in the copied examples and in the
recipes (copies in ``$COMFYFN_RECIPES``) are divided by 8, since the tiny CPU weights take
about 25 s per megapixel. ``text`` blocks are synopses and are not run. A block marked
``<!-- readme-test: skip (reason) -->`` on the line before it is not run (the reason says
why: a GPU, real weights, another host); it is still checked as far as it can be here: every
Python block compiles and names nothing undefined, every bash block parses (``bash -n``).

A small collector rather than pytest-markdown-docs (Python blocks only) or pytest-codeblocks
(bash blocks run in the current folder, with no way to substitute URLs or set the
environment): both also need a command-line flag that ``make test`` does not pass.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from comfyfn import Workflow
from comfyfn.engine import Engine
from comfyfn.recipes import builtin_names, recipe_text
from comfyfn.workflow import bundled_object_info

if TYPE_CHECKING:
    from _pytest.mark import ParameterSet  # what pytest.param makes

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.M | re.S)
SKIP = re.compile(r"^<!-- readme-test: skip \((.+)\) -->$")
URLS = ("http://gpu-1:8188", "http://gpu-2:8188")
RUN_FOR = 900  # seconds: a block makes up to a few dozen (small) images on two CPU cores


@dataclass(frozen=True)
class Block:
    line: int  #: of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None  #: why it does not run here


def read_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for fence in FENCE.finditer(text):
        before = text[: fence.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.match(before)
        line = text.count("\n", 0, fence.start()) + 1
        blocks.append(Block(line, fence[1], fence[2], skip[1] if skip else None))
    return blocks


BLOCKS = read_blocks()


def of(lang: str, *, runnable: bool = False) -> list[ParameterSet]:
    """The blocks in ``lang`` (with ``runnable``: those not marked skip) as test cases."""
    return [
        pytest.param(b, id=f"line-{b.line}")
        for b in BLOCKS
        if b.lang == lang and not (runnable and b.skip)
    ]


#: an input file a block names: ``examples/prompts.csv``, ``"image_z_image_turbo.json"``
INPUT = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.(?:json|csv|jsonl|yaml|yml|txt))\b")
#: a file a block makes: ``-o api.json``, ``> my-social.yaml``
MADE = re.compile(r"(?:-o|--output|>)\s+([\w./-]+)")


def test_every_file_the_runnable_blocks_read_is_in_the_clone():
    """Issue 16: the "Any workflow" blocks read a template that was not in the clone."""
    runnable = [b for b in BLOCKS if b.lang in ("python", "bash") and b.skip is None]
    made = {name for b in runnable for name in MADE.findall(b.code)}
    read = {name for b in runnable for name in INPUT.findall(b.code)} - made
    assert "examples/image_z_image_turbo.json" in read
    assert sorted(name for name in read if not (ROOT / name).is_file()) == []


def test_the_shipped_workflow_is_comfyuis_z_image_turbo_template_unmodified():
    shipped = ROOT / "examples" / "image_z_image_turbo.json"
    template = resources.files("comfyui_workflow_templates_json") / "templates"
    assert shipped.read_bytes() == (template / "image_z_image_turbo.json").read_bytes()
    assert "MIT License" in (ROOT / "examples" / "NOTICE").read_text(encoding="utf-8")
    wf = Workflow.load(shipped, object_info=bundled_object_info("0.28.0"))
    wf.validate()  # what the converter makes is a valid graph (model files: not checked offline)
    assert {"prompt", "seed", "width", "height", "steps"} <= {p.name for p in wf.params}


def test_every_block_is_python_bash_or_text_and_every_marker_is_used():
    langs = {b.lang for b in BLOCKS}
    assert langs <= {"python", "bash", "text", "json", ""}, langs
    markers = len(re.findall(r"^<!-- readme-test:", README.read_text(encoding="utf-8"), re.M))
    assert markers == sum(b.skip is not None for b in BLOCKS)  # none dangling or misspelt
    assert sum(b.lang in ("python", "bash") and b.skip is None for b in BLOCKS) >= 8


@pytest.mark.parametrize("block", of("json"))
def test_json_block_is_json(block: Block):
    json.loads(block.code)  # a configuration to copy: it must parse as it stands


@pytest.mark.parametrize("block", of("bash"))
def test_bash_block_parses(block: Block, tmp_path):
    """Every bash block, those marked skip too (they need a GPU, real weights or another
    host to run, not to be valid bash)."""
    script = tmp_path / "block.sh"
    script.write_text(block.code, encoding="utf-8")
    parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert parsed.returncode == 0, f"README.md:{block.line}: {parsed.stderr}"


@pytest.mark.parametrize("block", of("python"))
def test_python_block_compiles_and_names_nothing_undefined(block: Block, tmp_path):
    compile(block.code, f"README.md:{block.line}", "exec")
    script = tmp_path / "block.py"
    script.write_text(block.code, encoding="utf-8")
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 0, f"README.md:{block.line}\n{lint.stdout}{lint.stderr}"


# -- running the blocks ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    """The test engine; stopped at the end only if this module started it."""
    eng = Engine(os.environ["COMFYFN_TEST_ENGINE"])
    was_running = bool(eng.status()["running"])
    eng.up()
    yield eng
    if not was_running:
        eng.down()


def scaled(value: int) -> int:
    """A size divided by 8, to the nearest multiple of 16 (at least 64)."""
    return max(64, round(value / 8 / 16) * 16)


def scale_sizes(name: str, text: str) -> str:
    """Sizes in an example file divided by 8: the ``width`` and ``height`` columns of a CSV,
    ``width: 1024`` in YAML."""
    if name.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            for key in ("width", "height"):
                if (row.get(key) or "").isdigit():
                    row[key] = str(scaled(int(row[key])))
            writer.writerow(row)
        return buffer.getvalue()
    return re.sub(r"\b(width|height): (\d+)", lambda m: f"{m[1]}: {scaled(int(m[2]))}", text)


@pytest.fixture
def workspace(tmp_path, engine):
    """(folder, environment) in which a README block runs as a user's would."""
    home = tmp_path / "work"
    (home / "examples").mkdir(parents=True)
    for example in (ROOT / "examples").iterdir():
        text = example.read_text(encoding="utf-8")
        copy = scale_sizes(example.name, text)
        (home / "examples" / example.name).write_text(copy, encoding="utf-8")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    for name in builtin_names():
        text = re.sub(
            r"deliver: (\d+)x(\d+)",
            lambda m: f"deliver: {int(m[1]) // 8}x{int(m[2]) // 8}",
            recipe_text(name),
        )
        (recipes / f"{name}.yaml").write_text(text, encoding="utf-8")
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT / "src"),
        "COMFYFN_SERVER": engine.url,
        "COMFYFN_ENGINE": engine.name,
        "COMFYFN_RECIPES": str(recipes),
    }
    return home, env


def substituted(code: str, url: str) -> str:
    for placeholder in URLS:
        code = code.replace(placeholder, url)
    return code


def run(block: Block, workspace, command: list[str], suffix: str) -> None:
    home, env = workspace
    script = home / f"block{suffix}"
    script.write_text(substituted(block.code, env["COMFYFN_SERVER"]), encoding="utf-8")
    try:
        done = subprocess.run(
            [*command, str(script)],
            cwd=home,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_FOR,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"README.md:{block.line} still ran after {RUN_FOR}s")
    assert done.returncode == 0, (
        f"README.md:{block.line} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    )


@pytest.mark.engine
@pytest.mark.timeout(RUN_FOR + 60)
@pytest.mark.parametrize("block", of("python", runnable=True))
def test_python_block_runs(block: Block, workspace):
    run(block, workspace, [sys.executable], ".py")


@pytest.mark.engine
@pytest.mark.timeout(RUN_FOR + 60)
@pytest.mark.parametrize("block", of("bash", runnable=True))
def test_bash_block_runs(block: Block, workspace):
    run(block, workspace, ["bash", "-e", "-o", "pipefail"], ".sh")
