"""
Benchmarks of the real run, one figure per subcommand, each through the project's own functions (never a copy).

    python -m scaffold.bench data [--videos DIR]           # first-pass decoding of 720p clips; batches out of the cache
    python -m scaffold.bench train --model DIR | --arch NAME  # train.py's step: samples/s, tokens/s, step ms, memory, MFU
    python -m scaffold.bench baseline --model DIR | --arch NAME  # the same, then HF Trainer + PEFT; speedup = ours / Trainer's
    python -m scaffold.bench predict --model DIR | --arch NAME # predict.py's decoding modes, --explain; greedy vs generate
    python -m scaffold.bench gpu --out gpu.json            # the prepared GPU check (README): learnability on CUDA, then
                                                      # train, baseline and predict on qwen2.5-vl-7b and on the
                                                      # paper's qwen-vl-chat, one JSON file
    python -m scaffold.bench search [--trials 5]           # cv.py's grid against TPE + pruning, tiny model, 3 x 3 x 2 folds
    python -m scaffold.bench peft --model DIR --data DIR  # each method of --peft with the tiny recipe: held-out SRCC,
                                                      # invalid answers, trainable parameters, step ms, memory

Each prints a table; with --json, one JSON object as its last line. --arch builds a published architecture with
random weights (tiny.make_random, no download), saves it and loads it through model.load_model in NF4, the path
a user's checkpoint takes. Inputs: 720p clips (synthetic.write_clips) at the pixel budget, five captions each.
"""

import argparse
import gc
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace

import numpy as np
import torch

import cv
import data
from scoring import explain
import frames
import model
import prompt
from qwen_vl import modeling as qwen_vl
from scaffold import synthetic
import train
from plumbing import search
from plumbing.errors import Help, InputError, cli
from plumbing.files import write_text
from scaffold.tiny import TINY_PEFT_LR, TINY_RECIPE, make_random, make_tiny
import scoring.decode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: where `from scaffold import` works
# Dense bf16 peak of the cards we expect, FLOP/s (NVIDIA's datasheets, without sparsity); --peak-tflops overrides.
PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12}


# -----------------------------------------------------------------------------
# inputs


def clips(folder, n, fps=30):
    """n 3-second 720p H.264 clips in `folder`, written once (several processes at a time) and reused."""
    def listed():
        return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.startswith("clip_")) \
            if os.path.isdir(folder) else []

    folder = os.path.abspath(folder)  # the writers run from the repository's root
    paths = listed()
    if len(paths) < n:
        jobs = min(n, os.cpu_count() or 1)
        procs = [subprocess.Popen([sys.executable, "-c", f"from scaffold import synthetic; synthetic.write_clips("
                                   f"{folder!r}, {n}, fps={fps}, part=({k}, {jobs}))"], cwd=ROOT)
                 for k in range(jobs)]
        if any(p.wait() for p in procs):
            raise RuntimeError("writing the benchmark clips failed")
        paths = listed()
    return paths[:n]


def videos_of(paths, seed=0):
    """Video records for clips: five synthetic captions and a random score each."""
    rng = np.random.default_rng(seed)
    return [data.Video(os.path.splitext(os.path.basename(p))[0], p, [synthetic.synthetic_caption(rng) for _ in range(5)],
                       float(rng.uniform(0.4, 1.0))) for p in paths]


def checkpoint(args):
    """The model folder: --model, or --arch built with random weights under --work (once)."""
    if args.model:
        return args.model
    folder = os.path.join(args.work, args.arch)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        t0 = time.time()
        make_random(folder, args.arch)
        print(f"built {args.arch} with random weights in {folder} ({time.time() - t0:.0f}s)")
    return folder


def setup(args, template):
    """The run's configuration, processor, clip videos with their frames cached at the budget, and the model."""
    cfg = replace(template, model=checkpoint(args), cache=os.path.join(args.work, "cache"),
                  out=os.path.join(args.work, "run"))
    processor = model.load_processor(cfg.model, cfg.max_pixels, cfg.min_pixels)
    # a few short clips (12 frames: three are used) are enough to feed the timed steps
    videos = videos_of(clips(os.path.join(args.work, "clips-train"), 2 * max(cfg.batch_size, cfg.eval_batch_size), fps=4))
    cache = frames.FrameCache(cfg.cache, cfg.frames, model.budget_of(processor))
    cache.fill(videos, timed=cfg.input == "video")
    t0 = time.time()
    net = train.build_model(cfg)
    print(f"loaded {cfg.model} ({cfg.quant}) with LoRA r={cfg.r} on {cfg.modules} in {time.time() - t0:.0f}s")
    return cfg, processor, videos, cache, net


def cycle(n_videos, batch_size, steps):
    """`steps` batches of indices, cycling through the videos."""
    return [[(s * batch_size + i) % n_videos for i in range(batch_size)] for s in range(steps)]


