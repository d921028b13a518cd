"""Shared fixtures: tiny random checkpoints of the real architectures and synthetic Memento10k datasets, built
once per test run through the same code a user's commands run (tiny.py, synthetic.py)."""

import os
import subprocess
import sys
import warnings

import pytest

# One thread a process: the tiny models gain nothing from more, and the CV test runs a training process beside
# the others, where threads spinning against each other cost far more than they give.
os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore")

from synthetic import make_synthetic  # noqa: E402
from tiny import TINY_RECIPE, make_tiny  # noqa: E402


# tiny.TINY_RECIPE as train.py's flags: how the tests train a tiny model
RECIPE = [f for key, value in TINY_RECIPE.items() if key != "grad_ckpt" for f in (f"--{key.replace('_', '-')}", value)]
RECIPE += [] if TINY_RECIPE["grad_ckpt"] else ["--no-grad-ckpt"]


def greedy_equals_generate(model, batch, end, pad):
    """predict.greedy's tokens for a batch on the model, after checking they are model.generate's greedy ones."""
    import torch

    import predict

    model.eval()
    ours = predict.greedy(model, batch, end, pad, max_new_tokens=4)
    with torch.no_grad():
        theirs = model.generate(**batch, max_new_tokens=4, do_sample=False, eos_token_id=end, pad_token_id=pad)
    theirs = theirs[:, batch["input_ids"].shape[1]:]
    assert ours.tolist() == theirs[:, :ours.shape[1]].tolist() and ours.shape[1] == theirs.shape[1]
    return ours


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny random Qwen2.5-VL checkpoint folder (model, tokenizer, processor)."""
    return make_tiny(str(tmp_path_factory.mktemp("tiny-qwen2_5_vl")), "qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny3(tmp_path_factory):
    """A tiny random Qwen3-VL checkpoint folder."""
    return make_tiny(str(tmp_path_factory.mktemp("tiny-qwen3_vl")), "qwen3_vl")


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """300 synthetic videos in the authors' JSON layout; the score is a function of the last frame."""
    return make_synthetic(str(tmp_path_factory.mktemp("synthetic")), n=300, seed=0)


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory):
    """The same generator, 40 videos, in the MediaEval 2021 CSV layout."""
    return make_synthetic(str(tmp_path_factory.mktemp("synthetic-csv")), n=40, seed=1, layout="csv")


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """One frame cache for the session, as a user's runs share one."""
    return str(tmp_path_factory.mktemp("frame-cache"))


@pytest.fixture(scope="session")
def trained(tiny, synthetic, cache, tmp_path_factory):
    """train.py with the tiny recipe on `synthetic` (the demo's rule), run once for every test of a trained model:
    (run directory, exit code, log)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--data", synthetic, "--model", tiny, "--out",
                        str(out), "--cache", cache, *map(str, RECIPE), "--log-every", "50"], cwd=ROOT,
                       capture_output=True, text=True)
    return out, p.returncode, p.stdout + p.stderr


@pytest.fixture(scope="session")
def tiny_qvl(tmp_path_factory):
    """A tiny random Qwen-VL-Chat (the paper's model) in the official fp16 layout."""
    return make_tiny(str(tmp_path_factory.mktemp("tiny-qwen_vl")), "qwen_vl")


@pytest.fixture(scope="session")
def tiny_qvl_gptq(tmp_path_factory):
    """The same tiny Qwen-VL-Chat in the Int4 release's GPTQ v1 layout, written by the command a user runs."""
    folder = str(tmp_path_factory.mktemp("tiny-qwen_vl-gptq"))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tiny.py"), folder, "--family", "qwen_vl", "--gptq"],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    return folder
