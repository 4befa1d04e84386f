"""Recipes load from YAML, expand topics into job rows and pick generate sizes (pure)."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import textwrap

import pytest

from comfyfn import ComfyWarning
from comfyfn.errors import ConfigError
from comfyfn.recipes import (
    Recipe,
    builtin_names,
    list_recipes,
    load_recipe,
    nearest_generate_size,
    slug,
)

PLATFORM_SIZES = [
    (1080, 1080),  # WeChat
    (1200, 675),  # Weibo
    (1080, 1920),  # Douyin
    (1242, 1660),  # Xiaohongshu
    (800, 800),  # e-commerce main
    (1200, 800),  # e-commerce detail
    (1024, 768),  # e-commerce lifestyle
    (1920, 1080),  # design background
    (512, 512),  # design icon
    (800, 600),  # design decoration
]

MINIMAL = """
description: mine
defaults: {steps: 4}
outputs:
  - name: square
    prompt: "a photo of {topic}"
    deliver: 100x100
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_user_dirs(monkeypatch):
    monkeypatch.delenv("COMFYFN_RECIPES", raising=False)


# -- built-ins -------------------------------------------------------------------------------


def test_every_builtin_recipe_loads():
    assert builtin_names() == ["design", "ecommerce", "social"]
    for name in builtin_names():
        recipe = load_recipe(name)
        assert isinstance(recipe, Recipe) and recipe.name == name
        assert recipe.description and recipe.workflow == "zimage-turbo" and recipe.outputs
        rows = list(recipe.rows(["测试主题"]))
        assert len(rows) == recipe.images_per_topic
        for row in rows:
            assert row["width"] % 16 == 0 and row["height"] % 16 == 0
            assert "{" not in row["prompt"] and "negative" not in row
    assert [r.name for r in list_recipes()] == builtin_names()


def test_builtin_sizes():
    def sizes(name):
        return {o.name: (o.deliver, o.count, o.fit) for o in load_recipe(name).outputs}

    assert sizes("social") == {
        "wechat": ((1080, 1080), 1, "cover"),
        "weibo": ((1200, 675), 1, "cover"),
        "douyin": ((1080, 1920), 1, "cover"),
        "xiaohongshu": ((1242, 1660), 1, "cover"),
    }
    assert sizes("ecommerce") == {
        "main": ((800, 800), 1, "cover"),
        "detail": ((1200, 800), 1, "cover"),
        "lifestyle": ((1024, 768), 1, "cover"),
    }
    assert sizes("design") == {
        "background": ((1920, 1080), 1, "cover"),
        "icon": ((512, 512), 5, "cover"),
        "decoration": ((800, 600), 1, "cover"),
    }
    assert set(load_recipe("ecommerce").tables["scene"]) >= {
        "服装",
        "鞋类",
        "电子产品",
        "食品",
        "家居",
        "美妆",
        "default",
    }


