"""The workflows a gateway serves, each with a pydantic model of its typed parameters.

The models are built from :attr:`comfyfn.Workflow.params` (types, ranges, steps, choices,
defaults), so the OpenAPI document shows every endpoint's parameters exactly, and a bad
request is refused with the field named before any job is created.

Input images (``image``, ``mask``: LoadImage/LoadImageMask inputs) are required, and a job
holds each as a reference to an upload of its key (:class:`~comfyfn.gateway.requests.UploadRef`),
never as text: bound from text, a value would be read as a path on the gateway's machine. The
typed endpoint takes them as a file, an upload id, an http(s) URL or base64
(:attr:`Served.request_model`), and stores them as uploads first.

A workflow with one diffusion model loader takes ``loras`` (a list of ``{name, strength}``
or ``"a.safetensors:0.8, b.safetensors"``; a job holds them as ``[name, strength]`` pairs);
one with a ControlNet takes ``control_type`` (:data:`~comfyfn.workflow.CONTROL_TYPES`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    create_model,
)

from comfyfn.errors import ComfyError, ConfigError, WorkflowInvalid
from comfyfn.gateway.requests import UploadRef
from comfyfn.workflow import (
    CONTROL_TYPES,
    ComfyWarning,
    InputImage,
    Param,
    Workflow,
    parse_loras,
    random_seed,
    server_source,
)

__all__ = ["Registry", "Served"]

_PY = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
_SKIP = {"filename_prefix"}
IMAGE_TYPE = "IMAGE"  #: a Param's type for an input image
IMAGE_REQUEST_DESCRIPTION = (
    "input image: an upload id (upl_…), an http(s) URL, or base64 data (a data: URL too); "
    "as multipart/form-data, the image file"
)


def _field(p: Param, max_prompt: int) -> tuple[Any, Any]:
    kind: Any = _PY.get(p.type, str)
    if p.type == "COMBO" and p.choices and not p.folder:
        kind = Literal[tuple(p.choices)]
    limits: dict[str, Any] = {}
    if p.type in ("INT", "FLOAT"):
        if p.min is not None:
            limits["ge"] = p.min
        if p.max is not None:
            limits["le"] = p.max
        if p.type == "INT" and isinstance(p.step, int) and p.step > 1:
            limits["multiple_of"] = p.step
    if p.type == "STRING":
        limits["max_length"] = max_prompt
    default = None if p.name == "seed" else p.default
    return (kind | None, Field(default=default, description=p.description or p.path, **limits))


class LoraModel(BaseModel):
    """One LoRA: a file in the server's models/loras/ and its strength on the model."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="LoRA file (models/loras/)")
    strength: float = Field(default=1.0, allow_inf_nan=False, description="strength on the model")


def _lora_list(value: Any) -> Any:
    """A ``loras`` text (``"a.safetensors:0.8, b"``) as the list it stands for."""
    if not isinstance(value, str):
        return value
    try:
        return [{"name": name, "strength": strength} for name, strength in parse_loras(value)]
    except WorkflowInvalid as exc:
        raise ValueError("; ".join(p.message for p in exc.problems)) from None


#: the schema of ``loras``, inline (no ``$defs``: the UI and the OpenAPI document show it as
#: it is); text first, which the UI's form takes
_LORAS_SCHEMA = {
    "anyOf": [
        {"type": "string"},
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "strength": {"type": "number", "default": 1.0},
                },
                "required": ["name"],
                "additionalProperties": False,
            },
        },
        {"type": "null"},
    ]
}
#: LoRAs: a list of {name, strength}, or the same as text
Loras = Annotated[
    list[LoraModel] | None, BeforeValidator(_lora_list), WithJsonSchema(_LORAS_SCHEMA)
]


def _structure_fields(workflow: Workflow) -> dict[str, Any]:
    """``loras`` and ``control_type``, where the workflow takes them."""
    fields: dict[str, Any] = {}
    if workflow.takes_loras:
        fields["loras"] = (
            Loras,
            Field(
                default=None,
                description='LoRAs on the diffusion model, in order: [{"name": '
                '"a.safetensors", "strength": 0.8}] or "a.safetensors:0.8, b.safetensors"',
            ),
        )
    if workflow.takes_control_type:
        fields["control_type"] = (
            Literal[tuple(CONTROL_TYPES)] | None,
            Field(
                default=None,
                description="how the control map is made: "
                + "; ".join(f"{k}: {v}" for k, v in CONTROL_TYPES.items()),
            ),
        )
    return fields


