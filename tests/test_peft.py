"""Other parameter-efficient methods than LoRA, one flag away (--peft): each trains, predicts and resumes bit for bit,
its adapter in peft's own format; a method that cannot run on a base, and a setting a method has not, are refused in
one line before anything loads; each method's trainable parameters on the paper's Qwen-VL-Chat from its configuration
alone; prompt tuning's learned tokens with the images in place and the cached decoding steps after them; DoRA learns
the demo's rule as LoRA does; and cv.py compares methods in one grid."""

import json
import os

import pytest
import torch

import cv
import data
import model as qwen
import predict
import prompt
from conftest import QWEN_VL_RECIPE, script
from errors import InputError
from frames import Batches, FrameCache
from test_gptq import resumes_bit_for_bit
from test_train import LEARNED, MSE, read_csv, run

# Each method's short run (2 epochs of the 28 training videos of the small synthetic set: 14 steps) and its base: the
# tiny Qwen-VL-Chat in NF4 where peft has no GPTQ layer for the method (model.NEEDS_NF4), else the paper's own form,
# the Int4 release's GPTQ; prompt tuning on the native Qwen2.5-VL too, whose rotary positions it must lay out itself.
SHORT = ["--epochs", 2, "--lr", 1e-2, "--warmup", 0.05, "--no-grad-ckpt", "--ckpt-every", 4, "--keep", 10,
         "--log-every", 100, "--workers", 0]
PEFT_TYPES = {"dora": "LORA", "ia3": "IA3", "vera": "VERA", "oft": "OFT", "prompt-tuning": "PROMPT_TUNING"}
RUNS = [("dora", "tiny_qvl"), ("ia3", "tiny_qvl"), ("vera", "tiny_qvl_gptq"), ("oft", "tiny_qvl_gptq"),
        ("prompt-tuning", "tiny_qvl_gptq"), ("prompt-tuning", "tiny")]


def own_videos(folder):
    """A folder with one video of the user's own (predict.py --videos)."""
    import numpy as np

    from synthetic import fade, write_video

    os.makedirs(folder)
    write_video(str(folder / "a.mp4"), fade(np.random.default_rng(0), 24, 64)[0])
    return folder


