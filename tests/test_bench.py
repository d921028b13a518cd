"""bench.py: every subcommand runs on a CPU with a tiny model, prints its table and ends with one JSON object holding
the keys the README's performance section reports. Speeds are never asserted: they are figures, not tests."""

import json
import os

import pytest

from conftest import script


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One folder for the module: the clips and caches written by the first subcommand serve the others."""
    return tmp_path_factory.mktemp("bench")


def bench(*args):
    code, out, err = script("-m scaffold.bench", *args, "--json")
    assert code == 0, out[-3000:] + err[-3000:]
    lines = out.strip().splitlines()
    assert any(line.startswith("scaffold.bench ") for line in lines)  # the table's title
    return json.loads(lines[-1])


def test_data(tiny, work):
    result = bench("data", "--n", 2, "--model", tiny, "--work", work, "--workers", 1)
    assert result["videos"] == 2 and result["clip"] == "1280x720, 90 frames"
    assert result["decode_videos_per_s"] > 0 and result["ceiling_videos_per_s"] > 0 and result["cached_samples_per_s"] > 0
    assert 0 < result["cache_mb_per_video"] < 1
    assert result["visual_tokens"] == 3 * 252  # three 720p frames at 448 x 448 pixels at most


def test_train_benchmark(tiny, work):
    # baseline and predict run inside the GPU check below, through the same functions as their own commands
    result = bench("train", "--model", tiny, "--work", work, "--steps", 2, "--warmup-steps", 1, "--r", 8, "--alpha", 16,
                   "--workers", 1, "--eval-batch-size", 4)
    assert {"samples_per_s", "tokens_per_s", "step_ms", "peak_mem_gib", "mfu"} <= result.keys()
    assert result["samples_per_s"] > 0 and result["tokens_per_sample"] > 3 * 252 and result["mfu"] is None


def test_the_gpu_check_runs_through(tiny, tiny_qvl, synthetic, cache, work, tmp_path):
    """The prepared GPU check, here on the CPU with the tiny models in the 7B's and the 9.6 B Qwen-VL-Chat's places:
    every step it takes on a GPU box runs, and the JSON holds every figure the README reports. Its learning run is cut
    to one epoch: the full recipe on the same rule is test_train.py's test_learns_the_last_frame_rule_end_to_end."""
    # Its learning run writes the demo's 300 videos and tiny model where they are missing: the session's are those
    # (synthetic.py's, seed 0; tiny.py's), with their cached frames.
    os.makedirs(work / "learn", exist_ok=True)
    for path, made in [("learn/data", synthetic), ("learn/cache", cache), ("tiny-qwen2_5_vl", tiny)]:
        if not os.path.exists(work / path):
            os.symlink(made, work / path)
    # --peak-tflops: MFU is computed on the CPU too (a meaningless figure here), through step_flops of each model
    result = bench("gpu", "--model", tiny, "--paper-model", tiny_qvl, "--work", work, "--steps", 1, "--warmup-steps", 1,
                   "--r", 8, "--alpha", 16, "--workers", 1, "--batch-size", 2, "--eval-batch-size", 2,
                   "--learn-epochs", 1, "--peak-tflops", 1, "--repeats", 1, "--out", tmp_path / "gpu.json")
    assert json.loads((tmp_path / "gpu.json").read_text()) == result
    assert result["learn"]["n"] == 45 and result["learn"]["bar"] == 0.6 and result["learn"]["passed"] in (True, False)
    paper = result["qwen_vl_chat"]
    for block, keys in ((result, ("train", "train_no_grad_ckpt", "baseline", "predict")),
                        (paper, ("train", "baseline", "predict"))):
        for key in keys:
            assert "error" not in block[key], block[key]
        assert block["train"]["samples_per_s"] > 0 and block["train"]["peak_mem_gib"] > 0 and block["train"]["mfu"] > 0
        assert block["baseline"]["samples_per_s"] > 0 and block["baseline"]["speedup"] > 0
        assert block["baseline"]["peak_mem_gib"] > 0
        assert block["predict"]["same_answers"] is True  # scoring.decode.greedy gives what model.generate gives
        assert block["predict"]["videos_per_s"] > 0 and block["predict"]["generate_videos_per_s"] > 0
        # the time each spends outside the model's calls, its own loop
        assert all(block["predict"][f"{mode}_outside_ms"] > 0 for mode in ("greedy", "generate"))
        assert all(block["predict"][f"{mode}_videos_per_s"] > 0 for mode in ("constrained", "expected", "explain"))
        # four videos at batch 2: three stand in for each, 1 + 3 x (3 frames + 5 captions) prompts a video
        assert block["predict"]["explain_rows_per_video"] == 1 + 3 * 8 and block["predict"]["expected_peak_mem_gib"] > 0
    # the paper's setup, whatever the 7B's: LoRA on Qwen-VL's fused c_attn, each frame one image of 16 features here
    # (256 at the release's 448 x 448)
    assert paper["model"] == tiny_qvl and paper["modules"] == "c_attn" and paper["input"] == "images"
    assert paper["frames"] == 3 and paper["train"]["visual_tokens_per_sample"] == 3 * 16
    assert "train_no_grad_ckpt" not in paper and result["modules"] == "q_proj,k_proj,v_proj"


