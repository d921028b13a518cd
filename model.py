"""
Build the model of the method: a 4-bit Qwen VLM, its processor, and LoRA on the language model.
This file builds and returns things; it never trains.

    python model.py --model runs/tiny --r 128 --alpha 1024      # load in 4 bit, attach LoRA, print the count
    python model.py --arch qwen-vl-chat --r 128 --alpha 1024    # the count on a published configuration, no weights
    python model.py --arch qwen-vl-chat --peft ia3              # another method's count (dora, ia3, prompt-tuning,
                                                                # vera, oft)
    python model.py --verify                  # Qwen-VL-Chat here against the official code (qwen_vl/verify.py)

The default is the paper's model, Qwen-VL-Chat-Int4 (GPTQ 4-bit, written here: qwen_vl.py), with LoRA on its fused
c_attn. Qwen-VL-Chat (fp16) loads in NF4; any native Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint, the modern choice,
loads through transformers' `from_pretrained` with LoRA on q/k/v. A hub id or a local folder alike; a local folder
never touches the network. --peft puts another of peft's parameter-efficient methods in LoRA's place (PEFT_METHODS).

Two jobs in ~620 lines, both building things: the base (processor, pixel budget, 4 bits, the published configurations)
and the adapter on it (LoRA and the other methods, their settings and refusals, saving and loading). They stay
together because each adapter's refusals depend on the base's format, read from the same checkpoint.
"""

import argparse
import contextlib
import io
import json
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass

import torch

from qwen_vl import modeling as qwen_vl
from qwen_vl import verify
from qwen_vl import processing as qwen_vl_processor
from plumbing.errors import Help, InputError, cli

# On AVX512-BF16 CPUs bitsandbytes looks for an optional hub-hosted kernel of the inference fast path, which
# _keep_cpu_4bit_trainable turns off anyway; its warning that the kernel is absent is noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# peft imports torchao where it is installed (gptqmodel brings it), and torchao registers two enums with torch's pytree
# in a way torch 2.14 deprecates: two warnings at every start that no user of this project can act on.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
# gptqmodel (the GPTQ kernels, imported by transformers, peft or this project) greets at its first import with a
# banner, the environment variables it sets and a note on Python's GIL, then logs each step of loading a checkpoint,
# all through its own logger: set up before it, that logger shows errors only. Its import also asks for a CUDA
# runtime and logs that a CPU-only machine has none.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
try:
    from logbar import LogBar

    with contextlib.redirect_stdout(io.StringIO()):  # the logger's creation prints an empty line
        LogBar.shared().setLevel(logging.ERROR)
except ImportError:  # gptqmodel is not installed: nothing to quiet
    pass
# peft reads `is_gradient_checkpointing` from every model it wraps, a name transformers 5.2x deprecates: a warning at
# every start about peft's code, not the user's.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

DEFAULT_MODEL = "Qwen/Qwen-VL-Chat-Int4"  # the paper's model
DEFAULT_R, DEFAULT_ALPHA = 128, 1024  # the paper's best LoRA configuration
# The paper's LoRA: Qwen-VL-Chat's fused c_attn (query, key, value) of every block of the language model.
QWEN_VL_MODULES = ("c_attn",)
# Its analogue on a native Qwen VLM: q/k/v of the language model.
DEFAULT_MODULES = ("q_proj", "k_proj", "v_proj")
# `--modules all`: every linear layer of the language model's blocks.
ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Qwen-VL-Chat's module names as --modules takes them (c_proj is in both attention and MLP: say which)
QWEN_VL_NAMES = {"c_attn": "attn.c_attn", "w1": "mlp.w1", "w2": "mlp.w2"}


def device():
    """This process's device: the current GPU (under torchrun, the rank's own), else the CPU."""
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"


def _local(model_id):
    # A folder is read as it is; only a hub id may reach the network.
    return {"local_files_only": True} if os.path.isdir(model_id) else {}


# -----------------------------------------------------------------------------
# processor and model


