"""
Build the model of the method: a native Qwen VLM in 4-bit NF4, its processor, and LoRA on the language model.
This file builds and returns things; it never trains.

    python model.py --make-tiny runs/tiny                      # a tiny random Qwen2.5-VL checkpoint
    python model.py --make-tiny runs/tiny3 --family qwen3_vl   # the same for Qwen3-VL
    python model.py --make-random runs/7b --arch qwen2.5-vl-7b # the real architecture, random weights (bench.py)
    python model.py --model runs/tiny --r 128 --alpha 1024     # load in 4 bit, attach LoRA, print the count

Any native Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint loads through `from_pretrained`, a hub id or a local
folder alike; a local folder never touches the network.
"""

import argparse
import json
import logging
import os
import tempfile

import torch

import data
from data import InputError, cli

# On AVX512-BF16 CPUs bitsandbytes looks for an optional hub-hosted kernel of the inference fast path, which
# _keep_cpu_4bit_trainable turns off anyway; its warning that the kernel is absent is noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_R, DEFAULT_ALPHA = 128, 1024  # the paper's best LoRA configuration
# The analogue of the paper's LoRA on Qwen-VL's fused `c_attn` (query, key, value) is q/k/v of the language model.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj")
# `--targets all`: every linear layer of the language model's blocks.
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def device():
    """This process's device: the current GPU (under torchrun, the rank's own), else the CPU."""
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"


def _local(model_id):
    # A folder is read as it is; only a hub id may reach the network.
    return {"local_files_only": True} if os.path.isdir(model_id) else {}


# -----------------------------------------------------------------------------
# processor and model


def check_checkpoint(model_id):
    """A local folder must hold a config and safetensors weights; pickled weights (*.bin) are never read."""
    if not os.path.isdir(model_id):
        return
    if not os.path.isfile(os.path.join(model_id, "config.json")):
        raise InputError(f"{model_id}: no config.json: not a model folder")
    if not any(f.endswith(".safetensors") for f in os.listdir(model_id)):
        raise InputError(f"{model_id}: no weights (*.safetensors) in the model folder")


def load_processor(model_id, max_pixels=None, min_pixels=None):
    """The checkpoint's processor, with the pixel budget of a frame (None: the checkpoint's own)."""
    from transformers import AutoProcessor

    check_checkpoint(model_id)
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


def fit_video_budget(video_processor, budget):
    """
    The native video input (--input video) gets the frames the cache fitted to the image budget (data.Budget), and
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
    """The processor's pixel budget of a frame, as the frame cache stores frames for it."""
    ip = processor.image_processor
    return data.Budget(max_pixels=ip.size["longest_edge"], min_pixels=ip.size["shortest_edge"],
                       factor=ip.patch_size * ip.merge_size)


def visual_tokens(processor, height, width):
    """Visual tokens of one frame of height x width pixels under the processor's budget."""
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
    gptq_environment()
    try:
        import gptqmodel  # noqa: F401
        import optimum  # noqa: F401
    except ImportError:
        raise InputError(f"{model_id}: a GPTQ checkpoint needs gptqmodel and optimum: "
                         "pip install gptqmodel==7.7.0 optimum==2.3.0 (both in requirements.txt)")
    from transformers import GPTQConfig

    return GPTQConfig(bits=saved["bits"], backend="torch")


def gptq_environment():
    # gptqmodel sizes its CPU thread pools from the machine and stops on a 2-core one unless told how many to use;
    # on a CPU its torch kernel would compile the dequantization (torch.compile: ~20 s at the first forward, for a
    # gain only large layers see).
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, os.cpu_count() or 1)))
    if device() == "cpu":
        import torch._dynamo

        torch._dynamo.config.disable = True


def quantize_gptq(src, dst, texts, group_size=128):
    """A GPTQ 4-bit copy of the checkpoint `src` in `dst`, calibrated on `texts` (gptqmodel): the language model's
    linear layers quantized; the vision tower, the embeddings and lm_head as they were."""
    gptq_environment()
    from gptqmodel import GPTQModel, QuantizeConfig
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(src)
    # pack_impl "original": the same checkpoint without a C++ extension to compile first
    config = QuantizeConfig(bits=4, group_size=group_size, desc_act=False, sym=True, device="cpu",
                            pack_impl="original")
    src, dst, here = os.path.abspath(src), os.path.abspath(dst), os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)  # gptqmodel writes its quantization logs to ./logs: not into the user's folder
        try:
            model = GPTQModel.load(src, config)
            model.quantize(texts, tokenizer=processor.tokenizer)
            model.save(dst)
        finally:
            os.chdir(here)
    processor.save_pretrained(dst)
    return dst


