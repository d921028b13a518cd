"""
Predict memorability scores with a trained adapter (or zero-shot with the base model) and write a CSV.

    python predict.py --data data/memento10k --adapter runs/r128-a1024 --split test     # the submission
    python predict.py --data data/memento10k --adapter runs/fold2 --split trainval --fold 2 --folds 5
    python predict.py --data data/memento10k --zero-shot --model Qwen/Qwen2.5-VL-7B-Instruct --split trainval

Greedy decoding of at most 4 new tokens (one prefill, at most three cached steps), then the paper's
post-processing: the first number 0-100 in the answer; an answer without one is invalid and gets the training
mean (counted and reported). Frames get the run's pixel budget, frame count and input (images or one video) unless
told otherwise.
The CSV has the header video_id,mem_score with scores 0-1. With labels, SRCC is printed with its 95% CI.
"""

import argparse
import csv
import inspect
import json
import math
import os
import tempfile
import time
from contextlib import nullcontext

import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

import data
import model as qwen
import prompt

# where `python train.py` writes its run with the default LoRA configuration (train.default_run)
DEFAULT_RUN = os.path.join("runs", qwen.config_name(qwen.DEFAULT_R, qwen.DEFAULT_ALPHA))
PAPER_TRAIN_MEAN = 80  # the paper's fill value for invalid zero-shot answers (train+val mean score 0.801)


# -----------------------------------------------------------------------------
# decoding, then post-processing


def generate(model, processor, videos, cache, batch_size=8, workers=0, max_new_tokens=4, progress=True, video=False):
    """Greedy answers (free text) of the model for each video, in order; batches are made by `workers` processes;
    with `video`, the frames of each go in as one native video input."""
    tokenizer = processor.tokenizer
    end, pad = tokenizer.convert_tokens_to_ids(prompt.END_OF_TURN), tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    batches = data.loader(data.Batches(videos, cache, processor, labelled=False, video=video),
                          data.chunks(len(videos), batch_size), workers)
    answers = []
    for batch, _ in tqdm(batches, desc="predicting", unit="batch", disable=not progress):
        batch = prompt.to_model(batch, processor, model.device)
        with autocast(model.device):
            tokens = greedy(model, batch, end, pad, max_new_tokens)
        answers += tokenizer.batch_decode(tokens, skip_special_tokens=True)
    model.train(was_training)
    return answers


@torch.no_grad()
def greedy(model, batch, end, pad, max_new_tokens=4):
    """
    Greedy decoding as token ids (B, at most max_new_tokens): one forward pass over the prompts that computes the
    logits of their last position only (the prefill), then one cached step per further token, until every answer has
    ended. A score is at most three digits and end-of-turn: a prefill and at most three steps. The same tokens as
    model.generate(do_sample=False), without its per-step machinery; an answer that ended is padded with `pad`.
    """
    from transformers import DynamicCache

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under peft's wrapper
    cache = {_cache_argument(base): DynamicCache()}
    token = model(**batch, **cache, use_cache=True, logits_to_keep=1).logits[:, -1].argmax(-1)
    tokens, done, mask = [token], token == end, batch["attention_mask"]
    for _ in range(max_new_tokens - 1):
        if done.all():
            break
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        # The new token's rope position, in all three of Qwen's (time, height, width) sections: the count of tokens
        # before it, shifted as the prefill shifted the text after the frames (rope_deltas, kept by the model).
        position = (mask.sum(1, keepdim=True) - 1 + base.model.rope_deltas).expand(3, -1, -1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, **cache, use_cache=True)
        token = torch.where(done, pad, out.logits[:, -1].argmax(-1))
        tokens.append(token)
        done |= token == end
    return torch.stack(tokens, 1)


def _cache_argument(model):
    # transformers renamed the forward's `past_key_values` to `cache` (5.2x); the GPU image has an earlier release
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def postprocess(answers, fill):
    """Answers -> integer scores 0-100; an answer with no valid number gets `fill`. Returns (scores, n_invalid)."""
    parsed = [prompt.parse_score(a) for a in answers]
    return [fill if p is None else p for p in parsed], sum(p is None for p in parsed)


