"""The real Z-Image-Turbo graph on the local engine, through the sync and async clients."""

from __future__ import annotations

import io

import pytest
from PIL import Image as PIL

import comfyfn
from comfyfn import events as ev
from comfyfn.provenance import read_provenance, read_text_chunks

pytestmark = pytest.mark.engine

PROMPT = "一位身着旗袍的女性漫步在上海外滩夜景"


def test_generate_returns_images_with_metadata(server, unique, tmp_path):
    seed = unique()
    with comfyfn.Client(server) as c:
        gen = c.generate(PROMPT, seed=seed, width=128, height=96)
    assert gen.seed == seed
    assert gen.server == server
    assert len(gen.prompt_id) == 36
    assert gen.timings.total >= gen.timings.executed > 0
    (image,) = gen.images
    assert (image.width, image.height) == (128, 96)
    assert image.to_pil().size == (128, 96)
    assert image.data.startswith(b"\x89PNG")
    path = image.save(tmp_path / "out.png")
    meta = read_provenance(path)
    assert meta["prompt"] == PROMPT
    assert meta["seed"] == seed
    assert (meta["width"], meta["height"], meta["steps"], meta["cfg"]) == (128, 96, 8, 1.0)
    assert meta["sampler"] == "res_multistep"
    assert meta["model"] == "z_image_turbo_bf16.safetensors"
    assert meta["text_encoder"] == "qwen_3_4b.safetensors"
    assert meta["vae"] == "ae.safetensors"
    assert (meta["server"], meta["prompt_id"]) == (server, gen.prompt_id)
    workflow = comfyfn.workflow._graph.load_api_graph(read_text_chunks(path)["prompt"])
    assert workflow["3"]["inputs"]["seed"] == seed
    # the server's own history agrees with what we report
    with comfyfn.Client(server) as c:
        entry = c.history(gen.prompt_id)[gen.prompt_id]
    assert entry["prompt"][2]["3"]["inputs"]["seed"] == seed


def test_fixed_seed_gives_byte_identical_images(server, unique):
    a, b = unique(), unique()
    with comfyfn.Client(server) as c:
        first = c.generate("a red apple", seed=a, size=(64, 64))
        other = c.generate("a red apple", seed=b, size=(64, 64))
        again = c.generate("a red apple", seed=a, size=(64, 64))
    assert "3" not in again.cached_nodes  # the sampler really ran again
    assert first.images[0].data == again.images[0].data
    assert first.images[0].data != other.images[0].data


def test_batch_size_and_cfg_with_real_negative(server, unique):
    with comfyfn.Client(server) as c:
        gen = c.generate(
            "a cat", negative="blurry", cfg=2.0, seed=unique(), size="64x80", batch_size=2
        )
    assert [(i.width, i.height) for i in gen.images] == [(64, 80), (64, 80)]
    neg_node = gen.workflow["3"]["inputs"]["negative"][0]
    assert gen.workflow[neg_node]["inputs"]["text"] == "blurry"
    assert gen.params["negative"] == "blurry"


def test_seed_none_is_random_and_reported(server):
    with comfyfn.Client(server) as c:
        gen = c.generate("a dog", size=(64, 64))
        entry = c.history(gen.prompt_id)[gen.prompt_id]
    assert isinstance(gen.seed, int)
    assert entry["prompt"][2]["3"]["inputs"]["seed"] == gen.seed


def test_stream_yields_typed_events_in_order(server, unique):
    with comfyfn.Client(server) as c:
        events = list(c.stream("a boat", seed=unique(), size=(64, 64), steps=4))
    assert isinstance(events[0], ev.Queued)
    assert isinstance(events[1], ev.Started)
    assert isinstance(events[-1], ev.Succeeded)
    steps = [(e.value, e.max) for e in events if isinstance(e, ev.Progress) and e.node_id == "3"]
    # ComfyUI 0.3.75 reports every step; 0.28 throttles progress to one message per 100 ms
    values = [value for value, _ in steps]
    assert {m for _, m in steps} == {4} and values == sorted(set(values)) and values[-1] == 4
    assert all(
        e.class_type == "KSampler"
        for e in events
        if isinstance(e, ev.Progress) and e.node_id == "3"
    )
    started = [e.class_type for e in events if isinstance(e, ev.NodeStarted)]
    assert started.index("KSampler") < started.index("VAEDecode") < started.index("SaveImage")
    finished = [e for e in events if isinstance(e, ev.NodeFinished)]
    assert [f.class_type for f in finished] == ["SaveImage"]
    assert finished[0].output["images"][0]["filename"].endswith(".png")


@pytest.mark.anyio
async def test_async_client_and_module_level_helpers(server, unique):
    async with comfyfn.AsyncClient(server) as c:
        gen = await c.generate(PROMPT, seed=unique(), size=(64, 64))
        kinds = [type(e).__name__ async for e in c.stream("x", seed=unique(), size=(64, 64))]
    assert gen.images[0].width == 64
    assert kinds[0] == "Queued" and kinds[-1] == "Succeeded"
    one_shot = await comfyfn.agenerate("y", server=server, seed=unique(), size=(64, 64))
    assert PIL.open(io.BytesIO(one_shot.images[0].data)).size == (64, 64)


def test_module_level_generate_uses_env_server(server, unique, monkeypatch):
    monkeypatch.setenv("COMFYFN_SERVER", server)
    gen = comfyfn.generate("z", seed=unique(), size=(64, 64))
    assert gen.server == server


def test_generation_save_names_files_by_seed(server, unique, tmp_path):
    seed = unique()
    with comfyfn.Client(server) as c:
        paths = c.generate("q", seed=seed, size=(64, 64), batch_size=2).save(tmp_path)
    assert [p.name.split("_")[1:] for p in paths] == [[str(seed), "0.png"], [str(seed), "1.png"]]
    assert all(read_provenance(p)["seed"] == seed for p in paths)
