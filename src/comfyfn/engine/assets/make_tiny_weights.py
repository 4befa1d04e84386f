"""Write tiny random Z-Image-Turbo weights for tests, under the official names.

Run with the engine's python (the one ComfyUI is installed for), with the stand-ins
for modules it lacks (torchvision...) on ``PYTHONPATH``:

    python make_tiny_weights.py --comfyui COMFYUI_DIR --out MODELS_DIR [--seed 0]

It builds ComfyUI's own modules (``NextDiT``, the Qwen3 ``Llama2_`` stack used
by ``Qwen3_4B``, ``TAESD``) at tiny sizes, fills every tensor from a seeded
generator and writes:

    MODELS_DIR/diffusion_models/z_image_turbo_bf16.safetensors  tiny DiT (bf16)
    MODELS_DIR/diffusion_models/z_image_bf16.safetensors        same shape, other seed
    MODELS_DIR/text_encoders/qwen_3_4b.safetensors              tiny Qwen3 (bf16), full vocab
    MODELS_DIR/vae/ae.safetensors                               TAESD layout (fp16)
    MODELS_DIR/loras/zimage_tiny_style.safetensors              LoRA on the tiny DiT (bf16)
    MODELS_DIR/model_patches/Z-Image-Turbo-Fun-Controlnet-Union.safetensors
        tiny Fun ControlNet Union (``ZImage_Control``, 3 control layers + refiner,
        inpaint inputs; the official key layout), only where the ComfyUI has it (>= 0.28)

The same seed gives byte-identical files.  Each file is written to a temporary
name and renamed into place.  The last stdout line is a JSON summary.

These files only load with the ``comfyfn_tiny_zimage.py`` custom node, which
teaches ComfyUI to read the tiny DiT / text-encoder sizes from the shapes.
"""

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time

import torch

# Tiny sizes.  DiT dim must be >= 256: Z-Image's timestep embedding is 256 wide
# and adaLN takes min(dim, 256) inputs.  cap_feat_dim == text-encoder hidden.
DIT = dict(dim=384, head_dim=64, n_layers=1, n_refiner_layers=2)
TE = dict(
    vocab_size=151936,  # the bundled Qwen tokenizer needs every row
    hidden_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    intermediate_size=128,
)


def import_comfy(comfyui_dir):
    """Import ComfyUI's modules on CPU without parsing our command line."""
    sys.path.insert(0, os.path.abspath(comfyui_dir))
    import comfy.options

    comfy.options.enable_args_parsing(False)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management is imported
    import comfy.ldm.lumina.model
    import comfy.ops
    import comfy.taesd.taesd
    import comfy.text_encoders.llama

    with contextlib.suppress(ImportError):  # the Fun ControlNet: ComfyUI >= 0.28
        import comfy.ldm.lumina.controlnet
    return comfy


def has_control(comfy):
    """Whether this ComfyUI has the Z-Image Fun ControlNet (0.3.75 has not)."""
    return hasattr(comfy.ldm.lumina, "controlnet")