def _image_field(p: Param, *, as_request: bool) -> tuple[Any, Any]:
    """A required input image: in a job, an upload reference; in a typed request, text."""
    if as_request:
        return (str, Field(description=IMAGE_REQUEST_DESCRIPTION, min_length=1))
    return (UploadRef, Field(description=f"input image ({p.path}): an upload of this key"))


def _model(name: str, suffix: str, fields: dict[str, Any]) -> type[BaseModel]:
    title = "".join(part.title() for part in re.split(r"[^A-Za-z0-9]+", name)) + suffix
    return create_model(title, __config__=ConfigDict(extra="forbid"), **fields)


@dataclass(frozen=True)
class Served:
    name: str
    workflow: Workflow
    model: type[BaseModel]  #: a job's parameters (input images as upload references)
    request_model: type[BaseModel]  #: the typed endpoint's body (input images as text)
    images: tuple[str, ...] = ()  #: the input image parameters

    def params(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validated values (raises pydantic's ValidationError naming the field); a seed not
        given (or null) is drawn here, so the job records the seed it runs with."""
        model = self.model.model_validate(dict(values))
        params = model.model_dump(exclude_unset=True, exclude_none=True)
        if params.pop("loras", None):  # bindable pairs; none given: no LoRA
            params["loras"] = [[x.name, x.strength] for x in getattr(model, "loras")]  # noqa: B009
        if "seed" in self.model.model_fields and "seed" not in params:
            params["seed"] = random_seed()
        return params

    def effective(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with the workflow's default for every parameter not given (what runs)."""
        return {**{p.name: p.default for p in self.workflow.params}, **values}

    def sized_by(
        self, values: Mapping[str, Any], images: Mapping[str, InputImage]
    ) -> dict[str, Any]:
        """``values`` with the width and height the input ``images`` give the output (their
        size rounded to multiples of 16, where the graph scales to width/height and none
        is given), so cost limits count what will run. Raises ComfyError for an image the
        workflow cannot take (a size over the node's maximum)."""
        if "width" in values or "height" in values or not images:
            return dict(values)
        with warnings.catch_warnings():  # an unusual size warns when the job is bound
            warnings.simplefilter("ignore", ComfyWarning)
            bound = self.workflow.bind(**images).provenance()
        size: dict[str, Any] = {k: bound[k] for k in ("width", "height") if k in bound}
        return {**values, **size} if len(size) == 2 else dict(values)


class Registry:
    def __init__(self) -> None:
        self.served: dict[str, Served] = {}

    def add(self, name: str, workflow: Workflow, *, max_prompt: int = 4000) -> Served:
        params = [p for p in workflow.params if p.name not in _SKIP]
        images = tuple(p.name for p in params if p.type == IMAGE_TYPE)
        fields: dict[str, Any] = {
            p.name: _field(p, max_prompt) for p in params if p.type != IMAGE_TYPE
        } | _structure_fields(workflow)
        model = _model(
            name,
            "Params",
            {
                **{p.name: _image_field(p, as_request=False) for p in params if p.name in images},
                **fields,
            },
        )
        request_model = _model(
            name,
            "Request",
            {
                **{p.name: _image_field(p, as_request=True) for p in params if p.name in images},
                **fields,
            },
        )
        served = Served(name, workflow, model, request_model, images)
        self.served[name] = served
        return served

    def load(
        self,
        workflows: Iterable[tuple[str, str]],
        *,
        max_prompt: int = 4000,
        servers: Sequence[str] = (),
    ) -> None:
        """Serve each (name, built-in name, workflow file, or a blueprint or template a
        ComfyUI server serves: ``blueprint:NAME``, loaded from the first of ``servers`` that
        gives it)."""
        for name, source in workflows:
            if server_source(source) is None:
                wf = Workflow.load(source, name=name)
            else:
                wf = replace(_served_by(source, servers), name=name)
            self.add(name, wf, max_prompt=max_prompt)

    def get(self, name: str) -> Served | None:
        return self.served.get(name)

    def __iter__(self) -> Iterator[Served]:
        return iter(self.served.values())


def _served_by(source: str, servers: Sequence[str]) -> Workflow:
    """``blueprint:NAME`` / ``template:NAME`` from the first server that serves it. Raises
    :class:`~comfyfn.ConfigError` without a server, and the last server's error (naming the
    route or the name) if none gives it."""
    from comfyfn.client import Client

    if not servers:
        raise ConfigError(f"{source}: a workflow a ComfyUI server serves needs a --server")
    error: ComfyError | None = None
    for url in servers:
        try:
            with Client(url) as client:
                return client.workflow(source)
        except ComfyError as exc:
            error = exc
    assert error is not None
    raise error
