"""Test-only node for the local engine: a model loader whose load costs simulated time.

``ComfyfnLoadModel`` passes its images through. When its ``ckpt_name`` (a file in
``models/checkpoints/``) differs from the last file it loaded in this server process, it
reads the file and sleeps ``load_milliseconds`` (in steps, honouring interrupts), as a GPU
server swapping one model's weights for another's would; the same file again costs nothing.
Each load is logged as ``comfyfn-load: <file>``, so tests and benchmarks count loads from
the server log. It always runs (``IS_CHANGED``), so ComfyUI's cache never hides a swap.
Benchmarks label every figure measured with it as simulated.
"""

import logging
import time

import comfy.model_management
import folder_paths

log = logging.getLogger("comfyfn_load_model")
_loaded = {"name": None}  # the file this server process holds "in VRAM"


class ComfyfnLoadModel:
    CATEGORY = "testing/comfyfn"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "ckpt_name": (folder_paths.get_filename_list("checkpoints"),),
                "load_milliseconds": ("INT", {"default": 500, "min": 0, "max": 3_600_000}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, **_inputs):
        return float("nan")  # never equal: run every time, so each swap is seen

    def load(self, images, ckpt_name, load_milliseconds):
        if _loaded["name"] != ckpt_name:
            path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
            with open(path, "rb") as fh:
                fh.read()
            steps = max(1, load_milliseconds // 50)
            for _ in range(steps):
                comfy.model_management.throw_exception_if_processing_interrupted()
                time.sleep(load_milliseconds / 1000 / steps)
            _loaded["name"] = ckpt_name
            log.info("comfyfn-load: %s", ckpt_name)
        return (images,)


NODE_CLASS_MAPPINGS = {"ComfyfnLoadModel": ComfyfnLoadModel}
NODE_DISPLAY_NAME_MAPPINGS = {"ComfyfnLoadModel": "Load model (comfyfn test)"}
