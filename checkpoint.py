"""
A run's checkpoints, `step-NNNNNN/` directories that a killed run resumes from bit for bit, and the files of a run
written whole (write_atomic): a kill at any moment leaves the old file or the new one.

    out/step-000123/  adapter/ (PEFT format), optimizer.pt, rng.pt (every rank's RNG states), meta.json
"""

import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict

import numpy as np
import torch

import model as qwen
from distributed import gather, rank_world


def rng_state():
    return dict(python=list(random.getstate()[1]), numpy=np.random.get_state()[1].tolist(), torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def set_rng_state(state):
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), 624, 0, 0.0))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(cfg, step, model, opt, history, position):
    """out/step-NNNNNN/: adapter, optimizer, every rank's RNG states and meta.json (step, data order and position,
    config, history), written by rank 0 under a temporary name and renamed into place: a kill at any moment leaves
    either the whole checkpoint or none. Every rank calls it; the optimizer's state is the same on all."""
    states = gather(rng_state())
    if rank_world()[0] != 0:
        return
    final = os.path.join(cfg.out, f"step-{step:06d}")
    tmp = tempfile.mkdtemp(dir=cfg.out, prefix=".tmp-")
    qwen.save_adapter(model, os.path.join(tmp, "adapter"))
    torch.save(opt.state_dict(), os.path.join(tmp, "optimizer.pt"))
    torch.save(dict(ranks=states), os.path.join(tmp, "rng.pt"))
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(dict(step=step, **position, config=asdict(cfg), history=history), f, indent=1)
    os.replace(tmp, final)
    for old in checkpoints(cfg.out)[:-cfg.keep]:
        shutil.rmtree(old)


def checkpoints(out):
    return sorted(os.path.join(out, d) for d in os.listdir(out) if d.startswith("step-")) if os.path.isdir(out) else []


def load_checkpoint(path, model, opt):
    """Restore what save_checkpoint wrote; returns (meta.json's content, next step). On another number of ranks than
    the run had, a rank without a saved RNG state draws its dropout from a fresh seed."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(os.path.join(path, "adapter", "adapter_model.safetensors")))
    # weights_only: a checkpoint is read as tensors and plain containers, never as arbitrary pickled objects
    opt.load_state_dict(torch.load(os.path.join(path, "optimizer.pt"), weights_only=True))
    states = torch.load(os.path.join(path, "rng.pt"), weights_only=True)["ranks"]
    rank, _ = rank_world()
    set_rng_state(states[min(rank, len(states) - 1)])
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    if rank >= len(states):
        torch.manual_seed(meta["config"]["seed"] + meta["step"] + rank)
    return meta, meta["step"] + 1


def write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def csv_text(rows, keys, header=True):
    """CSV lines of dict rows whose values are numbers."""
    lines = ([list(keys)] if header else []) + [[r[k] for k in keys] for r in rows]
    return "".join(",".join(map(str, line)) + "\n" for line in lines)

