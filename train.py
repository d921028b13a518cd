"""
Fine-tune a 4-bit Qwen VLM with LoRA to predict video memorability (Martin-Fernandez et al., Sensors 2025).

    python train.py --data data/memento10k --r 128 --alpha 1024              # train on train, SRCC on val
    python train.py --data data/memento10k --split trainval --out runs/final # the model for the test set
    python train.py --data data/memento10k --split trainval --fold 0 --folds 5 --out runs/fold0
    python train.py --data "data/mediaeval2021/TRECVid Data" --target long   # long-term scores (TRECVid, VideoMem)
    python train.py --data data/memento10k --split trainval --heldout-data data/videomem  # SRCC on another source
    python train.py ... --max-pixels 401408                                  # frames of up to 896 x 448 pixels
    python train.py ... --frames 8 --input video                             # 8 frames as one native video input
    python train.py ... --peft dora                                          # another method than LoRA (model.py)
    python train.py ... --resume                                             # continue a killed run
    torchrun --nproc-per-node 4 train.py -- --r 128 --alpha 1024 --batch-size 1  # DDP on 4 GPUs, global batch 4

Each frame keeps at most --max-pixels pixels (default 448 x 448, the paper's input size: 256 visual tokens on
Qwen2.5-VL). Batches are made by --workers processes ahead of the step that uses them. The run directory (--out)
gets config.json, loss.csv, metrics.csv, metrics.json, folds.json (with --fold), predictions of the held-out
videos, adapter/ (PEFT format) and step-NNNNNN/ checkpoints.

One job, one run of training, in ~570 lines: its settings (Config, ~110 lines of fields, each with its meaning and its
check), the loop (fit, train_step, evaluate), the run directory (prepare_out, changed_settings) and main. The
settings are the run's contract, which the loop reads line by line, and cv.py and bench.py take them from here; the
checkpoints (checkpoint.py) and the ranks (distributed.py) already live apart.
"""

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import data
import frames
import model
import prompt
from model import DEFAULT_MODEL
from plumbing.checkpoint import checkpoints, load_checkpoint, save_checkpoint
from plumbing.distributed import bare, gather, init_distributed, on_first_rank, rank_world
from plumbing.errors import Help, InputError, cli
from plumbing.files import csv_lines, write_csv, write_text
from scoring import decode, metrics


DEFAULT_MAX_PIXELS, DEFAULT_WORKERS = frames.DEFAULT_MAX_PIXELS, frames.default_workers()


