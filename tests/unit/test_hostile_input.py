"""Hostile batch input: YAML alias bombs, lone surrogates, huge cells, escaping names, format
specs. Each is a row error naming row and column (or, for a file that cannot be read at all, a
ConfigError naming the file) — never a crash, a hang or a file outside the output folder."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from comfyfn.batch import expand, read_job_file, read_rows
from comfyfn.batch import rows as rows_module
from comfyfn.batch.rows import (
    MAX_CELL,
    MAX_NAME_PART,
    Row,
    RowError,
    count_rows,
    output_name_problem,
    template_problem,
    values_problem,
)
from comfyfn.errors import ConfigError
from comfyfn.recipes import load_recipe

# "billion laughs": 9 levels of 9 aliases = 9**9 (387 million) strings once expanded
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def errors(items):
    return [i for i in items if isinstance(i, RowError)]


# -- YAML: one loader for job files and recipes ------------------------------------------------


def refused_quickly(load, path):
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ConfigError) as info:
            load(path)
        seconds = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seconds < 2.0 and peak < 5_000_000, (seconds, peak)
    return str(info.value)


def test_billion_laughs_job_file_is_refused_at_once(tmp_path):
    job = write(tmp_path / "job.yaml", LAUGHS + "rows: *i\n")
    message = refused_quickly(read_job_file, job)
    assert message == (f"{job}: line 2: YAML aliases (*a) are not allowed; write the value out")


def test_billion_laughs_recipe_is_refused_at_once(tmp_path):
    recipe = write(
        tmp_path / "laughs.yaml",
        LAUGHS + "outputs:\n  - name: x\n    prompt: '{topic}'\n    deliver: 64x64\n"
        "    params: {lol: *i}\n",
    )
    message = refused_quickly(load_recipe, recipe)
    assert message.startswith(f"{recipe}: line 2: YAML aliases (*a) are not allowed")


def test_merge_keys_are_aliases_too_but_anchors_alone_are_fine(tmp_path):
    merged = write(
        tmp_path / "merge.yaml", "defaults: &d {steps: 4}\nrows:\n  - <<: *d\n    prompt: p\n"
    )
    with pytest.raises(ConfigError, match=r"line 3: YAML aliases \(\*d\) are not allowed"):
        read_job_file(merged)
    anchored = write(tmp_path / "anchor.yaml", "defaults: &d {steps: 4}\nrows: [{prompt: p}]\n")
    assert read_job_file(anchored)["defaults"] == {"steps": 4}


def test_settings_problems_are_sentences_for_every_kind_of_check():
    from typing import ClassVar

    from pydantic import Field

    from comfyfn._yaml import Settings, validate_settings

    class Server(Settings):
        shape: ClassVar[str] = "a mapping with a url"
        url: str
        timeout: float = Field(10.0, gt=0)
        retries: int = Field(3, lt=10)
        debug: bool = False

    class File(Settings):
        servers: dict[str, Server]

    data = {"servers": {"a": {"url": 1, "timeout": 0.0, "retries": 10, "debug": "yes"}, "b": 7}}
    with pytest.raises(ConfigError) as info:
        validate_settings(data, "s.yaml", File)
    assert str(info.value).splitlines() == [
        "s.yaml: servers.a.url: must be text, not 1",
        "s.yaml: servers.a.timeout: must be more than 0.0, not 0.0",
        "s.yaml: servers.a.retries: must be less than 10, not 10",
        "s.yaml: servers.a.debug: must be true or false, not 'yes'",
        "s.yaml: servers.b: must be a mapping with a url, not 7",
    ]
    with pytest.raises(ConfigError, match=r"^s.yaml: servers.a: missing field 'url'$"):
        validate_settings({"servers": {"a": {"timeout": 1.5}}}, "s.yaml", File)
    assert validate_settings({"servers": {}}, "s.yaml", File).servers == {}


def test_deeply_nested_yaml_is_a_config_error(tmp_path):
    deep = write(tmp_path / "deep.yaml", "rows: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ConfigError, match=f"{deep}: not valid YAML"):
        read_job_file(deep)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("vary: [seed]\nrows: []\n", "vary: must be a mapping, not a list"),
        ("defaults: [steps]\nrows: []\n", "defaults: must be a mapping, not a list"),
        ("template: [1]\nrows: []\n", "template: must be text, not a list"),
        ("prime: yes\nrows: []\n", "prime: must be a whole number, not true"),
        ("prime: -1\nrows: []\n", "prime: must be at least 0, not -1"),
        ("input: 7\n", "input: must be text, not 7"),
        ("rows: 5\n", "rows: must be a list, not 5"),
        (
            "workflow: 7\nrows: []\n",
            "workflow: must be a built-in name, a workflow file or a workflow mapping, not 7",
        ),
        ("defaults: {1:30: x}\nrows: []\n", "defaults: the name 90 is not text; put it in"),
        ("vary: {on: [1]}\nrows: []\n", "vary: the name true is not text; put it in quotes"),
        ("colour: red\nrows: []\n", "unknown field 'colour'; known: workflow, defaults, "),
        ("- rows\n", "must be a mapping of settings (workflow, defaults, vary, rows or input…)"),
        ("workflow: zimage\n", "give either 'rows' (a list) or 'input' (a CSV/JSONL file)"),
        ("rows: [{prompt: a}]\ninput: x.csv\n", "give either 'rows' or 'input', not both"),
        ("template: '{prompt'\nrows: []\n", "template: bad template: expected '}' before end"),
        ("template: '{p:>99}'\nrows: []\n", "template: bad template: use plain {names}, not"),
        ("vary: {seed: 4..1}\nrows: []\n", "vary.seed: the range must go up, at most 100001"),
        ("vary: {seed: ' , '}\nrows: []\n", "vary.seed: no values; expected a,b,c or 1..8"),
        ("vary: {seed: {a: 1}}\nrows: []\n", "vary.seed: must be a list or 'a..b', not a mapping"),
        ("vary: {seed: 5}\nrows: []\n", "vary.seed: must be a list or 'a..b', not 5"),
        ("vary: {seed: []}\nrows: []\n", "vary.seed: must not be empty"),
        ("vary: {s: [a, [b]]}\nrows: []\n", "vary.s[1]: must be text or a number, not a list"),
    ],
)
def test_job_file_problems_are_one_line_naming_file_and_setting(tmp_path, text, problem):
    job = write(tmp_path / "job.yaml", text)
    with pytest.raises(ConfigError) as info:
        read_job_file(job)
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"{job}: {problem}")


def test_job_file_vary_takes_lists_ranges_and_comma_text(tmp_path):
    job = write(
        tmp_path / "job.yaml",
        "vary: {seed: 1..3, style: 'ink, photo', cfg: [1, 2.5], 'on': [true]}\nrows: []\n",
    )
    assert read_job_file(job)["vary"] == [
        ("seed", [1, 2, 3]),
        ("style", ["ink", "photo"]),
        ("cfg", [1, 2.5]),
        ("on", [True]),
    ]


# -- lone surrogates ---------------------------------------------------------------------------


def test_jsonl_lone_surrogates_are_row_errors_and_the_rest_goes_on(tmp_path):
    f = write(
        tmp_path / "p.jsonl",
        '{"prompt": "ok \\ud800"}\n{"prompt": "fine"}\n{"\\udfff": "x", "prompt": "p"}\n'
        '{"prompt": "p", "tags": ["a", {"b": "\\ud83d"}]}\n{"prompt": "\\ud83d\\ude00"}\n',
    )
    out = list(expand(read_rows(f)))
    assert [str(e) for e in errors(out)] == [
        "row 1, column 'prompt': is not valid Unicode: a lone surrogate (\\ud800) at character 4",
        "row 3, column '\\udfff': the column name is not valid Unicode: a lone surrogate "
        "(\\udfff) at character 1",
        "row 4, column 'tags': is not valid Unicode: a lone surrogate (\\ud83d) at character 1",
    ]
    good = [r for r in out if isinstance(r, Row)]
    assert [r.values["prompt"] for r in good] == ["fine", "😀"]  # a valid pair is an emoji
    for e in errors(out):  # every message can be printed, stored and sent as UTF-8
        str(e).encode("utf-8")


def test_yaml_rows_and_template_surrogates_are_row_errors(tmp_path):
    rows = 'rows:\n  - {prompt: "a\\ud800 {style}"}\n  - {prompt: "b {style}"}\n'
    settings = read_job_file(write(tmp_path / "job.yaml", rows))
    out = list(expand(settings["rows"], vary=[("style", ["ink", "\udcff"])]))
    assert [(e.index, e.column, e.variant) for e in errors(out)] == [
        (1, "prompt", 0),
        (1, "prompt", 1),
        (2, "style", 1),  # a --vary value from undecodable command-line bytes
    ]
    assert [r.values["prompt"] for r in out if isinstance(r, Row)] == ["b ink"]


def test_csv_bytes_that_are_not_utf8_fail_the_file_before_anything_runs(tmp_path):
    f = tmp_path / "p.csv"
    f.write_bytes(b"prompt\nok\n\xed\xa0\x80\n")  # a surrogate encoded as UTF-8 bytes
    with pytest.raises(ConfigError, match="is not UTF-8"):
        count_rows(f)  # the CLI counts first, so no row has run when this fails
    with pytest.raises(ConfigError, match="is not UTF-8"):
        list(read_rows(f))
    job = write(tmp_path / "job.yaml", "input: p.csv\n")
    with pytest.raises(ConfigError, match="is not UTF-8"):
        read_job_file(job)  # a job file's input is counted (and so checked) at once too
    assert read_job_file(write(job, "rows: [{prompt: a}, {prompt: b}]\n"))["total"] == 2


# -- huge cells and lines ----------------------------------------------------------------------


def test_a_one_megabyte_csv_cell_is_a_row_error_naming_row_and_column(tmp_path):
    big = "x" * 1_000_000
    f = write(tmp_path / "p.csv", f'prompt,style\na,ink\nb,{big}\n"{big}",c\nd,photo\n')
    assert count_rows(f) == 4
    out = list(expand(read_rows(f), template="{prompt}, {style}"))
    assert [str(e) for e in errors(out)] == [
        f"row 2, column 'style': is 1,000,000 characters long; the limit is {MAX_CELL:,}",
        f"row 3, column 'prompt': is 1,000,000 characters long; the limit is {MAX_CELL:,}",
    ]
    assert [r.values["prompt"] for r in out if isinstance(r, Row)] == ["a, ink", "d, photo"]


def test_cells_up_to_the_limit_pass_and_a_template_cannot_grow_past_it(tmp_path):
    f = write(tmp_path / "p.csv", f"prompt\n{'y' * MAX_CELL}\n{'y' * (MAX_CELL + 1)}\n")
    first, second = list(expand(read_rows(f)))
    assert isinstance(first, Row) and len(first.values["prompt"]) == MAX_CELL
    assert isinstance(second, RowError) and (second.index, second.column) == (2, "prompt")
    (grown,) = list(expand([(1, {"a": "z" * MAX_CELL})], template="{a}{a}"))
    assert str(grown).startswith("row 1, column 'prompt': filled from the template, is 200,000")


def test_jsonl_huge_value_and_overlong_line(tmp_path, monkeypatch):
    f = write(
        tmp_path / "p.jsonl",
        json.dumps({"prompt": "p", "note": "n" * 1_000_000}) + "\n" + '{"prompt": "q"}\n',
    )
    out = list(expand(read_rows(f)))
    assert str(out[0]).startswith("row 1, column 'note': is 1,000,000 characters long")
    assert isinstance(out[1], Row) and out[1].values == {"prompt": "q"}
    monkeypatch.setattr(rows_module, "MAX_LINE", 1000)  # memory stays bounded per line
    out = list(expand(read_rows(f)))
    assert str(out[0]) == "row 1: the line is longer than 1,000 characters"
    assert isinstance(out[1], Row) and out[1].values == {"prompt": "q"}


def test_overlong_csv_line_fails_the_file_with_its_line_number(tmp_path, monkeypatch):
    monkeypatch.setattr(rows_module, "MAX_LINE", 1000)
    f = write(tmp_path / "p.csv", "prompt\nok\n" + "z" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"p.csv: line 3 is longer than 1,000 characters"):
        list(read_rows(f))


def test_deep_json_is_a_row_error(tmp_path):
    f = write(tmp_path / "p.jsonl", "[" * 100_000 + "\n" + '{"prompt": "q"}\n')
    first, second = list(read_rows(f))
    assert isinstance(first[1], RowError) and "nested too deeply" in str(first[1])
    assert second == (2, {"prompt": "q"})


# -- templates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["{seed:>999999999}", "{seed!r}", "{seed.real}", "{0}"])
def test_a_row_prompt_with_format_specs_is_refused(prompt):
    (err,) = list(expand([(4, {"prompt": prompt, "seed": 1})]))
    assert isinstance(err, RowError) and (err.index, err.column) == (4, "prompt")
    assert "bad template: use plain {names}" in str(err)


@pytest.mark.parametrize("template", ["{prompt", "{prompt:>99999999}", "{0}", "}"])
def test_template_problem_names_a_bad_template(template):
    assert (template_problem(template) or "").startswith("bad template: ")
    assert template_problem("{prompt}, {style} style, {{literal}}") is None


def test_a_prompt_with_a_lone_brace_is_text_but_a_template_must_parse():
    (row,) = list(expand([(1, {"prompt": "smile :-{"})]))
    assert isinstance(row, Row) and row.values["prompt"] == "smile :-{"
    (err,) = list(expand([(1, {"prompt": "p"})], template="{prompt"))
    assert isinstance(err, RowError) and "bad template" in str(err)


# -- output names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("/etc/cron.d/x", "is an absolute path"),
        ("C:/Windows/x", "starts with a drive ('C:')"),
        ("../outside", "'..' component"),
        ("a/../../b", "'..' component"),
        ("a/./b", "'.' or '..' component"),
        ("a\x00b", "NUL"),
        ("a\\..\\b", "backslash"),
        ("a//b", "empty path component"),
        ("a/", "empty path component"),
        ("", "is empty"),
        ("a\nb", "control character"),
        ("a\ud800", "lone surrogate"),
        ("x" * (MAX_NAME_PART + 1), f"longer than {MAX_NAME_PART} bytes"),
        ("长" * 81, f"longer than {MAX_NAME_PART} bytes"),  # 243 bytes
        (7, "must be text"),
        ("shots/hero_video1", "ends like the name of a row's other output ('_video1'"),
        ("a_animated0", "('_animated0'"),  # row a's animated image would be its namesake
    ],
)
def test_output_names_that_could_leave_the_folder(name, problem):
    assert problem in (output_name_problem(name) or "")


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "秋天/wechat",
        "a/b/c_1",
        "..a",
        "a..",
        " x ",
        "长" * 80,
        "a_video/b",
        "my_text",
        "x_file_1",
    ],
)
def test_plain_relative_output_names_pass(name):
    assert output_name_problem(name) is None


def test_expand_turns_an_escaping_name_into_a_row_error(tmp_path):
    f = write(
        tmp_path / "p.jsonl",
        '{"prompt": "p", "_name": "../../evil"}\n{"prompt": "p", "_name": "/tmp/x"}\n'
        '{"prompt": "p", "_name": "sub/ok"}\n',
    )
    out = list(expand(read_rows(f)))
    assert [(e.index, e.column) for e in errors(out)] == [(1, "_name"), (2, "_name")]
    assert isinstance(out[2], Row) and out[2].values["_name"] == "sub/ok"
    assert values_problem({"_name": "a/../b"}) == (
        "_name",
        "has a '.' or '..' component; it must stay inside the output folder",
    )


# -- the CLI's one sentence for an unusable output folder --------------------------------------


def _raised_from(cause, exc):
    try:
        try:
            raise cause
        except BaseException as inner:
            raise exc from inner
    except BaseException as outer:
        return outer


def test_output_failures_are_one_sentence_whether_raw_or_wrapped(tmp_path):
    import errno
    import sqlite3

    from comfyfn.batch import unusable_output

    def output_failure(exc, out):
        unusable = unusable_output(exc, out)
        return None if unusable is None else str(unusable)

    out = tmp_path / "out"
    out.mkdir()
    corrupt = sqlite3.DatabaseError("file is not a database")
    full = sqlite3.OperationalError("database or disk is full")
    expected_corrupt = f"the output folder {out} holds a manifest.sqlite that is not a usable"
    for exc in (corrupt, _raised_from(corrupt, ConfigError("cannot use the manifest"))):
        assert output_failure(exc, out).startswith(expected_corrupt)
        assert (unusable := unusable_output(exc, out)) and unusable.reason == "not-a-manifest"
    for exc in (
        full,
        OSError(errno.ENOSPC, "No space left on device"),
        ExceptionGroup("tasks", [ValueError("x"), OSError(errno.ENOSPC, "No space left")]),
    ):
        assert output_failure(exc, out).startswith(f"the output folder {out} is on a full disk")
        assert (unusable := unusable_output(exc, out)) and unusable.reason == "full"
    read_only = OSError(errno.EROFS, "Read-only file system", str(out / "manifest.lock"))
    assert output_failure(read_only, out) == (
        f"the output folder {out} is read-only (Read-only file system: {out}/manifest.lock); "
        "give a writable folder with -o"
    )
    assert (unusable := unusable_output(read_only, out)) and unusable.folder == str(out)
    elsewhere = OSError(errno.EACCES, "Permission denied", str(tmp_path / "rows.csv"))
    assert output_failure(_raised_from(elsewhere, ConfigError("cannot read")), out) is None
    assert output_failure(ConfigError("in use by another comfyfn batch"), out) is None
    assert output_failure(ValueError("a bug"), out) is None
