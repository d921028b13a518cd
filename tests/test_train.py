"""train.py and predict.py end to end on a tiny model: the method learns a synthetic rule that lives in the last
frame, the run directory holds what the README promises, and a reloaded adapter predicts the same."""

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

import data
import model
import prompt
import train
from frames import Batches, FrameCache, to_model
from plumbing.checkpoint import checkpoints
from scaffold.tiny import TINY_RECIPE
from conftest import ROOT, TEST_RECIPE, build_once, command, script


def run(name, *args, **kwargs):
    """`python NAME ARGS`: (exit code, stdout + stderr)."""
    code, out, err = script(name, *args, **kwargs)
    return code, out + err


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def resumes_bit_for_bit(out, step, flags):
    """A copy of the run in `out` cut back to its checkpoint of `step` (its adapter and later checkpoints removed) and
    resumed with train.py's `flags`: it ends with the same adapter tensors and losses as the run, bit for bit. Returns
    the resumed run's log."""
    cut = out.parent / f"{out.name}-cut"
    shutil.copytree(out, cut)
    shutil.rmtree(cut / "adapter")
    for saved in checkpoints(str(cut)):
        if int(saved.rsplit("-", 1)[1]) > step:
            shutil.rmtree(saved)
    code, log = run("train.py", "--out", cut, *flags, "--resume")
    assert code == 0, log[-3000:]
    trained = load_file(out / "adapter" / "adapter_model.safetensors")
    resumed = load_file(cut / "adapter" / "adapter_model.safetensors")
    assert trained.keys() == resumed.keys() and all(torch.equal(trained[k], resumed[k]) for k in trained)
    assert (out / "loss.csv").read_text() == (cut / "loss.csv").read_text()
    return log


