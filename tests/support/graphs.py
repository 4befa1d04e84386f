"""Small model-free graphs for tests and benchmarks."""

from __future__ import annotations


def blur_graph(color: int, *, size: int = 1024, blurs: int = 4, radius: int = 31) -> dict:
    """A model-free job whose run time is tuned by size/blurs (about 1 s per 1024² r31 node)."""
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        }
    }
    prev = "1"
    for i in range(blurs):
        nid = str(10 + i)
        graph[nid] = {
            "class_type": "ImageBlur",
            "inputs": {"image": [prev, 0], "blur_radius": radius, "sigma": 5.0},
        }
        prev = nid
    graph["2"] = {
        "class_type": "ImageScale",
        "inputs": {
            "image": [prev, 0],
            "upscale_method": "bilinear",
            "width": 64,
            "height": 64,
            "crop": "disabled",
        },
    }
    graph["3"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "blur"},
    }
    return graph


def trivial_graph(color: int, *, node: str = "SaveImage") -> dict:
    inputs: dict[str, object] = {"images": ["1", 0]}
    if node == "SaveImage":
        inputs["filename_prefix"] = "trivial"
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": color},
        },
        "2": {"class_type": node, "inputs": inputs},
    }


def sleep_graph(color: int, *, milliseconds: int = 300, steps: int = 3) -> dict:
    """A job that takes ``milliseconds`` of simulated GPU time (the engine's test node)."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": color},
        },
        "2": {
            "class_type": "ComfyfnSleep",
            "inputs": {"images": ["1", 0], "milliseconds": milliseconds, "steps": steps},
        },
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "sleep"},
        },
    }


def kinds_graph(color: int, text: str) -> dict:
    """A model-free graph with an animated WebP (two frames) and a text output."""
    frame = {"width": 32, "height": 24, "batch_size": 1}
    return {
        "5": {"class_type": "EmptyImage", "inputs": {**frame, "color": color}},
        "6": {"class_type": "EmptyImage", "inputs": {**frame, "color": 0xFF0000}},
        "1": {"class_type": "ImageBatch", "inputs": {"image1": ["5", 0], "image2": ["6", 0]}},
        "2": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": ["1", 0],
                "filename_prefix": "comfyfn-kinds",
                "fps": 6.0,
                "lossless": True,
                "quality": 80,
                "method": "default",
            },
        },
        "3": {"class_type": "PrimitiveString", "inputs": {"value": text}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    }
