"""The command line without a server: usage errors are one sentence and exit 2 before
anything starts; other errors never show a traceback unless --debug asks; piped output is
not wrapped; recipes can be shown and planned (issue 11, points 4, 7 and 9)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import comfyfn
from comfyfn.cli._app import app
from comfyfn.recipes import load_recipe
from comfyfn.workflow import BUILTIN, bundled_version

runner = CliRunner()
SRC = str(Path(comfyfn.__file__).parents[1])


@pytest.fixture(autouse=True)
def _no_server(monkeypatch, tmp_path):
    """No server and an empty engine home: a usage error must come before any is started."""
    monkeypatch.delenv("COMFYFN_SERVER", raising=False)
    monkeypatch.delenv("COMFYFN_RECIPES", raising=False)
    monkeypatch.delenv("COMFYFN_DEBUG", raising=False)
    monkeypatch.setenv("COMFYFN_HOME", str(tmp_path / "home"))


def one_sentence(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("error:")]
    return line


def piped(*args: str) -> subprocess.CompletedProcess:
    """``comfyfn`` in a process of its own, its output going to a pipe (not a terminal)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "COMFYFN_SERVER")}
    return subprocess.run(
        [sys.executable, "-m", "comfyfn.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": SRC},
    )


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"comfyfn {comfyfn.__version__}"


def test_generate_without_a_prompt_is_a_usage_error_before_any_engine_starts(tmp_path):
    line = one_sentence(runner.invoke(app, ["generate"]))
    assert line == 'error: no prompt: give one, as in comfyfn generate "a red apple" ' + (
        "(or --param prompt=TEXT)"
    )
    assert not (tmp_path / "home").exists()


def test_a_misspelt_workflow_name_lists_the_built_in_ones(tmp_path):
    line = one_sentence(runner.invoke(app, ["generate", "p", "-w", "zimage-trubo"]))
    assert "unknown workflow 'zimage-trubo'" in line
    assert "did you mean 'zimage-turbo'?" in line
    assert line.endswith(f"built-in: {', '.join(sorted(BUILTIN))}") and "zimage-turbo" in BUILTIN
    rows = tmp_path / "rows.csv"
    rows.write_text("prompt\np\n")
    line = one_sentence(runner.invoke(app, ["batch", str(rows), "-w", "zimag"]))
    assert "did you mean 'zimage'?" in line
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("header.csv", "prompt,seed\n", "no rows to run"),
        ("empty.jsonl", "\n", "no rows to run"),
        ("job.yaml", "rows: []\n", "no rows to run"),
        (
            "topics.txt",
            "中秋节\n春节 庙会\n",
            "its first line (中秋节) names no workflow parameter",
        ),
        ("one-topic.csv", "中秋节\n", "its first line (中秋节) names no workflow parameter"),
    ],
)
def test_input_that_would_run_nothing_is_a_usage_error(tmp_path, name, text, message):
    source = tmp_path / name
    source.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    line = one_sentence(runner.invoke(app, ["batch", str(source), "-o", str(out)]))
    assert line.startswith(f"error: {source}: ") and message in line, line
    assert not out.exists() and not (tmp_path / "home").exists()


def test_a_topics_file_given_to_batch_points_to_recipe_run(tmp_path):
    source = tmp_path / "topics.txt"
    source.write_text("中秋节\n春节\n", encoding="utf-8")
    line = one_sentence(runner.invoke(app, ["batch", str(source)]))
    assert "For one topic per line, use comfyfn recipe run" in line


