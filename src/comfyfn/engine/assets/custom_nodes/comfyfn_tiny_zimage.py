"""comfyfn test-only ComfyUI plugin: let *tiny* Z-Image weights load.

ComfyUI (0.3.75 and 0.28 alike) hard-codes the Z-Image sizes: the DiT config is
only filled in for ``dim == 3840`` (comfy/model_detection.py), the ``ZImage``
supported model only matches ``dim: 3840`` and the Qwen3-4B text encoder is
always built as hidden 2560 / 36 layers (comfy/text_encoders/llama.py
``Qwen3_4BConfig``). 0.28 also sorts Qwen3 text encoders by hidden size in
``comfy.sd.detect_te_model``, so a tiny one falls through to ``LLAMA3_8``.
This file registers no nodes; at import it patches five things so that
random tiny weights written by ``make_tiny_weights.py`` run the real graph:

1. ``comfy.model_detection.detect_unet_config``: for a lumina2 state dict with
   Z-Image modulation that ComfyUI did not recognise (no ``n_heads``), derive
   heads / kv heads / ffn / rope axes from the tensor shapes.
2. ``comfy.supported_models.models``: add ``TinyZImage`` (shift 3.0), matched
   on ``{"image_model": "lumina2", "z_image_modulation": True}``.  It sits
   right after ``ZImage`` so real 3840-wide files still match ``ZImage``.
3. ``comfy.sd.load_text_encoder_state_dicts`` + ``Qwen3_4B.__init__``: for a
   single Qwen3 file whose width is not 2560, derive hidden / layers / heads /
   kv heads / head_dim / ffn from shapes and build the model with them.
4. ``comfy.sd.detect_te_model`` (matters on 0.28): a Qwen3 layout (q_norm, no
   Gemma post-feed-forward norm, no Qwen2.5 k_proj bias) narrower than any real
   Qwen3 (hidden < 1024) that ComfyUI took for ``LLAMA3_8`` is ``QWEN3_4B``.
   On 0.3.75 ComfyUI already answers ``QWEN3_4B`` for it.
5. ``ModelPatchLoader`` + ``ZImage_Control.__init__`` (ComfyUI >= 0.28, where the
   Z-Image Fun ControlNet exists): the control patch is built 3840 wide / 30 heads
   whatever the file; for a narrower file in the official layout (``to_q``/``to_k``/
   ``to_v``, ``control_all_x_embedder.2-1``) its width / heads / ffn come from the
   shapes instead.

For real full-size files every wrapper returns ComfyUI's own result, so the
plugin is a no-op there.  Never ship this outside tests.
"""

import contextlib
import importlib.util
import logging

import comfy.model_detection
import comfy.sd
import comfy.supported_models
import comfy.text_encoders.llama as llama

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

log = logging.getLogger("comfyfn_tiny_zimage")
_MARK = "_comfyfn_tiny_zimage"  # set on wrappers so a re-import does not double-wrap