def is_qwen_vl(model_id):
    """Whether the checkpoint is Qwen-VL-Chat (config.json's model_type "qwen"), read from its config alone."""
    return config_json(model_id).get("model_type") == "qwen"


def is_gptq(model_id):
    """Whether the checkpoint is a GPTQ one (config.json's quantization_config), read from its config alone."""
    return (config_json(model_id).get("quantization_config") or {}).get("quant_method") == "gptq"


def config_json(model_id):
    """A checkpoint's config.json as a dict: a folder's, or the hub's (that file alone); {} when it cannot be read (the
    loader that follows names what is wrong with it)."""
    if os.path.isdir(model_id):
        path = os.path.join(model_id, "config.json")
    else:
        from huggingface_hub import hf_hub_download

        path = qwen_vl.from_hub(model_id, hf_hub_download, "config.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}


def check_checkpoint(model_id):
    """A local folder must hold a config and safetensors weights (pickled weights, *.bin, are never read here), and a
    Qwen-VL-Chat folder its tokenizer: a run that would stop at the tokenizer stops before anything loads."""
    if not os.path.isdir(model_id):
        return
    if not os.path.isfile(os.path.join(model_id, "config.json")):
        raise InputError(f"{model_id}: no config.json: not a model folder")
    if not any(f.endswith(".safetensors") for f in os.listdir(model_id)):
        raise InputError(f"{model_id}: no weights (*.safetensors) in the model folder")
    vocabulary = os.path.join(model_id, "qwen.tiktoken")
    if is_qwen_vl(model_id) and not os.path.isfile(vocabulary):
        raise InputError(f"{vocabulary}: missing (a Qwen-VL-Chat checkpoint carries its tokenizer)")


def load_processor(model_id, max_pixels=None, min_pixels=None, video=False):
    """The checkpoint's processor, with the pixel budget of a frame (None: the checkpoint's own). Qwen-VL-Chat resizes
    every frame to its one image size and reads no video: another budget or --input video is an error, not ignored."""
    from transformers import AutoProcessor

    check_checkpoint(model_id)
    if is_qwen_vl(model_id):
        processor = qwen_vl_processor.QWenVLProcessor.from_pretrained(qwen_vl.folder_of(model_id))
        side = processor.image_processor.image_size
        if video:
            raise InputError(f"{model_id}: Qwen-VL-Chat reads images, not videos: --input video is for Qwen2-VL, "
                             "Qwen2.5-VL and Qwen3-VL")
        # 448 x 448 is every script's default (the paper's input size): only another value is a request to refuse
        if max_pixels not in (None, side * side, 448 * 448) or min_pixels is not None:
            raise InputError(f"{model_id}: Qwen-VL-Chat resizes every frame to {side} x {side}: --max-pixels and "
                             "--min-pixels are for Qwen2-VL, Qwen2.5-VL and Qwen3-VL")
        return processor
    try:
        processor = AutoProcessor.from_pretrained(model_id, **_local(model_id))
    except (OSError, ValueError) as e:
        raise InputError(f"{model_id}: cannot load the processor ({str(e).splitlines()[0]})")
    # AutoProcessor quietly falls back to the bare tokenizer when it cannot build the image side
    # (for example when torchvision is missing); the prompt needs the real processor.
    if not hasattr(processor, "image_processor"):
        raise InputError(f"{model_id}: could not build the image processor (is torchvision installed?)")
    ip = processor.image_processor
    ip.size = {"shortest_edge": min_pixels or ip.size["shortest_edge"], "longest_edge": max_pixels or ip.size["longest_edge"]}
    b = budget_of(processor)
    if b.min_pixels > b.max_pixels:
        raise InputError(f"--max-pixels {b.max_pixels} is below the processor's minimum, {b.min_pixels} (--min-pixels)")
    if hasattr(processor, "video_processor"):
        fit_video_budget(processor.video_processor, b)
    return processor


@dataclass(frozen=True)
class Budget:
    """
    The pixels a frame keeps. Qwen's image processors resize a frame to sides that are multiples of `factor` (patch
    size x merge size: one visual token per factor x factor square), with min_pixels <= height x width <= max_pixels
    and the aspect ratio kept as well as that allows. The frame cache (frames.FrameCache) stores frames fitted to it.
    """

    max_pixels: int
    min_pixels: int
    factor: int

    def size(self, height, width):
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def fit(self, frames):
        """(H, W, 3) uint8 frames -> an (N, 3, h, w) uint8 tensor, channels first as the processor takes them, at
        `size`, resized as the processor resizes (bicubic with antialiasing, on uint8): given these, it computes
        exactly what it computes from the originals."""
        import torchvision.transforms.v2.functional as tvF

        frames = [torch.from_numpy(f).permute(2, 0, 1) for f in frames]
        size = list(self.size(*frames[0].shape[1:]))
        return torch.stack([f if size == list(f.shape[1:]) else tvF.resize(
            f, size, interpolation=tvF.InterpolationMode.BICUBIC, antialias=True) for f in frames])


def fit_video_budget(video_processor, budget):
    """
    The native video input (--input video) gets the frames the cache fitted to the image budget (Budget), and
    they must reach the model unchanged, as an image does. Qwen2-VL's and Qwen2.5-VL's video processor budgets a
    frame's pixels as the image processor does: the same budget. Qwen3-VL's budgets the whole clip's (frames x height
    x width, the frames rounded to whole tubelets: at most max_frames + 1): the image budget a frame. The per-frame
    cap of the reference implementation (qwen-vl-utils), which shrinks the frames of long clips, stays off: the
    frames are fitted already, and a video's frame costs what an image costs.
    """
    from transformers import Qwen3VLVideoProcessor

    frames = video_processor.max_frames + 1 if isinstance(video_processor, Qwen3VLVideoProcessor) else 1
    video_processor.size = {"shortest_edge": budget.min_pixels, "longest_edge": budget.max_pixels * frames}
    video_processor.cap_pixels_per_frame = False


def budget_of(processor):
    """The processor's pixel budget of a frame, as the frame cache stores frames for it: Qwen-VL-Chat's fixed square
    (its image transform), or a Budget."""
    ip = processor.image_processor
    if isinstance(ip, qwen_vl_processor.ImageTransform):
        return ip
    return Budget(max_pixels=ip.size["longest_edge"], min_pixels=ip.size["shortest_edge"],
                       factor=ip.patch_size * ip.merge_size)


def visual_tokens(processor, height, width):
    """Visual tokens of one frame of height x width pixels under the processor's budget."""
    if isinstance(processor, qwen_vl_processor.QWenVLProcessor):
        return processor.tokenizer.image_span
    b = budget_of(processor)
    h, w = b.size(height, width)
    return (h // b.factor) * (w // b.factor)


def quantization(model_id, quant, dtype):
    """The quantization config to load `model_id` with, as a function of what the checkpoint already is."""
    from transformers import AutoConfig, BitsAndBytesConfig

    config = AutoConfig.from_pretrained(model_id, **_local(model_id))
    prequantized = getattr(config, "quantization_config", None)
    if prequantized is not None:  # the checkpoint's own quantization, whatever --quant says: never a second one
        saved = prequantized if isinstance(prequantized, dict) else prequantized.to_dict()
        if saved.get("quant_method") != "gptq":
            raise InputError(f"{model_id}: {saved.get('quant_method')} checkpoints are not supported (GPTQ ones are); "
                             "pass the bf16 checkpoint and --quant nf4")
        return gptq_config(model_id, saved)
    if quant == "none":
        return None
    assert quant == "nf4", quant
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        # The vision tower stays in full precision (quantizing a tiny one cost 0.3 SRCC). The name is matched as a
        # prefix of the module path, so it must be "model.visual", not "visual".
        llm_int8_skip_modules=["model.visual", "lm_head"],
    )


def gptq_config(model_id, saved):
    """A GPTQ checkpoint (the format of the paper's Qwen-VL-Chat-Int4) loads as it is through gptqmodel, which
    transformers 5 and peft use (auto-gptq is archived and does not import with them), with its "torch" kernel: the
    faster default CPU kernels switch to an inference path after any no-grad forward and from then on pass no
    gradient back through frozen quantized layers, so LoRA below them would learn from wrong gradients."""
    qwen_vl.gptq_environment(device())
    try:
        import gptqmodel  # noqa: F401
        import optimum  # noqa: F401
    except ImportError:
        raise InputError(f"{model_id}: a GPTQ checkpoint needs gptqmodel and optimum: "
                         "pip install gptqmodel==7.7.0 optimum==2.3.0 (both in requirements.txt)")
    from transformers import GPTQConfig

    return GPTQConfig(bits=saved["bits"], backend="torch")


def load_model(model_id, quant="nf4"):
    """The frozen base model on the local device: 4-bit NF4 language model, full-precision vision tower."""
    from transformers import AutoModelForImageTextToText

    check_checkpoint(model_id)
    dev = device()
    dtype = torch.float32 if dev == "cpu" else torch.bfloat16
    if is_qwen_vl(model_id):
        return load_qwen_vl(model_id, quant, dtype, dev)
    try:
        with warnings.catch_warnings():
            # a GPTQ checkpoint keeps its own config, with the kernel chosen here (gptq_config): transformers warns
            # that it merges the two, which is what it is asked to do
            warnings.filterwarnings("ignore", message="You passed `quantization_config`", category=UserWarning)
            model = AutoModelForImageTextToText.from_pretrained(
                model_id, dtype=dtype, quantization_config=quantization(model_id, quant, dtype),
                attn_implementation="sdpa", device_map={"": dev}, use_safetensors=True, **_local(model_id))
    except (OSError, ValueError) as e:
        raise InputError(f"{model_id}: cannot load the model ({str(e).splitlines()[0]})")
    model.requires_grad_(False)
    if quant == "nf4" and dev == "cpu":
        _keep_cpu_4bit_trainable(model)
    return model


def load_qwen_vl(model_id, quant, dtype, dev):
    """Qwen-VL-Chat written here (qwen_vl.py): the Int4 release as it is (GPTQ, gptqmodel's torch kernel), the fp16
    one in NF4 (or as it is with --quant none); the vision tower in full precision either way."""
    folder = qwen_vl.folder_of(model_id)
    if "quantization_config" in config_json(folder):
        gptq_config(model_id, {"bits": 4})  # gptqmodel's environment, or how to install it
    model = qwen_vl.from_pretrained(folder, dtype, dev, quant)
    model.name_or_path = model_id
    if quant == "nf4" and dev == "cpu":
        _keep_cpu_4bit_trainable(model)
    return model


def _keep_cpu_4bit_trainable(model):
    # On CPUs with AVX512-BF16, bitsandbytes repacks a Linear4bit's weight into an inference-only layout at its
    # first no-grad forward (after from_pretrained, in generate). Training after that crashes or, worse, yields
    # LoRA gradients 2-5x too small. Turning the fast path off keeps one layout for training and evaluation.
    import bitsandbytes as bnb

    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False


# -----------------------------------------------------------------------------
# adapters: LoRA, the paper's, and peft's other parameter-efficient methods (--peft)

# Each method and its settings among ADAPTER_SETTINGS; another is refused, never ignored. --r and --alpha keep LoRA's
# meaning where a method has them (VeRA's r: the rank of its shared random matrices, it has no alpha).
PEFT_METHODS = {
    "lora": ("r", "alpha", "dropout", "modules"),  # the paper's: W0 x + (alpha / r) B A x, B = 0 at the start
    "dora": ("r", "alpha", "dropout", "modules"),  # LoRA's update as a direction, times a learned magnitude per output
    "ia3": ("modules",),  # a learned vector scales each module's output (its input on an MLP's down projection)
    "prompt-tuning": ("virtual_tokens",),  # learned input embeddings before each prompt; no layer changes
    "vera": ("r", "dropout", "modules"),  # frozen random A and B shared by all its modules, learned scaling vectors
    "oft": ("modules",),  # a learned orthogonal rotation of each module's input, in blocks of 32 (peft's default)
}
ADAPTER_SETTINGS = ("r", "alpha", "dropout", "virtual_tokens", "modules")
# The settings' defaults where a method has them: r and alpha the paper's best LoRA; modules: None, the paper's
# modules, resolved for the checkpoint when a run starts (paper_modules)
ADAPTER_DEFAULTS = dict(r=DEFAULT_R, alpha=DEFAULT_ALPHA, dropout=0.05, virtual_tokens=20)
# Methods peft 0.21 has no layer for on GPTQ checkpoints (tried on a tiny Int4 Qwen-VL-Chat and a tiny GPTQ Qwen2.5-VL):
# DoRA ("GPTQLoraLinear does not support DoRA yet"), IA3 ("Target module TorchLinear() is not supported").
NEEDS_NF4 = ("dora", "ia3")


def adapter_settings(method, **given):
    """The settings of `method` (ADAPTER_SETTINGS, None: not given): each it has, as given or by default
    (ADAPTER_DEFAULTS), and None for each it has not. A setting given to a method that has not it is an InputError."""
    if method not in PEFT_METHODS:
        raise InputError(f"--peft must be one of {', '.join(PEFT_METHODS)}, not {method!r}")
    has = PEFT_METHODS[method]
    for name, value in given.items():
        if value is not None and name not in has:
            flags = ", ".join(f"--{n.replace('_', '-')}" for n in has) or "none"
            raise InputError(f"--{name.replace('_', '-')} is not a setting of {method} (its settings: {flags})")
    return {name: ADAPTER_DEFAULTS.get(name) if given.get(name) is None and name in has else given.get(name)
            for name in ADAPTER_SETTINGS}


def check_method(method, model_id):
    """Before anything loads, from the checkpoint's config alone: a method peft has no layer for on this base is one
    line that names a base it runs on."""
    if method not in NEEDS_NF4 or not is_gptq(model_id):
        return
    if is_qwen_vl(model_id):
        instead = "--model Qwen/Qwen-VL-Chat (the fp16 release, loaded in NF4)"
    else:  # a hub id names its bf16 release before "-GPTQ-Int4" (Qwen/Qwen2-VL-7B-Instruct-GPTQ-Int4)
        release = re.sub(r"[-_.]?GPTQ.*$", "", model_id, flags=re.IGNORECASE)
        instead = f"--model {release} (loaded in NF4)" if release != model_id and not os.path.isdir(model_id) else \
            "the model's bf16 checkpoint (loaded in NF4)"
    raise InputError(f"--peft {method} needs an NF4 base: peft has no {method} layer for the GPTQ checkpoint "
                     f"{model_id}; use {instead}")


def module_pattern(modules=None, qwen=False):
    """A regular expression of the language model's `modules` (None: the paper's, c_attn on Qwen-VL-Chat (`qwen`), q/k/v
    on the others; ["all"]: every linear layer of its blocks), anchored in the language model: names alone would also
    match the vision tower's (gate/up/down_proj, Qwen-VL's mlp.c_proj)."""
    if qwen:
        modules = qwen_vl.QUANTIZED if list(modules or []) == ["all"] else modules or QWEN_VL_MODULES
        return r"transformer\.h\.\d+\.(" + "|".join(QWEN_VL_NAMES.get(t, t).replace(".", r"\.") for t in modules) + ")"
    modules = ALL_MODULES if list(modules or []) == ["all"] else modules or DEFAULT_MODULES
    return r".*language_model.*\.(" + "|".join(modules) + r")"


def adapter_config(method, qwen=False, r=None, alpha=None, dropout=None, virtual_tokens=None, modules=None):
    """peft's configuration of `method` with its settings (adapter_settings) on the language model of Qwen-VL-Chat
    (`qwen`) or a native Qwen VLM."""
    import peft

    if method in ("lora", "dora"):
        return peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", use_dora=method == "dora",
                               target_modules=module_pattern(modules, qwen))
    if method == "ia3":
        # IA3 scales the input of an MLP's down projection (the MLP's activations), the output of any other module
        down = "mlp.c_proj" if qwen else "down_proj"
        scales_input = module_pattern([down], qwen) if any(t in (down, "all") for t in modules or []) else []
        return peft.IA3Config(target_modules=module_pattern(modules, qwen), feedforward_modules=scales_input)
    if method == "vera":
        return peft.VeraConfig(r=r, vera_dropout=dropout, target_modules=module_pattern(modules, qwen))
    if method == "oft":
        return peft.OFTConfig(target_modules=module_pattern(modules, qwen))
    assert method == "prompt-tuning", method
    # the causal-LM wrapper is the one that puts the learned tokens before the prompt's embeddings
    return peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=virtual_tokens)


