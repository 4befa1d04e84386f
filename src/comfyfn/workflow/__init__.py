"""Workflows as values — pure, no I/O: loading (API or UI format, subgraphs, PNGs),
parameters found by meaning, binding, validation against node definitions, and the
built-in Z-Image graphs; the node definitions of ComfyUI 0.3.75, 0.28.0 and 0.33.0 are
bundled for offline use (``bundled_object_info(server_version)``). What a server serves
itself (``blueprint:NAME``, ``template:NAME``: ``_library``) and partner (paid cloud) nodes
(``_partner``) are read here; the fetching and the key are the client's.

::

    wf = Workflow.load("anything.json")          # or zimage_turbo(), builtin("zimage")
    wf.params                                    # (Param(name='prompt', ...), ...)
    wf.bind(prompt="…", seed=7).to_api()         # API-format graph for POST /prompt
"""

from comfyfn._public import present as _present
from comfyfn.workflow._binding import PARAMETERS, ComfyWarning, parse_size, random_seed
from comfyfn.workflow._builtin import (
    BUILTIN,
    builtin,
    zimage,
    zimage_control,
    zimage_edit,
    zimage_turbo,
)
from comfyfn.workflow._bundled import BUNDLED_VERSIONS, bundled_object_info, bundled_version
from comfyfn.workflow._control import CONTROL_TYPES
from comfyfn.workflow._graph import ApiGraph, class_types
from comfyfn.workflow._images import (
    INPUT_SUBFOLDER,
    InputImage,
    input_image,
    is_local_file,
    is_url,
    max_input_bytes,
    read_image_file,
)
from comfyfn.workflow._library import (
    SERVED_ROUTES,
    GetJson,
    RouteMissing,
    list_server_workflows,
    server_source,
)
from comfyfn.workflow._loras import Lora, parse_lora, parse_loras
from comfyfn.workflow._meaning import MEANINGS
from comfyfn.workflow._params import Param
from comfyfn.workflow._partner import EXTRA_DATA_KEY, KEY_ENV
from comfyfn.workflow._signature import signature_for
from comfyfn.workflow._workflow import Workflow, served_workflow

__all__ = [
    "BUILTIN",
    "BUNDLED_VERSIONS",
    "CONTROL_TYPES",
    "EXTRA_DATA_KEY",
    "INPUT_SUBFOLDER",
    "KEY_ENV",
    "MEANINGS",
    "PARAMETERS",
    "SERVED_ROUTES",
    "ApiGraph",
    "ComfyWarning",
    "GetJson",
    "InputImage",
    "Lora",
    "Param",
    "RouteMissing",
    "Workflow",
    "builtin",
    "bundled_object_info",
    "bundled_version",
    "class_types",
    "input_image",
    "is_local_file",
    "is_url",
    "list_server_workflows",
    "max_input_bytes",
    "parse_lora",
    "parse_loras",
    "parse_size",
    "random_seed",
    "read_image_file",
    "served_workflow",
    "server_source",
    "signature_for",
    "zimage",
    "zimage_control",
    "zimage_edit",
    "zimage_turbo",
]

_present(__name__, globals(), __all__)
