"""Test-only node for the local engine: simulated GPU time without burning the CPU.

``ComfyfnSleep`` passes its images through after sleeping ``milliseconds`` in ``steps``
equal parts, reporting progress per step and honouring interrupts between steps, like a
sampler. Benchmarks label every figure measured with it as simulated.
"""

import time

import comfy.model_management
import comfy.utils


class ComfyfnSleep:
    CATEGORY = "testing/comfyfn"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sleep"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "milliseconds": ("INT", {"default": 100, "min": 0, "max": 3_600_000}),
                "steps": ("INT", {"default": 8, "min": 1, "max": 10_000}),
            }
        }

    def sleep(self, images, milliseconds, steps):
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(milliseconds / 1000 / steps)
            bar.update(1)
        return (images,)


NODE_CLASS_MAPPINGS = {"ComfyfnSleep": ComfyfnSleep}
NODE_DISPLAY_NAME_MAPPINGS = {"ComfyfnSleep": "Sleep (comfyfn test)"}