def autocast(device):
    """bf16 autocast on GPU; on CPU everything stays fp32."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if torch.device(device).type == "cuda" else nullcontext()


# -----------------------------------------------------------------------------
# metrics


def srcc_ci(rho, n, level=0.95):
    """Fisher z confidence interval of a Spearman correlation: tanh(atanh(rho) +- z / sqrt(n - 3))."""
    if n <= 3 or abs(rho) >= 1:
        return rho, rho
    half = stats.norm.ppf(0.5 + level / 2) / math.sqrt(n - 3)
    return math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)


def metrics(predicted, truth):
    """predicted: integer scores 0-100; truth: scores 0-1."""
    p, t = np.asarray(predicted, float) / 100, np.asarray(truth, float)
    srcc = float(stats.spearmanr(p, t).statistic) if len(p) > 1 and np.ptp(p) > 0 else float("nan")
    pearson = float(stats.pearsonr(p, t).statistic) if len(p) > 1 and np.ptp(p) > 0 else float("nan")
    return dict(n=len(p), srcc=srcc, srcc_ci=srcc_ci(srcc, len(p)), pearson=pearson, mse=float(np.mean((p - t) ** 2)))


def describe(m):
    """One line for the metrics of `metrics`: SRCC with its Fisher z 95% CI, Pearson and MSE."""
    if math.isnan(m["srcc"]):
        return f"SRCC undefined: every prediction is the same (n={m['n']}) | MSE {m['mse']:.5f}"
    lo, hi = m["srcc_ci"]
    return (f"SRCC {m['srcc']:.4f} (95% CI {lo:.3f} to {hi:.3f}, Fisher z, n={m['n']}) | "
            f"Pearson {m['pearson']:.4f} | MSE {m['mse']:.5f}")


def write_predictions(path, videos, scores):
    """video_id,mem_score (0-1), written to a temporary file and renamed so a reader never sees half of it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "mem_score"])
        w.writerows([v.video_id, f"{s / 100:.2f}"] for v, s in zip(videos, scores))
    os.replace(tmp, path)


def read_labels(path):
    """A video_id,mem_score CSV (such as the synthetic test_labels.csv) -> {video_id: score}."""
    with open(path, newline="") as f:
        return {row["video_id"]: float(row["mem_score"]) for row in csv.DictReader(f)}


# -----------------------------------------------------------------------------
# loading a run


