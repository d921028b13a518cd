"""
A run's checkpoints, `step-NNNNNN/` directories that a killed run resumes from bit for bit.

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

from plumbing.distributed import gather, rank_world
from plumbing.errors import InputError


def rng_state():
    """Every generator a run draws from, complete, as plain numbers and tensors (torch.load's weights_only reads them):
    Python's state and its cached Gaussian, NumPy's with its position in the key and its cached Gaussian, torch's."""
    version, internal, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state()
    return dict(python=dict(version=version, internal=list(internal), gauss=gauss),
                numpy=dict(name=name, key=key.tolist(), pos=int(pos), has_gauss=int(has_gauss), gauss=float(cached)),
                torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


def set_rng_state(state):
    python, numpy = state["python"], state["numpy"]
    if isinstance(python, list):  # a checkpoint written before the states were saved whole: the key alone
        python = dict(version=3, internal=python, gauss=None)
        numpy = dict(name="MT19937", key=numpy, pos=624, has_gauss=0, gauss=0.0)
    random.setstate((python["version"], tuple(python["internal"]), python["gauss"]))
    np.random.set_state((numpy["name"], np.array(numpy["key"], dtype=np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["gauss"]))
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
    model.save_pretrained(os.path.join(tmp, "adapter"), safe_serialization=True)  # PEFT format
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
    load_adapter_strictly(os.path.join(path, "adapter", "adapter_model.safetensors"), model)
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


def load_adapter_strictly(path, model):
    """The adapter's tensors at `path` into `model`'s adapter (any --peft method), every one: peft's loader skips a
    tensor the model has no place for and leaves one the file lacks as initialised, silently; here either is a one-line
    error naming the first of them, and the run stops before it trains on half an adapter."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    tensors = load_file(path)
    try:
        result = set_peft_model_state_dict(model, tensors)
    except RuntimeError as e:  # a tensor of another shape: torch names each, one a line under a heading
        first = (str(e).splitlines()[1:] or [str(e)])[0].strip()
        raise InputError(f"{path}: {first}: a damaged checkpoint, or another run's; not resumed")
    adapter = f".{model.active_adapter}."
    # missing_keys lists the whole model's: the frozen base is not the adapter's, what trains is (a method's own names:
    # lora_A, lora_magnitude_vector, ia3_l, vera_lambda_b, oft_R, prompt_encoder...)
    trains = {name for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = [k for k in result.missing_keys if k in trains], result.unexpected_keys
    if model.active_peft_config.is_prompt_learning:
        # prompt tuning's one tensor, prompt_embeddings, goes to its prompt encoder apart from the model's state
        missing, unexpected = [k for k in ["prompt_embeddings"] if k not in tensors], [
            k for k in unexpected if k != "prompt_embeddings"]
    problem = (f"lacks the tensor {missing[0]}" if missing else f"holds a tensor the model has no place for, "
               f"{unexpected[0]}" if unexpected else None)
    if problem:  # named as the file names it, without the adapter's name that peft adds
        raise InputError(f"{path}: {problem.replace(adapter, '.')}: a damaged checkpoint, or another run's; not resumed")