def test_pydantic_is_imported_only_when_a_settings_file_is_read():
    code = (
        "import sys, comfyfn.cli._app, comfyfn.recipes, comfyfn.batch.rows\n"
        "before = 'pydantic' in sys.modules\n"
        "comfyfn.recipes.load_recipe('social')\n"
        "print(before, 'pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]  # the CLI starts without its ~80 ms


# -- rows -------------------------------------------------------------------------------------


def test_icon_set_has_seeds_1000_to_1004_and_numbered_names():
    rows = [r for r in load_recipe("design").rows(["春节"]) if r["_name"].startswith("春节/icon")]
    assert [r["_name"] for r in rows] == [f"春节/icon_{k}" for k in range(1, 6)]
    assert [r["seed"] for r in rows] == [1000, 1001, 1002, 1003, 1004]  # the article's 1000 + i
    assert all(r["_deliver"] == {"width": 512, "height": 512, "fit": "cover"} for r in rows)


def test_icon_seeds_are_the_same_for_every_topic_and_base_seed():
    def icon_seeds(topic: str, seed: int) -> list[int]:
        rows = load_recipe("design").rows([topic], seed=seed)
        return [r["seed"] for r in rows if "/icon_" in r["_name"]]

    assert icon_seeds("春节", 0) == icon_seeds("中秋", 7) == list(range(1000, 1005))


def test_seeds_are_deterministic_and_depend_on_base_seed():
    recipe = load_recipe("social")
    a = [r["seed"] for r in recipe.rows(["咖啡", "猫"])]
    b = [r["seed"] for r in recipe.rows(["咖啡", "猫"])]
    c = [r["seed"] for r in recipe.rows(["咖啡", "猫"], seed=1)]
    assert a == b and a != c
    assert len(set(a)) == len(a)
    assert all(isinstance(s, int) and 0 <= s < 2**53 for s in a + c)
    # a topic's seeds do not depend on which other topics are in the batch
    assert [r["seed"] for r in recipe.rows(["猫"])] == a[4:]


def test_row_shape():
    (row, *_) = load_recipe("social").rows(["秋天的故宫"], seed=7)
    assert row["prompt"].startswith("以「秋天的故宫」为主题")
    assert (row["width"], row["height"]) == (1088, 1088)
    assert row["steps"] == 8
    assert row["_name"] == "秋天的故宫/wechat"
    assert row["_deliver"] == {"width": 1080, "height": 1080, "fit": "cover"}
    assert row["_recipe"] == "social" and row["_topic"] == "秋天的故宫"


def test_blank_and_comment_topics_are_skipped():
    rows = load_recipe("social").rows(["", "  ", "# 注释", "  咖啡  \n"])
    assert {r["_topic"] for r in rows} == {"咖啡"}


def test_rows_stream_without_materialising_topics():
    endless = (f"topic {i}" for i in itertools.count())
    first = list(itertools.islice(load_recipe("social").rows(endless), 6))
    assert [r["_name"] for r in first][-2:] == ["topic-1/wechat", "topic-1/weibo"]


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("秋天的故宫", "秋天的故宫"),
        ("a/b\\c d", "a-b-c-d"),
        ("服装：白色 T恤", "服装-白色-T恤"),
        ("../../etc/passwd", "etc-passwd"),
        ('what? <x>|"y"*', "what-x-y"),
        ("...", "topic"),
    ],
)
def test_slug_is_file_name_safe(topic, expected):
    assert slug(topic) == expected


def test_long_slugs_are_cut_but_stay_distinct():
    a, b = slug("长" * 100 + "a"), slug("长" * 100 + "b")
    assert a != b and len(a) <= 70
    assert re.fullmatch(r"[\w.-]+", a)


def test_category_table_lookup_and_default():
    recipe = load_recipe("ecommerce")
    scenes = recipe.tables["scene"]

    def lifestyle(topic):
        return next(r for r in recipe.rows([topic]) if r["_name"].endswith("/lifestyle"))

    row = lifestyle("服装: 白色纯棉T恤")
    assert row["prompt"].startswith("白色纯棉T恤的使用场景图")
    assert scenes["服装"] in row["prompt"]
    assert row["_name"] == "服装-白色纯棉T恤/lifestyle"
    assert scenes["电子产品"] in lifestyle("电子产品：蓝牙耳机")["prompt"]  # full-width colon
    with pytest.warns(ComfyWarning, match="category '宠物用品' is not in its 'scene' table"):
        unknown = lifestyle("宠物用品: 猫砂盆")["prompt"]
    assert scenes["default"] in unknown and unknown.startswith("猫砂盆")
    bare = lifestyle("保温杯")["prompt"]
    assert scenes["default"] in bare and bare.startswith("保温杯")


# -- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("w", "h"), PLATFORM_SIZES)
def test_nearest_generate_size_for_platform_sizes(w, h):
    gw, gh = nearest_generate_size(w, h)
    assert gw % 16 == 0 and gh % 16 == 0
    assert gw >= w and gh >= h
    assert abs(gw / gh - w / h) / (w / h) < 0.01
    assert gw - w < 16 * 4 and gh - h < 16 * 4  # no needlessly large generations