def resolve_run(path):
    """A run directory or an adapter directory -> (adapter dir, the run's config dict or None)."""
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        adapter, run = path, os.path.dirname(os.path.abspath(path))
    elif os.path.isfile(os.path.join(path, "adapter", "adapter_config.json")):
        adapter, run = os.path.join(path, "adapter"), path
    else:
        raise data.InputError(f"{path}: neither a run directory (with adapter/) nor an adapter directory")
    config_path = os.path.join(run, "config.json")
    config = json.load(open(config_path)) if os.path.isfile(config_path) else None
    return adapter, config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # ---
    parser.add_argument("--data", default="data/memento10k", help="Memento10k root (authors' JSON or MediaEval CSV layout)")
    parser.add_argument("--adapter", help=f"run directory of train.py, or an adapter directory (default: {DEFAULT_RUN})")
    parser.add_argument("--zero-shot", action="store_true", help="predict with the base model, no adapter")
    parser.add_argument("--model", help="base model (hub id or folder); default: the run's, or " + qwen.DEFAULT_MODEL)
    parser.add_argument("--quant", default=None, choices=["nf4", "none"], help="default: the run's, or nf4")
    parser.add_argument("--split", default="test", choices=data.SPLITS, help="videos to predict")
    parser.add_argument("--fold", type=int, default=None, help="predict fold K of trainval (with --split trainval)")
    parser.add_argument("--folds", type=int, default=None, help="number of folds (default: the run's, or 5)")
    parser.add_argument("--seed", type=int, default=None, help="fold seed (default: the run's, or 0)")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: the run's, or 3)")
    parser.add_argument("--input", default=None, choices=["images", "video"],
                        help="the frames as images or as one native video input (default: the run's, or images)")
    parser.add_argument("--max-pixels", type=int, default=None, help="pixels a frame keeps at most (default: the run's, or 448 x 448)")
    parser.add_argument("--min-pixels", type=int, default=None, help="pixels a frame keeps at least (default: the run's, or the processor's)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per generation batch")
    parser.add_argument("--workers", type=int, default=data.default_workers(), help="processes that make batches ahead")
    parser.add_argument("--labels", help="a video_id,mem_score CSV to score the predictions against")
    parser.add_argument("--cache", default=data.default_cache(), help="folder of decoded frames")
    parser.add_argument("--out", help="CSV to write (default: RUN/predictions-SPLIT[-foldK].csv)")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable videos and bad records, listing them")
    # ---
    args = parser.parse_args(argv)
    if args.adapter and args.zero_shot:
        parser.error("give one of --adapter and --zero-shot")
    if not args.zero_shot and not args.adapter:
        if not os.path.exists(DEFAULT_RUN):
            raise data.InputError(f"{DEFAULT_RUN}: no trained run yet: train one first (python train.py), "
                                  "or pass --adapter RUN or --zero-shot")
        args.adapter = DEFAULT_RUN

    adapter, run = (None, None) if args.zero_shot else resolve_run(args.adapter)
    run = run or {}
    model_id = args.model or run.get("model") or (qwen.base_model_of(adapter) if adapter else qwen.DEFAULT_MODEL)
    quant = args.quant or run.get("quant", "nf4")
    folds, seed = args.folds or run.get("folds", 5), args.seed if args.seed is not None else run.get("seed", 0)
    n_frames = args.frames or run.get("frames", 3)
    video = (args.input or run.get("input", "images")) == "video"
    if video and n_frames < 2:
        raise data.InputError("--input video needs --frames 2 or more (one frame is an image)")
    max_pixels = args.max_pixels or run.get("max_pixels", data.DEFAULT_MAX_PIXELS)
    min_pixels = args.min_pixels or run.get("min_pixels")
    fill = round(run["train_mean"]) if "train_mean" in run else PAPER_TRAIN_MEAN
    suffix = f"{args.split}" + (f"-fold{args.fold}" if args.fold is not None else "")
    out = args.out or os.path.join(os.path.dirname(adapter) if adapter else ".", f"predictions-{suffix}.csv")

    if adapter:
        qwen.check_adapter(adapter, model_id, run.get("model_identity"))
    bad = [] if args.skip_bad else None
    videos = data.heldout(args.data, args.split, args.fold, folds, seed, bad)
    processor = qwen.load_processor(model_id, max_pixels, min_pixels)
    cache = data.FrameCache(args.cache, n_frames, qwen.budget_of(processor))
    videos = cache.fill(videos, bad, timed=video)
    data.report_skipped(bad, os.path.join(os.path.dirname(os.path.abspath(out)), f"skipped-{suffix}.csv"))
    if not videos:
        raise data.InputError(f"{args.data}: no usable videos to predict in split {args.split}")
    model = qwen.load_model(model_id, quant)
    if adapter:
        model = qwen.load_adapter(model, adapter, model_id, recorded=run.get("model_identity"))
    t0 = time.time()
    answers = generate(model, processor, videos, cache, args.batch_size, args.workers, video=video)
    seconds = time.time() - t0
    print(f"predicted {len(videos)} videos in {seconds:.1f}s ({len(videos) / max(seconds, 1e-9):.1f} videos/s)")
    scores, invalid = postprocess(answers, fill)
    write_predictions(out, videos, scores)
    print(f"wrote {len(scores)} predictions to {out}")
    print(f"invalid answers: {invalid}/{len(scores)} ({100 * invalid / max(len(scores), 1):.2f}%), replaced by {fill}")

    truth = read_labels(args.labels) if args.labels else {v.video_id: v.score for v in videos if v.score is not None}
    pairs = [(s, truth[v.video_id]) for v, s in zip(videos, scores) if v.video_id in truth]
    if pairs:
        print(describe(metrics(*zip(*pairs))))
    return scores


if __name__ == "__main__":
    data.cli(main)