@pytest.mark.parametrize("method, base", RUNS)
def test_each_method_trains_predicts_and_resumes_bit_for_bit(method, base, request, synthetic_csv, cache, tmp_path):
    """train.py --peft METHOD: the adapter in peft's format (PeftModel.from_pretrained reads it as that method),
    its trainable parameters printed and in metrics.json; predict.py reads it back to the run's own predictions, and
    scores and explains a video of the user's own; a run cut back to its checkpoint of step 3 and resumed ends with the
    same adapter and losses, bit for bit."""
    from peft import PeftModel

    folder = request.getfixturevalue(base)
    out = tmp_path / "run"
    flags = ["--data", synthetic_csv, "--model", folder, "--cache", cache, "--peft", method, *SHORT]
    code, log = run("train.py", "--out", out, *flags)
    assert code == 0, log[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 6 and f"trainable parameters: {metrics['trainable_parameters']:,} of" in log
    assert json.loads((out / "config.json").read_text())["peft"] == method

    config = PeftModel.from_pretrained(qwen.load_model(folder), str(out / "adapter")).active_peft_config
    assert config.peft_type == PEFT_TYPES[method] and getattr(config, "use_dora", False) == (method == "dora")

    code, log = run("predict.py", "--data", synthetic_csv, "--adapter", out, "--split", "val", "--cache", cache,
                    "--out", tmp_path / "val.csv", "--workers", 0)
    assert code == 0, log[-3000:]
    assert read_csv(tmp_path / "val.csv") == read_csv(out / "predictions-val.csv")
    code, log = run("predict.py", "--videos", own_videos(tmp_path / "mine"), "--adapter", out, "--explain", "--cache",
                    tmp_path / "cache", "--out", tmp_path / "scores.csv", "--workers", 0)
    assert code == 0, log[-3000:]
    scored = read_csv(tmp_path / "scores.csv")  # captions written by the base model, the adapter off
    assert [r["video_id"] for r in scored] == ["a.mp4"] and scored[0]["captions_from"] == "model"
    assert [r["video_id"] for r in read_csv(log.split("share of the score to ")[1].splitlines()[0])] == ["a.mp4"]

    resumes_bit_for_bit(out, tmp_path / "cut", flags, 3)


@pytest.mark.parametrize("method", qwen.NEEDS_NF4)
def test_a_method_the_gptq_base_cannot_take_is_refused_before_loading(method, tiny_qvl_gptq, synthetic_csv, tmp_path):
    """peft has no DoRA or IA3 layer for GPTQ's (tried: model.NEEDS_NF4): train.py and cv.py say so in one line that
    names the base to use instead, before they read data or write anything."""
    code, _, err = script("train.py", "--data", synthetic_csv, "--model", tiny_qvl_gptq, "--out", tmp_path / "run",
                          "--peft", method)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert f"--peft {method} needs an NF4 base" in lines[0] and "use --model Qwen/Qwen-VL-Chat" in lines[0]
    assert not os.path.exists(tmp_path / "run")
    code, _, err = script("cv.py", "--data", synthetic_csv, "--model", tiny_qvl_gptq, "--out", tmp_path / "cv",
                          "--peft", "lora", method)
    assert code == 2 and f"--peft {method} needs an NF4 base" in err and not os.path.exists(tmp_path / "cv"), err


@pytest.mark.parametrize("flags, message", [
    (["--peft", "ia3", "--alpha", 8], "--alpha is not a setting of ia3 (its settings: --targets)"),
    (["--peft", "prompt-tuning", "--r", 8], "--r is not a setting of prompt-tuning (its settings: --virtual-tokens)"),
    (["--peft", "prompt-tuning", "--targets", "c_attn"], "--targets is not a setting of prompt-tuning"),
    (["--peft", "oft", "--dropout", 0.1], "--dropout is not a setting of oft"),
    (["--peft", "vera", "--alpha", 8], "--alpha is not a setting of vera (its settings: --r, --dropout, --targets)"),
    (["--virtual-tokens", 8], "--virtual-tokens is not a setting of lora"),
])
def test_a_setting_the_method_has_not_is_refused(flags, message, tmp_path):
    """Refused in one line, not ignored; a setting left at its default is not one the user gave (--peft ia3 alone runs:
    test_each_method_trains_predicts_and_resumes_bit_for_bit)."""
    code, _, err = script("train.py", "--data", tmp_path, "--out", tmp_path / "run", *flags)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err[-2000:]


def test_cv_grid_gives_each_method_its_own_settings(tmp_path):
    """cv.py's grid: each method with each of its ranks and alphas, once where it has none; a setting no method of the
    grid has is refused; settings a method has not are left out of its configs, not refused."""
    adapters = cv.grid(["lora", "ia3", "prompt-tuning"], [8, 16], [None], dict(dropout=None, virtual_tokens=5,
                                                                              targets=None))
    cfgs = cv.plan(cv.parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "cv"), "--folds", "2"])[1], adapters)
    assert [cv.job(c) for c in cfgs] == [(name, k) for name in ("r8-a1024", "r16-a1024", "ia3", "prompt-tuning-v5")
                                         for k in (0, 1)]
    with pytest.raises(InputError, match="--r is not a setting of ia3, oft"):
        cv.main(["--data", str(tmp_path), "--out", str(tmp_path / "cv"), "--peft", "ia3", "oft", "--r", "8"])
    with pytest.raises(InputError, match="--virtual-tokens is not a setting of lora, dora"):
        cv.main(["--data", str(tmp_path), "--out", str(tmp_path / "cv"), "--peft", "lora", "dora",
                 "--virtual-tokens", "8"])


# Each method's trainable parameters on the paper's Qwen-VL-Chat (32 blocks; c_attn: 4096 in, 12288 out) with its
# default settings, from the configuration alone, as README gives them.
COUNTS = {
    "lora": 67_108_864,  # r=128: 128 x (4096 + 12288) x 32
    "dora": 67_502_080,  # LoRA's, and a magnitude per output: + 12288 x 32
    "ia3": 393_216,  # a scale per output: 12288 x 32
    "prompt-tuning": 81_920,  # 20 learned tokens of 4096
    "vera": 397_312,  # a scale per output and one per rank (128): (12288 + 128) x 32; A and B frozen, shared
    "oft": 2_031_616,  # a 32 x 32 skew-symmetric block (496 free entries) for each 32 inputs: 128 x 496 x 32
}


