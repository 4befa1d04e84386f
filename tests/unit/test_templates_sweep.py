"""The official templates (PyPI comfyui-workflow-templates-json) against every bundled set
of node definitions (0.3.75, 0.28.0, 0.33.0): every template whose nodes all exist converts
and passes validation offline (model and input files are not checked), except the ones
listed here, each for the reason its problem shows. The coverage on each version is printed.

The templates package is newer than ComfyUI 0.33.0 (its nodes were saved by ComfyUI up to
0.35), so some of its templates need a newer server: a model or option the bundled node
does not offer yet, or an input or output it does not have yet. Those are listed with the
problem that shows it; a real server of that version rejects them too.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from comfyfn import Workflow
from comfyfn.errors import NodeProblem, WorkflowInvalid
from comfyfn.workflow import bundled_object_info
from comfyfn.workflow._uiformat import ui_to_api
from comfyfn.workflow._validation import problems

#: Made for a ComfyUI newer than 0.28.0 → the first problem 0.28's definitions show.
NEEDS_NEWER_THAN_0_28 = {
    "api_anthropic_claude_fable5.json": "ClaudeNode: model 'Fable 5' is not one of",
    "api_anthropic_claude_fable5_1.json": "ClaudeNode: model 'Fable 5.1' is not one of",
    "api_anthropic_claude_opus_5.json": "ClaudeNode: model 'Opus 5' is not one of",
    "api_anthropic_claude_opus_5_5.json": "ClaudeNode: model 'Opus 5.5' is not one of",
    "api_anthropic_claude_sonnet5.json": "ClaudeNode: model 'Sonnet 5' is not one of",
    "api_elevenlabs_v4_text_to_dialogue.json": (
        "ElevenLabsTextToDialogue: model 'eleven_v4' is not one of"
    ),
    "api_elevenlabs_v4_text_to_speech.json": (
        "ElevenLabsTextToSpeech: model 'eleven_v4' is not one of"
    ),
    "api_grok_imagine_image_2_image_edit.json": (
        "GrokImageEditNodeV2: model 'grok-imagine-image-2.0' is not one of"
    ),
    "api_grok_imagine_image_2_t2i.json": (
        "GrokImageNode: model 'grok-imagine-image-2.0' is not one of"
    ),
    "api_grok_imagine_video_1_5_lite_i2v.json": (
        "GrokVideoNode: model 'grok-imagine-video-1.5-lite' is not one of"
    ),
    "api_grok_imagine_video_1_5_lite_t2v.json": (
        "GrokVideoNode: model 'grok-imagine-video-1.5-lite' is not one of"
    ),
    "api_meshy7_1_image_to_model.json": "MeshyImageToModelNode: model 'meshy-7.1' is not one of",
    "api_meshy7_1_text_to_model.json": "MeshyTextToModelNode: model 'meshy-7.1' is not one of",
    "api_meshy7_image_to_model.json": "MeshyImageToModelNode: model 'meshy-7.1' is not one of",
    "api_meshy7_text_to_model.json": "MeshyTextToModelNode: model 'meshy-7' is not one of",
    "api_meshy_image_to_model.json": "MeshyImageToModelNode: model 'meshy-6' is not one of",
    "api_meshy_multi_image_to_model.json": (
        "MeshyMultiImageToModelNode: model 'meshy-6' is not one of"
    ),
    "api_meshy_text_to_model.json": "MeshyTextToModelNode: model 'meshy-6' is not one of",
    "api_nano_banana_2_1_image_edit.json": (
        "GeminiNanoBanana2V2: model 'Gemini Nano Banana 2.1' is not one of"
    ),
    "api_nano_banana_2_1_t2i.json": (
        "GeminiNanoBanana2V2: model 'Gemini Nano Banana 2.1' is not one of"
    ),
    "api_openai_gpt6_astra.json": "OpenAIChatNode: model 'gpt-6-astra' is not one of",
    "api_openai_gpt_image_25_flare_image_edit.json": (
        "OpenAIGPTImageNodeV2: model 'gpt-image-2.5-flare' is not one of"
    ),
    "api_openai_gpt_image_25_flare_t2i.json": (
        "OpenAIGPTImageNodeV2: model 'gpt-image-2.5-flare' is not one of"
    ),
    "api_openai_gpt_image_25_sunburst_image_edit.json": (
        "OpenAIGPTImageNodeV2: model 'gpt-image-2.5-sunburst' is not one of"
    ),
    "api_openai_gpt_image_25_sunburst_t2i.json": (
        "OpenAIGPTImageNodeV2: model 'gpt-image-2.5-sunburst' is not one of"
    ),
    "api_openrouter_gpt5_6_luna.json": (
        "OpenRouterLLMNode: model 'openai/gpt-5.6-luna' is not one of"
    ),
    "api_openrouter_gpt5_6_sol.json": "OpenRouterLLMNode: model 'openai/gpt-5.6-sol' is not one of",
    "api_openrouter_gpt5_6_terra.json": (
        "OpenRouterLLMNode: model 'openai/gpt-5.6-terra' is not one of"
    ),
    "api_openrouter_grok4_5.json": "OpenRouterLLMNode: model 'x-ai/grok-4.5' is not one of",
    "api_openrouter_kimi_k3.json": "OpenRouterLLMNode: model 'moonshotai/kimi-k3' is not one of",
    "api_recraft_v4_1_flash_t2i.json": (
        "RecraftV4TextToImageNode: model 'recraftv4_1_flash' is not one of"
    ),
    "api_recraft_v4_1_t2i.json": "RecraftV4TextToImageNode: model 'recraftv4_1' is not one of",
    "api_recraft_v4_1_text_to_vector.json": (
        "RecraftV4TextToVectorNode: model 'recraftv4_1_vector' is not one of"
    ),
    "api_seedance2_5_draft_i2v.json": "SaveText: text links to output 1 of node 782, which has 1",
    "api_seedance2_5_draft_t2v.json": (
        "ByteDance2TextToVideoNode: model 'Seedance 2.5 Draft' is not one of"
    ),
    "api_seedance2_5_flf2v.json": (
        "ByteDance2FirstLastFrameNode: model 'Seedance 2.5' is not one of"
    ),
    "api_seedance2_5_t2v.json": "ByteDance2TextToVideoNode: model 'Seedance 2.5' is not one of",
    "api_seedance2_5_t2v_1080p.json": (
        "ByteDance2TextToVideoNode: model 'Seedance 2.5' is not one of"
    ),
    "api_tripo3_0_text_to_model.json": "SaveGLB: mesh links to output 3 of node 3, which has 3",
    "api_tripo_image_to_model.json": "SaveGLB: mesh links to output 3 of node 35, which has 3",
    "api_tripo_multiview_to_model.json": "SaveGLB: mesh links to output 3 of node 6, which has 3",
    "api_tripo_text_to_model.json": "SaveGLB: mesh links to output 3 of node 3, which has 3",
    "audio_ace_step_1_5_split_llm.json": "GeminiNodeV2: model 'Gemini 3.7 Flash' is not one of",
    "image_moss_image_base_t2i.json": "CLIPLoader: type 'moss_image' is not one of",
    "image_moss_image_t2i.json": "CLIPLoader: type 'moss_image' is not one of",
    "video_ltx2_3_ia2v.json": "CreateVideo: bit_depth 'auto' is not an integer",
    "video_ltx2_3_ic_lora.json": "CreateVideo: bit_depth 'auto' is not an integer",
    "video_ltx2_3_t2v.json": "CreateVideo: bit_depth 'auto' is not an integer",
}
#: A Load3D node: its "image" is a capture of the frontend's 3D viewport (see test_v3_inputs).
NEEDS_THE_FRONTEND = {
    "api_hunyuan3d_model2uv.json": "Load3D: image holds no capture",
    "api_hunyuan3d_part.json": "Load3D: image holds no capture",
    "api_hunyuan3d_retopo_uv.json": "Load3D: image holds no capture",
    "api_hunyuan3d_smart_topology.json": "Load3D: image holds no capture",
}
#: Files that are broken as published: their subgraph output refers to link 265, which the
#: file does not have, so nothing reaches SaveVideo (ComfyUI's frontend sends no input either).
BROKEN = {"video_ltx2_i2v_lora.json": "SaveVideo: required input 'video' is missing"}
#: Made for a ComfyUI newer than 0.3.75 → the first problem 0.3.75's definitions show.
NEEDS_NEWER_THAN_0_3_75 = {
    "api_bytedance_seedance1_5_flf2v.json": (
        "ByteDanceFirstLastFrameNode: model 'seedance-1-5-pro-251215' is not one of"
    ),
    "api_bytedance_seedance1_5_image_to_video.json": (
        "ByteDanceImageToVideoNode: model 'seedance-1-5-pro-251215' is not one of"
    ),
    "api_bytedance_seedance1_5_text_to_video.json": (
        "ByteDanceTextToVideoNode: model 'seedance-1-5-pro-251215' is not one of"
    ),
    "api_kling_v3_t2i.json": "KlingImageGenerationNode: model_name 'kling-v3' is not one of",
    "api_tripo3_0_text_to_model.json": (
        "TripoTextToModelNode: model_version 'v3.0-20250812' is not one of"
    ),
    "api_tripo3_1_multiview_to_model.json": (
        "SaveGLB: mesh links to output 2 of node 47, which has 2"
    ),
    "api_tripo_image_to_model.json": "SaveGLB: mesh links to output 2 of node 35, which has 2",
    "api_tripo_multiview_to_model.json": "SaveGLB: mesh links to output 2 of node 6, which has 2",
    "api_tripo_text_to_model.json": "SaveGLB: mesh links to output 2 of node 3, which has 2",
    "api_wan2_6_i2v.json": "WanImageToVideoApi: model 'wan2.6-i2v' is not one of",
    "api_wan2_6_t2v.json": "WanTextToVideoApi: model 'wan2.6-t2v' is not one of",
    "image-qwen_image_edit_2511_lora_inflation.json": (
        "FluxKontextMultiReferenceLatentMethod: reference_latents_method "
        "'index_timestep_zero' is not one of"
    ),
    "image_kandinsky5_t2i.json": "DualCLIPLoader: type 'kandinsky5_image' is not one of",
    "image_newbieimage_exp0_1-t2i.json": "DualCLIPLoader: type 'newbie' is not one of",
    "image_ovis_text_to_image.json": "CLIPLoader: type 'ovis' is not one of",
    "template_character_portrait_relighting.json": (
        "GeminiImage2Node: model 'Nano Banana 2 (Gemini 3.1 Flash Image)' is not one of"
    ),
    "templates-photo_to_product_vid.json": (
        "ByteDanceSeedreamNode: model 'seedream-4-5-251128' is not one of"
    ),
}
#: Made for a ComfyUI newer than 0.33.0, failing there as on 0.28 (the same first problem).
STILL_NEWER_THAN_0_33 = (
    "api_anthropic_claude_fable5_1.json",
    "api_anthropic_claude_opus_5_5.json",
    "api_elevenlabs_v4_text_to_dialogue.json",
    "api_elevenlabs_v4_text_to_speech.json",
    "api_grok_imagine_video_1_5_lite_i2v.json",
    "api_grok_imagine_video_1_5_lite_t2v.json",
    "api_meshy7_1_image_to_model.json",
    "api_meshy7_1_text_to_model.json",
    "api_meshy7_image_to_model.json",
    "api_meshy7_text_to_model.json",
    "api_meshy_image_to_model.json",
    "api_meshy_multi_image_to_model.json",
    "api_meshy_text_to_model.json",
    "api_nano_banana_2_1_image_edit.json",
    "api_nano_banana_2_1_t2i.json",
    "api_openai_gpt6_astra.json",
    "api_openai_gpt_image_25_flare_image_edit.json",
    "api_openai_gpt_image_25_flare_t2i.json",
    "api_openai_gpt_image_25_sunburst_image_edit.json",
    "api_openai_gpt_image_25_sunburst_t2i.json",
    "api_recraft_v4_1_flash_t2i.json",
    "api_seedance2_5_draft_i2v.json",
    "api_seedance2_5_draft_t2v.json",
    "api_tripo3_0_text_to_model.json",
    "api_tripo_image_to_model.json",
    "api_tripo_multiview_to_model.json",
    "api_tripo_text_to_model.json",
    "image_moss_image_base_t2i.json",
    "image_moss_image_t2i.json",
    "video_ltx2_3_ia2v.json",
    "video_ltx2_3_ic_lora.json",
    "video_ltx2_3_t2v.json",
)
#: Made for a ComfyUI newer than 0.33.0 → the first problem 0.33's definitions show (where
#: 0.28 lacked a node class, or showed another problem first).
NEEDS_NEWER_THAN_0_33 = {name: NEEDS_NEWER_THAN_0_28[name] for name in STILL_NEWER_THAN_0_33} | {
    "3d_pixal3d_trellis2_image_to_model.json": "RemeshMesh: sign_mode 'solid' is not one of",
    "api_bytedance_seedream_5_0_flash_image_edit.json": (
        "ByteDanceSeedreamNodeV3: model 'seedream 5.0 flash' is not one of"
    ),
    "api_bytedance_seedream_5_0_flash_t2i.json": (
        "ByteDanceSeedreamNodeV3: model 'seedream 5.0 flash' is not one of"
    ),
    "api_bytedance_seedream_5_0_lite_image_edit.json": (
        "ByteDanceSeedreamNodeV3: model.size_preset '(1K) 1024x1024 (1:1)' is not one of"
    ),
    "api_bytedance_vcube_video_enhance.json": "CreateVideo: bit_depth 'auto' is not an integer",
    "api_fishaudio_drama3_dialogue.json": "FishAudioTextToSpeech: model 'drama-3' is not one of",
    "api_fishaudio_drama3_directed.json": "FishAudioTextToSpeech: model 'drama-3' is not one of",
    "api_minimax_h3_max_flf2v.json": (
        "MinimaxHailuo03FirstLastFrameNode: model 'MiniMax H3 Max' is not one of"
    ),
    "api_minimax_h3_max_i2v.json": (
        "MinimaxHailuo03FirstLastFrameNode: model 'MiniMax H3 Max' is not one of"
    ),
    "api_minimax_h3_max_r2v.json": (
        "MinimaxHailuo03ReferenceNode: model 'MiniMax H3 Max' is not one of"
    ),
    "api_minimax_h3_max_t2v.json": (
        "MinimaxHailuo03TextToVideoNode: model 'MiniMax H3 Max' is not one of"
    ),
    "api_minimax_h3_max_turbo_i2v.json": (
        "MinimaxHailuo03FirstLastFrameNode: model 'MiniMax H3 Max Turbo' is not one of"
    ),
    "api_minimax_h3_max_turbo_t2v.json": (
        "MinimaxHailuo03TextToVideoNode: model 'MiniMax H3 Max Turbo' is not one of"
    ),
    "api_seedance2_5_draft_r2v.json": "SaveText: text links to output 1 of node 789, which has 1",
    "video_minimax_h3_multiframe_reference.json": "CreateVideo: bit_depth 'auto' is not an integer",
}
#: A choice the server offers by what its machine has: the 0.33 definitions were captured on
#: a CPU, whose only attention backend is PyTorch's (a GPU with comfy-kitchen offers it).
NEEDS_ANOTHER_MACHINE = {
    "image_ming_image_01_design_t2i.json": (
        "ModelAttentionBackend: attention 'comfy kitchen attention' is not one of"
    ),
    "image_minimax_h3_t2i.json": (
        "ModelAttentionBackend: attention 'comfy kitchen attention' is not one of"
    ),
}
EXPECTED = {
    "0.33.0": NEEDS_NEWER_THAN_0_33 | NEEDS_ANOTHER_MACHINE | NEEDS_THE_FRONTEND | BROKEN,
    "0.28.0": NEEDS_NEWER_THAN_0_28 | NEEDS_THE_FRONTEND | BROKEN,
    "0.3.75": NEEDS_NEWER_THAN_0_3_75,
}


@pytest.fixture(scope="module")
def all_templates() -> dict[str, Any]:
    """Every UI-format template of the package, by file name (parsed once)."""
    root = resources.files("comfyui_workflow_templates_json") / "templates"
    found = {}
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        if path.name.endswith(".json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and "nodes" in data:
                found[path.name] = data
    assert len(found) > 600  # the index lists 644
    return found


def sweep(templates: dict[str, Any], version: str) -> tuple[int, dict[str, list[NodeProblem]]]:
    """How many templates convert (every node class exists), and the problems of those
    that then do not validate."""
    info = bundled_object_info(version)
    converted, failing = 0, {}
    for name, ui in templates.items():
        try:
            graph = ui_to_api(ui, info)
        except WorkflowInvalid as exc:
            assert {p.kind for p in exc.problems} == {"unknown_class"}, (name, str(exc))
            continue
        converted += 1
        found = problems(graph, info, check_files=False)
        if found:
            failing[name] = found
    return converted, failing


@pytest.fixture(scope="module")
def swept(all_templates) -> dict[str, tuple[int, dict[str, list[NodeProblem]]]]:
    return {version: sweep(all_templates, version) for version in EXPECTED}


@pytest.mark.parametrize("version", ["0.3.75", "0.28.0", "0.33.0"])
def test_templates_whose_nodes_exist_convert_and_validate(all_templates, swept, version, capsys):
    converted, failing = swept[version]
    valid = converted - len(failing)
    with capsys.disabled():
        print(
            f"\ntemplates on ComfyUI {version}: {converted} of {len(all_templates)} have every "
            f"node class; {valid} convert and validate ({len(failing)} listed as needing more)"
        )
    expected = EXPECTED[version]
    assert sorted(set(failing) - set(expected)) == []  # a template that should work fails
    assert sorted(set(expected) - set(failing)) == []  # a listed one now works: update the list
    for name, shown in expected.items():
        first = failing[name][0]
        assert shown in f"{first.class_type}: {first.message}", name


def test_coverage_grows_with_each_newer_bundle(swept):
    valid = {v: converted - len(failing) for v, (converted, failing) in swept.items()}
    assert valid["0.28.0"] > 3 * valid["0.3.75"]
    assert valid["0.33.0"] > valid["0.28.0"] + 50


def test_a_template_needing_classes_a_server_lacks_names_each_of_them(templates):
    ui = templates("image_z_image.json")
    with pytest.raises(WorkflowInvalid) as caught:
        ui_to_api(ui, bundled_object_info("0.3.75"))
    text = str(caught.value)
    assert text.splitlines()[0] == (
        "cannot convert the UI workflow: the node definitions lack ResolutionSelector, "
        "SaveImageAdvanced"
    )
    assert {(p.class_type, p.kind) for p in caught.value.problems} == {
        ("ResolutionSelector", "unknown_class"),
        ("SaveImageAdvanced", "unknown_class"),
    }
    assert "node 94 ResolutionSelector: unknown node class" in text
    with pytest.raises(WorkflowInvalid, match="lack ResolutionSelector, SaveImageAdvanced"):
        Workflow.load(ui, object_info=bundled_object_info("0.3.75"))
