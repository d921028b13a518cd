"""bench.py: every subcommand runs on a CPU with a tiny model, prints its table and ends with one JSON object holding
the keys the README's performance section reports. Speeds are never asserted: they are figures, not tests."""

import json

import pytest

from conftest import script


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One folder for the module: the clips and caches written by the first subcommand serve the others."""
    return tmp_path_factory.mktemp("bench")


def bench(*args):
    code, out, err = script("bench.py", *args, "--json")
    assert code == 0, out[-3000:] + err[-3000:]
    lines = out.strip().splitlines()
    assert any(line.startswith("bench.py ") for line in lines)  # the table's title
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


def test_the_gpu_check_runs_through(tiny, work, tmp_path):
    """The prepared GPU check, here on the CPU with the tiny model in the 7B's place: every step it takes on a GPU box
    runs, and the JSON holds every figure the README reports. Its learning run is cut to one epoch: the full recipe
    on the same rule is test_train.py's test_learns_the_last_frame_rule_end_to_end."""
    result = bench("gpu", "--model", tiny, "--work", work, "--steps", 1, "--warmup-steps", 1, "--r", 8, "--alpha", 16,
                   "--workers", 1, "--batch-size", 2, "--eval-batch-size", 2, "--learn-epochs", 1,
                   "--out", tmp_path / "gpu.json")
    assert json.loads((tmp_path / "gpu.json").read_text()) == result
    assert result["learn"]["n"] == 45 and result["learn"]["bar"] == 0.6 and result["learn"]["passed"] in (True, False)
    for key in ("train", "train_no_grad_ckpt", "baseline", "predict"):
        assert "error" not in result[key], result[key]
    assert result["baseline"]["samples_per_s"] > 0 and result["baseline"]["speedup"] > 0
    assert result["baseline"]["peak_mem_gib"] > 0
    assert result["predict"]["same_answers"] is True  # predict.greedy gives what model.generate gives
    assert result["predict"]["videos_per_s"] > 0 and result["predict"]["generate_videos_per_s"] > 0
    assert all(result["predict"][f"{mode}_videos_per_s"] > 0 for mode in ("constrained", "expected", "explain"))
    assert result["predict"]["explain_rows_per_video"] == 1 + 3 + 5 and result["predict"]["expected_peak_mem_gib"] > 0


def test_random_weights_of_a_published_architecture_load_in_4_bit(tmp_path, monkeypatch):
    """bench.py --arch: tiny.make_random writes the architecture with random weights (bf16) and its stock processor,
    and model.load_model reads it back in NF4, as a user's checkpoint. (A tiny stand-in for the 7B's shapes.)"""
    import bitsandbytes as bnb

    import model as qwen
    from tiny import TINY, make_random

    monkeypatch.setitem(qwen.ARCHS, "tiny-test", ("qwen2_5_vl", *TINY["qwen2_5_vl"], False))
    folder = make_random(str(tmp_path / "random"), "tiny-test")
    processor = qwen.load_processor(folder)
    assert processor.image_processor.size["shortest_edge"] == 56 * 56  # the stock Qwen2.5-VL processor
    assert processor.image_processor.size["longest_edge"] == 28 * 28 * 16384
    m = qwen.load_model(folder)
    assert sum(isinstance(mod, bnb.nn.Linear4bit) for mod in m.modules()) == 2 * 7


def test_step_flops_count_the_published_parameters():
    """MFU's numerator: on Qwen2.5-VL-7B's configuration the language model's matrices hold 6.53 B parameters (the
    non-embedding count on Qwen2.5-7B's model card), and a step costs 4 FLOPs per parameter and token (frozen base:
    forward and activation gradients) plus attention; patches add the vision tower's forward pass."""
    import torch

    import bench
    import model as qwen

    config = qwen.published_config("qwen2.5-vl-7b")
    tokens = dict(attention_mask=torch.ones(1, 1000, dtype=torch.long), pixel_values=torch.zeros(0, 588))
    attention = 3 * 4 * 28 * 3584 * 1000 ** 2
    n_text = (bench.step_flops(config, [tokens]) - attention) / (4 * 1000)
    assert n_text == pytest.approx(6.53e9, rel=0.005)
    with_patches = dict(tokens, pixel_values=torch.zeros(1024, 588))
    n_vision = (bench.step_flops(config, [with_patches]) - bench.step_flops(config, [tokens])) / (2 * 1024)
    assert 0.6e9 < n_vision < 0.68e9  # the 32 blocks of the 675 M-parameter vision tower