@pytest.mark.parametrize("method", list(COUNTS))
def test_trainable_parameters_on_the_papers_model_from_its_configuration(method):
    code, out, err = script("model.py", "--arch", "qwen-vl-chat", "--peft", method)
    assert code == 0, err[-2000:]
    assert f"trainable parameters: {COUNTS[method]:,} of" in out


def encoded(folder, synthetic_csv, cache, n=3):
    processor = qwen.load_processor(folder)
    videos = data.load_split(synthetic_csv, "train")[:n]
    frames = FrameCache(cache, 3, qwen.budget_of(processor))
    frames.fill(videos)
    batch, _ = Batches(videos, frames, processor, labelled=False)[list(range(n))]
    return processor, prompt.to_model(batch, processor, "cpu")


def prompt_tuned(folder, tokens=5):
    """A prompt-tuning model whose learned tokens have moved off their start, so that the answers depend on them."""
    torch.manual_seed(0)
    m = qwen.add_adapter(qwen.load_model(folder), "prompt-tuning", **qwen.adapter_settings("prompt-tuning",
                                                                                           virtual_tokens=tokens))
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.5 * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize("base", ["tiny_qvl", "tiny"])
def test_prompt_tuning_decodes_as_plain_forwards_do(base, request, synthetic_csv, cache):
    """Prompt tuning puts learned tokens before each prompt's embeddings, which the model takes with the images in
    place (Qwen-VL-Chat here finds <img> among input embeddings; the native model gets its 3-D positions from a hook).
    predict.py's cached decoding steps, which go past the wrapper, equal plain forwards of the prompt and the answer so
    far through it: greedy's tokens up to the end of the answer, expected decoding's log-probabilities."""
    folder = request.getfixturevalue(base)
    processor, inputs = encoded(folder, synthetic_csv, cache)
    m = prompt_tuned(folder)
    tok = processor.tokenizer
    end = tok.convert_tokens_to_ids(prompt.END_OF_TURN)
    greedy = predict.greedy(m, inputs, end, tok.pad_token_id, max_new_tokens=4).tolist()

    def plain(answer):  # the log-probabilities of each next token after the prompt and `answer` (B, len(answer) + 1, V)
        answer = torch.as_tensor(answer, dtype=torch.long).reshape(len(inputs["input_ids"]), -1)
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in extra:  # the answer is text
            extra["mm_token_type_ids"] = torch.cat([extra["mm_token_type_ids"], torch.zeros_like(answer).int()], 1)
        with torch.no_grad():
            logits = m(input_ids=torch.cat([inputs["input_ids"], answer], 1),
                       attention_mask=torch.cat([inputs["attention_mask"], torch.ones_like(answer)], 1), **extra).logits
        return logits[:, -answer.shape[1] - 1:].float().log_softmax(-1)

    for row, tokens in enumerate(greedy):
        n = tokens.index(end) + 1 if end in tokens else len(tokens)
        for i in range(n):
            assert plain([tokens[:i]] * len(greedy))[row, -1].argmax() == tokens[i]
    answers = prompt.answer_ids(tok)
    fast = predict.answer_logprobs(m, inputs, answers)
    for s in (0, 7, 42, 100):
        slow = plain([answers[s]] * len(greedy))[:, :-1].gather(-1, torch.tensor(answers[s]).expand(len(greedy), -1)[
            ..., None])[..., 0].sum(1)
        torch.testing.assert_close(fast[:, s], slow, atol=2e-5, rtol=0)


def test_prompt_tuning_keeps_the_native_models_positions(tiny, synthetic_csv, cache):
    """On a native Qwen VLM the prompt's 3-D rotary positions (M-RoPE: the images' rows and columns) are those the model
    lays out from the ids, shifted by the learned tokens before them, which count as text."""
    _, inputs = encoded(tiny, synthetic_csv, cache)
    m = prompt_tuned(tiny)
    seen = []
    language_model = m.get_base_model().model.language_model
    handle = language_model.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs["position_ids"]),
                                                      with_kwargs=True)
    with torch.no_grad():
        m(**inputs)
        with m.disable_adapter():
            m(**inputs)
    handle.remove()
    tuned, bare = seen
    real = inputs["attention_mask"].bool()
    assert not torch.equal(bare[1], bare[2])  # the images' rows and columns: not a text's positions
    assert tuned.shape[-1] == bare.shape[-1] + 5
    for row in range(len(real)):
        assert torch.equal(tuned[:, row, 5:][:, real[row]], bare[:, row][:, real[row]] + 5)