@dataclass
class Config:
    data: str = "data/memento10k"  # dataset root: Memento10k (either release), MediaEval 2021's TRECVid, VideoMem
    model: str = DEFAULT_MODEL  # hub id or local folder: Qwen-VL-Chat(-Int4), the paper's, or Qwen2-VL / 2.5-VL / 3-VL
    quant: str = "nf4"  # nf4: bitsandbytes 4-bit NF4 with double quantization; none: the checkpoint's precision
    out: str | None = None  # run directory; None: runs/r{R}-a{ALPHA}
    split: str = "train"  # train (held out: val) or trainval (held out: fold K with --fold, else nothing)
    fold: int | None = None  # held-out fold of trainval, 0..folds-1
    # another source's root: its labelled videos (trainval) are held out instead of val or a fold (MediaEval 2021's
    # subtask 2: train on one source, predict the other)
    heldout_data: str | None = None
    target: str = "short"  # the score that becomes the label: short-term, or long-term (TRECVid, VideoMem)
    folds: int = 5  # number of cross-validation folds over trainval
    seed: int = 0  # seeds the folds, the data order, the LoRA init and dropout
    frames: int = 3  # frames per video, evenly spaced from first to last (3: first, middle, last)
    # images: each frame an image, as the paper gives them; video: the same frames as one native video input
    # (pairs of frames make one tubelet of visual tokens: ceil(N/2) frames' worth; Qwen2.5-VL and Qwen3-VL are told when
    # each frame is shown)
    input: str = "images"
    max_pixels: int = DEFAULT_MAX_PIXELS  # pixels a frame keeps at most (448 x 448: the paper's input size)
    min_pixels: int | None = None  # pixels a frame keeps at least; None: the processor's own
    # the parameter-efficient method (model.PEFT_METHODS): lora, the paper's; dora, ia3, prompt-tuning, vera, oft.
    # Its settings below are None where it has none of them (a setting it has not is refused), else as given or by
    # default (model.ADAPTER_DEFAULTS)
    peft: str = "lora"
    r: int | None = None  # rank of LoRA, DoRA and VeRA (default: the paper's 128)
    alpha: float | None = None  # alpha of LoRA and DoRA: the update is scaled by alpha / r (default: the paper's 1024)
    dropout: float | None = None  # dropout of LoRA, DoRA and VeRA (default 0.05)
    virtual_tokens: int | None = None  # prompt tuning's learned tokens before each prompt (default 20)
    # language-model modules that get the adapter (every method but prompt tuning); None: the paper's (c_attn on
    # Qwen-VL-Chat, q/k/v on the others), resolved and saved when the run starts
    modules: str | None = None
    epochs: int = 4  # passes over the training videos
    batch_size: int = 4  # videos per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    # Optimizer defaults follow Qwen-VL's LoRA fine-tuning scripts; the paper does not state its own.
    lr: float = 1e-5  # peak learning rate
    warmup: float = 0.01  # fraction of the steps spent warming up linearly
    weight_decay: float = 0.1  # AdamW weight decay
    beta2: float = 0.95  # AdamW beta2
    grad_clip: float = 1.0  # max gradient norm
    grad_ckpt: bool = True  # gradient checkpointing: recompute activations to save memory
    eval_batch_size: int = 8  # videos per generation batch when evaluating
    # how the held-out score is read from the model (scoring.py): greedy, the paper's (text, then a regular expression);
    # constrained (greedy among the valid answers 0-100); expected (the expectation over the 101 answers' probabilities)
    decode: str = "greedy"
    log_every: int = 10  # steps between progress lines
    ckpt_every: int = 500  # steps between checkpoints (one is also written at each epoch's end)
    keep: int = 2  # checkpoints to keep
    cache: str = field(default_factory=lambda: frames.default_cache())  # folder of decoded frames (read when made)
    workers: int = DEFAULT_WORKERS  # processes that make batches ahead of the training step
    skip_bad: bool = False  # skip unreadable videos and bad records (listed in skipped.csv) instead of stopping

    def __post_init__(self):
        given = {k: getattr(self, k) for k in model.ADAPTER_SETTINGS}
        for k, v in model.adapter_settings(self.peft, **given).items():  # an InputError for a setting it has not
            setattr(self, k, v)
        checks = [
            (self.quant in ("nf4", "none"), f"--quant must be nf4 or none, not {self.quant!r}"),
            (self.split in ("train", "trainval"), f"--split must be train or trainval, not {self.split!r}"),
            (self.fold is None or self.split == "trainval", "--fold needs --split trainval"),
            (self.fold is None or self.heldout_data is None, "give one of --fold and --heldout-data: what is held out"),
            (self.target in data.TARGETS, f"--target must be one of {', '.join(data.TARGETS)}, not {self.target!r}"),
            (self.folds >= 2, f"--folds must be at least 2, not {self.folds}"),
            (self.fold is None or 0 <= self.fold < self.folds, f"--fold {self.fold} is outside 0..{self.folds - 1}"),
            (self.frames >= 1, f"--frames must be at least 1, not {self.frames}"),
            (self.input in ("images", "video"), f"--input must be images or video, not {self.input!r}"),
            (self.input == "images" or self.frames >= 2,
             "--input video needs --frames 2 or more (one frame is an image)"),
            (self.max_pixels >= 1, f"--max-pixels must be positive, not {self.max_pixels}"),
            (self.min_pixels is None or 1 <= self.min_pixels <= self.max_pixels,
             f"--min-pixels must be in 1..--max-pixels, not {self.min_pixels}"),
            (self.workers >= 0, f"--workers must be 0 or more, not {self.workers}"),
            (self.r is None or self.r >= 1, f"--r must be a positive integer, not {self.r}"),
            (self.alpha is None or self.alpha > 0, f"--alpha must be positive, not {self.alpha}"),
            (self.dropout is None or 0 <= self.dropout < 1, f"--dropout must be in [0, 1), not {self.dropout}"),
            (self.virtual_tokens is None or self.virtual_tokens >= 1,
             f"--virtual-tokens must be at least 1, not {self.virtual_tokens}"),
            (self.epochs >= 1, f"--epochs must be at least 1, not {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, not {self.batch_size}"),
            (self.grad_accum >= 1, f"--grad-accum must be at least 1, not {self.grad_accum}"),
            (self.lr > 0, f"--lr must be positive, not {self.lr}"),
            (0 <= self.warmup < 1, f"--warmup must be in [0, 1), not {self.warmup}"),
            (self.eval_batch_size >= 1, f"--eval-batch-size must be at least 1, not {self.eval_batch_size}"),
            (self.decode in decode.DECODES,
             f"--decode must be one of {', '.join(decode.DECODES)}, not {self.decode!r}"),
            (self.log_every >= 1 and self.ckpt_every >= 1 and self.keep >= 1, "--log-every, --ckpt-every and --keep must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if self.out is None:
            self.out = default_run(self.r, self.alpha, self.peft, self.virtual_tokens)


def default_run(r, alpha, method="lora", virtual_tokens=None):
    """Where `python train.py` writes a run by default (predict.py's default --adapter, for the default r and alpha)."""
    return os.path.join("runs", model.config_name(r, alpha, method, virtual_tokens))


def build_model(cfg):
    """The frozen 4-bit base with gradient checkpointing as configured, and a fresh adapter on it."""
    net = model.load_model(cfg.model, cfg.quant)
    if cfg.grad_ckpt:
        model.checkpointing(net)
    return model.add_adapter(net, cfg.peft, r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout,
                             virtual_tokens=cfg.virtual_tokens, modules=cfg.modules.split(",") if cfg.modules else None)


def optimizer(model, cfg):
    """AdamW over the LoRA parameters; on a GPU its fused kernel, one launch for all of them."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, cfg.beta2),
                             weight_decay=cfg.weight_decay, fused=model.device.type == "cuda")


def get_lr(step, total, cfg):
    """Learning rate of optimizer step `step` (0-based) of `total`."""
    warmup = math.ceil(cfg.warmup * total)
    # 1) linear warmup from lr/warmup up to lr
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    # 2) cosine decay from lr down to 0 at the last step
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def epoch_order(n, seed, epoch):
    """The order of the training videos in an epoch: a function of the seed and the epoch only, so a resumed run
    sees the same data as an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_ids(videos, seed, epoch):
    """The video ids of an epoch in its order, as a checkpoint records them."""
    return [videos[i].video_id for i in epoch_order(len(videos), seed, epoch)]


def score_loss(model, batch, answers):
    """Summed next-token cross-entropy over the score tokens (digits and end-of-turn); the prompt carries none.
    answers: the last K columns of the labels. The batch is left-padded, so every answer sits in the last K positions
    and only those logits are computed: with Qwen's 152k vocabulary, full logits would cost gigabytes."""
    logits = model(**batch, logits_to_keep=answers.shape[1] + 1).logits[:, :-1]  # position t predicts token t+1
    return F.cross_entropy(logits.float().flatten(0, 1), answers.flatten(), ignore_index=prompt.IGNORE, reduction="sum")


def train_step(net, opt, micro, processor, grad_clip, live=True):
    """
    One optimizer step over the micro-batches `micro`, a list of (inputs, labels) as the loader makes them, on the CPU.
    net: the model, or DDP around it; live=False: this rank has no videos in the step (the last, short step of an
    epoch) and passes a batch with no loss weight, since DDP needs every rank's backward.
    Returns the mean loss per score token over all ranks as a tensor on the model's device: reading it is left to the
    caller, since it waits for the GPU.
    """
    device = opt.param_groups[0]["params"][0].device
    world = dist.get_world_size() if dist.is_initialized() else 1
    # Divide by the step's count of score tokens over every micro-batch and rank, not the micro-batch's: every token
    # then weighs the same however the step is split, and accumulation or DDP equals one large batch.
    counted = sum(int((labels != prompt.IGNORE).sum()) for _, labels in micro) if live else 0
    n_answer_tokens = torch.tensor(float(counted), device=device)
    if world > 1:
        dist.all_reduce(n_answer_tokens)
    loss_sum = torch.zeros((), device=device)
    for i, (batch, labels) in enumerate(micro):
        if not live:
            labels = torch.full_like(labels, prompt.IGNORE)
        k = max(1, int((labels != prompt.IGNORE).sum(1).max()))  # on the CPU: no wait for the GPU
        batch = frames.to_model(batch, processor, device)
        answers = labels[:, -k:].to(device, non_blocking=True)
        # DDP averages gradients over ranks in the backward of the step's last micro-batch; the others skip it
        last = i == len(micro) - 1
        with nullcontext() if last or world == 1 else net.no_sync():
            with decode.autocast(device):
                loss = score_loss(net, batch, answers)
            # the mean over ranks of world * rank's sum / n = global sum / n
            (loss * world / n_answer_tokens).backward()
        loss_sum += loss.detach()
    if world > 1:
        dist.all_reduce(loss_sum)
    torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss_sum / n_answer_tokens


def step_batches(n_videos, cfg, start_step, total, rank=0, world=1):
    """
    This rank's micro-batches of every step from `start_step` on, with whether it has any videos in the step: index
    lists into the training videos. A step takes the next batch_size x grad_accum x world videos of the epoch's order
    and rank r its r-th share, so the order is a function of (seed, epoch) only: a resumed run sees what an
    uninterrupted one saw, on any number of ranks with the same global batch. A rank with no share in an epoch's
    last, short step gets the step's first video with no loss weight (train_step's live=False).
    """
    per_rank = cfg.batch_size * cfg.grad_accum
    per_step = per_rank * world
    steps_per_epoch = math.ceil(n_videos / per_step)
    plan = []
    for step in range(start_step, total):
        epoch, k = divmod(step, steps_per_epoch)
        chosen = epoch_order(n_videos, cfg.seed, epoch)[k * per_step:(k + 1) * per_step].tolist()
        mine = chosen[rank * per_rank:(rank + 1) * per_rank]
        plan.append(([mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)], True) if mine
                    else ([chosen[:1]], False))
    return plan


# -----------------------------------------------------------------------------
# training


def evaluate(cfg, model, processor, videos, cache, fill):
    """Predict the held-out videos, each rank every world-th one, decoded as cfg.decode says; returns (metrics dict,
    scores 0-100, answers)."""
    rank, world = rank_world()
    mine = videos[rank::world]
    answers = decode.generate(model, processor, mine, cache, cfg.eval_batch_size, cfg.workers, progress=False,
                               video=cfg.input == "video", decode=cfg.decode) if mine else []
    shares = gather(answers)
    answers = [shares[i % world][i // world] for i in range(len(videos))]
    scores, invalid = decode.postprocess(answers, fill)
    m = metrics.metrics(scores, [v.score for v in videos])
    return dict(srcc=m["srcc"], pearson=m["pearson"], mse=m["mse"], invalid=invalid, n=m["n"]), scores, answers


LOSS_COLUMNS = ("step", "epoch", "loss", "lr")


def fit(cfg, net, processor, opt, train_videos, heldout, cache, start_step=0, history=None):
    """The training loop of every rank; net is the model, or DDP around it. Returns the history: one row per step
    and one per epoch. Rank 0 alone writes and prints."""
    rank, world = rank_world()
    history = history or dict(loss=[], epochs=[])
    per_step = cfg.batch_size * cfg.grad_accum * world  # the global batch
    steps_per_epoch = math.ceil(len(train_videos) / per_step)
    total = cfg.epochs * steps_per_epoch
    fill = round(np.mean([v.label for v in train_videos]))  # the training mean replaces invalid answers
    # loss.csv grows as steps are logged; a resumed run first rewrites it from the checkpoint's history
    loss_log = os.path.join(cfg.out, "loss.csv")
    if rank == 0:
        write_csv(loss_log, LOSS_COLUMNS, [[h[k] for k in LOSS_COLUMNS] for h in history["loss"]])
    plan = step_batches(len(train_videos), cfg, start_step, total, rank, world)
    batches = iter(frames.loader(frames.Batches(train_videos, cache, processor, video=cfg.input == "video"),
                               [m for micro, _ in plan for m in micro], cfg.workers))
    pending = []  # steps whose loss is still on the device: reading it waits for the GPU, so it is read in bulk
    net.train()
    bar = tqdm(range(start_step, total), initial=start_step, total=total, desc="training", unit="step", disable=rank > 0)
    for step, (step_plan, live) in zip(bar, plan):
        if not pending:
            t0 = time.time()
        epoch, k = divmod(step, steps_per_epoch)
        # 1) the learning rate of this step
        lr = get_lr(step, total, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        # 2) this step's micro-batches, made ahead by the loader's workers in the epoch's order
        micro = [next(batches) for _ in step_plan]
        # 3) forward and backward one micro-batch at a time, clip, step
        loss = train_step(net, opt, micro, processor, cfg.grad_clip, live)
        samples = min(per_step, len(train_videos) - k * per_step)
        pending.append(dict(step=step, epoch=epoch, loss=loss, lr=lr, samples=samples))
        # 4) log: every log_every steps, and before each checkpoint so that it holds every step's loss
        end_of_epoch = (step + 1) % steps_per_epoch == 0
        checkpoint = end_of_epoch or (step + 1) % cfg.ckpt_every == 0
        shown = step % cfg.log_every == 0 or step == total - 1
        if shown or checkpoint:
            losses = torch.stack([p["loss"] for p in pending]).tolist()
            rows = [dict(step=p["step"], epoch=p["epoch"], loss=round(x, 6), lr=p["lr"]) for p, x in zip(pending, losses)]
            history["loss"] += rows
            if rank == 0:
                with open(loss_log, "a") as f:
                    f.write(csv_lines(None, [[r[k] for k in LOSS_COLUMNS] for r in rows]))
            dt = time.time() - t0
            if shown and rank == 0:
                tqdm.write(f"step {step:05d} ({100 * (step + 1) / total:5.1f}%) | epoch {epoch} | loss {losses[-1]:.4f} "
                           f"| lr {lr:.2e} | dt {1000 * dt / len(pending):5.0f}ms "
                           f"| samples/s {sum(p['samples'] for p in pending) / dt:5.1f}")
            pending = []
        # 5) at the epoch's end: held-out SRCC
        if end_of_epoch:
            losses = [h["loss"] for h in history["loss"] if h["epoch"] == epoch]
            row = dict(epoch=epoch, step=step, loss=round(float(np.mean(losses)), 6))
            if heldout:
                m, scores, answers = evaluate(cfg, bare(net), processor, heldout, cache, fill)
                row.update(m)
                if rank == 0:
                    decode.write_predictions(os.path.join(cfg.out, f"predictions-{heldout_name(cfg)}.csv"), heldout,
                                              scores, answers)
                    tqdm.write(f"epoch {epoch} | held-out SRCC {m['srcc']:.4f} | invalid {m['invalid']}/{m['n']}")
            history["epochs"].append(row)
            if rank == 0:
                write_csv(os.path.join(cfg.out, "metrics.csv"), list(row), [[h[k] for k in row] for h in history["epochs"]])
        # 6) a checkpoint every ckpt_every steps and at each epoch's end
        if checkpoint:
            position = dict(epoch=epoch, position=(k + 1) * per_step, order=epoch_ids(train_videos, cfg.seed, epoch))
            save_checkpoint(cfg, step, bare(net), opt, history, position)
    return history


def heldout_name(cfg):
    """What the held-out videos are called in the names of their predictions; a long-term run's say so."""
    name = "heldout-source" if cfg.heldout_data else "val" if cfg.split == "train" else f"trainval-fold{cfg.fold}"
    return name + ("-long" if cfg.target == "long" else "")


# Settings that do not change what a run learns: a resumed run may change them (decode: how it is evaluated).
FREE_SETTINGS = ("log_every", "eval_batch_size", "ckpt_every", "keep", "cache", "workers", "decode")
# Where things are, not what they are: a run copied to another machine or folder resumes there. The data is checked
# by its ids and order (the checkpoint's), the model by its configuration (model.identity).
PATHS = ("out", "data", "model", "heldout_data")


def prepare_out(cfg, resume, overwrite, world=1):
    """Refuse to mix two runs in one directory: a directory that holds another run needs --resume or --overwrite.
    A resume may change the free settings, the paths, and how the global batch is split (batch size x accumulation
    x ranks), not its size."""
    config_path = os.path.join(cfg.out, "config.json")
    if os.path.exists(config_path) and not resume:
        if not overwrite:
            raise InputError(f"{cfg.out}: holds a run already; pass --resume to continue it or --overwrite")
        shutil.rmtree(cfg.out)
    if resume and os.path.exists(config_path):
        with open(config_path) as f:
            saved = json.load(f)
        changed = changed_settings(saved, cfg, ignore=("batch_size", "grad_accum"))
        if saved.get("global_batch", saved["batch_size"] * saved["grad_accum"]) != global_batch(cfg, world):
            changed.append("global batch (batch-size x grad-accum x ranks)")
        if changed:
            raise InputError(f"{cfg.out}: --resume with settings that differ from the run's: {', '.join(changed)}")
    os.makedirs(cfg.out, exist_ok=True)
    for stale in (d for d in os.listdir(cfg.out) if d.startswith(".tmp-")):  # a checkpoint cut short by a kill
        shutil.rmtree(os.path.join(cfg.out, stale), ignore_errors=True)


def changed_settings(saved, cfg, ignore=()):
    """The settings of `cfg` that differ from a saved record (a run's config.json, cv.py's cv.json): the free ones and
    the paths aside, the model compared by its configuration. A setting the record lacks came later than it: the
    record had its default."""
    defaults = {f.name: f.default for f in fields(Config)}
    if "targets" in saved:  # a run from before LoRA's modules were named so
        saved = dict(saved, modules=saved["targets"])
    changed = [k for k, v in asdict(cfg).items()
               if k not in FREE_SETTINGS + PATHS + tuple(ignore) and saved.get(k, defaults[k]) != v]
    if saved["model"] != cfg.model and saved.get("model_identity") != model.identity(cfg.model):
        changed.append("model (another configuration)")
    return changed


def global_batch(cfg, world):
    return cfg.batch_size * cfg.grad_accum * world


def main(cfg, resume=False, overwrite=False):
    """Train one run; under torchrun or accelerate launch, every rank runs this and rank 0 writes."""
    model.check_method(cfg.peft, cfg.model)  # a method that cannot run on this base, before anything loads
    rank, world = init_distributed()
    say = print if rank == 0 else (lambda *args, **kwargs: None)
    # Bad records stop the run before anything is written, a run being replaced included.
    bad = [] if cfg.skip_bad else None
    train_videos, heldout, assignment = data.train_heldout(cfg.data, cfg.split, cfg.fold, cfg.folds, cfg.seed, bad,
                                                           cfg.target, cfg.heldout_data)
    if cfg.modules is None and "modules" in model.PEFT_METHODS[cfg.peft]:
        # the paper's, for this model: recorded as such, so a resume compares like with like
        cfg.modules = model.paper_modules(cfg.model)
    on_first_rank(prepare_out, cfg, resume, overwrite, world)
    say(json.dumps(asdict(cfg), indent=1))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    processor = model.load_processor(cfg.model, cfg.max_pixels, cfg.min_pixels, cfg.input == "video")
    cache = frames.FrameCache(cfg.cache, cfg.frames, model.budget_of(processor))
    video = cfg.input == "video"
    if world > 1:  # rank 0 decodes on every core; the others then read the cache
        on_first_rank(cache.fill, train_videos + heldout, None if bad is None else [], None, video)
    usable = {v.video_id for v in cache.fill(train_videos + heldout, bad, timed=video)}
    train_videos, heldout = [v for v in train_videos if v.video_id in usable], [v for v in heldout if v.video_id in usable]
    if rank == 0:
        data.report_skipped(bad, os.path.join(cfg.out, "skipped.csv"))
    if not train_videos:
        raise InputError(f"{cfg.data}: no usable training videos in split {cfg.split}")
    if assignment is not None and rank == 0:  # the folds drawn before the drops, as this run used them
        write_text(os.path.join(cfg.out, "folds.json"), json.dumps(data.split_record(
            assignment, cfg.fold, cfg.seed, [v.video_id for v in train_videos + heldout])))
    say(f"training videos: {len(train_videos)} | held-out videos: {len(heldout)}"
        + (f" (of {cfg.heldout_data})" if cfg.heldout_data else "") + f" | target: {cfg.target}-term scores")
    for note in dict.fromkeys(data.captions_note(v) for v in (train_videos, heldout) if data.captions_note(v)):
        say(note)
    sample = frames.Batches(train_videos, cache, processor, video=video)[[0]][0]
    visual, tokens = prompt.token_counts(sample, processor.tokenizer)[0]
    say(f"tokens per sample: {visual} visual ({cfg.frames} frames{' as one video' if video else ''}, at most "
        f"{cfg.max_pixels:,} pixels each) + {tokens - visual} text = {tokens}")
    if world > 1:
        say(f"ranks: {world} | global batch: {global_batch(cfg, world)} videos ({cfg.batch_size} a rank x "
            f"{cfg.grad_accum} accumulated x {world} ranks)")
    train_mean = float(np.mean([v.label for v in train_videos]))
    if rank == 0:
        write_text(os.path.join(cfg.out, "config.json"), json.dumps(
            dict(asdict(cfg), train_mean=train_mean, ranks=world, global_batch=global_batch(cfg, world),
                 model_identity=model.identity(cfg.model), source=data.source(cfg.data)), indent=1))

    vlm = build_model(cfg)
    trainable, total = model.count_parameters(vlm)
    say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
    opt = optimizer(vlm, cfg)

    start_step, history = 0, None
    newest = gather(checkpoints(cfg.out)[-1:] if resume else [])[0]  # rank 0's view: all resume from one checkpoint
    if newest:
        meta, start_step = load_checkpoint(newest[0], vlm, opt)
        history = meta["history"]
        if meta["order"] != epoch_ids(train_videos, cfg.seed, meta["epoch"]):
            raise InputError(f"{newest[0]}: the training videos changed since this checkpoint")
        say(f"resumed from {newest[0]} at step {start_step}")
    elif rank > 0:
        torch.manual_seed(cfg.seed + rank)  # the ranks' dropout draws differ; rank 0's are a single process's
    # DDP averages the LoRA gradients over the ranks in the backward; the frozen 4-bit base is not its concern, and
    # its buffers are the same on every rank, so none is synced at each forward.
    net = vlm if world == 1 else DDP(vlm, device_ids=[vlm.device] if vlm.device.type == "cuda" else None,
                                       forward_sync_buffers=False)
    t0 = time.time()
    history = fit(cfg, net, processor, opt, train_videos, heldout, cache, start_step, history)
    seconds = time.time() - t0
    final = dict(history["epochs"][-1]) if history["epochs"] else {}
    steps = len(history["loss"]) - start_step
    result = dict(final, trainable_parameters=trainable, train_mean=train_mean, seconds=round(seconds, 1),
                  samples_per_second=round(steps * global_batch(cfg, world) / max(seconds, 1e-9), 2))
    if rank > 0:
        return result
    model.save_adapter(vlm, os.path.join(cfg.out, "adapter"))
    write_text(os.path.join(cfg.out, "metrics.json"), json.dumps(result, indent=1))
    print(f"wrote {cfg.out}/adapter" + (f" | held-out SRCC {final['srcc']:.4f} ({final['invalid']} invalid of {final['n']})"
                                         if "srcc" in final else ""))
    return result


# -----------------------------------------------------------------------------


def parse_args(argv=None):
    """The command line -> (its arguments, the Config they make)."""
    args = read_args(argv)
    return args, Config(**{f.name: getattr(args, f.name) for f in fields(Config)})


def read_args(argv=None):
    """The command line as train.py reads it, before a Config checks it (cv.py reads a grid's flags with it); a
    method's setting not given is None."""
    d = Config()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    # ---
    parser.add_argument("--data", default=d.data, help="dataset root: Memento10k (authors' JSON or MediaEval 2021 CSV), "
                        "MediaEval 2021's TRECVid or VideoMem; the layout is detected")
    parser.add_argument("--model", default=d.model, help="hub id or local folder: Qwen-VL-Chat-Int4 (the paper's), "
                        "Qwen-VL-Chat, or a native Qwen2-VL / Qwen2.5-VL / Qwen3-VL")
    parser.add_argument("--quant", default=d.quant, choices=["nf4", "none"], help="4-bit NF4 or the checkpoint's precision")
    parser.add_argument("--out", help="run directory (default: runs/r{R}-a{ALPHA})")
    parser.add_argument("--split", default=d.split, choices=["train", "trainval"], help="what to train on")
    parser.add_argument("--fold", type=int, default=d.fold, help="held-out fold of trainval (needs --split trainval)")
    parser.add_argument("--heldout-data", default=d.heldout_data,
                        help="another source's root: hold out its labelled videos instead of val or a fold")
    parser.add_argument("--target", default=d.target, choices=data.TARGETS,
                        help="the score to learn: short-term, or long-term (TRECVid, VideoMem)")
    parser.add_argument("--folds", type=int, default=d.folds, help="number of folds")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of folds, data order, LoRA init and dropout")
    parser.add_argument("--frames", type=int, default=d.frames, help="frames per video, evenly spaced")
    parser.add_argument("--input", default=d.input, choices=["images", "video"],
                        help="the frames as images (the paper's) or as one native video input")
    parser.add_argument("--max-pixels", type=int, default=d.max_pixels, help="pixels a frame keeps at most (448 x 448)")
    parser.add_argument("--min-pixels", type=int, default=d.min_pixels, help="pixels a frame keeps at least (default: the processor's)")
    parser.add_argument("--peft", default=d.peft, choices=list(model.PEFT_METHODS),
                        help="the adapter: lora (the paper's), dora, ia3, prompt-tuning, vera or oft")
    parser.add_argument("--r", type=int, help="rank of LoRA, DoRA and VeRA (default 128)")
    parser.add_argument("--alpha", type=float, help="alpha of LoRA and DoRA (default 1024)")
    parser.add_argument("--dropout", type=float, help="dropout of LoRA, DoRA and VeRA (default 0.05)")
    parser.add_argument("--virtual-tokens", type=int, help="prompt tuning's learned tokens before each prompt (default 20)")
    parser.add_argument("--modules", "--targets", default=d.modules, help="comma-separated language-model modules that "
                        "get the adapter, or all (default: the paper's: c_attn on Qwen-VL-Chat, q_proj,k_proj,v_proj on "
                        "the others)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training videos")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="videos per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    parser.add_argument("--warmup", type=float, default=d.warmup, help="fraction of steps of linear warmup")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    parser.add_argument("--beta2", type=float, default=d.beta2, help="AdamW beta2")
    parser.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm")
    parser.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false", help="turn gradient checkpointing off")
    parser.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size, help="videos per generation batch")
    parser.add_argument("--decode", default=d.decode, choices=decode.DECODES,
                        help="how the held-out score is read: greedy (the paper's), constrained or expected (scoring.py)")
    parser.add_argument("--log-every", type=int, default=d.log_every, help="steps between progress lines")
    parser.add_argument("--ckpt-every", type=int, default=d.ckpt_every, help="steps between checkpoints")
    parser.add_argument("--keep", type=int, default=d.keep, help="checkpoints to keep")
    parser.add_argument("--cache", default=d.cache, help="folder of decoded frames")
    parser.add_argument("--workers", type=int, default=d.workers, help="processes that make batches ahead (0: none)")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable videos and bad records, listing them")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    # ---
    argv = sys.argv[1:] if argv is None else list(argv)
    # torchrun and accelerate launch read an option after the script that abbreviates one of theirs (--r: --rdzv-*,
    # --role) as theirs (pytorch#120601): `torchrun ... train.py -- --r 128` passes everything after "--" here.
    return parser.parse_args(argv[1:] if argv[:1] == ["--"] else argv)


def cli_main(argv=None):
    args, cfg = parse_args(argv)
    try:
        return main(cfg, args.resume, args.overwrite)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    cli(cli_main)