def test_nearest_generate_size_documented_examples():
    assert nearest_generate_size(1080, 1080) == (1088, 1088)
    assert nearest_generate_size(1200, 675) == (1248, 704)
    assert nearest_generate_size(1080, 1920) == (1088, 1936)
    assert nearest_generate_size(1242, 1660) == (1248, 1664)
    assert nearest_generate_size(1920, 1080) == (1936, 1088)
    assert nearest_generate_size(800, 600) == (832, 624)
    assert nearest_generate_size(1024, 768) == (1024, 768)


def test_nearest_generate_size_max_pixels_scales_down():
    gw, gh = nearest_generate_size(3840, 2160, max_pixels=1024 * 1024)
    assert gw * gh <= 1024 * 1024 and gw % 16 == 0 and gh % 16 == 0
    assert abs(gw / gh - 16 / 9) / (16 / 9) < 0.01
    assert gw * gh > 0.8 * 1024 * 1024
    assert nearest_generate_size(1080, 1080, max_pixels=2_000_000) == (1088, 1088)


def test_nearest_generate_size_rejects_bad_values():
    with pytest.raises(ConfigError, match="width"):
        nearest_generate_size(0, 10)


# -- user recipes -----------------------------------------------------------------------------


def test_user_recipe_by_path(tmp_path):
    path = _write(tmp_path, "mine.yaml", MINIMAL)
    for ref in (path, str(path)):
        recipe = load_recipe(ref)
        assert recipe.name == "mine" and recipe.source == str(path)
    (row,) = recipe.rows(["x"])
    assert (row["width"], row["height"], row["steps"]) == (112, 112, 4)
    assert row["_deliver"] == {"width": 100, "height": 100, "fit": "cover"}