def checkpointing(net, on=True):
    """Activation checkpointing on (recompute each block's activations in the backward pass) or off. Non-reentrant:
    it needs no input that requires grad, so the frozen embeddings stay frozen. transformers names it
    activation_checkpointing_* since 5.2x and gradient_checkpointing_* before (the GPU image's release); the
    Qwen-VL-Chat written here takes the new names."""
    name = "activation" if hasattr(net, "activation_checkpointing_enable") else "gradient"
    if on:
        getattr(net, f"{name}_checkpointing_enable")(**{f"{name}_checkpointing_kwargs": {"use_reentrant": False}})
    else:
        getattr(net, f"{name}_checkpointing_disable")()


def add_adapter(model, method="lora", **settings):
    """A fresh adapter of `method` (settings: adapter_settings') on the frozen base model."""
    from peft import get_peft_model

    modules = settings.get("modules")
    try:
        adapted = get_peft_model(model, adapter_config(method, isinstance(model, qwen_vl.QWenLMHeadModel), **settings))
    except ValueError as e:  # peft: no module matched
        raise InputError(f"--modules {','.join(modules or [])}: {str(e).splitlines()[0]}")
    return place_virtual_tokens(adapted)


def add_lora(model, r, alpha, dropout=ADAPTER_DEFAULTS["dropout"], modules=None):
    return add_adapter(model, "lora", r=r, alpha=alpha, dropout=dropout, modules=modules)