def test_the_paper_model_of_the_gpu_check_must_be_qwen_vl(tiny, work):
    code, out, err = script("-m scaffold.bench", "gpu", "--paper-model", tiny, "--work", work)
    assert code == 2 and err.strip().splitlines() == [
        f"error: --paper-model {tiny}: not a Qwen-VL-Chat checkpoint (config.json's model_type is not 'qwen')"]


def test_trainer_baseline_trains_what_train_py_trains(tiny_qvl):
    """The baseline's Qwen-VL-Chat computes the official code's loss from labels for HF Trainer: the mean over the
    score tokens of the same cross-entropy train.score_loss sums, from logits of every position."""
    import numpy as np
    import torch

    import model
    import prompt
    from frames import to_model
    from scaffold import synthetic
    import train

    rng = np.random.default_rng(0)
    processor, m = model.load_processor(tiny_qvl), model.load_model(tiny_qvl)
    frames = [torch.from_numpy(rng.integers(0, 256, (3, 3, 112, 112), dtype=np.uint8)) for _ in range(2)]
    batch, labels = prompt.encode(processor, frames, [[synthetic.synthetic_caption(rng)] * 5] * 2, [57, 100])
    batch = to_model(batch, processor, "cpu")
    k = int((labels != prompt.IGNORE).sum(1).max())
    with torch.no_grad():
        ours = train.score_loss(m, batch, labels[:, -k:]) / (labels != prompt.IGNORE).sum()
        theirs = m(**batch, labels=labels)
    assert theirs.logits.shape[1] == labels.shape[1]  # every position, as Trainer's models compute them
    assert theirs["loss"].item() == pytest.approx(ours.item(), rel=1e-5)


def test_random_weights_of_a_published_architecture_load_in_4_bit(tmp_path, monkeypatch):
    """bench.py --arch: tiny.make_random writes the architecture with random weights (bf16) and its stock processor,
    and model.load_model reads it back in NF4, as a user's checkpoint. (A tiny stand-in for the 7B's shapes.)"""
    import bitsandbytes as bnb

    import model
    from scaffold.tiny import TINY, make_random

    monkeypatch.setitem(model.ARCHS, "tiny-test", ("qwen2_5_vl", *TINY["qwen2_5_vl"], False))
    folder = make_random(str(tmp_path / "random"), "tiny-test")
    processor = model.load_processor(folder)
    assert processor.image_processor.size["shortest_edge"] == 56 * 56  # the stock Qwen2.5-VL processor
    assert processor.image_processor.size["longest_edge"] == 28 * 28 * 16384
    m = model.load_model(folder)
    assert sum(isinstance(mod, bnb.nn.Linear4bit) for mod in m.modules()) == 2 * 7


