"""Shared fixtures: tiny random checkpoints of the real architectures and synthetic Memento10k datasets, built
once per test run through the same code a user's commands run (tiny.py, synthetic.py), and `script`, which runs a
script's command line.

The suite runs on both cores (README: `pytest -n 3`, three pytest-xdist workers of one thread each): a session fixture
that takes time to build is built once for all workers (`build_once`: the first to need it builds it, the others wait
for it and read it)."""

import contextlib
import io
import json
import os
import runpy
import sys
import traceback
import warnings
from pathlib import Path

import pytest
from filelock import FileLock

# One thread a process: the tiny models gain nothing from more, and the suite runs three workers on two cores, and
# beside them the processes of the tests that start more (ranks, CV workers), where threads spinning against each
# other cost far more than they give.
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore")

from scaffold.tiny import TINY_RECIPE  # noqa: E402
import scoring.decode


def script(name, *args, cwd=ROOT, env=None):
    """`python NAME ARGS` (a file at the top, train.py) or `python -m NAME ARGS` (NAME "-m scaffold.tiny": a module of a
    folder) run in this process, as the interpreter runs it (`__main__`, sys.argv, the working directory, the
    environment): (exit code, stdout, stderr), with a traceback on stderr and exit code 1 where the script raises. What
    a new interpreter would add is its start and ~10 s of imports (torch, transformers, peft), which this process has
    done once. Tests that kill a run, or launch ranks, start real processes instead."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    code = 0
    try:
        module = name[3:] if name.startswith("-m ") else None
        sys.argv = [module or os.path.join(ROOT, name), *map(str, args)]
        os.environ.update(env or {})
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if module:  # as `python -m`: sys.argv[0] becomes the module's file while it runs
                    runpy.run_module(module, run_name="__main__", alter_sys=True)
                else:
                    runpy.run_path(sys.argv[0], run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return code, out.getvalue(), err.getvalue()


def build_once(tmp_path_factory, name, build):
    """The folder `name`, written by `build(folder)` once for the whole run: under pytest-xdist, the first worker that
    needs it builds it and the others wait for it and then read it. Returns the folder's path."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder all workers' temporary folders share
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            folder.mkdir(exist_ok=True)
            build(str(folder))
            done.touch()
    return str(folder)


def command(name, *args):
    """`python NAME ARGS`, a command README shows, which must succeed."""
    code, out, err = script(name, *args)
    assert code == 0, (out + err)[-3000:]


# tiny.TINY_RECIPE as train.py's flags: how the demo trains a tiny model (10 epochs: ~530 steps on 210 videos)
RECIPE = [f for key, value in TINY_RECIPE.items() if key != "grad_ckpt" for f in (f"--{key.replace('_', '-')}", value)]
RECIPE += [] if TINY_RECIPE["grad_ckpt"] else ["--no-grad-ckpt"]
# The other learnability tests train 6 of those epochs (~320 steps), where each bar still holds with margin. Measured
# here, held-out SRCC of 45 videos against the bar LEARNED = 0.6 (seeds 0 / 1): the demo's rule 0.83 (0.86 in 10
# epochs), a frame known by its position 0.73 / 0.75, 8 frames of the window rule 0.73 / 0.75, the GPTQ tiny
# Qwen2.5-VL 0.79. The tiny Qwen-VL, whose images are 16 features among ~150 caption tokens, learns more slowly: at lr
# 1e-3 it reached 0.62 (NF4) and 0.60 (Int4) in 6 epochs; at 2e-3 (QWEN_VL_RECIPE) 0.82 / 0.70 (NF4) and 0.79 / 0.74 (Int4).
TEST_RECIPE = RECIPE + ["--epochs", 6]
QWEN_VL_RECIPE = TEST_RECIPE + ["--lr", 2e-3]