def virtual_tokens(model):
    """How many learned tokens prompt tuning's wrapper puts before each prompt at each forward; 0 for the other methods
    and a bare model."""
    config = getattr(model, "active_peft_config", None)
    return config.num_virtual_tokens if config is not None and config.is_prompt_learning else 0


def place_virtual_tokens(model):
    """
    Prompt tuning on a native Qwen VLM: peft's wrapper passes the prompts as input embeddings, its learned tokens
    first, without their ids. transformers then finds the image tokens by their embedding, but cannot lay out its 3-D
    rotary positions (M-RoPE), which it reads from the ids: the images would get a text's positions. A hook before the
    base model's forward gives them, as for the ids: the token types (mm_token_type_ids) extended by the learned
    tokens, as text, and the positions of the whole sequence from them (the model's own get_rope_index, which reads the
    types alone), with the offset the cached decoding steps continue from (rope_deltas). Qwen-VL-Chat places its images
    among input embeddings itself (qwen_vl.QWenModel.image_marks) and counts plain positions. Returns the model.
    """
    import torch.nn.functional as F

    base = model.get_base_model()
    if not virtual_tokens(model) or isinstance(base, qwen_vl.QWenLMHeadModel):
        return model

    def positions(module, args, kwargs):
        embeds, types = kwargs.get("inputs_embeds"), kwargs.get("mm_token_type_ids")
        if kwargs.get("input_ids") is not None or embeds is None or types is None or types.shape[1] == embeds.shape[1]:
            return None
        types = F.pad(types, (embeds.shape[1] - types.shape[1], 0))
        visual = {k: kwargs[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
                  if kwargs.get(k) is not None}
        position_ids, deltas = module.model.get_rope_index(torch.zeros_like(types), mm_token_type_ids=types,
                                                           attention_mask=kwargs.get("attention_mask"), **visual)
        module.model.rope_deltas = deltas
        return args, dict(kwargs, mm_token_type_ids=types, position_ids=position_ids)

    base.register_forward_pre_hook(positions, with_kwargs=True)
    return model


def paper_modules(model_id):
    """The paper's LoRA modules for this checkpoint, as --modules writes them: c_attn on Qwen-VL-Chat, q/k/v else."""
    return ",".join(QWEN_VL_MODULES if is_qwen_vl(model_id) else DEFAULT_MODULES)


def config_name(r, alpha, method="lora", virtual_tokens=None):
    """An adapter configuration's name: train.py's default run directory is runs/NAME, cv.py's OUT/NAME. LoRA's is
    r{R}-a{ALPHA}; another method's is the method, then the settings it has: dora-r16-a32, vera-r128, ia3,
    prompt-tuning-v20."""
    parts = ([] if method == "lora" else [method]) + ([] if r is None else [f"r{r}"]) + (
        [] if alpha is None else [f"a{alpha:g}"]) + ([] if virtual_tokens is None else [f"v{virtual_tokens}"])
    return "-".join(parts)


def config_settings(name):
    """config_name read back: {peft, r, alpha, virtual_tokens} of an adapter configuration's name, None where it has
    not the setting; what follows them (cv.py's -lr{LR}) is not read."""
    method = next((m for m in PEFT_METHODS if m != "lora" and (name == m or name.startswith(m + "-"))), "lora")
    found = dict(peft=method, r=None, alpha=None, virtual_tokens=None)
    for part in (name if method == "lora" else name[len(method) + 1:]).split("-"):
        setting = dict(r="r", a="alpha", v="virtual_tokens").get(part[:1])
        try:
            value = (float if setting == "alpha" else int)(part[1:])
        except ValueError:
            break
        if setting is None:
            break
        found[setting] = value
    return found


def count_parameters(model):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def save_adapter(model, path):
    """PEFT format: adapter_config.json + adapter_model.safetensors, readable by PeftModel.from_pretrained."""
    model.save_pretrained(path, safe_serialization=True)


def load_adapter(model, path, model_id, trainable=False, recorded=None):
    """The adapter at `path` on `model`, after checking it was trained on `model_id` (see check_adapter)."""
    from peft import PeftModel

    check_adapter(path, model_id, recorded)
    try:
        return place_virtual_tokens(PeftModel.from_pretrained(model, path, is_trainable=trainable))
    except RuntimeError as e:  # shapes that do not fit this base model
        raise InputError(f"{path}: does not fit {model_id} ({str(e).splitlines()[0]})")


def check_adapter(path, model_id, recorded=None):
    """Before any weights load: the adapter is in safetensors and was trained on `model_id`: the same id or folder, a
    folder with the same configuration, or the model its run `recorded` (model_identity: the folder may be elsewhere)."""
    if not os.path.isfile(os.path.join(path, "adapter_model.safetensors")):
        raise InputError(f"{path}: no adapter_model.safetensors (only safetensors adapters are read)")
    base = base_model_of(path)
    if not same_model(base, model_id) and (recorded is None or recorded != identity(model_id)):
        raise InputError(f"{path}: the adapter was trained on {base}, not {model_id} (pass --model {base})")


def base_model_of(adapter_path):
    with open(os.path.join(adapter_path, "adapter_config.json")) as f:
        return json.load(f)["base_model_name_or_path"]


def identity(model_id):
    """What a run records of its base model to recognise it elsewhere: a folder's configuration (the folder may move
    or be mounted at another path), else the hub id."""
    config = os.path.join(model_id, "config.json")
    if not os.path.isfile(config):
        return model_id
    with open(config) as f:
        return json.load(f)


def same_model(a, b):
    """The same hub id, or two folders holding the same configuration (the same folder, or a checkpoint that moved)."""
    return a == b or identity(a) == identity(b)


# -----------------------------------------------------------------------------
# published configurations

# The published configurations of real checkpoints (their config.json): the architecture, shapes and cost of each, no
# download, to count its LoRA parameters (python model.py --arch) or to benchmark it with random weights (tiny.py
# --arch, bench.py --arch).
ARCHS = {
    "qwen2.5-vl-7b": ("qwen2_5_vl", dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, max_position_embeddings=128000,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}), dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584, window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2), False),
    # the paper's model: Qwen-VL-Chat's config.json (its Int4 release: the same with a quantization_config)
    "qwen-vl-chat": ("qwen_vl", dict(
        model_type="qwen", vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
        num_attention_heads=32, kv_channels=128, seq_length=2048, rotary_emb_base=10000, layer_norm_epsilon=1e-6,
        use_dynamic_ntk=True, use_logn_attn=True, no_bias=True, tie_word_embeddings=False), dict(
        heads=16, image_size=448, image_start_id=151857, layers=48, mlp_ratio=4.9231, output_dim=4096, patch_size=14,
        width=1664), False),
    "qwen2.5-vl-3b": ("qwen2_5_vl", dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
        num_key_value_heads=2, max_position_embeddings=128000,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}), dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048, window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2), True),
    "qwen3-vl-8b": ("qwen3_vl", dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
        rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                         "mrope_interleaved": True}), dict(
        depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
        num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24]), False),
}


