"""Node definitions (``/object_info``): reading input specs, ComfyUI's V3 dynamic inputs included.

A node's inputs are those its definition declares (``required`` then ``optional``, in
``input_order``), with the V3 dynamic types expanded as the server expands them:

- ``COMFY_DYNAMICCOMBO_V3``: a combo whose chosen option adds its own inputs, named
  ``<combo>.<input>`` (nested: ``a.b.c``) and following it; in API format
  ``"format": "png", "format.bit_depth": "8-bit"``.
- ``COMFY_AUTOGROW_V3``: a group of like sockets ``<group>.<name>``, named by a prefix
  (``images.image0``, ``images.image1``...) or a list (``values.a``...); the first ``min``
  are required when the template input is.
- ``COMFY_MATCHTYPE_V3``: a socket taking any of the template's ``allowed_types``; an
  output with the same template id has the type linked into it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUTOGROW",
    "CAPTURED_WIDGETS",
    "DYNAMIC_COMBO",
    "MATCH_TYPE",
    "MODEL_FOLDERS",
    "InputSpec",
    "declared_inputs",
    "expand",
    "input_spec",
    "node_inputs",
    "output_types",
]

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
AUTOGROW = "COMFY_AUTOGROW_V3"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"

#: Input name → the models/ folder its files live in (for "put it in models/..." messages).
MODEL_FOLDERS: Mapping[str, str] = {
    "unet_name": "diffusion_models",
    "ckpt_name": "checkpoints",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "text_encoder": "text_encoders",
    "vae_name": "vae",
    "lora_name": "loras",
    "control_net_name": "controlnet",
    "style_model_name": "style_models",
    "upscale_model_name": "upscale_models",
    "model_name": "upscale_models",
    "name": "model_patches",
    "audio_encoder_name": "audio_encoders",
    "bg_removal_name": "background_removal",
}
_MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")

_VALUE_WIDGETS = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", DYNAMIC_COMBO})
#: Widgets the ComfyUI frontend draws with editors of its own (colours, boxes, curves...).
_FRONTEND_WIDGETS = frozenset(
    {"COLOR", "COLORS", "BOUNDING_BOX", "BOUNDING_BOXES", "CURVE", "IMAGECOMPARE"}
)
#: Widgets whose value only a browser can make: a 3D viewport capture, a webcam shot, a
#: recording. A workflow file holds no such value; ComfyUI's own "Export (API)" makes it.
CAPTURED_WIDGETS = frozenset({"LOAD_3D", "WEBCAM", "AUDIO_RECORD"})


@dataclass(frozen=True)
class InputSpec:
    """One input: its type (``COMBO`` for a list of choices) and options. ``name`` is the
    full input name, ``format.bit_depth`` for an input a dynamic combo adds."""

    name: str
    type: str
    required: bool
    options: Mapping[str, Any]
    choices: tuple[Any, ...] | None = None

    @property
    def is_widget(self) -> bool:
        """A value the node stores (and the frontend shows), not only a socket."""
        if self.options.get("forceInput"):
            return False
        return (
            self.type in _VALUE_WIDGETS
            or self.type in _FRONTEND_WIDGETS
            or self.type in CAPTURED_WIDGETS
            or "widgetType" in self.options
            or self.options.get("socketless") is True  # a value only (0.33: COMPOSITOR)
        )

    @property
    def value_type(self) -> str:
        """The type of the value the widget holds: its ``widgetType`` where the input takes
        several types (0.33: ``FLOAT,INT`` drawn as a FLOAT), else its type."""
        multi = "," in self.type
        return str(self.options.get("widgetType") or self.type) if multi else self.type

    @property
    def needs_capture(self) -> bool:
        """A value only the frontend can make, without which the node fails (a 3D node's
        ``viewport_state`` is the exception: the server does without it)."""
        return self.type in CAPTURED_WIDGETS and self.name.rpartition(".")[2] != "viewport_state"

    @property
    def is_combo(self) -> bool:
        return self.type in ("COMBO", DYNAMIC_COMBO)

    @property
    def accepts(self) -> str:
        """The types a link into this input may carry (``"*"``: any)."""
        if self.type == MATCH_TYPE:
            return str((self.options.get("template") or {}).get("allowed_types") or "*")
        return self.type

    @property
    def match_group(self) -> str | None:
        """The template id of a ``COMFY_MATCHTYPE_V3`` input."""
        template = self.options.get("template") or {}
        return str(template.get("template_id")) if self.type == MATCH_TYPE else None

    @property
    def folder(self) -> str | None:
        """The models/ folder of a combo of model files, known by the input's name (unless
        its choices are plainly not files, as for an API node's ``model_name``)."""
        folder = MODEL_FOLDERS.get(self.name.rpartition(".")[2]) if self.type == "COMBO" else None
        if folder and self.choices and not any(map(_is_model_file_name, self.choices)):
            return None
        return folder

    def is_model_file(self, value: Any) -> bool:
        """A combo of model files (by its name, or a choice or value that is one)."""
        if self.type != "COMBO":
            return False
        return self.folder is not None or any(
            map(_is_model_file_name, (value, *(self.choices or ())))
        )

    @property
    def is_input_file(self) -> bool:
        """A combo of the server's input files (images, videos, audio with an upload button)."""
        return self.type == "COMBO" and any(
            k.endswith("upload") and v for k, v in self.options.items()
        )

    def option_inputs(self, key: Any) -> list[InputSpec]:
        """The inputs a dynamic combo's option ``key`` adds, named ``<combo>.<input>``."""
        for option in self.options.get("options") or ():
            if isinstance(option, Mapping) and option.get("key") == key:
                return _group_specs(option.get("inputs") or {}, f"{self.name}.")
        return []


