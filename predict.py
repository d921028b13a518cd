"""
Predict memorability scores with a trained adapter (or zero-shot with the base model) and write a CSV.

    python predict.py --data data/memento10k --adapter runs/r128-a1024 --split test     # the submission
    python predict.py --data data/memento10k --adapter runs/fold2 --split trainval --fold 2 --folds 5
    python predict.py --data data/memento10k --zero-shot --model Qwen/Qwen2.5-VL-7B-Instruct --split trainval
    python predict.py --data data/memento10k --adapter runs/r128-a1024 --split test --decode expected
    python predict.py --data data/videomem --adapter runs/memento-final --split test  # another source's test set
    python predict.py --data data/videomem --adapter runs/trecvid-long --split test   # long-term: the run's target
    python predict.py --videos my-clips --adapter runs/r128-a1024 --sheet my-clips.png # your own videos, ranked
    python predict.py --data data/memento10k --adapter runs/r128-a1024 --split test --explain --report test.html

--decode (scoring.py; default: the run's, or greedy): greedy, the paper's, decodes at most 4 new tokens (one prefill,
at most three cached steps), then the paper's post-processing: the first number 0-100 in the answer; an answer without
one is invalid and gets the training mean (counted and reported). constrained decodes the same way among the valid
answers only; expected reads the probability of each of the 101 answers (one prefill and one more forward) and
scores their expectation. Frames get the run's pixel budget, frame count and input (images or one video) unless told
otherwise.
The CSV has the header video_id,mem_score with scores 0-1 (expected: then argmax,std, also 0-1), the scores of the
run's target (--target): a long-term run's file is named ...-long.csv, one of another source than the run's names that
source (predictions-videomem-test.csv). With labels, SRCC is printed with its 95% CI. With --videos, the CSV is the
ranking of the folder's videos with their captions (folder.py).
--explain (explain.py) also writes explain-NAME.csv beside it: each frame's and caption's share of the expected score,
what the score loses when that input alone is taken away. --report FILE.html (report.py) writes the scored videos as
one self-contained page: ranks, scores, frames, captions and shares, sortable.
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
import explain
import folder
import frames
import model as qwen
import prompt
import qwen_vl
import report
import scoring
from errors import InputError, cli

# where `python train.py` writes its run with the default LoRA configuration (train.default_run)
DEFAULT_RUN = os.path.join("runs", qwen.config_name(qwen.DEFAULT_R, qwen.DEFAULT_ALPHA))
PAPER_TRAIN_MEAN = 80  # the paper's fill value for invalid zero-shot answers (train+val mean score 0.801)
DECODES = ("greedy", "constrained", "expected")  # how a score is read from the model (scoring.py); greedy: the paper's


# -----------------------------------------------------------------------------
# decoding, then post-processing


def generate(model, processor, videos, cache, batch_size=8, workers=0, max_new_tokens=4, progress=True, video=False,
             decode="greedy"):
    """
    The model's answer for each video, in order (see scoring.py): with `decode` greedy or constrained, the text it
    wrote; with expected, its probabilities of the 101 scores, a (101,) tensor. Batches are made by `workers`
    processes; with `video`, the frames of each go in as one native video input.
    """
    assert decode in DECODES, decode
    batches = frames.loader(frames.Batches(videos, cache, processor, labelled=False, video=video),
                            frames.chunks(len(videos), batch_size), workers)
    return answer(model, processor, batches, decode, max_new_tokens, progress)


def attribute(model, processor, videos, cache, batch_size=9, workers=0, progress=True, video=False):
    """
    --explain (explain.py): (answers, shares). Each video is scored by expected decoding with all its inputs, with
    each frame occluded and with each caption removed, `batch_size` of these rows a forward pass; answers are its
    distributions with all inputs (generate's with decode expected), shares its frames' and captions' in 0-1 units.
    """
    dataset = explain.Occlusions(videos, cache, processor, labelled=False, video=video)
    batches = frames.loader(dataset, explain.plan(videos, cache.n_frames, batch_size), workers)
    p = answer(model, processor, batches, "expected", progress=progress, desc="explaining")
    return explain.shares(torch.stack(p), videos, cache.n_frames)


def answer(model, processor, batches, decode, max_new_tokens=4, progress=True, desc="predicting"):
    """The model's answer (see generate) for each row of `batches`, prompt.encode's inputs from frames.loader."""
    tokenizer = processor.tokenizer
    end, pad = tokenizer.convert_tokens_to_ids(prompt.END_OF_TURN), tokenizer.pad_token_id
    answers_ids = prompt.answer_ids(tokenizer)
    allowed = scoring.trie(answers_ids) if decode == "constrained" else None
    steps = max_new_tokens if allowed is None else max(map(len, answers_ids))  # constrained: to the longest answer
    was_training = model.training
    model.eval()
    answers = []
    for batch, _ in tqdm(batches, desc=desc, unit="batch", disable=not progress):
        batch = prompt.to_model(batch, processor, model.device)
        with autocast(model.device):
            if decode == "expected":
                answers += list(expected(model, batch, answers_ids).cpu())
            else:
                tokens = greedy(model, batch, end, pad, steps, allowed)
                answers += tokenizer.batch_decode(tokens, skip_special_tokens=True)
    model.train(was_training)
    return answers


@torch.no_grad()
def greedy(model, batch, end, pad, max_new_tokens=4, allowed=None):
    """
    Greedy decoding as token ids (B, at most max_new_tokens): one forward pass over the prompts that computes the
    logits of their last position only (the prefill), then one cached step per further token, until every answer has
    ended. A score is at most three digits and end-of-turn: a prefill and at most three steps. The same tokens as
    model.generate(do_sample=False), without its per-step machinery; an answer that ended is padded with `pad`.
    With `allowed` (scoring.trie of the valid answers), each step picks the likeliest token that keeps the answer
    valid: constrained decoding.
    """
    from transformers import DynamicCache

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under peft's wrapper
    cache = {_cache_argument(base): DynamicCache()}
    logits = model(**batch, **cache, use_cache=True, logits_to_keep=1).logits[:, -1]
    token = _pick(logits, [], allowed)
    tokens, done, mask = [token], token == end, seen_by_steps(model, batch)
    for _ in range(max_new_tokens - 1):
        if done.all():
            break
        position = _positions(base, mask, 1)  # the new token's: right after the tokens so far
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
        out = base(input_ids=token[:, None], attention_mask=mask, position_ids=position, **cache, use_cache=True)
        token = torch.where(done, pad, _pick(out.logits[:, -1], tokens, allowed))
        tokens.append(token)
        done |= token == end
    return torch.stack(tokens, 1)


def seen_by_steps(model, batch):
    """The attention mask of the prompts as the cached steps after the prefill see them. Those steps go to the base
    model (its adapter's layers in it): prompt tuning's wrapper would put its learned tokens before each step again,
    and they are in the cache already, before the prompt (model.virtual_tokens)."""
    mask = batch["attention_mask"]
    return torch.cat([mask.new_ones(len(mask), qwen.virtual_tokens(model)), mask], dim=1)


def _pick(logits, tokens, allowed):
    """The likeliest next token of each row; with `allowed`, among those that may follow the row's tokens so far (a
    row that has ended may pick none: its pick is replaced by padding)."""
    if allowed is None:
        return logits.argmax(-1)
    prefixes = torch.stack(tokens, 1).tolist() if tokens else [[]] * len(logits)
    barred = torch.ones(logits.shape, dtype=torch.bool)
    for i, prefix in enumerate(prefixes):
        barred[i, allowed.get(tuple(prefix), [])] = False
    return logits.masked_fill(barred.to(logits.device), float("-inf")).argmax(-1)


def _positions(base, mask, depth):
    """
    The rope positions of new tokens `depth` (1: the next; (1, K) for several) places after the tokens `mask` (B, L)
    covers. Qwen2-VL and its successors: in all three (time, height, width) sections, the count of real tokens before
    them, shifted as the prefill shifted the text after the frames (rope_deltas, kept by the model). Qwen-VL-Chat:
    the index in the padded row, as its official code counts every position (and as its prefill did here).
    """
    if isinstance(base, qwen_vl.QWenLMHeadModel):
        return (mask.shape[1] + depth - 1) * torch.ones_like(mask[:, :1])
    return (mask.sum(1, keepdim=True) + depth - 1 + base.model.rope_deltas).expand(3, -1, -1)


@torch.no_grad()
def answer_logprobs(model, batch, answers):
    """
    (B, len(answers)) log-probabilities the model gives each whole answer (token ids, prompt.answer_ids), exactly, in
    two forward passes: the prefill, whose last position gives the first token's, then the trie's inner nodes
    (scoring.prefixes, 101 with Qwen's digits) as one row of tokens a video on top of the prompt's cache, each node at
    its own rope position and seeing the prompt and its own ancestors only (scoring.tree_mask): what it would see as
    its own sequence. So the prompt's cache is shared, not repeated for each answer (101 copies of it would take
    ~5 GB a video for the 7B model at ~900 tokens, in bf16): a video costs one prefill and 101 more tokens.
    """
    from transformers import DynamicCache

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    nodes = scoring.prefixes(answers)
    cache = {_cache_argument(base): DynamicCache()}
    first = model(**batch, **cache, use_cache=True, logits_to_keep=1).logits[:, -1:]
    mask = seen_by_steps(model, batch)
    n, device = len(mask), mask.device
    tokens = torch.tensor([node[-1] for node in nodes], device=device).expand(n, -1)
    depth = torch.tensor([len(node) for node in nodes], device=device)
    # a 4-d mask (video, 1, node, prompt + nodes), True where a node may look; the model takes it as it is
    seen = torch.cat([mask.bool()[:, None, None, :].expand(-1, 1, len(nodes), -1),
                      scoring.tree_mask(nodes).to(device).expand(n, 1, -1, -1)], dim=-1)
    position = _positions(base, mask, depth[None])  # a node's: after the prompt and its ancestors
    rest = base(input_ids=tokens, attention_mask=seen, position_ids=position, **cache, use_cache=True).logits
    return scoring.score_logprobs(torch.cat([first, rest], 1).float().log_softmax(-1), answers, nodes)


def expected(model, batch, answers):
    """P(s) of each answer, renormalised over them (scoring.distribution): (B, 101) with prompt.answer_ids."""
    return scoring.distribution(answer_logprobs(model, batch, answers))


def _cache_argument(model):
    # transformers renamed the forward's `past_key_values` to `cache` (5.2x); the GPU image has an earlier release
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def postprocess(answers, fill):
    """
    Answers (generate's) -> scores 0-100, and how many were invalid. A text (greedy, constrained) gives its first
    number 0-100 as an integer, or `fill` when it has none (invalid); a distribution over the 101 scores (expected)
    gives its expectation, a float, never invalid.
    """
    if answers and torch.is_tensor(answers[0]):
        return scoring.summary(torch.stack(answers))[0].tolist(), 0
    parsed = [prompt.parse_score(a) for a in answers]
    return [fill if p is None else p for p in parsed], sum(p is None for p in parsed)


def spread(answers):
    """Distributions over the 101 scores -> their argmax and standard deviation, as (argmax, std) pairs in 0-1 units
    (the mem_score's); None for text answers, which have no distribution."""
    if not answers or not torch.is_tensor(answers[0]):
        return None
    _, argmax, std = scoring.summary(torch.stack(answers))
    return [(a / 100, s / 100) for a, s in zip(argmax.tolist(), std.tolist())]


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


def prediction_table(videos, scores, answers=None):
    """(header, rows) of the predictions: video_id,mem_score (0-1); where the answers are distributions (--decode
    expected), the expectation keeps 4 decimals and their argmax and standard deviation follow, in 0-1 units too."""
    extra = spread(answers)
    if extra is None:
        return ["video_id", "mem_score"], [[v.video_id, f"{s / 100:.2f}"] for v, s in zip(videos, scores)]
    return ["video_id", "mem_score", "argmax", "std"], [[v.video_id, f"{s / 100:.4f}", f"{a:.2f}", f"{d:.4f}"]
                                                        for v, s, (a, d) in zip(videos, scores, extra)]


def write_predictions(path, videos, scores, answers=None):
    """prediction_table as CSV, written to a temporary file and renamed so a reader never sees half of it."""
    write_table(path, *prediction_table(videos, scores, answers))


def write_table(path, header, rows):
    where = os.path.dirname(os.path.abspath(path))
    os.makedirs(where, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=where, suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
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
        raise InputError(f"{path}: neither a run directory (with adapter/) nor an adapter directory")
    config_path = os.path.join(run, "config.json")
    config = json.load(open(config_path)) if os.path.isfile(config_path) else None
    return adapter, config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # ---
    parser.add_argument("--data", default="data/memento10k", help="dataset root (Memento10k, TRECVid, VideoMem): the "
                        "run's source, or another one")
    parser.add_argument("--videos", help="instead of a split: score every video file in this folder (folder.py)")
    parser.add_argument("--recursive", action="store_true", help="with --videos: also the videos in its subfolders")
    parser.add_argument("--captions", help="with --videos: a video,caption CSV (1-5 rows a video; video: its path "
                        "relative to the folder); videos it does not name get five captions of the base model")
    parser.add_argument("--sheet", help="with --videos: a PNG of the middle frames, ranked, labelled with their scores")
    parser.add_argument("--explain", action="store_true", help="also each frame's and caption's share of the expected "
                        "score, by occlusion (explain.py): explain-NAME.csv beside the predictions; decodes expected")
    parser.add_argument("--report", help="an HTML page of the scored videos (report.py): one self-contained file, "
                        "sortable, with the frames, the captions and, with --explain, their shares")
    parser.add_argument("--adapter", help=f"run directory of train.py, or an adapter directory (default: {DEFAULT_RUN})")
    parser.add_argument("--zero-shot", action="store_true", help="predict with the base model, no adapter")
    parser.add_argument("--model", help="base model (hub id or folder); default: the run's, or " + qwen.DEFAULT_MODEL)
    parser.add_argument("--quant", default=None, choices=["nf4", "none"], help="default: the run's, or nf4")
    parser.add_argument("--decode", default=None, choices=DECODES,
                        help="how a score is read (scoring.py): greedy (the paper's), constrained or expected; "
                             "default: the run's, or greedy")
    parser.add_argument("--split", default="test", choices=data.SPLITS, help="videos to predict")
    parser.add_argument("--target", default=None, choices=data.TARGETS,
                        help="the score predicted and scored: short- or long-term (default: the run's, or short)")
    parser.add_argument("--fold", type=int, default=None, help="predict fold K of trainval (with --split trainval)")
    parser.add_argument("--folds", type=int, default=None, help="number of folds (default: the run's, or 5)")
    parser.add_argument("--seed", type=int, default=None, help="fold seed (default: the run's, or 0)")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: the run's, or 3)")
    parser.add_argument("--input", default=None, choices=["images", "video"],
                        help="the frames as images or as one native video input (default: the run's, or images)")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="pixels a frame keeps at most (default: the run's, or 448 x 448)")
    parser.add_argument("--min-pixels", type=int, default=None,
                        help="pixels a frame keeps at least (default: the run's, or the processor's)")
    parser.add_argument("--batch-size", type=int, default=None, help="prompts a forward pass: videos (default 8); "
                        "with --explain, variants of videos (1 + N frames + 5 captions each; default: 9 with 3 frames)")
    parser.add_argument("--workers", type=int, default=frames.default_workers(), help="processes that make batches ahead")
    parser.add_argument("--labels", help="a video_id,mem_score CSV to score the predictions against")
    parser.add_argument("--cache", default=frames.default_cache(), help="folder of decoded frames")
    parser.add_argument("--out", help="CSV to write (default: RUN/predictions-SPLIT[-foldK].csv; with --videos "
                        "RUN/scores-FOLDER.csv)")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable videos and bad records, listing them "
                        "(always so with --videos)")
    # ---
    args = parser.parse_args(argv)
    if args.adapter and args.zero_shot:
        parser.error("give one of --adapter and --zero-shot")
    if not args.videos and (args.recursive or args.captions or args.sheet):
        parser.error("--recursive, --captions and --sheet go with --videos")
    if args.explain and args.decode not in (None, "expected"):
        parser.error(f"--explain reads the expected score: drop --decode {args.decode}")
    if args.report:
        report.check(args.report)
    if not args.zero_shot and not args.adapter:
        if not os.path.exists(DEFAULT_RUN):
            raise InputError(f"{DEFAULT_RUN}: no trained run yet: train one first (python train.py), "
                                  "or pass --adapter RUN or --zero-shot")
        args.adapter = DEFAULT_RUN

    adapter, run = (None, None) if args.zero_shot else resolve_run(args.adapter)
    run = run or {}
    model_id = args.model or run.get("model") or (qwen.base_model_of(adapter) if adapter else qwen.DEFAULT_MODEL)
    quant = args.quant or run.get("quant", "nf4")
    decode = "expected" if args.explain else args.decode or run.get("decode", "greedy")
    folds, seed = args.folds or run.get("folds", 5), args.seed if args.seed is not None else run.get("seed", 0)
    n_frames = args.frames or run.get("frames", 3)
    video = (args.input or run.get("input", "images")) == "video"
    if video and n_frames < 2:
        raise InputError("--input video needs --frames 2 or more (one frame is an image)")
    max_pixels = args.max_pixels or run.get("max_pixels", frames.DEFAULT_MAX_PIXELS)
    min_pixels = args.min_pixels or run.get("min_pixels")
    fill = round(run["train_mean"]) if "train_mean" in run else PAPER_TRAIN_MEAN
    batch_size = args.batch_size or (explain.default_batch(n_frames) if args.explain else 8)
    target = args.target or run.get("target", "short")
    if args.videos:
        suffix = os.path.basename(os.path.normpath(os.path.abspath(args.videos)))
        default_out = f"scores-{suffix}.csv"
    else:
        source = data.source(args.data)
        other = "source" in run and source != run["source"]  # the run trained on another source than it predicts
        suffix = ((f"{source.lower()}-" if other else "") + args.split
                  + (f"-fold{args.fold}" if args.fold is not None else "") + ("-long" if target == "long" else ""))
        default_out = f"predictions-{suffix}.csv"
        if other:
            print(f"across sources: the run trained on {run['source']} ({run.get('data')}), predicting {source}")
    out = args.out or os.path.join(os.path.dirname(adapter) if adapter else ".", default_out)

    if adapter:
        qwen.check_adapter(adapter, model_id, run.get("model_identity"))
    if args.videos:  # a file that is no readable video is listed and skipped, never fatal
        bad, videos = [], folder.find_videos(args.videos, args.recursive)
        given = folder.read_captions(args.captions, videos) if args.captions else {}
        if not videos:
            raise InputError(f"{args.videos}: no video files ({', '.join(folder.VIDEO_EXTENSIONS)})"
                                  + ("" if args.recursive else "; --recursive looks in its subfolders too"))
    else:
        bad = [] if args.skip_bad else None
        videos = data.heldout(args.data, args.split, args.fold, folds, seed, bad, target)
        note = data.captions_note(videos)
        if note:
            print(note)
    processor = qwen.load_processor(model_id, max_pixels, min_pixels, video)
    cache = frames.FrameCache(args.cache, n_frames, qwen.budget_of(processor))
    videos = cache.fill(videos, bad, timed=video)
    data.report_skipped(bad, os.path.join(os.path.dirname(os.path.abspath(out)), f"skipped-{suffix}.csv"))
    if args.videos:
        print(f"{args.videos}: {len(videos)} readable videos, {len(bad)} skipped")
    if not videos:
        raise InputError(f"{args.videos or args.data}: no usable videos to predict"
                              + ("" if args.videos else f" in split {args.split}"))
    model = qwen.load_model(model_id, quant)
    if adapter:
        model = qwen.load_adapter(model, adapter, model_id, recorded=run.get("model_identity"))
    if args.videos:
        todo = [v for v in videos if v.video_id not in given]
        if todo:
            print(f"captions: {len(todo)} videos captioned by the base model"
                  + (f", {len(videos) - len(todo)} from {args.captions}" if args.captions else ""))
            for v, captions in zip(todo, folder.write_captions(model, processor, todo, cache, video, batch_size)):
                v.captions = captions
        for v in videos:
            v.captions = given.get(v.video_id, v.captions)
    t0 = time.time()
    if args.explain:
        answers, shares = attribute(model, processor, videos, cache, batch_size, args.workers, video=video)
    else:
        answers, shares = generate(model, processor, videos, cache, batch_size, args.workers, video=video,
                                   decode=decode), None
    seconds = time.time() - t0
    print(f"predicted {len(videos)} videos in {seconds:.1f}s ({len(videos) / max(seconds, 1e-9):.1f} videos/s), "
          f"decode {decode}" + (f", explained: {len(explain.rows(videos, n_frames))} scores" if shares else ""))
    scores, invalid = postprocess(answers, fill)
    table = prediction_table(videos, scores, answers)
    if args.videos:
        sources = ["file" if v.video_id in given else "model" for v in videos]
        write_table(out, *folder.ranking(table, videos, sources))
        if args.sheet:
            folder.contact_sheet(args.sheet, videos, scores, cache)
            print(f"wrote {args.sheet}")
    else:
        write_table(out, *table)
    print(f"wrote {len(scores)} predictions of the {target}-term score to {out}")
    print(f"invalid answers: {invalid}/{len(scores)} ({100 * invalid / max(len(scores), 1):.2f}%), replaced by {fill}")
    if shares:
        header, rows = explain.table(table, shares, n_frames)
        path = os.path.join(os.path.dirname(os.path.abspath(out)), f"explain-{suffix}.csv")
        write_table(path, header, folder.ranked(rows) if args.videos else rows)
        print(f"wrote each frame's and caption's share of the score to {path}")

    truth = read_labels(args.labels) if args.labels else {v.video_id: v.score for v in videos if v.score is not None}
    pairs = [(s, truth[v.video_id]) for v, s in zip(videos, scores) if v.video_id in truth]
    measured = describe(metrics(*zip(*pairs))) if pairs else None
    if measured:
        print(measured)
    if args.report:
        about = [f"{len(videos)} videos of {args.videos or args.data + ', split ' + suffix}",
                 f"zero-shot {model_id}" if args.zero_shot else f"adapter {adapter}", f"decode {decode}", measured]
        report.write(args.report, videos, scores, cache, spread(answers), truth, shares,
                     title=f"Memorability: {suffix}", about=" | ".join(filter(None, about)))
        print(f"wrote {args.report}")
    return scores


if __name__ == "__main__":
    cli(main)