def published_config(arch):
    """The configuration of a real checkpoint (see ARCHS): its architecture, shapes and cost, with no weights."""
    family, text, vision, tied = ARCHS[arch]
    if family == "qwen_vl":
        return qwen_vl.QWenConfig.from_dict(dict(text, visual=vision), arch)
    return family_config(family, text, vision, tied)


def family_config(family, text, vision, tied=False, **special):
    """The configuration of a `family` model (qwen2_5_vl or qwen3_vl) with these text and vision settings; `special`:
    its special token ids."""
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig as Config
    elif family == "qwen3_vl":
        from transformers import Qwen3VLConfig as Config
    else:
        raise InputError(f"unknown family {family!r} (qwen2_5_vl or qwen3_vl)")
    return Config(text_config=text, vision_config=vision, tie_word_embeddings=tied, **special)


# -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local folder to load")
    parser.add_argument("--arch", choices=list(ARCHS), help="instead: a published configuration, built with no weights")
    parser.add_argument("--quant", default="nf4", choices=["nf4", "none"], help="4-bit NF4 or full precision")
    parser.add_argument("--peft", default="lora", choices=list(PEFT_METHODS), help="the adapter: lora (the paper's), "
                        "dora, ia3, prompt-tuning, vera or oft")
    parser.add_argument("--r", type=int, help="rank of LoRA, DoRA and VeRA (default 128)")
    parser.add_argument("--alpha", type=float, help="alpha of LoRA and DoRA (default 1024)")
    parser.add_argument("--virtual-tokens", type=int, help="prompt tuning's learned tokens (default 20)")
    parser.add_argument("--modules", "--targets", help="language-model modules that get the adapter, comma-separated, "
                        "or all (default: the paper's: c_attn on Qwen-VL-Chat, q_proj,k_proj,v_proj on the others)")
    parser.add_argument("--verify", metavar="DIR", nargs="?", const=verify.REFERENCES, help="instead: check Qwen-VL-Chat "
                        "here against the official code's reference outputs in DIR (qwen_vl/verify.py; default: "
                        "qwen_vl/reference, carried in the repository); exit 1 past tolerance")
    args = parser.parse_args(argv)
    settings = adapter_settings(args.peft, r=args.r, alpha=args.alpha, virtual_tokens=args.virtual_tokens,
                                modules=args.modules.split(",") if args.modules else None)
    if args.verify:
        sys.exit(verify.main(args.verify))
    if args.arch:
        from transformers import AutoModelForImageTextToText

        config = published_config(args.arch)
        with torch.device("meta"):  # shapes only: the count of a 7B model without its 15 GB of weights
            if isinstance(config, qwen_vl.QWenConfig):
                base = qwen_vl.QWenLMHeadModel(config).requires_grad_(False)
            else:
                base = AutoModelForImageTextToText.from_config(config).requires_grad_(False)
    else:
        check_method(args.peft, args.model)
        base = load_model(args.model, args.quant)
    model = add_adapter(base, args.peft, **settings)
    trainable, total = count_parameters(model)
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")


if __name__ == "__main__":
    cli(main)