def _count(keys, prefix):
    """Number of consecutive ``prefix{N}.`` blocks (like ComfyUI's count_blocks)."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in keys):
        n += 1
    return n


# --- 1. DiT config from shapes ------------------------------------------------


def _derive_zimage_dit(sd, prefix, cfg):
    """Fill the fields ComfyUI only knows for dim 3840.  None if not Z-Image."""
    keys = list(sd.keys())
    # Z-Image's adaLN is a bare Linear (index 0); Lumina 2 has SiLU + Linear (index 1).
    block = next(
        (
            b
            for b in ("layers.0.", "noise_refiner.0.")
            if prefix + b + "adaLN_modulation.0.weight" in sd
        ),
        None,
    )
    if block is None:
        return None
    dim = cfg["dim"]
    head_dim = sd[prefix + block + "attention.q_norm.weight"].shape[0]
    qkv_rows = sd[prefix + block + "attention.qkv.weight"].shape[0]
    ffn = sd[prefix + block + "feed_forward.w1.weight"].shape[0]
    n_heads = dim // head_dim
    hw = head_dim * 3 // 8 // 2 * 2  # same 1:1.5:1.5 split as Z-Image's 32/48/48
    cfg.update(
        n_heads=n_heads,
        n_kv_heads=(qkv_rows // head_dim - n_heads) // 2,
        axes_dims=[head_dim - 2 * hw, hw, hw],
        axes_lens=[1536, 512, 512],
        rope_theta=256.0,
        # FeedForward does int(mult * dim) rounded up to multiple_of: with
        # multiple_of 1 and the +0.5 this reproduces the stored width exactly.
        multiple_of=1,
        ffn_dim_multiplier=(ffn + 0.5) / dim,
        z_image_modulation=True,
        time_scale=1000.0,
        n_refiner_layers=_count(keys, prefix + "noise_refiner."),
    )
    if prefix + "cap_pad_token" in sd:
        cfg["pad_tokens_multiple"] = 32
    return cfg


def _wrap_detect_unet_config(orig):
    def detect_unet_config(state_dict, key_prefix, metadata=None):
        cfg = orig(state_dict, key_prefix, metadata=metadata)
        if not cfg or cfg.get("image_model") != "lumina2" or "n_heads" in cfg:
            return cfg  # not lumina2, or a width ComfyUI knows: untouched
        try:
            derived = _derive_zimage_dit(state_dict, key_prefix, dict(cfg))
        except (KeyError, IndexError, ZeroDivisionError) as e:  # unexpected layout
            log.warning("comfyfn tiny Z-Image: cannot derive DiT config (%r)", e)
            derived = None
        if derived is None:
            return cfg
        log.info(
            "comfyfn tiny Z-Image DiT config: dim=%d layers=%d heads=%d kv=%d axes=%s ffn=%d",
            derived["dim"],
            derived["n_layers"],
            derived["n_heads"],
            derived["n_kv_heads"],
            derived["axes_dims"],
            int(derived["ffn_dim_multiplier"] * derived["dim"]),
        )
        return derived

    setattr(detect_unet_config, _MARK, True)
    return detect_unet_config


# --- 2. supported model -------------------------------------------------------


class TinyZImage(comfy.supported_models.ZImage):
    """Z-Image of any width (shift 3.0, Qwen3 text encoder, Flux latents)."""

    unet_config = {"image_model": "lumina2", "z_image_modulation": True}


# --- 3. Qwen3 text encoder config from shapes --------------------------------

_pending_qwen3 = None  # derived config, only set while a TE file is loading


def _derive_qwen3(sd):
    """Qwen3 sizes from shapes, or None when ComfyUI's defaults already fit."""
    p = "model.layers.0."
    hidden = sd["model.embed_tokens.weight"].shape[1]
    if hidden == llama.Qwen3_4BConfig.hidden_size:
        return None  # the real Qwen3-4B: let ComfyUI do it
    head_dim = sd[p + "self_attn.q_norm.weight"].shape[0]
    return dict(
        vocab_size=sd["model.embed_tokens.weight"].shape[0],
        hidden_size=hidden,
        num_hidden_layers=_count(sd.keys(), "model.layers."),
        num_attention_heads=sd[p + "self_attn.q_proj.weight"].shape[0] // head_dim,
        num_key_value_heads=sd[p + "self_attn.k_proj.weight"].shape[0] // head_dim,
        intermediate_size=sd[p + "mlp.gate_proj.weight"].shape[0],
        head_dim=head_dim,  # a plain class attribute, not a dataclass field
    )


def _wrap_load_te(orig):
    def load_text_encoder_state_dicts(state_dicts=[], *args, **kwargs):
        global _pending_qwen3
        derived = None
        if (
            len(state_dicts) == 1
            and comfy.sd.detect_te_model(state_dicts[0]) == comfy.sd.TEModel.QWEN3_4B
        ):
            try:
                derived = _derive_qwen3(state_dicts[0])
            except (KeyError, IndexError, ZeroDivisionError) as e:  # unexpected layout
                log.warning("comfyfn tiny Qwen3: cannot derive config (%r)", e)
        if derived is None:
            return orig(state_dicts, *args, **kwargs)
        log.info("comfyfn tiny Qwen3 text encoder config: %s", derived)
        _pending_qwen3 = derived
        try:
            return orig(state_dicts, *args, **kwargs)
        finally:
            _pending_qwen3 = None

    setattr(load_text_encoder_state_dicts, _MARK, True)
    return load_text_encoder_state_dicts


_SMALLEST_REAL_QWEN3 = 1024  # Qwen3-0.6B's hidden size


def _is_tiny_qwen3(sd):
    p = "model.layers.0."
    return (
        p + "self_attn.q_norm.weight" in sd
        and p + "post_attention_layernorm.weight" in sd
        and p + "post_feedforward_layernorm.weight" not in sd
        and p + "self_attn.k_proj.bias" not in sd
        and "model.embed_tokens.weight" in sd
        and sd["model.embed_tokens.weight"].shape[1] < _SMALLEST_REAL_QWEN3
    )


def _wrap_detect_te_model(orig):
    def detect_te_model(sd):
        found = orig(sd)
        if found == comfy.sd.TEModel.LLAMA3_8 and _is_tiny_qwen3(sd):
            return comfy.sd.TEModel.QWEN3_4B
        return found

    setattr(detect_te_model, _MARK, True)
    return detect_te_model


