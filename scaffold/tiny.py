"""
Tiny random checkpoints of the real architectures, and the recipe that trains them: the demo, the tests and bench.py
run the method on these, through the same `from_pretrained` a user's checkpoint takes. Nothing here is part of the
method; it imports the method, which never imports it.

    python -m scaffold.tiny runs/tiny                    # a tiny random Qwen2.5-VL checkpoint, taught the answer format
    python -m scaffold.tiny runs/tiny3 --family qwen3_vl       # the same for Qwen3-VL
    python -m scaffold.tiny runs/tiny-gptq --gptq       # a tiny GPTQ 4-bit checkpoint (calibrated on synthetic prompts)
    python -m scaffold.tiny runs/7b --arch qwen2.5-vl-7b  # a published architecture (model.ARCHS), random weights (bench.py)
    python -m scaffold.tiny runs/qvl --arch qwen-vl-chat  # the paper's 9.6 B Qwen-VL-Chat, random weights, official layout
"""

import argparse
import json
import math
import os
import random
import tempfile

import numpy as np
import torch

import model
import prompt
from frames import to_model
from qwen_vl import modeling as qwen_vl
from scaffold import synthetic
import train
from plumbing.errors import Help, InputError, cli

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


# Tiny models of the families: 2 layers, a 128-wide language model, a 2-block vision tower.
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

# The recipe that teaches a tiny model (make_tiny) a synthetic rule in ~500 steps with LoRA on the paper's q/k/v: the
# demo, the tests and bench.py's GPU check use it. A pretrained 7B model takes train.Config's defaults (lr 1e-5).
TINY_RECIPE = dict(r=16, alpha=32, lr=1e-3, epochs=10, warmup=0.05,
                   grad_ckpt=False)
# The learning rate each adapter method (--peft) takes with that recipe, measured on the tiny Qwen-VL-Chat in NF4 over
# 6 epochs (python -m scaffold.bench peft; docs/peft.md). LoRA's is the tiny Qwen-VL-Chat's (tests/conftest.py:
# QWEN_VL_RECIPE); the methods with fewer parameters take far larger steps.
TINY_PEFT_LR = {"lora": 2e-3, "dora": 2e-3, "ia3": 1e-1, "prompt-tuning": 1e-1, "vera": 1e-1, "oft": 1e-2}


def make_tiny(path, family="qwen2_5_vl", seed=0, teach=True, gptq=False, answer=prompt.score_tokens):
    """Write a tiny random checkpoint (model, tokenizer, processor) that loads like a real one and, like a real chat
    model, answers the prompt with a number (teach_answer_format), which says nothing yet. teach=False
    leaves it untaught: its answers are random tokens (what decoding must survive). gptq: then quantized to a GPTQ
    4-bit checkpoint, calibrated on prompts of the synthetic data. answer: the format taught (teach_answer_format)."""
    if family == "qwen_vl":
        return make_tiny_qwen_vl(path, seed, teach, gptq, answer)
    if family not in TINY:
        raise InputError(f"unknown family {family!r} (qwen_vl, qwen2_5_vl or qwen3_vl)")
    text, vision = TINY[family]
    # The stock processor, except that a frame may shrink to 4 visual tokens (2 x 2 merged patches; Qwen2.5-VL's
    # stock minimum already), which keeps tiny models on small synthetic frames fast.
    side = 2 * 2 * PROCESSORS[family]["patch_size"]
    if not gptq:
        return _write_checkpoint(path, family, text, vision, seed, tiny=True, min_pixels=side * side, teach=teach,
                                 answer=answer)
    with tempfile.TemporaryDirectory() as full:
        _write_checkpoint(full, family, text, vision, seed, tiny=True, min_pixels=side * side, teach=teach,
                          answer=answer)
        rng = random.Random(seed)
        texts = [f"{prompt.INSTRUCTION}\n{' '.join(rng.choices(synthetic.CAPTION_WORDS, k=12))}\n{prompt.ANSWER_CUE}"
                 f" {rng.randint(40, 100)}" for _ in range(32)]
        return quantize_gptq(full, path, texts)


def make_random(path, arch, seed=0):
    """Write a real architecture (model.ARCHS) with random weights, its stock processor and the tiny tokenizer, in
    bf16, built on the GPU when there is one (seconds instead of minutes for 8 B parameters). The vocabulary stays at
    its full size; the tiny tokenizer's ids are a subset of it. Qwen-VL-Chat: in its official layout
    (make_random_qwen_vl)."""
    if arch not in model.ARCHS:
        raise InputError(f"unknown architecture {arch!r}: expected one of {', '.join(model.ARCHS)}")
    family, text, vision, tied = model.ARCHS[arch]
    if family == "qwen_vl":
        return make_random_qwen_vl(path, text, vision, seed)
    return _write_checkpoint(path, family, text, vision, seed, tied=tied)