def test_user_recipes_via_env_var(tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _write(one, "mine.yaml", MINIMAL)
    _write(two, "social.yml", MINIMAL.replace("mine", "my social"))
    monkeypatch.setenv("COMFYFN_RECIPES", f"{one}{__import__('os').pathsep}{two}")
    assert load_recipe("mine").description == "mine"
    assert load_recipe("social").description == "my social"  # a user recipe hides a built-in
    names = {r.name: r.description for r in list_recipes()}
    assert names["mine"] == "mine" and names["social"] == "my social" and "design" in names
    monkeypatch.delenv("COMFYFN_RECIPES")  # read at call time
    with pytest.raises(ConfigError, match="unknown recipe 'mine'"):
        load_recipe("mine")
    assert load_recipe("mine", extra_dirs=[one]).name == "mine"


def test_unknown_recipe_lists_choices():
    with pytest.raises(ConfigError, match="choose from design, ecommerce, social"):
        load_recipe("nope")


def test_generate_override_negative_params_and_contain(tmp_path):
    path = _write(
        tmp_path,
        "full.yaml",
        """
        workflow: zimage
        tables:
          mood: {猫: 慵懒, default: 安静}
        outputs:
          - name: poster
            prompt: "{product}, {mood}, {{literal}}"
            negative: "blurry {topic}"
            deliver: 1000x500
            generate: 1024x512
            count: 2
            fit: contain
            background: "#102030"
            params: {steps: 30, cfg: 4}
        """,
    )
    recipe = load_recipe(path)
    assert recipe.workflow == "zimage"
    rows = list(recipe.rows(["猫: 橘猫"]))
    assert [r["_name"] for r in rows] == ["猫-橘猫/poster_1", "猫-橘猫/poster_2"]
    row = rows[0]
    assert row["prompt"] == "橘猫, 慵懒, {literal}"
    assert row["negative"] == "blurry 猫: 橘猫"
    assert (row["width"], row["height"], row["steps"], row["cfg"]) == (1024, 512, 30, 4)
    assert row["_deliver"] == {
        "width": 1000,
        "height": 500,
        "fit": "contain",
        "background": (16, 32, 48),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            MINIMAL.replace("deliver: 100x100", "deliver: 1080"),
            "bad.yaml: outputs[0].deliver: 1080 is not WIDTHxHEIGHT (e.g. 1080x1920)",
        ),
        (
            MINIMAL.replace("deliver: 100x100", "deliver: 100x100\n    generate: 100x100"),
            "bad.yaml: outputs[0].generate: 100x100 is not multiples of 16",
        ),
        (MINIMAL.replace("deliver:", "deliever:"), "outputs[0]: unknown field 'deliever'"),
        (MINIMAL.replace("{topic}", "{topik}"), "outputs[0].prompt: unknown placeholder {topik}"),
        (MINIMAL.replace("{topic}", "{topic"), "outputs[0].prompt: bad template"),
        (MINIMAL + "    count: 0\n", "outputs[0].count: must be at least 1, not 0"),
        (MINIMAL + "    count: 1001\n", "outputs[0].count: must be at most 1000, not 1001"),
        (MINIMAL + "    count: two\n", "outputs[0].count: must be a whole number, not 'two'"),
        (MINIMAL + "    count: '2'\n", "outputs[0].count: must be a whole number, not '2'"),
        (
            MINIMAL + "    fit: stretch\n",
            "outputs[0].fit: must be 'cover' or 'contain', not 'stretch'",
        ),
        (MINIMAL + "    background: red\n", "outputs[0].background: 'red' is not a colour"),
        (MINIMAL + "    params: {seed: 1}\n", "outputs[0].params.seed: cannot be set here"),
        (MINIMAL.replace("steps: 4", "batch_size: 4"), "defaults.batch_size: cannot be set"),
        (MINIMAL.replace("name: square", "name: a/b"), "outputs[0].name: 'a/b' must be"),
        (
            MINIMAL + MINIMAL.split("outputs:")[1],
            "bad.yaml: outputs: outputs[0] and outputs[1] are both named 'square'",
        ),
        ("outputs: []\n", "bad.yaml: outputs: must not be empty"),
        ("description: x\n", "bad.yaml: missing field 'outputs'"),
        ("- just a list\n", "bad.yaml: must be a mapping with an 'outputs' list, not a list"),
        ("outputs: [just text]\n", "outputs[0]: must be a mapping with name, prompt and deliver"),
        (MINIMAL.replace("mine", "[a]"), "bad.yaml: description: must be text, not a list"),
        (MINIMAL + "workflow: 7\n", "bad.yaml: workflow: must be text, not 7"),
        (MINIMAL + "    negative: 5\n", "outputs[0].negative: must be text, not 5"),
        (MINIMAL.replace('"a photo of {topic}"', "''"), "outputs[0].prompt: must be non-empty"),
        (MINIMAL.replace("{steps: 4}", "[steps]"), "bad.yaml: defaults: must be a mapping, not"),
        (MINIMAL.replace("{steps: 4}", "{3: x}"), "defaults: the name 3 is not text; put it"),
        ("outputs: [\n", "bad.yaml: line"),
        (MINIMAL + "tables: {scene: {a: b}}\n", "tables.scene: needs a 'default' entry"),
        (MINIMAL + "tables: {scene: {default: 5}}\n", "tables.scene.default: must be text, not 5"),
        (MINIMAL + "tables: {topic: {default: x}}\n", "tables.topic: 'topic' is a built-in"),
        (MINIMAL + "tables: {my scene: {default: x}}\n", "tables.my scene: table names must be"),
        (MINIMAL + "colour: red\n", "bad.yaml: unknown field 'colour'"),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path, text, message):
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    (line,) = str(info.value).splitlines()  # one problem, one line
    assert message in line
    assert line.startswith(f"{path}: ")


def _problems(path):
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    return [line.removeprefix(f"{path}: ") for line in str(info.value).splitlines()]