def _is_model_file_name(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(_MODEL_SUFFIXES)


def parse_spec(name: str, raw: Any, required: bool) -> InputSpec:
    kind = raw[0] if isinstance(raw, list | tuple) and raw else raw
    opts = raw[1] if isinstance(raw, list | tuple) and len(raw) > 1 else {}
    opts = opts if isinstance(opts, Mapping) else {}
    if isinstance(kind, list | tuple):
        return InputSpec(name, "COMBO", required, opts, tuple(kind))
    if kind == "COMBO":
        return InputSpec(name, "COMBO", required, opts, tuple(opts.get("options") or ()))
    if kind == DYNAMIC_COMBO:
        keys = tuple(o.get("key") for o in opts.get("options") or () if isinstance(o, Mapping))
        return InputSpec(name, DYNAMIC_COMBO, required, opts, keys)
    return InputSpec(name, str(kind), required, opts)


def _group_specs(groups: Mapping[str, Any], prefix: str = "", order: Any = None) -> list[InputSpec]:
    """The ``required`` then ``optional`` inputs of ``groups``, in ``order`` where it says."""
    specs: list[InputSpec] = []
    for group in ("required", "optional"):
        declared = groups.get(group) or {}
        named = [n for n in ((order or {}).get(group) or ()) if n in declared]
        for name in named + [n for n in declared if n not in named]:
            specs.append(parse_spec(prefix + name, declared[name], group == "required"))
    return specs


#: parsed inputs by definition (held, so its id is not reused): every job types its graph
#: with the same few definitions, and parsing them was a tenth of a runner's CPU per job
_DECLARED: dict[int, tuple[Mapping[str, Any], tuple[InputSpec, ...]]] = {}
_DECLARED_KEPT = 4096


def declared_inputs(definition: Mapping[str, Any]) -> list[InputSpec]:
    """The inputs a definition declares at top level, in the frontend's widget order
    (parsed once per definition object: definitions are not changed once loaded)."""
    known = _DECLARED.get(id(definition))
    if known is not None and known[0] is definition:
        return list(known[1])
    specs = _group_specs(definition.get("input") or {}, "", definition.get("input_order"))
    if len(_DECLARED) >= _DECLARED_KEPT:
        _DECLARED.clear()
    _DECLARED[id(definition)] = (definition, tuple(specs))
    return specs


def _autogrow(spec: InputSpec) -> Iterator[InputSpec]:
    """Every input an autogrow group may have: ``<group>.<name>``, the first ``min`` required."""
    template = spec.options.get("template") or {}
    groups = template.get("input") or {}
    group, raw = next(
        ((g, next(iter(d.items()))) for g in ("required", "optional") if (d := groups.get(g))),
        (None, None),
    )
    if group is None or raw is None:
        return
    if "names" in template:
        names = [str(n) for n in template.get("names") or ()]
    else:
        names = [f"{template.get('prefix', '')}{i}" for i in range(int(template.get("max", 1)))]
    least = int(template.get("min", 0))
    for i, name in enumerate(names):
        required = group == "required" and i < least
        yield parse_spec(f"{spec.name}.{name}", raw[1], required)


def expand(specs: Iterable[InputSpec], values: Mapping[str, Any]) -> Iterator[InputSpec]:
    """``specs`` with their dynamic inputs expanded, depth first, in widget order.

    An autogrow group becomes every input it may have; a dynamic combo is followed by the
    inputs of the option ``values[combo]`` names. That value is read after the combo is
    yielded, so a caller may fill ``values`` as it goes (as the frontend lays out widgets).
    """
    for spec in specs:
        if spec.type == AUTOGROW:
            yield from _autogrow(spec)
            continue
        yield spec
        if spec.type == DYNAMIC_COMBO:
            yield from expand(spec.option_inputs(values.get(spec.name)), values)


def node_inputs(definition: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, InputSpec]:
    """Input name → spec for a node with these (API-format) ``inputs``, dynamic ones expanded."""
    return {spec.name: spec for spec in expand(declared_inputs(definition), inputs)}


def input_spec(
    object_info: Mapping[str, Any],
    class_type: str,
    name: str,
    inputs: Mapping[str, Any] | None = None,
) -> InputSpec | None:
    """The spec of ``class_type``'s input ``name``; ``inputs`` (the node's) choose the options
    of its dynamic combos."""
    definition = object_info.get(class_type)
    if definition is None:
        return None
    return node_inputs(definition, inputs or {}).get(name)


def output_types(object_info: Mapping[str, Any], class_type: str) -> list[str]:
    return list((object_info.get(class_type) or {}).get("output") or ())