def load_model(model_id, quant="nf4"):
    """The frozen base model on the local device: 4-bit NF4 language model, full-precision vision tower."""
    from transformers import AutoModelForImageTextToText

    check_checkpoint(model_id)
    dev = device()
    dtype = torch.float32 if dev == "cpu" else torch.bfloat16
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            model_id, dtype=dtype, quantization_config=quantization(model_id, quant, dtype), attn_implementation="sdpa",
            device_map={"": dev}, use_safetensors=True, **_local(model_id))
    except (OSError, ValueError) as e:
        raise InputError(f"{model_id}: cannot load the model ({str(e).splitlines()[0]})")
    model.requires_grad_(False)
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
# LoRA


def lora_config(r, alpha, dropout=0.05, targets=DEFAULT_TARGETS):
    from peft import LoraConfig

    targets = ALL_TARGETS if list(targets) == ["all"] else targets
    # Target names alone would also match the vision tower's MLP (gate/up/down_proj): anchor them in the LM.
    pattern = r".*language_model.*\.(" + "|".join(targets) + r")"
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")


def add_lora(model, r, alpha, dropout=0.05, targets=DEFAULT_TARGETS):
    from peft import get_peft_model

    return get_peft_model(model, lora_config(r, alpha, dropout, targets))


def config_name(r, alpha):
    """A LoRA configuration's name: train.py's default run directory is runs/NAME, cv.py's OUT/NAME."""
    return f"r{r}-a{alpha:g}"


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
        return PeftModel.from_pretrained(model, path, is_trainable=trainable)
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
# tiny random checkpoints of the real architectures, for the demo and the tests