@contextlib.contextmanager
def _qwen3_config_override(derived):
    """Make ``Qwen3_4BConfig(**d)`` inside llama.py return the derived sizes."""
    orig_cls = llama.Qwen3_4BConfig
    fields = {k: v for k, v in derived.items() if k != "head_dim"}

    def make_config(**config_dict):
        cfg = orig_cls(**{**fields, **config_dict})
        cfg.head_dim = derived["head_dim"]
        return cfg

    llama.Qwen3_4BConfig = make_config
    try:
        yield
    finally:
        llama.Qwen3_4BConfig = orig_cls


def _wrap_qwen3_init(orig):
    def __init__(self, config_dict, dtype, device, operations):
        if _pending_qwen3 is None:
            return orig(self, config_dict, dtype, device, operations)
        with _qwen3_config_override(_pending_qwen3):
            return orig(self, config_dict, dtype, device, operations)

    setattr(__init__, _MARK, True)
    return __init__


# --- 5. Z-Image Fun ControlNet patch sizes from shapes ---------------------------

_REAL_CONTROL_DIM = 3840
_pending_control = None  # derived sizes, only set while a model patch is loading


def _derive_control(path):
    """ZImage_Control sizes of a narrow Fun ControlNet file, or None (not one, or real)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        keys = set(f.keys())
        if "control_all_x_embedder.2-1.weight" not in keys:
            return None
        dim = f.get_slice("control_all_x_embedder.2-1.weight").get_shape()[0]
        if dim == _REAL_CONTROL_DIM:
            return None
        p = "control_layers.0."
        head_dim = f.get_slice(p + "attention.norm_q.weight").get_shape()[0]
        kv_rows = f.get_slice(p + "attention.to_k.weight").get_shape()[0]
        ffn = f.get_slice(p + "feed_forward.w1.weight").get_shape()[0]
    return dict(
        dim=dim,
        n_heads=dim // head_dim,
        n_kv_heads=kv_rows // head_dim,
        multiple_of=1,  # as for the DiT: reproduces the stored ffn width exactly
        ffn_dim_multiplier=(ffn + 0.5) / dim,
    )


def _wrap_load_model_patch(orig):
    def load_model_patch(self, name):
        global _pending_control
        import folder_paths

        derived = _derive_control(folder_paths.get_full_path_or_raise("model_patches", name))
        if derived is None:
            return orig(self, name)
        log.info("comfyfn tiny Z-Image Fun ControlNet config: %s", derived)
        _pending_control = derived
        try:
            return orig(self, name)
        finally:
            _pending_control = None

    setattr(load_model_patch, _MARK, True)
    return load_model_patch


def _wrap_control_init(orig):
    def __init__(self, *args, **kwargs):
        return orig(self, *args, **{**kwargs, **(_pending_control or {})})

    setattr(__init__, _MARK, True)
    return __init__


def _install_control():
    """Where this ComfyUI has the Z-Image Fun ControlNet (not 0.3.75): teach it tiny sizes."""
    import nodes

    loader = nodes.NODE_CLASS_MAPPINGS.get("ModelPatchLoader")
    if loader is None or importlib.util.find_spec("comfy.ldm.lumina.controlnet") is None:
        return
    import comfy.ldm.lumina.controlnet as controlnet

    if not getattr(loader.load_model_patch, _MARK, False):
        loader.load_model_patch = _wrap_load_model_patch(loader.load_model_patch)
    if not getattr(controlnet.ZImage_Control.__init__, _MARK, False):
        controlnet.ZImage_Control.__init__ = _wrap_control_init(controlnet.ZImage_Control.__init__)


# --- install (idempotent) -------------------------------------------------------


def _install():
    if not getattr(comfy.model_detection.detect_unet_config, _MARK, False):
        comfy.model_detection.detect_unet_config = _wrap_detect_unet_config(
            comfy.model_detection.detect_unet_config
        )
    models = comfy.supported_models.models
    if not any(getattr(m, "__name__", "") == "TinyZImage" for m in models):
        models.insert(models.index(comfy.supported_models.ZImage) + 1, TinyZImage)
    if not getattr(comfy.sd.detect_te_model, _MARK, False):
        comfy.sd.detect_te_model = _wrap_detect_te_model(comfy.sd.detect_te_model)
    if not getattr(comfy.sd.load_text_encoder_state_dicts, _MARK, False):
        comfy.sd.load_text_encoder_state_dicts = _wrap_load_te(
            comfy.sd.load_text_encoder_state_dicts
        )
    if not getattr(llama.Qwen3_4B.__init__, _MARK, False):
        llama.Qwen3_4B.__init__ = _wrap_qwen3_init(llama.Qwen3_4B.__init__)
    _install_control()


_install()
