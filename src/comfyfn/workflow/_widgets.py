"""A UI node's widget values → its API inputs, laid out as the ComfyUI frontend lays them out.

``widgets_values`` is a list by position (or, for some nodes, a dict by name). The frontend
makes one widget per widget input of the definition (required then optional, in
``input_order``) and stores their values in that order, with these extras:

- a seed-like ``INT`` (and a combo with ``control_after_generate``) is followed by its
  frontend-only control value (``"randomize"``; a combo also stores its filter text);
- a dynamic combo (``COMFY_DYNAMICCOMBO_V3``) is followed by the widgets of its chosen
  option, named ``<combo>.<input>``, then by the rest;
- ``IMAGECOMPARE`` is not stored but is sent (as ``["", ""]``);
- values after the last widget (upload buttons and the like) are frontend-only, as are
  values between an upload combo and the next widget (the buttons Load3D adds);
- CustomCombo's options are widgets its frontend extension adds: ``option1``... and
  ``index`` (of the choice among them) are sent too.

A widget the file stores no value for (a node saved by an older frontend) takes its
definition's default, as the frontend gives it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyfn.workflow._definitions import InputSpec, declared_inputs, expand

__all__ = ["CONTROL_VALUES", "api_value", "default_value", "widget_inputs"]

CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
_UNSTORED = {"IMAGECOMPARE": ["", ""]}  #: widgets not stored in the file → what is sent
_TYPE_DEFAULTS: Mapping[str, Any] = {"STRING": "", "BOOLEAN": False, "INT": 0, "FLOAT": 0.0}


def api_value(value: Any) -> Any:
    """List values are wrapped, as the frontend does, so they are not read as links."""
    return {"__value__": value} if isinstance(value, list) else value


def default_value(spec: InputSpec) -> Any:
    """The value the frontend gives a new widget (None: it has none we can know)."""
    if "default" in spec.options:
        return spec.options["default"]
    if spec.choices:
        return spec.choices[0]
    if spec.type in ("INT", "FLOAT") and spec.options.get("min") is not None:
        return spec.options["min"]
    return _TYPE_DEFAULTS.get(spec.type)


def _extra_slots(spec: InputSpec) -> int:
    """Frontend-only values stored after this widget's value (never sent to the server)."""
    control = spec.options.get("control_after_generate")
    base = spec.name.rpartition(".")[2]
    if spec.type == "INT" and (control if control is not None else base in ("seed", "noise_seed")):
        return 1  # control_after_generate
    if spec.type == "COMBO" and control:
        return 2  # control_after_generate, control_filter_list
    return 0


@dataclass
class _Layout:
    values: dict[str, Any]  #: input name → value
    used: int  #: stored values read
    after_upload: int | None  #: the position after an upload combo's value


def _lay_out(specs: list[InputSpec], stored: list[Any], skip_at: int | None, skip: int) -> _Layout:
    """Read ``stored`` onto the widgets in order; ``skip`` values at ``skip_at`` are extras."""
    layout = _Layout({}, 0, None)  # layout.values is read by expand() to choose options
    for spec in expand(specs, layout.values):
        if not spec.is_widget:
            continue
        if spec.type in _UNSTORED:
            layout.values[spec.name] = _UNSTORED[spec.type]
            continue
        if layout.used == skip_at:
            layout.used += skip
        if layout.used >= len(stored):
            layout.values[spec.name] = default_value(spec)
            continue
        layout.values[spec.name] = stored[layout.used]
        layout.used += 1
        extra = _extra_slots(spec)
        if extra and layout.used < len(stored) and stored[layout.used] in CONTROL_VALUES:
            layout.used += extra  # the control value (and, for a combo, its filter text)
        if spec.is_input_file and layout.after_upload is None:
            layout.after_upload = layout.used
    return layout


def _custom_combo(values: dict[str, Any], rest: list[Any]) -> dict[str, Any]:
    """CustomCombo (its options are frontend widgets): ``index`` of the choice among the
    ``option1``, ``option2``... widgets that follow it."""
    options = {f"option{i}": v for i, v in enumerate(rest[1:], start=1)}
    found = [i for i, v in enumerate(options.values()) if v == values.get("choice")]
    return {"index": found[0] if found else -1, **options}


#: Nodes whose frontend extension adds widgets of its own (after the declared ones).
_EXTENDED = {"CustomCombo": _custom_combo}


def widget_inputs(node: Mapping[str, Any], definition: Mapping[str, Any]) -> dict[str, Any]:
    """Input name → the value the node's widget sends, dynamic combo options included."""
    specs = declared_inputs(definition)
    raw = node.get("widgets_values")
    if isinstance(raw, Mapping):
        values: dict[str, Any] = {}
        for spec in expand(specs, values):
            if spec.is_widget:
                values[spec.name] = raw.get(spec.name, default_value(spec))
        return {name: api_value(v) for name, v in values.items() if v is not None}
    stored = list(raw) if isinstance(raw, list) else []
    layout = _lay_out(specs, stored, None, 0)
    surplus = len(stored) - layout.used
    if surplus > 0 and layout.after_upload is not None and layout.used > layout.after_upload:
        # buttons the frontend adds after an upload combo (Load3D's) hold stored values too
        layout = _lay_out(specs, stored, layout.after_upload, surplus)
    extension = _EXTENDED.get(str(node.get("type")))
    if extension is not None:
        layout.values.update(extension(layout.values, stored[layout.used :]))
    return {name: api_value(v) for name, v in layout.values.items() if v is not None}