def _write_checkpoint(path, family, text, vision, seed, tiny=False, tied=False, min_pixels=None, teach=True,
                      answer=prompt.score_tokens):
    from transformers import AutoModelForImageTextToText, Qwen2VLImageProcessor

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
        net = AutoModelForImageTextToText.from_config(config)
        # A frozen random lm_head with the default std 0.02 caps logits near 2.6 and LoRA-only training stalls.
        torch.nn.init.normal_(net.lm_head.weight, std=0.1)
        if teach:
            teach_answer_format(net, processor, seed=seed, answer=answer)
    else:
        with torch.device(model.device()):
            net = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    net.generation_config.eos_token_id = config.text_config.eos_token_id
    net.generation_config.pad_token_id = config.text_config.pad_token_id
    net.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _config(family, text, vision, tokenizer, tied=False):
    """The family's configuration with the tiny tokenizer's vocabulary (where `text` leaves it open) and special ids."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(text, vocab_size=text["vocab_size"] or len(tokenizer), eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"], bos_token_id=None)
    return model.family_config(family, text, vision, tied, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"])


def quantize_gptq(src, dst, texts, group_size=128):
    """A GPTQ 4-bit copy of the checkpoint `src` in `dst`, calibrated on `texts` (gptqmodel): the language model's
    linear layers quantized; the vision tower, the embeddings and lm_head as they were."""
    qwen_vl.gptq_environment(model.device())
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
            net = GPTQModel.load(src, config)
            net.quantize(texts, tokenizer=processor.tokenizer)
            net.save(dst)
        finally:
            os.chdir(here)
    processor.save_pretrained(dst)
    return dst


def teach_answer_format(model, processor, steps=120, batch_size=8, lr=1e-3, seed=0, answer=prompt.score_tokens):
    """
    Teach a tiny random model what a pretrained chat model knows before any fine-tuning: to answer the prompt with a
    number and end its turn. All its weights train for a few seconds on noise frames and random captions toward
    random scores 40-100 (Memento10k's range), so it learns the answer's format and nothing about any rule:
    zero-shot, its answers are valid and uninformative, as the real base model's mostly are. Without this, LoRA on
    q/k/v alone (the paper's modules) must also build the format, which takes a tiny random model thousands of steps.
    `answer(tokenizer, score)`: the answer's token ids (prompt.encode), the score's digits and end-of-turn unless told;
    a sentence around the score makes a model that answers as a chat model does zero-shot.
    """
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        frames = [torch.from_numpy(rng.integers(0, 256, (3, 3, 64, 64), dtype=np.uint8)) for _ in range(batch_size)]
        captions = [[synthetic.synthetic_caption(rng) for _ in range(5)] for _ in range(batch_size)]
        batch, labels = prompt.encode(processor, frames, captions, rng.integers(40, 101, batch_size).tolist(),
                                      answer=answer)
        k = int((labels != prompt.IGNORE).sum(1).max())
        loss = train.score_loss(model, to_model(batch, processor, "cpu"), labels[:, -k:])
        (loss / (labels != prompt.IGNORE).sum()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return model


# -----------------------------------------------------------------------------


# -----------------------------------------------------------------------------
# a tiny random Qwen-VL-Chat in the official layout


def tiny_vocabulary(corpus, merges=600):
    """A small tiktoken vocabulary for a tiny Qwen-VL: the 256 bytes (rank = byte value, as in the real file), then
    byte-pair merges learned on `corpus` after Qwen's split (digits stay one a token). {token bytes: rank}."""
    import collections

    import regex

    from qwen_vl import processing as qwen_vl_processor

    words = collections.Counter(tuple(bytes([b]) for b in piece.encode())
                                for text in corpus for piece in regex.findall(qwen_vl_processor.SPLIT, text))
    ranks = {bytes([b]): b for b in range(256)}
    for _ in range(merges):
        pairs = collections.Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        ranks[a + b] = len(ranks)
        merged = collections.Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    return ranks


# The tiny Qwen-VL's configuration, in config.json's official keys: a 128-wide, 2-layer language model; a 2-block,
# 64-wide vision tower on 112 x 112 images whose Resampler keeps 16 queries: 16 features an image (the release: 448 x
# 448, 256). With 4 (56 x 56) the features held the score (a linear probe: SRCC 0.97) but 12 tokens among ~150 of
# random captions were too little of the last position's attention: LoRA did not learn the rule in 10 epochs (0.0);
# with 16 it does (0.81).
TINY_QWEN_VL = dict(hidden_size=128, intermediate_size=512, kv_channels=32, num_attention_heads=4, num_hidden_layers=2,
                    visual=dict(heads=4, image_size=112, layers=2, mlp_ratio=2.0, output_dim=128, patch_size=14,
                                width=64, n_queries=16))


def qwen_vl_config(tokenizer, dims):
    """config.json of a Qwen-VL-Chat checkpoint with `dims` (its keys: they override the release's defaults here), its
    special ids from `tokenizer`."""
    vocab = -(-len(tokenizer) // 128) * 128  # rounded up to a multiple of 128, as the release's 151936
    config = dict(architectures=["QWenLMHeadModel"], model_type="qwen", attn_dropout_prob=0.0, emb_dropout_prob=0.0,
                  bf16=False, fp16=True, fp32=False, initializer_range=0.02, layer_norm_epsilon=1e-6,
                  max_position_embeddings=8192, no_bias=True, onnx_safe=None, rotary_emb_base=10000, rotary_pct=1.0,
                  scale_attn_weights=True, seq_length=2048, tie_word_embeddings=False, tokenizer_type="QWenTokenizer",
                  torch_dtype="float16", use_cache=True, use_dynamic_ntk=True, use_flash_attn="auto",
                  use_logn_attn=True, vocab_size=vocab)
    config.update({k: v for k, v in dims.items() if k != "visual"})
    config["visual"] = dict(dims["visual"], image_start_id=tokenizer.img_start_id)
    return config


def qwen_vl_weights(model, seed, device="cpu", dtype=torch.float32):
    """Random weights of a Qwen-VL-Chat by name, made on `device` in `dtype` (the model may be on the meta device):
    normal std 0.02, norms at 1, the Resampler's fixed sin-cos table; lm_head at std 0.1 (a frozen lm_head at 0.02 caps
    the logits near 2.6 and LoRA-only training stalls)."""
    g = torch.Generator(device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("attn_pool.pos_embed"):
            yield name, qwen_vl.sincos_2d(p.shape[1], math.isqrt(p.shape[0])).to(device, dtype)
        elif "ln_" in name or name.endswith(("ln_q.weight", "ln_kv.weight")):
            yield name, (torch.ones if name.endswith("weight") else torch.zeros)(p.shape, device=device, dtype=dtype)
        else:
            yield name, torch.randn(p.shape, generator=g, device=device, dtype=dtype) * (
                0.1 if name == "lm_head.weight" else 0.02)


def init_qwen_vl(model, seed):
    """The model's weights replaced by qwen_vl_weights, in float32."""
    for name, tensor in qwen_vl_weights(model, seed):
        model.get_parameter(name).data = tensor


def gptq_v1(weight, bias, group_size=128):
    """A Linear's weight and bias -> the GPTQ v1 tensors of auto-gptq's checkpoints (Qwen-VL-Chat-Int4's format):
    4-bit codes by rounding to nearest per group of `group_size` inputs, symmetric (zero point 8, stored as 8 - 1),
    qweight packed 8 codes an int32 along the inputs, qzeros along the outputs."""
    out_features, in_features = weight.shape
    w = weight.float().T.reshape(in_features // group_size, group_size, out_features)
    scales = (2 * w.abs().amax(1) / 15).clamp(min=1e-8).half()  # (groups, out)
    codes = (torch.round(w / scales.float()[:, None]) + 8).clamp(0, 15).to(torch.int64).reshape(in_features, out_features)
    shifts = 4 * torch.arange(8)
    qweight = (codes.view(in_features // 8, 8, out_features) << shifts[None, :, None]).sum(1)
    zeros = torch.full((in_features // group_size, out_features // 8, 8), 7, dtype=torch.int64)
    qzeros = (zeros << shifts).sum(-1)
    as_int32 = lambda t: ((t + 2**31) % 2**32 - 2**31).to(torch.int32)  # noqa: E731  (two's complement)
    return dict(qweight=as_int32(qweight), qzeros=as_int32(qzeros), scales=scales,
                g_idx=(torch.arange(in_features) // group_size).to(torch.int32),
                bias=(bias if bias is not None else torch.zeros(out_features)).half())


GPTQ_SETTINGS = dict(bits=4, group_size=128, damp_percent=0.01, desc_act=False, static_groups=False, sym=True,
                     true_sequential=True, model_name_or_path=None, model_file_base_name="model")


def make_tiny_qwen_vl(path, seed=0, teach=True, gptq=False, answer=prompt.score_tokens):
    """Write a tiny random Qwen-VL-Chat in the official layout (config.json, qwen.tiktoken, tokenizer_config.json,
    generation_config.json, model.safetensors in fp16), taught the answer's format like the other tiny models; with
    gptq, its five quantized module types in the Int4 release's GPTQ v1 format (round to nearest)."""
    from qwen_vl import processing as qwen_vl_processor

    torch.manual_seed(seed)
    tokenizer = qwen_vl_tokenizer(path, TINY_QWEN_VL["visual"]["n_queries"])
    config = qwen_vl_config(tokenizer, TINY_QWEN_VL)
    model = qwen_vl.QWenLMHeadModel(qwen_vl.QWenConfig.from_dict(config))
    init_qwen_vl(model, seed)
    if teach:
        transform = qwen_vl_processor.ImageTransform(TINY_QWEN_VL["visual"]["image_size"])
        teach_answer_format(model, qwen_vl_processor.QWenVLProcessor(tokenizer, transform), seed=seed, answer=answer)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    if gptq:
        for prefix, linear in qwen_vl.language_linears(model):
            state = {k: v for k, v in state.items() if not k.startswith(prefix + ".")}
            state.update({f"{prefix}.{k}": v for k, v in gptq_v1(linear.weight.data, linear.bias).items()})
        config["quantization_config"] = dict(GPTQ_SETTINGS, quant_method="gptq")
        with open(os.path.join(path, "quantize_config.json"), "w") as f:
            json.dump(GPTQ_SETTINGS, f, indent=2)
    return write_qwen_vl(path, config, state, tokenizer)


def make_random_qwen_vl(path, text, visual, seed=0):
    """Qwen-VL-Chat's architecture (`text`: config.json's keys, `visual`: its visual dict) with random weights in the
    official layout, in bf16, made on the GPU when there is one: the tiny tiktoken vocabulary, whose special ids
    (<img> and the rest) config.json takes; the embeddings and lm_head keep the full vocab_size."""
    tokenizer = qwen_vl_tokenizer(path, visual.get("n_queries", 256))
    config = qwen_vl_config(tokenizer, dict(text, visual=visual, bf16=True, fp16=False, torch_dtype="bfloat16"))
    with torch.device("meta"):  # names and shapes only: the tensors are made where they are written from
        net = qwen_vl.QWenLMHeadModel(qwen_vl.QWenConfig.from_dict(config))
    return write_qwen_vl(path, config, dict(qwen_vl_weights(net, seed, model.device(), torch.bfloat16)), tokenizer)


def qwen_vl_tokenizer(path, image_span):
    """The tiny tiktoken vocabulary (tiny_vocabulary on the prompt's words) written to path/qwen.tiktoken, and its
    tokenizer."""
    import base64

    from qwen_vl import processing as qwen_vl_processor

    corpus = [prompt.INSTRUCTION, prompt.ANSWER_CUE, prompt.CAPTION_REQUEST, *synthetic.CAPTION_WORDS,
              qwen_vl_processor.SYSTEM, "system user assistant", *(f"Picture {k}:" for k in range(1, 17))] * 4
    ranks = tiny_vocabulary(corpus)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "qwen.tiktoken"), "w") as f:
        f.writelines(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items())
    return qwen_vl_processor.QWenTokenizer(ranks, image_span)


SHARD_BYTES = 5 * 10**9  # a checkpoint past this is written in shards with an index, as the releases are


def write_qwen_vl(path, config, state, tokenizer):
    """A Qwen-VL-Chat folder: `state` in safetensors (model.safetensors, or shards of at most SHARD_BYTES and
    model.safetensors.index.json), config.json, tokenizer_config.json and generation_config.json."""
    from safetensors.torch import save_file

    shards, size = [[]], 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    files = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{k:05d}-of-{len(shards):05d}.safetensors" for k in range(1, len(shards) + 1)]
    for file, names in zip(files, shards):  # one shard at a time in host memory
        save_file({k: state[k].cpu().contiguous() for k in names}, os.path.join(path, file), metadata={"format": "pt"})
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in state.values())
        weight_map = {name: file for file, names in zip(files, shards) for name in names}
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump(dict(metadata=dict(total_size=total), weight_map=weight_map), f, indent=2)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(dict(model_max_length=8192, tokenizer_class="QWenTokenizer"), f, indent=2)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump(dict(chat_format="chatml", eos_token_id=tokenizer.eod_id, pad_token_id=tokenizer.eod_id,
                       max_window_size=6144, max_new_tokens=512, do_sample=True, top_k=0, top_p=0.5), f, indent=2)
    return path


# -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    parser.add_argument("out", help="folder to write the checkpoint to")
    parser.add_argument("--family", default="qwen2_5_vl", choices=["qwen_vl", *TINY], help="the tiny model's architecture")
    parser.add_argument("--gptq", action="store_true", help="a GPTQ 4-bit checkpoint of the tiny model")
    parser.add_argument("--arch", choices=list(model.ARCHS), help="instead: this published architecture, random weights")
    args = parser.parse_args(argv)
    if args.arch:
        make_random(args.out, args.arch)
        print(f"wrote {args.arch} with random weights to {args.out}")
    else:
        make_tiny(args.out, args.family, gptq=args.gptq)
        print(f"wrote a tiny {args.family} {'GPTQ 4-bit ' if args.gptq else ''}checkpoint to {args.out}")


if __name__ == "__main__":
    cli(main)