def test_every_problem_is_one_line_naming_file_and_field(tmp_path):
    text = MINIMAL.replace("deliver: 100x100", "deliver: big\n    fit: stretch\n    count: 0")
    text += "  - name: second\n"
    assert _problems(_write(tmp_path, "bad.yaml", text)) == [
        "outputs[0].deliver: 'big' is not WIDTHxHEIGHT (e.g. 1080x1920)",
        "outputs[0].count: must be at least 1, not 0",
        "outputs[0].fit: must be 'cover' or 'contain', not 'stretch'",
        "outputs[1]: missing field 'prompt'",
        "outputs[1]: missing field 'deliver'",
    ]


def test_a_misspelt_field_is_reported_alone_with_the_known_ones(tmp_path):
    path = _write(tmp_path, "bad.yaml", MINIMAL.replace("deliver:", "deliever:") + "colour: x\n")
    assert _problems(path) == [
        "unknown field 'colour'; known: description, workflow, defaults, tables, outputs",
    ]
    path = _write(tmp_path, "bad.yaml", MINIMAL.replace("deliver:", "deliever:"))
    assert _problems(path) == [  # not also "missing field 'deliver'"
        "outputs[0]: unknown field 'deliever'; known: name, prompt, negative, deliver, "
        "generate, count, fit, background, params, seed_base, seeds",
    ]


def test_many_problems_are_capped_and_never_pydantic_s_own_text(tmp_path):
    many = "outputs:\n" + "".join(f"  - {{name: o{i}, prompt: p}}\n" for i in range(30))
    problems = _problems(_write(tmp_path, "bad.yaml", many))
    assert problems[:2] == [f"outputs[{i}]: missing field 'deliver'" for i in (0, 1)]
    assert len(problems) == 21 and problems[-1] == "… and 10 more problems"
    for text in ("outputs: 7\n", "outputs: [{name: [1]}]\n", "tables: {1: 2}\noutputs: []\n"):
        message = "\n".join(_problems(_write(tmp_path, "bad.yaml", text)))
        for raw in ("Input should", "pydantic", "validation error", "type="):
            assert raw not in message, message


def test_hostile_names_are_printed_escaped_on_one_line(tmp_path):
    path = _write(tmp_path, "bad.yaml", MINIMAL + 'outputs2: x\n"a\\nb\\ud800": y\n')
    (problem,) = _problems(path)
    assert problem.startswith("unknown fields 'outputs2', 'a\\nb\\ud800'; known:")
    problem.encode("utf-8")


def test_unreadable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")


# -- hostile topics and names -----------------------------------------------------------------

HOSTILE_TOPICS = [
    "../../etc/passwd",
    "/abs/path",
    "..",
    ".",
    "a\x00b",
    "C:\\Windows\\x",
    "a//b",
    "\t\n",
    "x\udcff",  # from a caller holding undecodable bytes
    "𠀀" * 100,  # 4-byte characters: a cut by characters alone would exceed 255 bytes
    "长" * 200,
    "[/x] [batch, 3]",
]


@pytest.mark.parametrize("topic", HOSTILE_TOPICS)
@pytest.mark.filterwarnings("ignore::comfyfn.ComfyWarning")  # unknown categories ('C:')
def test_recipe_names_never_leave_the_output_folder(topic):
    from comfyfn.batch.rows import output_name_problem

    for name in builtin_names():
        for row in load_recipe(name).rows([topic]):
            assert output_name_problem(row["_name"]) is None, row["_name"]
    assert len(slug(topic).encode("utf-8")) <= 200


@pytest.mark.parametrize("name", ["abc\n", "a" * 49, "..", "-a"])
def test_output_names_are_short_plain_words(tmp_path, name):
    path = _write(tmp_path, "bad.yaml", MINIMAL.replace("name: square", f"name: {name!r}"))
    with pytest.raises(ConfigError, match=r"outputs\[0\].name"):
        load_recipe(path)