# -----------------------------------------------------------------------------
# measuring


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device):
    """CUDA: the most memory allocated since reset_peak; CPU: the process's peak resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def step_flops(config, batches):
    """
    Model FLOPs of one training step on `batches` (inputs of prompt.encode). The base is frozen, so the backward pass
    computes activation gradients only: the language model costs 4·N·T (2·N·T forward, 2·N·T backward) instead
    of the usual 6·N·T, attention 3 x 4·L·d·T² per sequence, the vision tower 2·N_vision per patch (forward only;
    nothing in it trains; its attention scores are not counted). LoRA's own FLOPs (<1%) and gradient checkpointing's
    recomputation are not counted.
    """
    n_text, layers, width, n_vision, patches_per_row = model_costs(config)
    flops = 0.0
    for batch in batches:
        lengths = batch["attention_mask"].sum(1).double()
        flops += 4 * n_text * lengths.sum().item() + 3 * 4 * layers * width * (lengths ** 2).sum().item()
        pixels = batch["pixel_values" if "pixel_values" in batch else "pixel_values_videos"]
        flops += 2 * n_vision * patches_per_row * pixels.shape[0]
    return flops


def model_costs(config):
    """What step_flops counts of a configuration: the parameters of the language model's matrices a token meets, its
    layers and attention width, the vision tower's parameters a patch meets, and the patches of a row of
    pixel_values (Qwen2-VL's rows are patches; Qwen-VL-Chat's are 448 x 448 images of (448 / 14)² patches)."""
    if isinstance(config, qwen_vl.QWenConfig):
        h, half, v = config.hidden_size, config.intermediate_size // 2, config.visual
        width = config.num_attention_heads * config.kv_channels
        # c_attn (3 x width outputs, with its bias), attn.c_proj, mlp.w1, mlp.w2, mlp.c_proj
        n_text = config.num_hidden_layers * (3 * width * h + 3 * width + width * h + 3 * h * half)
        w, mlp, d, grid = v.width, int(v.width * v.mlp_ratio), v.output_dim, (v.image_size // v.patch_size) ** 2
        # conv1 and the blocks a patch; the Resampler's kv_proj and its keys and values a patch, and for each of its
        # n_queries an image, the query's projection, out_proj and proj
        n_vision = (3 * v.patch_size ** 2 * w + v.layers * (4 * w * w + 2 * w * mlp)
                    + w * d + 2 * d * d + 3 * d * d * v.n_queries / grid)
        return n_text, config.num_hidden_layers, width, n_vision, grid
    t, v = config.text_config, config.vision_config
    heads_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    q, kv = t.num_attention_heads * heads_dim, t.num_key_value_heads * heads_dim
    n_text = t.num_hidden_layers * (t.hidden_size * (2 * q + 2 * kv) + 3 * t.hidden_size * t.intermediate_size)
    n_vision = v.depth * (4 * v.hidden_size ** 2 + 2 * v.hidden_size * v.intermediate_size + (
        v.hidden_size * v.intermediate_size if getattr(v, "hidden_act", "") == "silu" else 0))
    return n_text, t.num_hidden_layers, q, n_vision, 1


def peak_flops(device, override=None):
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((peak for card, peak in PEAK_BF16.items() if card in name), None)


def bench_train(cfg, processor, videos, cache, model, steps, warmup, peak_tflops=None):
    """train.py's own step (train.train_step) on batches from its own loader: warm-up steps, then timed ones."""
    device = model.device
    opt = train.optimizer(model, cfg)
    plan = cycle(len(videos), cfg.batch_size, warmup + steps)
    batches = iter(frames.loader(frames.Batches(videos, cache, processor, video=cfg.input == "video"), plan, cfg.workers))
    model.train()
    timed = []
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            reset_peak(device)
            t0 = time.time()
        micro = [next(batches)]
        loss = train.train_step(model, opt, micro, processor, cfg.grad_clip)
        if i >= warmup:
            timed.append(micro[0][0])
    loss = loss.item()  # waits for the last step
    seconds = time.time() - t0
    del opt, batches
    tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    visual = sum(v for b in timed for v, _ in prompt.token_counts(b, processor.tokenizer))
    config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    peak = peak_flops(device, peak_tflops)
    return dict(samples_per_s=steps * cfg.batch_size / seconds, tokens_per_s=tokens / seconds,
                step_ms=1000 * seconds / steps, peak_mem_gib=peak_gib(device),
                mfu=step_flops(config, timed) / seconds / peak if peak else None,
                loss=loss, tokens_per_sample=tokens / (steps * cfg.batch_size),
                visual_tokens_per_sample=visual / (steps * cfg.batch_size))