def test_random_weights_of_qwen_vl_load_in_4_bit(tmp_path, monkeypatch):
    """bench.py --arch qwen-vl-chat: tiny.make_random writes Qwen-VL-Chat's architecture in the official layout (bf16
    shards by the official names with their index, the tiny tiktoken vocabulary, whose <img> id config.json takes; the
    full vocab_size) and model.load_model reads it back with the language model in NF4, the vision tower in full
    precision. (A tiny stand-in for the 9.6 B's shapes, cut into shards as the 9.6 B is.)"""
    import bitsandbytes as bnb
    import torch
    from safetensors import safe_open

    import model
    from scaffold import tiny

    family, text, visual, tied = model.ARCHS["qwen-vl-chat"]
    small = {k: v for k, v in tiny.TINY_QWEN_VL.items() if k != "visual"}
    small_visual = dict(visual, **tiny.TINY_QWEN_VL["visual"])
    monkeypatch.setitem(model.ARCHS, "tiny-test", (family, dict(text, **small), small_visual, tied))
    monkeypatch.setattr(tiny, "SHARD_BYTES", 20 * 2**20)
    folder = tmp_path / "random"
    tiny.make_random(str(folder), "tiny-test")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) > 1 and sorted(set(index["weight_map"].values())) == shards
    with safe_open(folder / index["weight_map"]["lm_head.weight"], "pt") as f:
        lm_head = f.get_tensor("lm_head.weight")
    assert lm_head.dtype == torch.bfloat16 and lm_head.shape == (151936, 128)
    processor = model.load_processor(str(folder))
    m = model.load_model(str(folder))
    assert m.config.vocab_size == 151936 and m.config.visual.image_start_id == processor.tokenizer.img_start_id
    assert sum(isinstance(mod, bnb.nn.Linear4bit) for mod in m.modules()) == 2 * 5
    assert not any(isinstance(mod, bnb.nn.Linear4bit) for mod in m.transformer.visual.modules())


def test_step_flops_count_the_published_parameters():
    """MFU's numerator: on Qwen2.5-VL-7B's configuration the language model's matrices hold 6.53 B parameters (the
    non-embedding count on Qwen2.5-7B's model card), and a step costs 4 FLOPs per parameter and token (frozen base:
    forward and activation gradients) plus attention; patches add the vision tower's forward pass."""
    import torch

    from scaffold import bench
    import model

    config = model.published_config("qwen2.5-vl-7b")
    tokens = dict(attention_mask=torch.ones(1, 1000, dtype=torch.long), pixel_values=torch.zeros(0, 588))
    attention = 3 * 4 * 28 * 3584 * 1000 ** 2
    n_text = (bench.step_flops(config, [tokens]) - attention) / (4 * 1000)
    assert n_text == pytest.approx(6.53e9, rel=0.005)
    with_patches = dict(tokens, pixel_values=torch.zeros(1024, 588))
    n_vision = (bench.step_flops(config, [with_patches]) - bench.step_flops(config, [tokens])) / (2 * 1024)
    assert 0.6e9 < n_vision < 0.68e9  # the 32 blocks of the 675 M-parameter vision tower


def test_step_flops_count_qwen_vl_parameters():
    """MFU's numerator on the paper's Qwen-VL-Chat: per token, the language model's matrices as its module tree holds
    them (the meta-device model of the published configuration: every Linear of the 32 blocks, c_attn's bias
    included; not the embeddings, lm_head or the vision tower); per 448 x 448 image, its 1,024 patches through the
    48-block vision tower and the Resampler's 256 queries."""
    import torch
    from torch import nn

    from scaffold import bench
    import model
    from qwen_vl import modeling as qwen_vl

    config = model.published_config("qwen-vl-chat")
    with torch.device("meta"):
        m = qwen_vl.QWenLMHeadModel(config)
    linears = lambda root: sum(p.numel() for mod in root.modules() if isinstance(mod, nn.Linear)  # noqa: E731
                               for p in mod.parameters())
    tokens = dict(attention_mask=torch.ones(1, 1000, dtype=torch.long), pixel_values=torch.zeros(0, 3, 448, 448))
    attention = 3 * 4 * 32 * 4096 * 1000 ** 2
    n_text = (bench.step_flops(config, [tokens]) - attention) / (4 * 1000)
    assert n_text == linears(m.transformer.h) and 6.4e9 < n_text < 6.5e9

    visual, pool = m.transformer.visual, m.transformer.visual.attn_pool
    qkv = pool.attn.in_proj_weight.numel()  # the Resampler's query, key and value projections, one matrix
    per_patch = visual.conv1.weight.numel() + linears(visual.transformer) + linears(pool.kv_proj) + 2 * qkv // 3
    per_query = qkv // 3 + linears(pool.attn) + visual.proj.numel()  # linears(attn): its out_proj
    per_image = 1024 * per_patch + 256 * per_query
    image = dict(tokens, pixel_values=torch.zeros(1, 3, 448, 448))
    n_image = (bench.step_flops(config, [image]) - bench.step_flops(config, [tokens])) / 2
    assert n_image == pytest.approx(per_image, rel=1e-3)  # the blocks' biases are the difference