def greedy_equals_generate(model, batch, end, pad, max_new_tokens=4):
    """scoring.decode.greedy's tokens for a batch on the model, after checking they are model.generate's greedy ones; `end`:
    the id, or ids, that end an answer; 4 new tokens at most unless told (a fine-tuned model's longest answer)."""
    import torch


    model.eval()
    ours = scoring.decode.greedy(model, batch, end, pad, max_new_tokens)
    with torch.no_grad():
        theirs = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=end,
                                pad_token_id=pad)
    theirs = theirs[:, batch["input_ids"].shape[1]:]
    assert ours.tolist() == theirs[:, :ours.shape[1]].tolist() and ours.shape[1] == theirs.shape[1]
    return ours


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny random Qwen2.5-VL checkpoint folder (model, tokenizer, processor)."""
    return build_once(tmp_path_factory, "tiny-qwen2_5_vl", lambda folder: command("-m scaffold.tiny", folder))


@pytest.fixture(scope="session")
def tiny3(tmp_path_factory):
    """A tiny random Qwen3-VL checkpoint folder."""
    return build_once(tmp_path_factory, "tiny-qwen3_vl", lambda folder: command("-m scaffold.tiny", folder, "--family", "qwen3_vl"))


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """300 synthetic videos in the authors' JSON layout; the score is a function of the last frame."""
    return build_once(tmp_path_factory, "synthetic", lambda folder: command("-m scaffold.synthetic", folder, "--n", 300))


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory):
    """The same generator, 40 videos, in the MediaEval 2021 CSV layout."""
    return build_once(tmp_path_factory, "synthetic-csv", lambda folder: command("-m scaffold.synthetic", folder, "--n", 40, "--seed", 1,
                                                                                 "--layout", "csv"))


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """One frame cache for the session, as a user's runs share one (entries are written whole: workers may share it)."""
    return build_once(tmp_path_factory, "frame-cache", lambda folder: None)


@pytest.fixture(scope="session")
def trained(tiny, synthetic, cache, tmp_path_factory):
    """README's first command, `python demo.py`, run once for every test of a trained model: train.py's run with the
    tiny recipe on the demo's rule. Its folder holds the session's synthetic videos, tiny model and frame cache, which
    the demo writes only where they are missing (they are the same: 300 videos of seed 0, `tiny.py`'s model).
    (run directory, exit code, log)."""
    def build(folder):
        os.makedirs(os.path.join(folder, "demo"))
        for name, made in [("data", synthetic), ("tiny-qwen2_5_vl", tiny), ("cache", cache)]:
            os.symlink(made, os.path.join(folder, "demo", name))
        code, out, err = script("demo.py", cwd=folder)
        with open(os.path.join(folder, "log.txt"), "w") as f:
            f.write(f"{code}\n{out}{err}")

    folder = build_once(tmp_path_factory, "trained", build)
    code, log = open(os.path.join(folder, "log.txt")).read().split("\n", 1)
    return Path(folder) / "demo" / "run", int(code), log


@pytest.fixture(scope="session")
def tiny_qvl(tmp_path_factory):
    """A tiny random Qwen-VL-Chat (the paper's model) in the official fp16 layout."""
    return build_once(tmp_path_factory, "tiny-qwen_vl", lambda folder: command("-m scaffold.tiny", folder, "--family", "qwen_vl"))


@pytest.fixture(scope="session")
def tiny_gptq(tmp_path_factory):
    """A tiny Qwen2.5-VL quantized to GPTQ 4-bit by the command a user runs."""
    folder = build_once(tmp_path_factory, "tiny-gptq", lambda folder: command("-m scaffold.tiny", folder, "--gptq"))
    assert json.load(open(os.path.join(folder, "config.json")))["quantization_config"]["quant_method"] == "gptq"
    return folder


@pytest.fixture(scope="session")
def tiny_qvl_gptq(tmp_path_factory):
    """The same tiny Qwen-VL-Chat in the Int4 release's GPTQ v1 layout, written by the command a user runs."""
    return build_once(tmp_path_factory, "tiny-qwen_vl-gptq", lambda folder: command("-m scaffold.tiny", folder, "--family",
                                                                                     "qwen_vl", "--gptq"))