# The chat template Qwen2-VL and Qwen2.5-VL checkpoints ship (system turn, then the user's images and text).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
# Qwen2's pre-tokenizer: words, then every digit on its own, punctuation, newlines, spaces.
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def tiny_tokenizer(corpus, vocab_size=1000):
    """A byte-level BPE with Qwen's split rule and special tokens, trained on `corpus`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tk = Tokenizer(models.BPE())
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return Qwen2TokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              unk_token=None, bos_token=None, chat_template=CHAT_TEMPLATE)


# The published configurations of real checkpoints (their config.json and preprocessor_config.json), to build them
# with random weights: the same architecture, shapes and cost, no download. Vocabularies stay at full size; the
# tokenizer is the tiny one (its ids are a subset).
ARCHS = {
    "qwen2.5-vl-7b": ("qwen2_5_vl", dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, max_position_embeddings=128000,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}), dict(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584, window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2), False),
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
# Tiny models of the same families: 2 layers, a 128-wide language model, a 2-block vision tower.
TINY = {
    "qwen2_5_vl": (dict(vocab_size=None, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]}),
                   dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                        fullatt_block_indexes=[1], window_size=56)),
    "qwen3_vl": (dict(vocab_size=None, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096,
                      rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [4, 6, 6],
                                       "mrope_interleaved": True}),
                 dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=2, out_hidden_size=128,
                      num_position_embeddings=64, deepstack_visual_indexes=[1])),
}
# The stock image processors: patch size, the mean and std they normalize with, and the pixel range of a frame.
PROCESSORS = {
    "qwen2_5_vl": dict(patch_size=14, image_mean=[0.48145466, 0.4578275, 0.40821073],
                       image_std=[0.26862954, 0.26130258, 0.27577711], min_pixels=56 * 56, max_pixels=28 * 28 * 16384),
    "qwen3_vl": dict(patch_size=16, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], min_pixels=256 * 256,
                     max_pixels=4096 * 4096),
}


def published_config(arch, tokenizer=None):
    """The configuration of a real checkpoint (see ARCHS), with the special token ids of `tokenizer` if given."""
    family, text, vision, tied = ARCHS[arch]
    return _config(family, text, vision, tokenizer, tied)


def _config(family, text, vision, tokenizer=None, tied=False):
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig as Config
    elif family == "qwen3_vl":
        from transformers import Qwen3VLConfig as Config
    else:
        raise InputError(f"unknown family {family!r} (qwen2_5_vl or qwen3_vl)")
    special = {}
    if tokenizer is not None:
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        text = dict(text, vocab_size=text["vocab_size"] or len(tokenizer), eos_token_id=ids["<|im_end|>"],
                    pad_token_id=ids["<|endoftext|>"], bos_token_id=None)
        special = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                       vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    return Config(text_config=text, vision_config=vision, tie_word_embeddings=tied, **special)


def make_tiny(path, family="qwen2_5_vl", seed=0, teach=True, gptq=False):
    """Write a tiny random checkpoint (model, tokenizer, processor) that loads like a real one and, like a real chat
    model, answers the prompt with a number (synthetic.teach_answer_format), which says nothing yet. teach=False
    leaves it untaught: its answers are random tokens (what decoding must survive). gptq: then quantized to a GPTQ
    4-bit checkpoint, calibrated on prompts of the synthetic data."""
    if family not in TINY:
        raise InputError(f"unknown family {family!r} (qwen2_5_vl or qwen3_vl)")
    text, vision = TINY[family]
    # The stock processor, except that a frame may shrink to 4 visual tokens (2 x 2 merged patches; Qwen2.5-VL's
    # stock minimum already), which keeps tiny models on small synthetic frames fast.
    side = 2 * 2 * PROCESSORS[family]["patch_size"]
    if not gptq:
        return _write_checkpoint(path, family, text, vision, seed, tiny=True, min_pixels=side * side, teach=teach)
    import random

    import prompt
    import synthetic

    with tempfile.TemporaryDirectory() as full:
        _write_checkpoint(full, family, text, vision, seed, tiny=True, min_pixels=side * side, teach=teach)
        rng = random.Random(seed)
        texts = [f"{prompt.INSTRUCTION}\n{' '.join(rng.choices(synthetic.CAPTION_WORDS, k=12))}\n{prompt.ANSWER_CUE}"
                 f" {rng.randint(40, 100)}" for _ in range(32)]
        return quantize_gptq(full, path, texts)


def make_random(path, arch, seed=0):
    """Write a real architecture (see ARCHS) with random weights, its stock processor and the tiny tokenizer, in
    bf16, built on the GPU when there is one (seconds instead of minutes for 8 B parameters)."""
    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}: expected one of {', '.join(ARCHS)}")
    family, text, vision, tied = ARCHS[arch]
    return _write_checkpoint(path, family, text, vision, seed, tied=tied)


def _write_checkpoint(path, family, text, vision, seed, tiny=False, tied=False, min_pixels=None, teach=True):
    from transformers import AutoModelForImageTextToText, Qwen2VLImageProcessor

    import prompt
    import synthetic

    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor as Processor, Qwen2VLVideoProcessor as VideoProcessor
    else:
        from transformers import Qwen3VLProcessor as Processor, Qwen3VLVideoProcessor as VideoProcessor
    torch.manual_seed(seed)
    corpus = [prompt.INSTRUCTION, prompt.ANSWER_CUE, *synthetic.CAPTION_WORDS, "You are a helpful assistant.",
              "system user assistant", *(f"Picture {k}:" for k in range(1, 17))] * 4
    tok = tiny_tokenizer(corpus)
    p = PROCESSORS[family]
    size = {"shortest_edge": min_pixels or p["min_pixels"], "longest_edge": p["max_pixels"]}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=p["patch_size"], merge_size=2, temporal_patch_size=2,
                                            image_mean=p["image_mean"], image_std=p["image_std"])
    processor = Processor(image_processor=image_processor, tokenizer=tok,
                          video_processor=VideoProcessor(patch_size=p["patch_size"]), chat_template=CHAT_TEMPLATE)
    config = _config(family, text, vision, tok, tied)
    if tiny:
        model = AutoModelForImageTextToText.from_config(config)
        # A frozen random lm_head with the default std 0.02 caps logits near 2.6 and LoRA-only training stalls.
        torch.nn.init.normal_(model.lm_head.weight, std=0.1)
        if teach:
            synthetic.teach_answer_format(model, processor, seed=seed)
    else:
        with torch.device(device()):
            model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make-tiny", metavar="DIR", help="write a tiny random checkpoint to DIR and exit")
    parser.add_argument("--family", default="qwen2_5_vl", choices=list(TINY), help="tiny model's architecture")
    parser.add_argument("--gptq", action="store_true", help="with --make-tiny: a GPTQ 4-bit checkpoint")
    parser.add_argument("--make-random", metavar="DIR", help="write --arch with random weights to DIR and exit")
    parser.add_argument("--arch", default="qwen2.5-vl-7b", choices=list(ARCHS), help="published architecture")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local folder to load")
    parser.add_argument("--quant", default="nf4", choices=["nf4", "none"], help="4-bit NF4 or full precision")
    parser.add_argument("--r", type=int, default=128, help="LoRA rank")
    parser.add_argument("--alpha", type=float, default=1024, help="LoRA alpha")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help="language-model modules that get LoRA, comma-separated, or all")
    args = parser.parse_args(argv)
    if args.make_tiny:
        make_tiny(args.make_tiny, args.family, gptq=args.gptq)
        print(f"wrote a tiny {args.family} {'GPTQ 4-bit ' if args.gptq else ''}checkpoint to {args.make_tiny}")
    elif args.make_random:
        make_random(args.make_random, args.arch)
        print(f"wrote {args.arch} with random weights to {args.make_random}")
    else:
        model = add_lora(load_model(args.model, args.quant), args.r, args.alpha, targets=args.targets.split(","))
        trainable, total = count_parameters(model)
        print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")


if __name__ == "__main__":
    cli(main)