def bench_trainer(cfg, processor, videos, cache, model, steps, warmup):
    """The same model, inputs, LoRA, batch and precision through HF Trainer + PEFT, as Qwen's fine-tuning script and
    the large fine-tuning frameworks run it: a collator runs the processor (float32 pixels), the model computes its
    own loss from labels (logits of every position), Trainer runs the loop. Here only, never in the product."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    device = model.device

    class Samples(torch.utils.data.Dataset):
        def __len__(self):
            return (warmup + steps) * cfg.batch_size

        def __getitem__(self, i):
            return i % len(videos)

    samples = frames.Batches(videos, cache, processor, video=cfg.input == "video")

    def collate(indices):
        batch, labels = samples[indices]
        return dict(frames.to_model(batch, processor, "cpu"), labels=labels)

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                sync(device)
                reset_peak(device)
                self.t0 = time.time()

        def on_train_end(self, args, state, control, **kwargs):
            sync(device)
            self.seconds = time.time() - self.t0

    clock = Clock()
    cuda = device.type == "cuda"
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="trainer-"), per_device_train_batch_size=cfg.batch_size,
        max_steps=warmup + steps, learning_rate=cfg.lr, weight_decay=cfg.weight_decay, adam_beta2=cfg.beta2,
        max_grad_norm=cfg.grad_clip, lr_scheduler_type="cosine", bf16=cuda, use_cpu=not cuda,
        optim="adamw_torch_fused" if cuda else "adamw_torch", dataloader_num_workers=cfg.workers,
        dataloader_pin_memory=cuda, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        remove_unused_columns=False, seed=cfg.seed)
    model.train()
    Trainer(model=model, args=args, train_dataset=Samples(), data_collator=collate, callbacks=[clock]).train()
    return dict(samples_per_s=steps * cfg.batch_size / clock.seconds, step_ms=1000 * clock.seconds / steps,
                peak_mem_gib=peak_gib(device))


def bench_predict(cfg, processor, videos, cache, model, batch_size, repeats=3):
    """predict.py's decoding modes on the same videos, their batches ready on the device: greedy (one prefill, at most
    three cached steps) against plain model.generate, whose answers must agree; constrained; expected (and its peak
    memory); --explain (expected over each video's 1 + 4 x (N + 5) variants in predict.py's batches, four other videos
    standing in), on the first five videos: videos/s of each.
    Greedy and generate take turns batch by batch in each of `repeats` timed rounds, the one to go first swapped at
    each batch and each round, so that a machine busy with other work slows both alike; `speedup` is the median of
    the rounds' ratios. Both run the same model calls: what can differ is the time each spends outside the model, its
    own loop (`*_outside_ms`, a batch, from one more round that times the model's calls, ModelTime)."""
    device, tokenizer, video = model.device, processor.tokenizer, cfg.input == "video"
    end, pad = tokenizer.convert_tokens_to_ids(prompt.END_OF_TURN), tokenizer.pad_token_id
    answers_ids = prompt.answer_ids(tokenizer)
    steps = max(map(len, answers_ids))  # the longest valid answer: what predict.py's greedy decodes with an adapter

    def ready(dataset, plan):
        return [frames.to_model(b, processor, device) for b, _ in frames.loader(dataset, plan, 0)]

    batches = ready(frames.Batches(videos, cache, processor, labelled=False, video=video),
                    frames.chunks(len(videos), batch_size))
    # --explain on the fewest videos that give each its four stand-ins: its 33 prompts a video, held ready at once as
    # the other modes' are, would take 33/8 of their memory on all of them (a peak of 8.5 GB here at 448 x 448)
    explained = videos[:explain.STAND_INS + 1]
    variants = ready(explain.Replacements(explained, cache, processor, labelled=False, video=video),
                     explain.plan(explained, cfg.frames, explain.default_batch(explained, cfg.frames,
                                                                              batch_size=batch_size)))
    model.eval()

    @torch.no_grad()
    def plain(batch):
        out = model.generate(**batch, max_new_tokens=steps, do_sample=False, eos_token_id=end, pad_token_id=pad)
        return out[:, batch["input_ids"].shape[1]:]

    modes = dict(greedy=(batches, lambda b: scoring.decode.greedy(model, b, end, pad, steps)),
                 generate=(batches, plain),
                 constrained=(batches, lambda b: scoring.decode.greedy(model, b, end, pad, steps,
                                                                scoring.decode.trie(answers_ids))),
                 expected=(batches, lambda b: scoring.decode.expected(model, b, answers_ids)),
                 explain=(variants, lambda b: scoring.decode.expected(model, b, answers_ids)))
    seconds, answers, memory = {}, {}, {}

    def run(name, batch):
        """One batch through one mode: its answer as lists of token ids (or probabilities), and the seconds it took."""
        sync(device)
        t0 = time.perf_counter()
        with scoring.decode.autocast(device):
            out = modes[name][1](batch).tolist()
        sync(device)
        return out, time.perf_counter() - t0

    def timed(name):
        reset_peak(device)
        before = torch.cuda.memory_allocated() if device.type == "cuda" else None
        runs = [run(name, b) for b in modes[name][0]]
        answers[name], seconds[name] = [a for a, _ in runs], sum(s for _, s in runs)
        memory[name] = peak_gib(device), before

    for name in modes:  # a round that warms up every mode but --explain (33x the prompts of expected: after expected)
        if name != "explain":
            timed(name)
    ratios, took = [], dict(greedy=0.0, generate=0.0)
    for k in range(repeats):
        round_ = dict(greedy=0.0, generate=0.0)
        for i, batch in enumerate(batches):
            for name in ("greedy", "generate") if (k + i) % 2 == 0 else ("generate", "greedy"):
                round_[name] += run(name, batch)[1]
        ratios.append(round_["generate"] / round_["greedy"])
        took = {name: took[name] + round_[name] for name in took}
    outside = {}
    for name in ("greedy", "generate"):
        with ModelTime(model, device) as inside:
            wall = sum(run(name, b)[1] for b in batches)
        outside[name] = 1000 * (wall - inside.seconds) / len(batches)
    for name in ("constrained", "expected", "explain"):
        timed(name)
    same = all(a[:len(b)] == b[:len(a)] for x, y in zip(answers["greedy"], answers["generate"]) for a, b in zip(x, y))
    n, (peak, before) = len(videos), memory["expected"]
    return dict(videos_per_s=n * repeats / took["greedy"], generate_videos_per_s=n * repeats / took["generate"],
                speedup=float(np.median(ratios)), speedups=ratios, same_answers=same,
                greedy_outside_ms=outside["greedy"], generate_outside_ms=outside["generate"],
                constrained_videos_per_s=n / seconds["constrained"], expected_videos_per_s=n / seconds["expected"],
                explain_videos_per_s=len(explained) / seconds["explain"],
                explain_cost=seconds["explain"] / len(explained) / (seconds["expected"] / n),
                explain_rows_per_video=len(explain.rows(explained, cfg.frames)) / len(explained),
                expected_peak_mem_gib=peak, expected_extra_gib=None if before is None else peak - before / 2**30)


class ModelTime:
    """
    The seconds spent inside the model while the context is open, whoever calls it: each outermost call of one of its
    modules (the whole model for a forward pass, or its vision tower where model.generate encodes the images first)
    is timed, the device synchronised at both ends. A decoder's wall time less this is its own work: its loop, picks,
    masks and positions. Hooks go on the modules at most `depth` names deep (every module whose call can be outermost)
    and come off on exit.
    """

    def __init__(self, net, device, depth=4):
        self.modules = [m for name, m in net.named_modules() if name.count(".") < depth]
        self.device, self.seconds, self.level, self.start, self.hooks = device, 0.0, 0, 0.0, []

    def enter(self, module, args):
        if self.level == 0:
            sync(self.device)
            self.start = time.perf_counter()
        self.level += 1

    def leave(self, module, args, out):
        self.level -= 1
        if self.level == 0:
            sync(self.device)
            self.seconds += time.perf_counter() - self.start

    def __enter__(self):
        for m in self.modules:
            self.hooks += [m.register_forward_pre_hook(self.enter), m.register_forward_hook(self.leave)]
        return self

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()


def free():
    """Give back what the last measurement held (its optimizer state, cached blocks) before the next one."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -----------------------------------------------------------------------------
# subcommands


def cmd_data(args, template):
    import av

    # the budget and processor of --model or --arch, else of a tiny Qwen2.5-VL (whose image processor is the stock one)
    budget_processor = model.load_processor(checkpoint(args) if args.model or args.arch else tiny(args),
                                           template.max_pixels, template.min_pixels)
    paths = sorted(os.path.join(args.videos, f) for f in os.listdir(args.videos)) if args.videos else \
        clips(os.path.join(args.work, "clips-720p"), args.n)
    videos = videos_of(paths)
    cores = os.cpu_count()

    # first-pass extraction: frames.read_frames + model.Budget.fit + the JPEG, one process a core
    with tempfile.TemporaryDirectory() as folder:
        cache = frames.FrameCache(folder, template.frames, model.budget_of(budget_processor))
        t0 = time.time()
        cache.fill(videos, workers=cores, timed=template.input == "video")
        decode = len(videos) / (time.time() - t0)
        sizes = [os.path.getsize(cache.path(v)) for v in videos]

        # the ceiling: FFmpeg decoding every frame of every clip, nothing converted, one process a core
        t0 = time.time()
        procs = [subprocess.Popen([sys.executable, "-c", "import av, sys\nfor p in sys.argv[1:]:\n"
                                   "    with av.open(p) as c:\n        c.streams.video[0].thread_count = 1\n"
                                   "        for _ in c.decode(video=0): pass"] + paths[k::cores]) for k in range(cores)]
        for p in procs:
            p.wait()
        ceiling = len(videos) / (time.time() - t0)
        with av.open(paths[0]) as c:
            stream = c.streams.video[0]
            shape = f"{stream.width}x{stream.height}, {stream.frames} frames"

        # batches out of the cache, as training gets them: Batches through the loader's workers
        n_batches, batch_size = max(4, 2 * len(videos) // template.batch_size), template.batch_size
        plan = cycle(len(videos), batch_size, n_batches + 2)
        it = iter(frames.loader(frames.Batches(videos, cache, budget_processor, video=template.input == "video"), plan,
                              template.workers))
        batches = [next(it), next(it)]  # warm-up: the workers start
        t0 = time.time()
        batches += [next(it) for _ in range(n_batches)]
        cached = n_batches * batch_size / (time.time() - t0)
    counts = [c for b, _ in batches for c in prompt.token_counts(b, budget_processor.tokenizer)]
    padding = 1 - sum(t for _, t in counts) / sum(b["attention_mask"].numel() for b, _ in batches)
    return dict(videos=len(videos), clip=shape, cores=cores, decode_videos_per_s=decode,
                ceiling_videos_per_s=ceiling, of_ceiling=decode / ceiling, cache_mb_per_video=np.mean(sizes) / 1e6,
                cached_samples_per_s=cached, workers=template.workers, visual_tokens=float(np.mean([v for v, _ in counts])),
                tokens_per_sample=float(np.mean([t for _, t in counts])), padding=padding)


def tiny(args):
    folder = os.path.join(args.work, "tiny-qwen2_5_vl")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        make_tiny(folder)
    return folder


def cmd_train(args, template):
    cfg, processor, videos, cache, net = setup(args, template)
    return dict(model=cfg.model, batch_size=cfg.batch_size, r=cfg.r, grad_ckpt=cfg.grad_ckpt, device=device_name(),
                **bench_train(cfg, processor, videos, cache, net, args.steps, args.warmup_steps, args.peak_tflops))


def against_trainer(cfg, processor, videos, cache, net, args):
    """train.py's step and HF Trainer + PEFT on the same model and batches, one after the other in each of
    --repeats rounds, their order swapped each round: the last round's figures, and `speedup`, the median of the
    rounds' ratios of samples/s (ours / Trainer's), what a machine busy with other work shifts least."""
    ratios = []
    for k in range(args.repeats):
        for name in ("ours", "trainer") if k % 2 == 0 else ("trainer", "ours"):
            if name == "ours":
                ours = bench_train(cfg, processor, videos, cache, net, args.steps, args.warmup_steps, args.peak_tflops)
            else:
                trainer = bench_trainer(cfg, processor, videos, cache, net, args.steps, args.warmup_steps)
            free()
        ratios.append(ours["samples_per_s"] / trainer["samples_per_s"])
    return dict(ours_samples_per_s=ours["samples_per_s"], ours_peak_mem_gib=ours["peak_mem_gib"], **trainer,
                speedup=float(np.median(ratios)), speedups=ratios)


def cmd_baseline(args, template):
    cfg, processor, videos, cache, net = setup(args, template)
    return dict(model=cfg.model, batch_size=cfg.batch_size, r=cfg.r, device=device_name(),
                **against_trainer(cfg, processor, videos, cache, net, args))


def cmd_predict(args, template):
    cfg, processor, videos, cache, net = setup(args, template)
    return dict(model=cfg.model, batch_size=cfg.eval_batch_size, device=device_name(),
                **bench_predict(cfg, processor, videos, cache, net, cfg.eval_batch_size, args.repeats))


# The search's landscape on the tiny model and the demo's rule: LoRA scales alpha / r from 1/16 to 64 at twice the
# tiny recipe's learning rate (test_cv.py's CV, 5 epochs), from updates too small to learn in 5 epochs to ones too
# large to stay stable.
SEARCH_SPACE = ["--r", 4, 16, 64, "--alpha", 4, 32, 256]
SEARCH_RECIPE = ["--epochs", 5, "--lr", 2 * TINY_RECIPE["lr"], "--warmup", TINY_RECIPE["warmup"], "--no-grad-ckpt",
                 "--eval-batch-size", 128, "--log-every", 1000]


def cmd_search(args, template):
    """cv.py's grid against TPE with fold pruning (--trials), over the same space, folds and seeds, each from an empty
    OUT: the best complete configuration each finds, its mean SRCC over the 2 folds, the fold trainings each spends
    and its wall time; and whether the two bests differ by more than the noise, twice the standard error of the
    difference of two means over 2 folds (from their folds' spread). Which configurations TPE tries first is a
    draw of its seed: TPE is then replayed with --replays other seeds of its own on the grid's folds, which it would
    train to the same numbers (a fold's training is seeded by --seed, not by the sampler), for how often it finds
    the grid's best and the fold trainings it spends."""
    root = os.path.join(args.work, "search")
    if not os.path.isfile(os.path.join(root, "data", "test_labels.csv")):
        synthetic.make_synthetic(os.path.join(root, "data"), n=300)
    common = ["--data", os.path.join(root, "data"), "--model", tiny(args), "--cache", os.path.join(root, "cache"),
              "--folds", 2, "--seed", template.seed, "--workers", template.workers, *SEARCH_SPACE, *SEARCH_RECIPE]
    result, tables = {}, {}
    for name, extra in [("grid", []), ("tpe", ["--search", "tpe", "--trials", args.trials])]:
        out = os.path.join(root, name)
        shutil.rmtree(out, ignore_errors=True)  # from nothing: a rerun trains again
        t0 = time.time()
        table, best = cv.main(list(map(str, [*common, "--out", out, *extra])))
        tables[name] = {t["config"]: t for t in table}
        result[name] = dict(best=best["config"], srcc=best["srcc"], std=best["std"], seconds=round(time.time() - t0),
                            fold_trainings=len(cv.read_results(os.path.join(out, "results.csv"))))
    grid, tpe = result["grid"], result["tpe"]

    def noise(a, b):  # twice the standard error of the difference of two configurations' means over 2 folds
        return 2 * math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2)

    cv_args, replayed = cv.parse_args(list(map(str, [*common, "--out", os.path.join(root, "replay"), "--search", "tpe",
                                                     "--trials", args.trials])))
    space, found, spent = cv.search_space(cv_args), [], []
    for seed in range(args.replays):
        shutil.rmtree(replayed.out, ignore_errors=True)
        os.makedirs(replayed.out)
        shutil.copy(os.path.join(root, "grid", "results.csv"), replayed.out)  # every fold, landed: none trains
        study = search.open_study(search.storage(os.path.join(replayed.out, "study.log")), "tpe", space, seed)
        cv.cross_validate(replayed, space, cv.plan(replayed, space), study, args.trials)
        found.append(tables["grid"][cv.config_name(study.best_trial.params)])
        spent.append(len({(cv.config_name(t.params), k) for t in study.trials for k in t.intermediate_values}))
    best = tables["grid"][grid["best"]]
    result["replays"] = dict(seeds=args.replays, found_grid_best=sum(f is best for f in found),
                             within_noise=sum(best["srcc"] - f["srcc"] <= noise(best, f) for f in found),
                             best_srcc_mean=float(np.mean([f["srcc"] for f in found])),
                             best_srcc_min=min(f["srcc"] for f in found), fold_trainings_mean=float(np.mean(spent)),
                             fold_trainings_min=min(spent), fold_trainings_max=max(spent))
    result.update(difference=grid["srcc"] - tpe["srcc"], noise=noise(grid, tpe),
                  within_noise=abs(grid["srcc"] - tpe["srcc"]) <= noise(grid, tpe))
    print("\n| search | best config | mean SRCC ± std over 2 folds | fold trainings | wall time |")
    print("|---|---|---|---|---|")
    for name, r in [("grid (9 configurations)", grid), (f"TPE + pruning ({args.trials} trials)", tpe)]:
        print(f"| {name} | {r['best']} | {r['srcc']:.4f} ± {r['std']:.4f} | {r['fold_trainings']} | "
              f"{r['seconds']} s |")
    print(f"difference of the best mean SRCCs {result['difference']:.4f}, noise (2 standard errors) "
          f"{result['noise']:.4f}: {'within' if result['within_noise'] else 'beyond'} the noise")
    r = result["replays"]
    print(f"TPE replayed with {r['seeds']} seeds of its own on the grid's folds: the grid's best found "
          f"{r['found_grid_best']} times, a best within the noise of it {r['within_noise']} times; best mean SRCC "
          f"found {r['best_srcc_mean']:.4f} on average ({r['best_srcc_min']:.4f} at worst); "
          f"{r['fold_trainings_mean']:.1f} fold trainings ({r['fold_trainings_min']} to {r['fold_trainings_max']})")
    return result


def cmd_gpu(args, template):
    """The prepared GPU check: (a) the tiny model learns on CUDA under bf16 autocast; (b) train (with and without
    gradient checkpointing), baseline and predict on the 7B architecture (or --model) at batch 4, r=128, three frames
    at the default budget; (c) train, baseline and predict on the paper's Qwen-VL-Chat (or --paper-model) in the
    paper's setup; (d) one JSON file, written after each step. On a machine without a GPU it runs the same steps on the
    CPU, slowly."""
    if args.paper_model and not model.is_qwen_vl(args.paper_model):  # said before (a) and (b) run, not after
        raise InputError(f"--paper-model {args.paper_model}: not a Qwen-VL-Chat checkpoint (config.json's model_type "
                         "is not 'qwen')")
    result = dict(device=device_name(), torch=torch.__version__, transformers=__import__("transformers").__version__)
    t0 = time.time()

    def save():
        result["seconds"] = time.time() - t0
        if args.out:  # whole after each block: a run cut short keeps what it measured
            write_text(args.out, json.dumps(result, indent=1))

    # (a) the tiny model's recipe (tiny.TINY_RECIPE) on the demo's rule. The bar, 0.6: with no signal, the SRCC of the
    # 45 held-out videos has a standard deviation of 1/sqrt(44) = 0.15, so 0.6 is 4 of them above chance; the CPU
    # reaches ~0.9. A model that ignored the frames or read them out of order stays near 0.
    root = os.path.join(args.work, "learn")
    if not os.path.isfile(os.path.join(root, "data", "test_labels.csv")):
        synthetic.make_synthetic(os.path.join(root, "data"), n=300)
    cfg = train.Config(data=os.path.join(root, "data"), model=tiny(args), out=os.path.join(root, "run"),
                       cache=os.path.join(root, "cache"), log_every=100, workers=template.workers,
                       **dict(TINY_RECIPE, epochs=args.learn_epochs))
    learned = train.main(cfg, overwrite=True)
    result["learn"] = dict(srcc=learned["srcc"], invalid=learned["invalid"], n=learned["n"], bar=0.6,
                           passed=learned["srcc"] >= 0.6, seconds=learned["seconds"])
    print(f"(a) tiny model: held-out SRCC {learned['srcc']:.3f} (bar 0.6)")
    free()
    save()
    # (b) the 7B architecture, its figures at the top level of the JSON
    args.arch = None if args.model else args.arch or "qwen2.5-vl-7b"
    result.update(measure(args, template, "(b)", compare_checkpointing=True))
    free()
    save()
    # (c) the paper's model in the paper's setup, whatever flags (b) got: LoRA on c_attn, each frame one 448 x 448
    # image (the batch, r and frames are (b)'s). Its build and load take most of its time; train without
    # checkpointing is left out.
    paper = argparse.Namespace(**dict(vars(args), model=args.paper_model,
                                      arch=None if args.paper_model else "qwen-vl-chat"))
    result["qwen_vl_chat"] = measure(paper, replace(template, modules=None, input="images", min_pixels=None,
                                                    max_pixels=train.DEFAULT_MAX_PIXELS), "(c)")
    free()
    save()
    if args.out:
        print(f"(d) wrote {args.out}")
    return result


def cmd_peft(args, template):
    """
    The adapter methods (--methods: model.PEFT_METHODS by default) side by side on --model and --data, each with the
    tiny recipe (TINY_RECIPE for --learn-epochs, its r and alpha where a method has them) at the method's own tiny
    learning rate (TINY_PEFT_LR), once a seed of --seeds, each in a process of its own (peft_run): the held-out
    SRCC of train.py's run, its trainable parameters, train.py's step timed, and the peak memory (CPU: the process's
    resident set; CUDA: allocated during the timed steps). Prints the table docs/peft.md shows.
    """
    recipe = {k: v for k, v in TINY_RECIPE.items() if k not in model.ADAPTER_SETTINGS}
    rows = []
    for method in args.methods:
        has = model.PEFT_METHODS[method]
        adapter = {k: TINY_RECIPE.get(k) if k in has else None for k in model.ADAPTER_SETTINGS}
        for seed in args.seeds:
            out = os.path.join(args.work, "peft", f"{method}-seed{seed}")
            cfg = replace(template, **dict(recipe, epochs=args.learn_epochs, lr=TINY_PEFT_LR[method]), **adapter,
                          peft=method, seed=seed, log_every=1000, out=out)
            child = subprocess.run([sys.executable, "-c", "import json, sys\nfrom scaffold import bench\nresult = "
                                    "bench.peft_run(json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))\n"
                                    "print(json.dumps(result))",
                                    json.dumps(asdict(cfg)), str(args.steps), str(args.warmup_steps)],
                                   cwd=ROOT, stdout=subprocess.PIPE, text=True)
            if child.returncode:
                raise InputError(f"scaffold.bench peft: the run of {method}, seed {seed}, stopped "
                                 f"(exit {child.returncode})")
            rows.append(dict(method=method, seed=seed, lr=cfg.lr, **json.loads(child.stdout.strip().splitlines()[-1])))
            print(f"peft | {method} seed {seed} | {json.dumps(rows[-1])}")
    memory = "peak memory (GiB, CPU resident set)" if not torch.cuda.is_available() else "peak memory (GiB, CUDA)"
    print(f"\n| method | lr | held-out SRCC (seeds {', '.join(map(str, args.seeds))}) | invalid answers | trainable "
          f"parameters | seconds a step | {memory} |\n|---|---|---|---|---|---|---|")
    for method in args.methods:
        mine = [r for r in rows if r["method"] == method]
        srcc = ", ".join(f"{r['srcc']:.2f}" for r in mine)
        invalid = ", ".join(f"{r['invalid']}/{r['n']}" for r in mine)
        print(f"| {method} | {mine[0]['lr']:g} | {srcc} | {invalid} | {mine[0]['trainable']:,} | "
              f"{np.mean([r['step_ms'] for r in mine]) / 1000:.3f} | {max(r['peak_mem_gib'] for r in mine):.2f} |")
    return dict(model=template.model, data=template.data, device=device_name(), epochs=args.learn_epochs, runs=rows)


def peft_run(settings, steps, warmup):
    """One method and seed of cmd_peft in this process: train.py's run (held-out SRCC, trainable parameters), then
    train.py's step timed on the run's training videos, and the memory both took."""
    cfg = train.Config(**settings)
    learned = train.main(cfg, overwrite=True)
    free()
    processor = model.load_processor(cfg.model, cfg.max_pixels, cfg.min_pixels)
    videos, _, _ = data.train_heldout(cfg.data, cfg.split, cfg.fold, cfg.folds, cfg.seed, None, cfg.target,
                                   cfg.heldout_data)
    cache = frames.FrameCache(cfg.cache, cfg.frames, model.budget_of(processor))
    timed = bench_train(cfg, processor, videos, cache, train.build_model(cfg), steps, warmup)
    return dict(srcc=learned["srcc"], invalid=learned["invalid"], n=learned["n"],
                trainable=learned["trainable_parameters"], step_ms=timed["step_ms"], peak_mem_gib=timed["peak_mem_gib"])


def measure(args, template, step, compare_checkpointing=False):
    """One model of the GPU check, loaded once for every measurement: train, train without gradient checkpointing
    (compare_checkpointing: what it costs in time and saves in memory), baseline and predict; with the settings and
    the GPU memory still held before it loads (what an earlier model left: 0 expected)."""
    t0 = time.time()
    held = torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else None
    cfg, processor, videos, cache, net = setup(args, template)
    measured = [("train", lambda: bench_train(cfg, processor, videos, cache, net, args.steps, args.warmup_steps,
                                              args.peak_tflops)),
                ("baseline", lambda: against_trainer(cfg, processor, videos, cache, net, args)),
                ("predict", lambda: bench_predict(cfg, processor, videos, cache, net, cfg.eval_batch_size,
                                                  args.repeats))]
    if cfg.grad_ckpt and compare_checkpointing:
        def without_checkpointing():
            model.checkpointing(net, on=False)
            try:
                return bench_train(cfg, processor, videos, cache, net, args.steps, args.warmup_steps, args.peak_tflops)
            except torch.OutOfMemoryError:
                return dict(error="out of memory")
            finally:
                model.checkpointing(net)
        measured.insert(1, ("train_no_grad_ckpt", without_checkpointing))
    result = {}
    for name, run in measured:
        result[name] = run()
        free()
        print(f"{step} {name}: {json.dumps(result[name])}")
    return dict(result, model=args.arch or args.model, batch_size=cfg.batch_size, r=cfg.r, alpha=cfg.alpha,
                modules=cfg.modules or model.paper_modules(cfg.model), frames=cfg.frames, input=cfg.input,
                max_pixels=cfg.max_pixels, held_before_gib=held, block_seconds=time.time() - t0)


def device_name():
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"


# -----------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=Help, allow_abbrev=False,
        epilog="Every other flag is train.py's (python train.py --help) and sets what is measured, e.g. --r, --alpha, "
               "--modules, --batch-size, --eval-batch-size, --frames, --input, --max-pixels, --quant, --no-grad-ckpt, "
               "--workers.")
    parser.add_argument("command", choices=["data", "train", "baseline", "predict", "gpu", "search", "peft"])
    # ---
    parser.add_argument("--model", help=f"a model folder (or hub id) to measure (train, baseline, predict: default "
                        f"{model.DEFAULT_MODEL}, the paper's)")
    parser.add_argument("--arch", choices=list(model.ARCHS), help="instead: a published architecture, random weights")
    parser.add_argument("--work", default="runs/bench", help="folder for clips, built models, caches")
    parser.add_argument("--videos", help="data: a folder of your own clips instead of written 720p ones")
    parser.add_argument("--n", type=int, default=16, help="data: clips to write and decode")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="baseline, predict: rounds of ours against the "
                        "reference (HF Trainer, model.generate); the speedup is the median of their ratios")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU (default: by name)")
    parser.add_argument("--out", help="gpu: the JSON file to write")
    parser.add_argument("--paper-model", help="gpu: a Qwen-VL-Chat folder to measure in (c) instead of the 9.6 B "
                        "architecture with random weights (the tests pass a tiny one)")
    parser.add_argument("--learn-epochs", type=int, default=TINY_RECIPE["epochs"],
                        help="gpu, peft: epochs of the tiny model's learning runs (gpu: fewer, it runs through, without "
                        "the bar)")
    parser.add_argument("--trials", type=int, default=5, help="search: TPE's trials, against the grid's 9")
    parser.add_argument("--replays", type=int, default=20, help="search: TPE's own seeds replayed on the grid's folds")
    parser.add_argument("--methods", nargs="+", default=list(model.PEFT_METHODS), choices=list(model.PEFT_METHODS),
                        help="peft: the adapter methods compared")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="peft: a run of each method for each seed")
    parser.add_argument("--json", action="store_true", help="end with one JSON object on a line")
    # ---
    args, rest = parser.parse_known_args(argv)
    if args.command in ("train", "baseline", "predict") and not args.arch:
        args.model = args.model or model.DEFAULT_MODEL
    if args.command == "peft" and not args.model:
        raise InputError("scaffold.bench peft: --model, the tiny checkpoint the methods train on "
                         "(python -m scaffold.tiny DIR)")
    if args.command == "peft":
        rest += ["--model", args.model]
    # The rest is read by train.py's own parser: its flags, defaults and checks, not a copy of them.
    _, template = train.parse_args(rest)
    return args, template


def main(argv=None):
    args, template = parse_args(argv)
    commands = dict(data=cmd_data, train=cmd_train, baseline=cmd_baseline, predict=cmd_predict, gpu=cmd_gpu,
                    search=cmd_search, peft=cmd_peft)
    result = commands[args.command](args, template)
    width = max(map(len, result))
    print(f"\nscaffold.bench {args.command}")
    for key, value in result.items():
        shown = f"{value:,.3f}" if isinstance(value, float) else json.dumps(value) if isinstance(value, dict) else value
        print(f"  {key:<{width}}  {shown}")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    cli(main)