def test_lr_schedule():
    cfg = train.Config(lr=1e-3, warmup=0.1)
    lrs = [train.get_lr(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # 10 warmup steps up to the peak
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then decays ...
    assert lrs[-1] < 1e-5  # ... to nearly zero
    assert train.get_lr(55, 100, cfg) == pytest.approx(5e-4)  # half way through the cosine


# Bars of the learnability tests. With no signal, the SRCC of n held-out videos has a standard deviation of
# 1/sqrt(n - 1): 0.15 for the 45 of a 300-video synthetic set. LEARNED is 4 of those above chance; a rule that
# cannot be learned stays within 3 of them of 0 (|SRCC| < UNLEARNED). MSE < 0.02 rules out answers that rank well
# but are not scores (a model that answers one digit, 7 for 0.7, has an MSE near 0.4).
LEARNED, UNLEARNED, MSE = 0.6, 0.45, 0.02


def test_learns_the_last_frame_rule_end_to_end(trained, tiny, synthetic, cache, tmp_path):
    """The demo's rule with the tiny recipe (TINY_RECIPE: LoRA on the paper's q/k/v); the run is the demo's
    (conftest's `trained`), which tests of the decoding modes share."""
    out, code, log = trained
    assert code == 0, log
    for name in ["config.json", "loss.csv", "metrics.csv", "metrics.json", "predictions-val.csv",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors"]:
        assert (out / name).is_file(), name
    assert any(d.startswith("step-") for d in os.listdir(out))
    assert "trainable parameters: " in log and "step 00050" in log and "samples/s" in log

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["srcc"] >= LEARNED and metrics["mse"] < MSE, metrics
    assert metrics["invalid"] == 0
    assert len(read_csv(out / "metrics.csv")) == TINY_RECIPE["epochs"]  # one row per epoch, with its SRCC
    config = json.loads((out / "config.json").read_text())
    assert config["r"] == 16 and os.path.samefile(config["model"], tiny) and 45 < config["train_mean"] < 95

    # predict.py reloads the adapter (base model from the run's config) and predicts exactly the same
    code, log = run("predict.py", "--data", synthetic, "--adapter", out, "--split", "val", "--cache", cache,
                    "--out", tmp_path / "val.csv")
    assert code == 0, log
    assert read_csv(tmp_path / "val.csv") == read_csv(out / "predictions-val.csv")
    assert "SRCC" in log and "invalid answers: 0/45" in log

    ids = [v.video_id for v in data.load_split(synthetic, "val")]
    assert [r["video_id"] for r in read_csv(tmp_path / "val.csv")] == ids

    # the test split has no labels in its file; test_labels.csv scores the submission
    code, log = run("predict.py", "--data", synthetic, "--adapter", out / "adapter", "--split", "test",
                    "--cache", cache, "--labels", os.path.join(synthetic, "test_labels.csv"))
    assert code == 0, log
    rows = read_csv(out / "predictions-test.csv")
    assert len(rows) == 45 and all(0 <= float(r["mem_score"]) <= 1 for r in rows)
    srcc = float(log.split("SRCC ")[1].split()[0])
    assert srcc >= LEARNED, log


def test_the_demo_is_the_run_these_tests_train(trained):
    """`python demo.py` (conftest's `trained`) trains train.py's run with the tiny recipe on its synthetic videos and
    tiny Qwen2.5-VL, printing the held-out SRCC after every epoch, as README says; the run records where they are."""
    out, code, log = trained
    assert code == 0, log
    saved = json.loads((out / "config.json").read_text())
    assert {k: saved[k] for k in TINY_RECIPE} == TINY_RECIPE and saved["modules"] == "q_proj,k_proj,v_proj"
    demo_folder = out.parent
    assert [saved[k] for k in ("data", "model", "cache", "out")] == [
        str(demo_folder / name) for name in ("data", "tiny-qwen2_5_vl", "cache", "run")]  # absolute: usable anywhere
    epochs = [line for line in log.splitlines() if line.startswith("epoch ") and "held-out SRCC" in line]
    assert [line.split(" |")[0] for line in epochs] == [f"epoch {e}" for e in range(TINY_RECIPE["epochs"])]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen_vl"])
def test_checkpointing_recomputes_each_block_and_changes_no_gradient(family, tiny, tiny_qvl):
    """model.checkpointing, on by default in train.py: in a training step each block of the language model runs
    twice, its forward and again in the backward pass (counted on its attention: transformers checkpoints a layer's
    forward inside its hooks, and the recomputation stops before a block's last layer), and the adapter's gradients
    are those without it; turned off, each block runs once. On both families: transformers' layers and the
    Qwen-VL-Chat written here."""
    net = model.add_adapter(model.load_model(tiny if family == "qwen2_5_vl" else tiny_qvl, "nf4"), r=4, alpha=8,
                            dropout=0.0)
    base = net.get_base_model()
    attention = base.transformer.h[0].attn if family == "qwen_vl" else base.model.language_model.layers[0].self_attn
    calls = []
    attention.register_forward_hook(lambda *_: calls.append(1))
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    net.train()

    def step():
        net.zero_grad()
        calls.clear()
        net(input_ids=ids, labels=ids).loss.backward()
        return len(calls), [p.grad.clone() for p in net.parameters() if p.requires_grad]

    model.checkpointing(net)
    twice, grads = step()
    model.checkpointing(net, on=False)
    once, plain = step()
    assert (twice, once) == (2, 1)
    assert any(g.abs().sum() > 0 for g in plain)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, plain))


@pytest.mark.parametrize("checkpoint", ["tiny", "tiny_gptq", "tiny_qvl_gptq"])
def test_a_first_run_prints_only_what_a_user_can_act_on(checkpoint, synthetic, cache, tmp_path, request):
    """train.py in an interpreter of its own, as a user starts it (the imports' warnings included), with gradient
    checkpointing on as by default, on a Qwen2.5-VL in NF4 and in GPTQ and on the paper's Qwen-VL-Chat Int4: its
    output holds the run's own lines and progress bars, and nothing a library says that no user can act on
    (torchao's enums, transformers' renamed checkpointing and cache and its merge of GPTQ configs, peft reading the
    old name, gptqmodel's banner and settings)."""
    flags = ["--data", synthetic, "--model", request.getfixturevalue(checkpoint), "--cache", cache, "--out",
             tmp_path / "run", "--epochs", 1, "--batch-size", 16, "--r", 4, "--alpha", 8, "--workers", 0]
    done = subprocess.run([sys.executable, "train.py", *map(str, flags)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["grad_ckpt"] is True
    lines = re.split(r"[\r\n]", done.stdout + done.stderr)
    noise = [line for line in lines if re.search(r"Warning\b|warnings\.warn|deprecated|^(WARN|INFO) |^[WE]\d{4} |GPT-QModel",
                                                 line)]
    assert not noise, "\n".join(noise)


@pytest.fixture(scope="session")
def rules(tmp_path_factory):
    """300 videos of each rule that hides the score in one part of the clip (synthetic.RULES), by README's command."""
    return {rule: build_once(tmp_path_factory, rule, lambda folder, rule=rule: command("-m scaffold.synthetic", folder, "--n", 300, "--rule", rule)) for rule in ("position", "window")}


def test_learns_a_frame_known_only_by_its_position(tiny, rules, cache, tmp_path):
    """Three uniform grey frames, only the last one's level makes the score: the frames look alike, so the model must
    tell them apart by position, and a frame-order bug could not pass. LoRA on q/k/v, the tiny recipe
    (TEST_RECIPE)."""
    code, log = run("train.py", "--out", tmp_path, "--data", rules["position"], "--model", tiny, "--cache", cache,
                    *TEST_RECIPE)
    assert code == 0, log
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["srcc"] >= LEARNED and metrics["mse"] < MSE and metrics["invalid"] == 0, metrics


def frame_levels(videos, cache, processor, n):
    """Each video's n frames as the model gets them (the cache at the processor's budget): their mean grey levels."""
    frames = FrameCache(cache, n, model.budget_of(processor))
    frames.fill(videos)
    return np.array([[float(f.float().mean()) for f in frames.get(v)] for v in videos])


def test_more_frames_see_what_three_cannot(tiny, rules, cache, tmp_path):
    """The score lives only in the frames between 15% and 35% of each clip. First, middle and last never see it: the
    three frames the pipeline gives the model carry nothing of the score (no model could learn it from them), while
    one of 8 evenly spaced frames carries it all, and with --frames 8 the model learns it."""
    videos = data.load_split(rules["window"], "trainval")
    scores = [v.score for v in videos]
    processor = model.load_processor(tiny)
    # With no relation, the rank correlation of 255 pairs has a standard deviation of 1/sqrt(254) = 0.063: every one
    # of the three frames stays within 4 of them (measured: at most 0.05); the eighth's frame 3 holds the score (0.997).
    three = frame_levels(videos, cache, processor, 3)
    assert all(abs(stats.spearmanr(three[:, k], scores).statistic) < 4 / math.sqrt(len(videos) - 1) for k in range(3))
    eight = frame_levels(videos, cache, processor, 8)
    assert max(stats.spearmanr(eight[:, k], scores).statistic for k in range(8)) > 0.95

    code, log = run("train.py", "--out", tmp_path, "--data", rules["window"], "--model", tiny, "--cache", cache,
                    *TEST_RECIPE, "--frames", 8)
    assert code == 0, log
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["srcc"] >= LEARNED and metrics["mse"] < MSE, metrics


# Float32 rounds each operation to 24 bits (eps 1.2e-7). A LoRA gradient element sums ~10^4 products (score tokens x
# hidden units x layers); another split of the step, or another CPU's SIMD width, sums them in another order, which
# moves the result by up to ~sqrt(10^4) x eps = 1e-5 of the magnitudes summed, i.e. of the tensor's largest gradient
# (measured here: 1.4e-6). GRADIENTS leaves a margin for other CPUs above that; a wrong normalisation (each
# micro-batch divided by its own count of score tokens, or none divided) is off by 100% and more. The loss, one sum
# of a dozen token losses, differs by ~1e-7 of itself (measured: 8e-8).
GRADIENTS, LOSS = 1e-4, 1e-5


def test_gradient_accumulation_equals_one_large_batch(tiny, synthetic, cache):
    """One step over the same 4 videos as 1 x 4, 2 x 2 and 4 x 1 micro-batches: train_step accumulates the same LoRA
    gradients and the same loss, the mean over the step's score tokens of one forward pass of all 4. The gradients
    are compared, not the weights after an AdamW step: AdamW divides each gradient by its own magnitude, so the
    rounding of a near-zero gradient would show in the weights on one CPU and not on another."""
    videos = data.load_split(synthetic, "train")[:4]
    processor = model.load_processor(tiny)
    batches = Batches(videos, FrameCache(cache), processor)
    torch.manual_seed(0)
    m = model.add_lora(model.load_model(tiny), 8, 16, dropout=0.0)
    params = [p for p in m.parameters() if p.requires_grad]
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:  # B starts at zero, which would make every A gradient zero
                torch.nn.init.normal_(p, std=0.02)

    # the reference: one pass over the 4 videos, the summed loss over their score tokens divided by their count
    batch, labels = batches[[0, 1, 2, 3]]
    n_targets = int((labels != prompt.IGNORE).sum())
    k = int((labels != prompt.IGNORE).sum(1).max())
    loss = train.score_loss(m, to_model(batch, processor, "cpu"), labels[:, -k:]) / n_targets
    reference = torch.autograd.grad(loss, params)

    for batch_size in (4, 2, 1):
        opt = torch.optim.SGD(params, lr=0.0)  # lr 0: the weights stay as they are for the next split
        seen = []  # the gradients the optimizer step is given
        opt.register_step_pre_hook(lambda *_: seen.append([p.grad.clone() for p in params]))
        micro = [batches[list(range(i, i + batch_size))] for i in range(0, 4, batch_size)]
        # no clipping: it would scale a gradient of the wrong size back to the right norm
        step_loss = train.train_step(m, opt, micro, processor, grad_clip=float("inf"))
        torch.testing.assert_close(step_loss, loss.detach(), rtol=LOSS, atol=0)
        for grad, ref in zip(seen[0], reference):
            torch.testing.assert_close(grad, ref, rtol=0, atol=GRADIENTS * float(ref.abs().max()))
    assert all(ref.abs().max() > 0 for ref in reference)  # A and B both have gradients to compare


def test_qwen3_vl_trains_and_predicts(tiny3, synthetic, cache, tmp_path):
    """The other architecture through the same scripts, with the defaults' gradient checkpointing and 4 bits, four
    frames a video instead of three and a pixel budget that enlarges them: predict.py takes both from the run, or its
    predictions would not be the run's."""
    out = tmp_path / "run"
    code, log = run("train.py", "--data", synthetic, "--model", tiny3, "--out", out, "--cache", cache,
                    "--split", "trainval", "--fold", 1, "--folds", 5, "--r", 4, "--alpha", 8, "--epochs", 1,
                    "--lr", 1e-3, "--batch-size", 8, "--grad-accum", 2, "--eval-batch-size", 16, "--frames", 4,
                    "--min-pixels", 128 * 128)
    assert code == 0, log
    config = json.loads((out / "config.json").read_text())
    assert config["frames"] == 4 and config["min_pixels"] == 128 * 128 and config["max_pixels"] == 448 * 448
    assert "tokens per sample: 64 visual (4 frames" in log  # 64 x 64 frames enlarged to 128 x 128: 16 tokens each
    folds = json.loads((out / "folds.json").read_text())["folds"]
    held = read_csv(out / "predictions-trainval-fold1.csv")
    assert sorted(r["video_id"] for r in held) == sorted(folds[1])
    code, log = run("predict.py", "--data", synthetic, "--adapter", out, "--split", "trainval", "--fold", 1,
                    "--cache", cache, "--out", tmp_path / "fold1.csv", "--batch-size", 16)
    assert code == 0, log
    assert read_csv(tmp_path / "fold1.csv") == held


def test_zero_shot(tiny, synthetic, cache, tmp_path):
    code, log = run("predict.py", "--data", synthetic, "--zero-shot", "--model", tiny, "--split", "val",
                    "--cache", cache, "--out", tmp_path / "zs.csv", "--batch-size", 16)
    assert code == 0, log
    rows = read_csv(tmp_path / "zs.csv")
    assert len(rows) == 45
    invalid = int(log.split("invalid answers: ")[1].split("/")[0])
    # the tiny base answers numbers, like a real one mostly does; whatever is invalid gets the paper's mean, 80
    assert sum(r["mem_score"] == "0.80" for r in rows) >= invalid and invalid < 45
    assert all(0 <= float(r["mem_score"]) <= 1 for r in rows)


@pytest.mark.parametrize("flags, message", [
    (["--r", 0], "--r must be a positive integer"),
    (["--alpha", -1], "--alpha must be positive"),
    (["--batch-size", 0], "--batch-size must be at least 1"),
    (["--split", "trainval", "--fold", 5], "--fold 5 is outside 0..4"),
])
def test_bad_settings_get_one_line(flags, message, tmp_path):
    code, log = run("train.py", "--data", tmp_path, "--out", tmp_path / "run", *flags)
    assert code == 2, log
    assert log.strip().splitlines()[-1].startswith(f"error: {message}") and "Traceback" not in log, log
    assert not (tmp_path / "run").exists()


def test_ci_runs_the_readme_test_command():
    """CI (.ci/run) runs README's test command, step by step in its order (it installs the browser meanwhile)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Run the tests"))
    command = next(line.strip() for line in lines[start:] if line.startswith("    "))
    steps = command.split(" && ")
    assert "pytest" in steps[-1]
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    at = [ci.find(step) for step in steps]
    assert -1 not in at and at == sorted(at), (steps, ci)
    assert steps[-1] in ci.splitlines()  # the suite as README runs it, flags and all


def test_the_promised_commands_work_as_written(tiny, synthetic, tmp_path):
    """README's `python train.py --r 128 --alpha 1024`, `python cv.py` and `python predict.py --split test` read
    data/memento10k, write and read runs/r128-a1024; without the dataset (or the run) each says so in one line and
    writes nothing. Without --model they (and bench.py) load the paper's Qwen-VL-Chat-Int4 from the hub, which this
    machine cannot reach: then --model points at the tiny checkpoint."""
    env = dict(XDG_CACHE_HOME=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")  # the frame cache's default home; no hub
    work = tmp_path / "work"
    work.mkdir()

    def here(name, *args):
        return run(name, *args, cwd=work, env=env)

    for name, args, message in [
        ("train.py", ["--r", 128, "--alpha", 1024], "error: data/memento10k: no such folder"),
        ("cv.py", [], "error: data/memento10k: no such folder"),
        ("predict.py", ["--split", "test"], "error: runs/r128-a1024: no trained run yet: train one first (python train.py)"),
    ]:
        code, log = here(name, *args)
        assert code == 2 and log.strip().splitlines()[-1].startswith(message), log
        assert os.listdir(work) == [] and not (tmp_path / "cache" / "memento-frames").exists(), name  # nothing written

    os.makedirs(work / "data")
    os.symlink(synthetic, work / "data" / "memento10k")
    # with the data and no --model, each reaches for the paper's model on the hub, which this machine cannot reach:
    # one line naming it, and nothing written (a CV that stopped there would otherwise hold its cv.json against the
    # next try)
    for name, args in [("train.py", ["--r", 128, "--alpha", 1024]), ("cv.py", []),
                       ("predict.py", ["--split", "test", "--zero-shot"]), ("-m scaffold.bench", ["train"])]:
        code, log = here(name, *args)
        expected = f"error: {model.DEFAULT_MODEL}: not a folder here, and the hub is not reachable"
        assert code == 2 and log.strip().splitlines()[-1].startswith(expected), log
        assert os.listdir(work) == ["data"], name
    code, log = here("train.py", "--r", 128, "--alpha", 1024, "--model", tiny, "--epochs", 1, "--no-grad-ckpt")
    assert code == 0, log
    assert (work / "runs" / "r128-a1024" / "adapter" / "adapter_model.safetensors").is_file()
    code, log = here("predict.py", "--split", "test")
    assert code == 0, log
    # which model it used: the default run, trained on train, not the paper's submission model (train+val)
    assert "adapter: runs/r128-a1024, the run `python train.py` writes (trained on train" in log, log
    assert len(read_csv(work / "runs" / "r128-a1024" / "predictions-test.csv")) == 45
    assert train.Config(r=8, alpha=16).out == os.path.join("runs", "r8-a16")  # a run is named after its r and alpha


@pytest.mark.parametrize("name", ["train.py", "predict.py", "cv.py", "model.py", "data.py", "-m scaffold.bench"])
def test_help_shows_every_default(name):
    """--help gives each flag's default, the model's included (the paper's Qwen-VL-Chat-Int4), so that no reader has to
    open the code to learn what a run does unless told: every option that takes a value says its default, or says
    where its default comes from (the run's, the processor's)."""
    code, out, err = script(name, "--help")
    assert code == 0, err
    if name != "data.py":  # data.py's --model is a request to cache frames for a model: it has no default
        assert model.DEFAULT_MODEL in out.replace("\n", "").replace(" ", ""), out
    entries = re.split(r"\n(?=  -)", out.split("options:")[1])  # one an option, its help text under it
    text = {e.split()[0]: " ".join(e.split()) for e in entries if re.match(r"  --[\w-]+ [A-Z{]", e)}  # those with a value
    silent = [f for f, t in text.items() if not re.search(r"default|required", t) and f not in OPTIONAL_WITHOUT_DEFAULT]
    assert not silent, f"{name} --help: no default for {silent}"


# Options whose absence is the default and whose text says what absence means
OPTIONAL_WITHOUT_DEFAULT = {"--out", "--fold", "--heldout-data", "--heldout-source", "--videos", "--captions", "--sheet",
                            "--report", "--labels", "--adapter", "--compare", "--gpus", "--arch", "--verify",
                            "--min-pixels", "--max-new-tokens", "--modules", "--model", "--paper-model", "--peak-tflops",
                            "--videos", "--modules", "--storage", "--trials"}