def test_dora_learns_the_rule_as_lora_does(tiny_qvl, synthetic, cache, tmp_path):
    """DoRA differs from LoRA by a magnitude per output only: on the tiny Qwen-VL-Chat with LoRA's recipe
    (QWEN_VL_RECIPE) it learns the demo's rule past the learnability bar (LEARNED, 0.6). Measured, held-out SRCC (seeds
    0 / 1): DoRA 0.75 / 0.76, LoRA 0.82 / 0.70 (bench.py peft)."""
    code, log = run("train.py", "--data", synthetic, "--model", tiny_qvl, "--out", tmp_path / "run", "--cache", cache,
                    *QWEN_VL_RECIPE, "--peft", "dora", "--log-every", 1000)
    assert code == 0, log[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["srcc"] >= LEARNED and metrics["mse"] < MSE and metrics["invalid"] == 0, metrics


def test_cv_compares_methods_in_one_grid(tiny_qvl, synthetic_csv, cache, tmp_path):
    """cv.py --peft lora ia3: one grid of both methods' folds, results.csv and the summary with each config's method,
    r and alpha (none for IA3), the heat-map with a row for each; the same command again finds every fold landed."""
    out = tmp_path / "cv"
    flags = ["--data", synthetic_csv, "--model", tiny_qvl, "--cache", cache, "--out", out, "--folds", 2,
             "--peft", "lora", "ia3", "--r", 8, "--alpha", 16, "--epochs", 1, "--lr", 1e-2, "--no-grad-ckpt",
             "--workers", 0, "--eval-batch-size", 17]
    code, log = run("cv.py", *flags)
    assert code == 0, log[-3000:]
    rows = read_csv(out / "results.csv")
    assert [(r["config"], r["peft"], r["r"], r["alpha"], r["fold"]) for r in rows] == [
        ("r8-a16", "lora", "8", "16", "0"), ("r8-a16", "lora", "8", "16", "1"), ("ia3", "ia3", "", "", "0"),
        ("ia3", "ia3", "", "", "1")]
    summary = (out / "summary.md").read_text()
    assert "| r8-a16 | lora | 8 | 16 | 2 |" in summary and "| ia3 | ia3 | - | - | 2 |" in summary
    from PIL import Image

    with Image.open(out / "figure-4-heatmap.png") as image:
        assert image.size == (640, 480)
    code, log = run("cv.py", *flags)
    assert code == 0 and read_csv(out / "results.csv") == rows and "cv | " not in log, log[-3000:]


def test_results_written_before_methods_are_read_as_lora(tmp_path):
    """A results.csv of a CV run before --peft existed (no method column) is read on, its rows LoRA's."""
    path = tmp_path / "results.csv"
    path.write_text(",".join(cv.LORA_COLUMNS) + "\nr16-a32,16,32,0,127,0.7,0.7,0.01,0,60\n")
    assert cv.read_results(str(path))[0]["peft"] == "lora"


def test_bench_compares_the_methods(tiny_qvl, synthetic_csv, cache, tmp_path):
    """bench.py peft: each method's run with the tiny recipe at its own learning rate (tiny.TINY_PEFT_LR), in a process
    of its own: its held-out SRCC, trainable parameters, seconds a step and peak memory, as a row of README's table."""
    code, out, err = script("bench.py", "peft", "--model", tiny_qvl, "--data", synthetic_csv, "--cache", cache,
                            "--work", tmp_path, "--methods", "ia3", "--learn-epochs", 1, "--steps", 1,
                            "--warmup-steps", 1, "--workers", 0, "--json")
    assert code == 0, (out + err)[-3000:]
    runs = json.loads(out.strip().splitlines()[-1])["runs"]
    assert [(r["method"], r["seed"], r["lr"], r["n"], r["trainable"]) for r in runs] == [("ia3", 0, 0.1, 6, 768)]
    assert runs[0]["step_ms"] > 0 and runs[0]["peak_mem_gib"] > 0
    assert "| ia3 | 0.1 | " in out and " | 768 | " in out