def seed_for(seed, name):
    """A stable 63-bit seed per (seed, file name)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big") >> 1


@torch.no_grad()
def fill_(module, seed):
    """Deterministically overwrite every parameter/buffer (sorted by name)."""
    gen = torch.Generator().manual_seed(seed)
    for name, t in sorted(module.state_dict(keep_vars=True).items()):
        if name.endswith(".alpha"):
            continue  # a LoRA's scale: its rank, as built
        if name.endswith("vae_scale"):
            t.fill_(1.0)
        elif name.endswith("vae_shift"):
            t.fill_(0.0)
        elif t.dim() == 1 and "norm" in name:
            t.fill_(1.0)  # RMSNorm scales: identity
        elif t.dim() == 1:
            t.copy_(torch.randn(t.shape, generator=gen) * 0.02)  # biases
        elif "embed_tokens" in name or "pad_token" in name:
            t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
        else:
            t.copy_(torch.randn(t.shape, generator=gen) / t[0].numel() ** 0.5)  # 1/sqrt(fan_in)


def build_dit(comfy, dtype):
    dim, hd = DIT["dim"], DIT["head_dim"]
    hw = hd * 3 // 8 // 2 * 2  # rope axes split like Z-Image (32/48/48 of 128)
    return comfy.ldm.lumina.model.NextDiT(
        patch_size=2,
        in_channels=16,
        dim=dim,
        n_layers=DIT["n_layers"],
        n_refiner_layers=DIT["n_refiner_layers"],
        n_heads=dim // hd,
        n_kv_heads=dim // hd,
        multiple_of=256,
        ffn_dim_multiplier=8.0 / 3.0,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=TE["hidden_size"],
        axes_dims=[hd - 2 * hw, hw, hw],
        axes_lens=[1536, 512, 512],
        rope_theta=256.0,
        z_image_modulation=True,
        time_scale=1000.0,
        pad_tokens_multiple=32,
        device="cpu",
        dtype=dtype,
        operations=comfy.ops.disable_weight_init,
    )


def build_te(comfy, dtype):
    """The module tree ``Qwen3_4B`` builds (``.model`` = Llama2_), tiny config."""
    llama = comfy.text_encoders.llama
    cfg = llama.Qwen3_4BConfig(**{k: v for k, v in TE.items() if k != "head_dim"})
    cfg.head_dim = TE["head_dim"]  # class attribute in ComfyUI, not a dataclass field
    te = torch.nn.Module()
    te.model = llama.Llama2_(cfg, device="cpu", dtype=dtype, ops=comfy.ops.disable_weight_init)
    return te


LORA_RANK = 4
#: the DiT weights the tiny LoRA changes
LORA_TARGETS = ("attention.qkv", "attention.out", "feed_forward.w2")
CONTROL = dict(n_control_layers=3, additional_in_dim=17, refiner_control=True, ffn=256)


class Tensors(dict):
    """Named tensors with dotted names (a Module's buffers cannot have dots)."""

    def state_dict(self, keep_vars=False):
        return self


def build_lora(comfy, dtype):
    """A LoRA (``diffusion_model.<weight>.lora_up/lora_down/alpha``) on the tiny DiT's
    attention and feed-forward weights, shaped from ComfyUI's own NextDiT."""
    shapes = {k: t.shape for k, t in build_dit(comfy, dtype).state_dict().items()}
    lora = Tensors()
    for key in sorted(shapes):
        stem = key[: -len(".weight")]
        if key.endswith(".weight") and stem.split(".", 2)[-1] in LORA_TARGETS:
            out_dim, in_dim = shapes[key]
            name = "diffusion_model." + stem
            lora[name + ".lora_down.weight"] = torch.empty(LORA_RANK, in_dim, dtype=dtype)
            lora[name + ".lora_up.weight"] = torch.empty(out_dim, LORA_RANK, dtype=dtype)
            lora[name + ".alpha"] = torch.tensor(float(LORA_RANK), dtype=dtype)
    return lora


def build_control(comfy, dtype):
    """ComfyUI's ``ZImage_Control`` as wide as the tiny DiT (it adds into its blocks)."""
    dim, ffn = DIT["dim"], CONTROL["ffn"]
    return comfy.ldm.lumina.controlnet.ZImage_Control(
        dim=dim,
        n_heads=dim // DIT["head_dim"],
        n_kv_heads=dim // DIT["head_dim"],
        multiple_of=1,
        ffn_dim_multiplier=(ffn + 0.5) / dim,
        **{k: v for k, v in CONTROL.items() if k != "ffn"},
        device="cpu",
        dtype=dtype,
        operations=comfy.ops.disable_weight_init,
    )


def official_control_layout(sd):
    """ComfyUI's ZImage_Control keys → the published file's (``z_image_convert`` undone:
    ``qkv`` split into ``to_q``/``to_k``/``to_v``, ``out`` → ``to_out.0``, ``q_norm`` →
    ``norm_q``), so the file loads through ModelPatchLoader exactly as the real one."""
    out = {}
    for key, t in sd.items():
        if key.endswith(".attention.qkv.weight"):
            stem = key[: -len("qkv.weight")]
            q, k, v = t.split([t.shape[0] // 3] * 3)
            out.update({stem + "to_q.weight": q, stem + "to_k.weight": k, stem + "to_v.weight": v})
            continue
        for ours, theirs in (
            (".attention.out.", ".attention.to_out.0."),
            (".attention.q_norm.", ".attention.norm_q."),
            (".attention.k_norm.", ".attention.norm_k."),
        ):
            key = key.replace(ours, theirs)
        out[key] = t
    return out


def build_vae(comfy, dtype):
    return comfy.taesd.taesd.TAESD(latent_channels=16).to(dtype)  # Flux latents


@torch.no_grad()
def centre_vae(vae):
    """TAESD.decode returns 2*dec-1: centre the last conv on 0.5 and shrink it,
    so random images are grey-ish noise instead of mostly clipped 0/255."""
    vae.taesd_decoder[-1].weight.mul_(0.2)
    vae.taesd_decoder[-1].bias.fill_(0.5)


def save_atomic(module, path, meta, layout=None):
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(path), exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    if layout is not None:
        sd = layout(sd)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        save_file(sd, tmp, metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600; use normal perms
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sum(v.numel() for v in sd.values()), os.path.getsize(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfyui", required=True, help="ComfyUI source directory")
    ap.add_argument("--out", required=True, help="models directory to write into")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    t0 = time.time()
    torch.manual_seed(a.seed)  # nothing should use the global RNG; pin it anyway
    comfy = import_comfy(a.comfyui)
    jobs = [  # (relative path, builder, dtype, fix-up after the random fill, key layout)
        ("diffusion_models/z_image_turbo_bf16.safetensors", build_dit, torch.bfloat16, None, None),
        ("diffusion_models/z_image_bf16.safetensors", build_dit, torch.bfloat16, None, None),
        ("text_encoders/qwen_3_4b.safetensors", build_te, torch.bfloat16, None, None),
        ("vae/ae.safetensors", build_vae, torch.float16, centre_vae, None),
        ("loras/zimage_tiny_style.safetensors", build_lora, torch.bfloat16, None, None),
    ]
    if has_control(comfy):
        patch = "model_patches/Z-Image-Turbo-Fun-Controlnet-Union.safetensors"
        jobs.append((patch, build_control, torch.bfloat16, None, official_control_layout))
    files = {}
    for rel, build, dtype, fixup, layout in jobs:
        module = build(comfy, dtype)
        fill_(module, seed_for(a.seed, rel))
        if fixup is not None:
            fixup(module)
        # ONE metadata key: safetensors keeps metadata in a Rust HashMap, so
        # several keys come out in random order and the bytes would differ.
        meta = {"comfyfn": f"tiny random test weights (seed {a.seed}), not a real model"}
        params, size = save_atomic(module, os.path.join(a.out, rel), meta, layout)
        files[rel] = {"params": params, "bytes": size, "dtype": str(dtype).replace("torch.", "")}
        del module
    print(
        json.dumps(
            {
                "out": os.path.abspath(a.out),
                "seed": a.seed,
                "files": files,
                "params": sum(f["params"] for f in files.values()),
                "bytes": sum(f["bytes"] for f in files.values()),
                "seconds": round(time.time() - t0, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