def test_a_vary_name_that_changes_nothing_names_itself_and_the_parameters(tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text("prompt\n猫\n", encoding="utf-8")
    args = ["batch", str(source), "--vary", "stepz=4,8", "--template", "{prompt}, {style}"]
    line = one_sentence(runner.invoke(app, [*args, "--vary", "style=ink"]))
    assert line.startswith("error: --vary stepz: is neither a workflow parameter nor a ")
    assert "parameters: prompt, negative, seed, width, height, batch_size, steps" in line
    job = tmp_path / "job.yaml"
    job.write_text("template: '{prompt}'\nvary: {stepz: [4, 8]}\nrows: [{prompt: p}]\n")
    assert "--vary stepz:" in one_sentence(runner.invoke(app, ["batch", str(job)]))


def test_a_mistyped_vary_name_without_a_template_is_a_usage_error_before_anything_runs(
    tmp_path, monkeypatch
):
    """Issue 16: each row's prompt is its own template; a name that no prompt uses and no
    parameter has is a usage error (it used to make every row an error, exit 1)."""

    def started(*_args: object, **_kwargs: object) -> None:
        pytest.fail("the batch went on to find a server: not a usage error")

    monkeypatch.setattr("comfyfn.cli._batch.resolve_servers", started)
    source = tmp_path / "rows.csv"
    source.write_text("prompt,seed\n猫 {style},1\n狗,2\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["batch", str(source), "-o", str(out), "--vary", "style=ink,photo"]
    line = one_sentence(runner.invoke(app, [*args, "--vary", "stepz=4,8"]))
    assert line.startswith("error: --vary stepz: is neither a workflow parameter nor a ")
    assert "did you mean 'steps'?" in line
    line = one_sentence(runner.invoke(app, [*args[:-1], "stlye=ink,photo"]))
    assert line.startswith("error: --vary stlye: ") and "did you mean 'style'?" in line
    assert not out.exists()  # nothing ran: no manifest
    job = tmp_path / "job.yaml"
    job.write_text("defaults: {prompt: '{subject}'}\nvary: {subjct: [a, b]}\nrows: [{seed: 1}]\n")
    line = one_sentence(runner.invoke(app, ["batch", str(job), "-o", str(out)]))
    assert line.startswith("error: --vary subjct: ") and "did you mean 'subject'?" in line


def test_errors_are_one_sentence_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    target = tmp_path / "no" / "such" / "dir" / "api.json"
    args = ["workflow", "convert", "zimage-turbo", "-o", str(target)]
    line = one_sentence(runner.invoke(app, args))
    assert line == f"error: {target}: No such file or directory"
    debug = runner.invoke(app, ["--debug", *args])
    assert isinstance(debug.exception, FileNotFoundError)
    monkeypatch.setenv("COMFYFN_DEBUG", "1")
    assert isinstance(runner.invoke(app, args).exception, FileNotFoundError)


def test_an_unexpected_error_is_named_a_bug_in_one_sentence(monkeypatch):
    def broken():
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("comfyfn.cli._recipe.list_recipes", broken)
    line = one_sentence(runner.invoke(app, ["recipe", "list"]), code=1)
    assert line.startswith("error: unexpected ZeroDivisionError: division by zero (a bug in ")
    assert "--debug" in line


def test_a_subprocess_error_has_no_traceback_and_the_documented_code(tmp_path):
    done = piped("recipe", "run", "social", str(tmp_path / "missing.txt"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: cannot read {tmp_path / 'missing.txt'}: " + (
        "No such file or directory"
    )


def test_piped_output_is_not_wrapped_at_80_columns():
    """Slow by design (~0.8 s): two ``comfyfn`` processes writing to a real pipe."""
    inspect = piped("workflow", "inspect", "zimage-turbo")
    assert inspect.returncode == 0, inspect.stderr
    row = next(x for x in inspect.stdout.splitlines() if " prompt " in x)
    assert "27.text" in row and "CLIPTextEncode" in row  # one table row, one line
    long = "x" * 300
    done = piped("generate", long, "-w", "zimage-trubo")
    (line,) = done.stderr.splitlines()  # one sentence, however long, on one line
    assert len(line) > 80 and "zimage-turbo" in line


def test_validate_says_what_it_checks_against():
    result = runner.invoke(app, ["workflow", "validate", "--help"])
    text = " ".join(result.output.split())
    assert "bundled with comfyfn" in text and "not model files or input images" in text
    assert "With --server, against that server's own definitions" in text
    done = runner.invoke(app, ["workflow", "validate", "zimage-turbo"])
    assert done.exit_code == 0
    newest = bundled_version()
    assert f"checked against the bundled ComfyUI {newest} definitions (files not checked)" in (
        done.output
    )


# -- recipes ------------------------------------------------------------------------------------


def test_recipe_show_prints_the_yaml_to_copy(tmp_path):
    shown = runner.invoke(app, ["recipe", "show", "ecommerce"])
    assert shown.exit_code == 0
    copy = tmp_path / "mine.yaml"
    copy.write_text(shown.stdout, encoding="utf-8")
    assert load_recipe(copy).outputs == load_recipe("ecommerce").outputs
    assert "鞋类, 鞋, shoes, footwear:" in shown.stdout
    assert runner.invoke(app, ["recipe", "show", str(copy)]).stdout == shown.stdout
    assert "unknown recipe 'socail'" in one_sentence(
        runner.invoke(app, ["recipe", "show", "socail"])
    )


def test_recipe_dry_run_prints_every_image_and_runs_nothing(tmp_path):
    topics = tmp_path / "products.txt"
    topics.write_text("鞋类: 白色帆布鞋\nShoes: running shoes\n宠物: 猫砂盆\n宠物: 狗粮\n")
    done = piped("recipe", "run", "ecommerce", str(topics), "--dry-run", "-o", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    lines = [x for x in done.stdout.splitlines() if ".png" in x]
    assert len(lines) == 12 and not (tmp_path / "o").exists() and not (tmp_path / "home").exists()
    lifestyle = [x for x in lines if "lifestyle.png" in x]
    shoes = load_recipe("ecommerce").tables["scene"]["shoes"]
    assert shoes in lifestyle[0] and shoes in lifestyle[1]  # Chinese and English category
    assert "1024×768 cover" in lifestyle[0] and "1024×768" in lifestyle[0]
    warnings = [x for x in done.stderr.splitlines() if x.startswith("warning:")]
    assert warnings == [  # once, naming the known categories
        "warning: recipe ecommerce: category '宠物' is not in its 'scene' table, so its "
        "default is used; known: 服装, clothing, apparel, 鞋类, 鞋, shoes, footwear, 电子产品, "
        "electronics, 食品, food, 家居, home, 美妆, beauty, cosmetics"
    ]


def test_recipe_seeds_can_be_fixed_as_in_the_article(tmp_path):
    recipe = tmp_path / "icons.yaml"  # the built-in, copied, with the icons' seeds fixed
    shown = runner.invoke(app, ["recipe", "show", "design"]).stdout
    recipe.write_text(shown.replace("# seed_base: 1000", "seed_base: 1000"), encoding="utf-8")
    topics = tmp_path / "topics.txt"
    topics.write_text("春节\n中秋\n", encoding="utf-8")
    done = piped("recipe", "run", str(recipe), str(topics), "--dry-run")
    icons = [x.split() for x in done.stdout.splitlines() if "/icon_" in x]
    seeds = [next(c for c in row if c.isdigit() and len(c) >= 4) for row in icons]
    assert seeds == [str(1000 + i) for i in range(5)] * 2


def test_recipe_run_with_no_topics_is_a_usage_error(tmp_path):
    topics = tmp_path / "topics.txt"
    topics.write_text("# only a comment\n\n", encoding="utf-8")
    line = one_sentence(runner.invoke(app, ["recipe", "run", "social", str(topics)]))
    assert line == f"error: {topics}: no topics (one per line; '#' starts a comment)"


def test_recipe_run_takes_the_batch_options():
    text = " ".join(runner.invoke(app, ["recipe", "run", "--help"]).output.split())
    for option in ("--workflow", "--retries", "--job-timeout", "--http-timeout", "--dry-run"):
        assert option in text, option


def test_logs_of_an_engine_that_never_started_is_an_error_naming_it():
    name = f"never-started-{os.getpid()}"
    result = runner.invoke(app, ["engine", "logs", "--name", name])
    assert result.exit_code == 1
    assert f"engine {name} has no log yet" in result.output


def test_a_queued_batch_and_its_worker_need_no_gateway_extra(monkeypatch, tmp_path):
    """Enqueuing, following, controlling and working a batch use the job store and its
    worker (:mod:`comfyfn.jobs`), not the HTTP service; the worker here places and retries
    the rows as the command line says."""
    from comfyfn.cli import _batch, _gateway

    monkeypatch.setattr(_gateway, "_missing", lambda module: module in _gateway.GATEWAY_MODULES)
    db = f"sqlite:///{tmp_path / 'queue.db'}"
    status = runner.invoke(app, ["batch", "status", "nightly", "--db", db])
    assert one_sentence(status) == "error: batch 'nightly': the store holds no batch of that name"
    queued = []
    monkeypatch.setattr(_batch, "run_queued", lambda run, *args: queued.append((run, args)))
    warmed = []
    monkeypatch.setattr(_batch, "warm_servers", lambda *args: warmed.append(args))
    rows = tmp_path / "rows.csv"
    rows.write_text("prompt\na lantern\n", encoding="utf-8")
    server = "http://127.0.0.1:9"
    args = ["--db", db, "-o", str(tmp_path / "out"), "--work", "--server", server]
    limits = ["--retries", "5", "--http-timeout", "30", "--job-timeout", "600", "--prime", "2"]
    working = runner.invoke(app, ["batch", str(rows), *args, *limits, "--warm"])
    assert working.exit_code == 0, working.output
    assert warmed == [([server], "zimage-turbo", 600.0)]  # the worker's servers, first
    [(run, (_, _, work_on))] = queued
    assert work_on == [server]
    settings = run.settings.worker(work_on, "here")
    assert (settings.servers, settings.worker_id) == ((server,), "here")
    assert (settings.retries, settings.http_timeout, settings.job_timeout) == (5, 30.0, 600.0)
    assert settings.prime == 2
    # following a batch enqueued before, from another machine, working it there too
    follow = ["batch", "--db", db, "--name", "nightly", "-o", str(tmp_path / "report")]
    assert (
        runner.invoke(app, [*follow, "--work", "--server", server, "--retries", "1"]).exit_code == 0
    )
    (run, (_, source, work_on)) = queued[-1]
    assert (source, work_on, run.settings.retries) == (None, [server], 1)
