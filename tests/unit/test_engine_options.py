"""Engine options decided without starting anything: device, requirements, paths, restarts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from comfyfn.cli._app import app
from comfyfn.engine import Device, Engine, EngineInstall, EngineState, device_args
from comfyfn.engine._tree import ComfyTree, cpu_requirements
from comfyfn.errors import ConfigError

runner = CliRunner()


# -- --device -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "accelerator", "args"),
    [
        (Device.cpu, None, ["--cpu"]),
        (Device.cpu, "cuda", ["--cpu"]),  # asked for the CPU: forced even with a GPU
        (Device.auto, None, ["--cpu"]),
        (Device.auto, "cuda", []),  # a GPU seen: ComfyUI picks it itself
        (Device.auto, "mps", []),
        (Device.cuda, "cuda", []),
    ],
)
def test_device_decision(device, accelerator, args):
    assert device_args(device, accelerator) == args


@pytest.mark.parametrize("accelerator", [None, "mps"])
def test_device_cuda_without_a_cuda_gpu_is_a_config_error(accelerator):
    with pytest.raises(ConfigError, match=r"--device cuda: the engine's torch \(/x/python\)"):
        device_args(Device.cuda, accelerator, "/x/python")


def test_device_parse_names_the_choices():
    assert Device.parse("auto") is Device.auto
    with pytest.raises(ConfigError, match="choose one of cpu, cuda, auto"):
        Device.parse("gpu")


# -- requirements of a source tree ----------------------------------------------------------

REQUIREMENTS_028 = """\
comfyui-frontend-package==1.45.21
comfyui-workflow-templates==0.11.9
comfyui-embedded-docs==0.5.8
torch
torchsde
torchvision
torchaudio
numpy>=1.25.0
SQLAlchemy>=2.0.0
comfy-kitchen==0.2.21
simpleeval>=1.0.0
blake3

#non essential dependencies:
kornia>=0.7.1
spandrel
pydantic~=2.0
PyOpenGL>=3.1.8
comfy-angle
"""


def test_cpu_requirements_keep_the_tree_list_but_torch_stand_ins_and_web_ui():
    assert cpu_requirements(REQUIREMENTS_028) == (
        "torchsde",
        "numpy>=1.25.0",
        "SQLAlchemy>=2.0.0",
        "comfy-kitchen==0.2.21",
        "simpleeval>=1.0.0",
        "blake3",
        "kornia>=0.7.1",
        "pydantic~=2.0",
        "requests",  # imported at start-up by releases that do not list it
        "typing_extensions",
    )


def test_cpu_requirements_skip_options_and_do_not_repeat_listed_extras():
    text = "-r other.txt\n--extra-index-url x\nRequests>=2  # comment\nTyping-Extensions\n"
    assert cpu_requirements(text) == ("Requests>=2", "Typing-Extensions")


# -- paths are checked first ------------------------------------------------------------------


def make_tree(root, version="9.9.9"):
    for mark in ("main.py", "nodes.py", "folder_paths.py", "comfy/model_management.py"):
        (root / mark).parent.mkdir(parents=True, exist_ok=True)
        (root / mark).write_text("")
    (root / "comfyui_version.py").write_text(f'__version__ = "{version}"\n')
    (root / "requirements.txt").write_text("torch\nnumpy\n")
    return root


def test_a_tree_is_recognised_with_its_version(tmp_path):
    tree = ComfyTree.at(make_tree(tmp_path))
    assert tree.version == "9.9.9"
    assert tree.requirements() == ("numpy", "requests", "typing_extensions")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing", r"--comfyui-path \S+/missing: no such directory"),
        ("file", r"--comfyui-path \S+/file: not a directory"),
        ("empty", r"--comfyui-path \S+/empty: not a ComfyUI source tree \(no main\.py, "),
    ],
)
def test_comfyui_path_that_is_not_a_tree_is_one_sentence(tmp_path, where, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=message):
        Engine("x", comfyui_path=tmp_path / where)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--comfyui-path", "--comfyui-path {}: no such directory"),
        ("--models-dir", "--models-dir {}: no such directory"),
    ],
)
def test_cli_up_with_a_missing_path_exits_2_with_one_sentence(
    tmp_path, monkeypatch, option, message
):
    monkeypatch.setenv("COMFYFN_HOME", str(tmp_path / "home"))
    missing = tmp_path / "nope"
    result = runner.invoke(app, ["engine", "up", "--name", "never", option, str(missing)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {message.format(missing)}"
    assert "Traceback" not in result.output
    assert not (tmp_path / "home").exists()  # nothing installed or started


def test_cli_install_with_a_non_tree_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYFN_HOME", str(tmp_path / "home"))
    result = runner.invoke(app, ["engine", "install", "--comfyui-path", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a ComfyUI source tree" in result.output


def test_cli_up_with_an_unknown_device_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["engine", "up", "--device", "gpu"])
    assert result.exit_code == 2
    assert "gpu" in result.output


# -- a running instance and the options asked for -------------------------------------------


def running_state(**changes):
    state = {
        "pid": 1,
        "port": 4000,
        "url": "http://127.0.0.1:4000",
        "log": "",
        "comfyui": "/trees/a",
        "models_dir": "/models/tiny",
        "started_at": 0.0,
        "device": "auto",
        "python": "/venvs/a/bin/python",
    }
    return EngineState(**{**state, **changes})


def test_differences_name_only_the_options_given(tmp_path):
    tree = make_tree(tmp_path / "b")
    (tmp_path / "m").mkdir()
    state = running_state()
    assert Engine("x").differences(state) == []  # nothing asked: whatever runs is fine
    assert Engine("x").differences(state, port=4000) == []
    asked = Engine("x", comfyui_path=tree, models_dir=tmp_path / "m", device="cpu")
    assert asked.differences(state, port=4001) == [
        f"ComfyUI /trees/a (asked: {tree})",
        f"--models-dir /models/tiny (asked: {tmp_path / 'm'})",
        "--device auto (asked: cpu)",
        "--port 4000 (asked: 4001)",
    ]


def test_tree_installs_are_keyed_by_content_not_path(tmp_path):
    home = EngineInstall(tmp_path / "engine")
    one = home.for_tree(make_tree(tmp_path / "one"))
    two = home.for_tree(make_tree(tmp_path / "two"))
    other = home.for_tree(make_tree(tmp_path / "other", version="1.0.0"))
    assert one.venv == two.venv and one.tiny_models == two.tiny_models
    assert other.venv == one.venv  # same requirements: one venv
    assert other.tiny_models != one.tiny_models  # another version: its own weights
    assert one.python == one.venv / "bin" / "python"
    (tmp_path / "two" / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / "two" / ".venv" / "bin" / "python").write_text("")
    assert two.python == tmp_path / "two" / ".venv" / "bin" / "python"  # its own venv wins
    assert two.is_installed(weights=False)  # nothing to build for it
    assert not one.is_installed(weights=False)
