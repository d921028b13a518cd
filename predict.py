"""
Predict memorability scores with a trained adapter (or zero-shot with the base model) and write a CSV.

    python predict.py --data data/memento10k --adapter runs/final --split test          # the submission (§4.4)
    python predict.py --data data/memento10k --adapter runs/fold2 --split trainval --fold 2 --folds 5
    python predict.py --data data/memento10k --zero-shot --split trainval                # the base model (§4.1)
    python predict.py --data data/memento10k --adapter runs/final --split test --decode expected
    python predict.py --data data/videomem --adapter runs/memento-final --split test  # another source's test set
    python predict.py --data data/videomem --adapter runs/trecvid-long --split test   # long-term: the run's target
    python predict.py --videos my-clips --adapter runs/final --sheet my-clips.png     # your own videos, ranked
    python predict.py --data data/memento10k --adapter runs/final --split test --explain --report test.html

The paper's submission model trained on all 8,500 labelled videos: `python train.py --split trainval --out runs/final`.
Without --adapter, predict.py takes the run `python train.py` writes by default (runs/r128-a1024: trained on train,
7,000 videos) and says so.

Every setting a flag leaves unset is the run's (its config.json), and where the run has none (zero-shot), train.py's
default: one source of defaults, train.Config.

--decode (scoring/decode.py; default: the run's, or greedy): greedy, the paper's, decodes until the answer ends
(end-of-turn or end-of-text) or --max-new-tokens are spent, then reads the score as prompt.parse_score says (the
paper's post-processing: a number 0-100 in the answer); an answer without one is invalid and gets the training mean
(counted and reported). --max-new-tokens defaults to 256 zero-shot, where the base model answers in sentences (the
paper read its score in "a paragraph including a numerical result"; 256 tokens hold a paragraph, and decoding stops at
the end of the turn), and with an adapter to the longest valid answer, 3 digits and end-of-turn (4 tokens with Qwen's
tokenizers), all a fine-tuned model says. constrained decodes among the valid answers only; expected reads the
probability of each of the 101 answers (one prefill and one more forward) and scores their expectation.
The CSV has the header video_id,mem_score with scores 0-1 (expected: then argmax,std, also 0-1), the scores of the
run's target (--target): a long-term run's file is named ...-long.csv, one of another source than the run's names that
source (predictions-videomem-test.csv). Beside it: answers-NAME.csv, the raw answers of a text decode (greedy,
constrained; each whole answer, to be read again by any rule), skipped-NAME.csv with --skip-bad. With labels, SRCC is
printed with two 95% CIs: the paper's (Fisher z) and Bonett-Wright's. With --videos, the CSV is the ranking of the
folder's videos with their captions (scoring/videos.py).
--explain (scoring/explain.py) also writes explain-NAME.csv: each frame's and caption's share of the expected score,
what the score loses when that input alone is replaced by the same input of other videos (--stand-ins of them, one at
a time), and its standard deviation over them. --report FILE.html (scoring/report.py) writes the scored videos as one
self-contained page: ranks, scores, frames, captions and shares, sortable.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import data
import frames
import model
import train
from plumbing.errors import InputError, cli
from plumbing.files import write_csv
from plumbing.sources import read_labels
from scoring import decode, explain, metrics, report
from scoring import videos as own_videos

DEFAULT_RUN = train.default_run(model.DEFAULT_R, model.DEFAULT_ALPHA)  # what `python train.py` writes


# -----------------------------------------------------------------------------
# what to predict, with which model, into which files


@dataclasses.dataclass
class Job:
    """A prediction, every setting resolved: the flags, then the run's config.json, then train.Config's defaults."""

    run: train.Config  # the settings the frames, the prompt and the model are read with (the run's, flags applied)
    adapter: str | None  # None: zero-shot
    identity: dict | str | None  # the run's record of its base model (model.identity), to recognise it elsewhere
    videos: list  # the videos to predict (data.Video), chosen by `select`
    bad: list | None  # what --skip-bad left out (always a list with --videos)
    captions: dict  # --videos --captions: {video_id: captions} of the user's file
    fill: int  # the score of an invalid answer: the run's training mean, or the paper's 80 zero-shot
    max_new_tokens: int | None  # greedy's budget (decode.token_budget)
    batch_size: int
    out: str  # the predictions' CSV; the other files are named beside it (sibling)
    name: str  # what the predictions are of: the split (and fold, source, term), or the folder's name


def sibling(job, kind):
    """The file of `kind` (answers, explain, skipped) beside the predictions: KIND-NAME.csv, NAME what they are of
    (the split, or the folder's name); KIND.csv where the job has no name (cv.py --zero-shot's folder of its own)."""
    name = f"{kind}-{job.name}.csv" if job.name else f"{kind}.csv"
    return os.path.join(os.path.dirname(os.path.abspath(job.out)), name)


def resolve_run(path):
    """A run directory or an adapter directory -> (adapter dir, the run's config dict or None)."""
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        adapter, run = path, os.path.dirname(os.path.abspath(path))
    elif os.path.isfile(os.path.join(path, "adapter", "adapter_config.json")):
        adapter, run = os.path.join(path, "adapter"), path
    else:
        raise InputError(f"{path}: neither a run directory (with adapter/) nor an adapter directory")
    config_path = os.path.join(run, "config.json")
    if not os.path.isfile(config_path):
        return adapter, None
    with open(config_path) as f:
        return adapter, json.load(f)


# The flags that override the run's settings, as train.Config names them. Where frames are cached, how many workers
# make batches and whether bad videos are skipped are this command's own, never the run's.
OVERRIDES = ("model", "quant", "decode", "target", "folds", "seed", "frames", "input", "max_pixels", "min_pixels")
OWN = ("cache", "workers", "skip_bad")


def resolve(args):
    """The Job of predict.py's flags: the run's settings (or train.Config's zero-shot), then the flags."""
    if not args.zero_shot and not args.adapter:
        if not os.path.exists(DEFAULT_RUN):
            raise InputError(f"{DEFAULT_RUN}: no trained run yet: train one first (python train.py), "
                             "or pass --adapter RUN or --zero-shot")
        args.adapter = DEFAULT_RUN
        print(f"adapter: {DEFAULT_RUN}, the run `python train.py` writes (trained on train; the paper's submission "
              "model trains on train+val: python train.py --split trainval --out runs/final)")
    adapter, recorded = (None, None) if args.zero_shot else resolve_run(args.adapter)
    recorded = recorded or {}
    names = {f.name for f in dataclasses.fields(train.Config)}
    settings = {k: v for k, v in recorded.items() if k in names and k not in OWN}
    if adapter and "model" not in settings:  # an adapter without its run: the base model its config names
        settings["model"] = model.base_model_of(adapter)
    settings.update({k: getattr(args, k) for k in OVERRIDES + OWN if getattr(args, k) is not None})
    if args.explain:
        settings["decode"] = "expected"
    # train.Config checks them as train.py does (--input video with one frame, a pixel budget below the minimum...);
    # the split and fold are predict.py's own, not the run's
    run = train.Config(**dict(settings, split="trainval", fold=None, out=os.devnull))
    max_new_tokens = decode.token_budget(args.max_new_tokens, run.decode, args.zero_shot)
    fill = round(recorded["train_mean"]) if "train_mean" in recorded else decode.PAPER_TRAIN_MEAN
    if args.videos:
        name = os.path.basename(os.path.normpath(os.path.abspath(args.videos)))
        default_out = f"scores-{name}.csv"
    else:
        source = data.source(args.data)
        other = "source" in recorded and source != recorded["source"]  # trained on another source than it predicts
        name = ((f"{source.lower()}-" if other else "") + args.split
                + (f"-fold{args.fold}" if args.fold is not None else "") + ("-long" if run.target == "long" else ""))
        default_out = f"predictions-{name}.csv"
        if other:
            print(f"across sources: the run trained on {recorded['source']} ({recorded.get('data')}), predicting {source}")
    out = args.out or os.path.join(os.path.dirname(adapter) if adapter else ".", default_out)
    return Job(run=run, adapter=adapter, identity=recorded.get("model_identity"), videos=[], bad=None, captions={},
               fill=fill, max_new_tokens=max_new_tokens, batch_size=args.batch_size, out=out, name=name)


def select(job, args):
    """The videos to predict: a split (or fold K of trainval) of --data, or the video files of --videos."""
    run = job.run
    if args.videos:  # a file that is no readable video is listed and skipped, never fatal
        job.bad, job.videos = [], own_videos.find_videos(args.videos, args.recursive)
        job.captions = own_videos.read_captions(args.captions, job.videos) if args.captions else {}
        if not job.videos:
            raise InputError(f"{args.videos}: no video files ({', '.join(own_videos.VIDEO_EXTENSIONS)})"
                             + ("" if args.recursive else "; --recursive looks in its subfolders too"))
        return
    job.bad = [] if run.skip_bad else None
    job.videos = data.heldout(args.data, args.split, args.fold, run.folds, run.seed, job.bad, run.target)
    note = data.captions_note(job.videos)
    if note:
        print(note)


# -----------------------------------------------------------------------------
# the steps


def prepare(job, where, which=""):
    """The processor and the frame cache, every video's frames decoded into it; a video that does not decode stops
    the run (or is listed under --skip-bad, and with --videos)."""
    run = job.run
    processor = model.load_processor(run.model, run.max_pixels, run.min_pixels, run.input == "video")
    cache = frames.FrameCache(run.cache, run.frames, model.budget_of(processor))
    job.videos = cache.fill(job.videos, job.bad, timed=run.input == "video")
    data.report_skipped(job.bad, sibling(job, "skipped"))
    if not job.videos:
        raise InputError(f"{where}: no usable videos to predict{which}")
    return processor, cache


def load(job):
    """The base model in 4 bits, with the run's adapter on it (after checking it was trained on this model)."""
    net = model.load_model(job.run.model, job.run.quant)
    if job.adapter:
        net = model.load_adapter(net, job.adapter, job.run.model, recorded=job.identity)
    return net


def caption(job, net, processor, cache, given):
    """--videos: every video the user's captions file does not name gets five captions of the base model."""
    todo = [v for v in job.videos if v.video_id not in job.captions]
    if todo:
        print(f"captions: {len(todo)} videos captioned by the base model"
              + (f", {len(job.videos) - len(todo)} from {given}" if given else ""))
        for v, captions in zip(todo, own_videos.write_captions(net, processor, todo, cache, job.run.input == "video",
                                                               job.batch_size or 8)):
            v.captions = captions
    for v in job.videos:
        v.captions = job.captions.get(v.video_id, v.captions)


def answer(job, net, processor, cache, stand_ins=None):
    """The model's answer for every video (decode.generate), and with `stand_ins` (--explain) the shares of its
    inputs (explain.attribute) as well: (answers, shares or None)."""
    run, t0 = job.run, time.time()
    if stand_ins:
        batch_size = job.batch_size or explain.default_batch(job.videos, run.frames, stand_ins)
        answers, shares = explain.attribute(net, processor, job.videos, cache, batch_size, run.workers,
                                            video=run.input == "video", stand_ins=stand_ins)
    else:
        answers, shares = decode.generate(net, processor, job.videos, cache, job.batch_size or 8, run.workers,
                                          video=run.input == "video", decode=run.decode,
                                          max_new_tokens=job.max_new_tokens), None
    seconds = time.time() - t0
    n = len(job.videos)
    print(f"predicted {n} videos in {seconds:.1f}s ({n / max(seconds, 1e-9):.1f} videos/s), decode {run.decode}"
          + (f", at most {job.max_new_tokens} new tokens" if job.max_new_tokens else "")
          + (f", explained: {len(explain.rows(job.videos, run.frames, stand_ins))} scores" if shares else ""))
    return answers, shares


def write(job, scores, invalid, answers, shares, ranked):
    """The predictions (ranked, with where the captions came from, for --videos), the raw answers of a text decode,
    and the shares of --explain, each as CSV beside the others."""
    table = decode.prediction_table(job.videos, scores, answers)
    if ranked:
        origin = ["file" if v.video_id in job.captions else "model" for v in job.videos]
        write_csv(job.out, *own_videos.ranking(table, job.videos, origin))
    else:
        write_csv(job.out, *table)
    print(f"wrote {len(scores)} predictions of the {job.run.target}-term score to {job.out}")
    if job.run.decode != "expected":  # a distribution has no text: its predictions hold the whole answer
        decode.write_answers(sibling(job, "answers"), job.videos, answers)
        print(f"wrote the raw answers to {sibling(job, 'answers')}")
    print(decode.describe_invalid(invalid, len(scores), job.fill))
    if shares:
        header, rows = explain.table(table, shares, job.run.frames)
        write_csv(sibling(job, "explain"), header, own_videos.ranked(rows) if ranked else rows)
        print(f"wrote each frame's and caption's share of the score to {sibling(job, 'explain')}")


def measure(job, scores, labels=None, where=None):
    """SRCC and the rest against the truth: the split's own scores, or a labels file (`where`) whose ids must name
    the predicted videos. (metrics or None, pairs' truth, the line that says which videos lack a label or None)."""
    truth = labels if labels is not None else {v.video_id: v.score for v in job.videos if v.score is not None}
    mismatch = metrics.label_mismatch([v.video_id for v in job.videos], labels, where) if labels is not None else None
    pairs = [(s, truth[v.video_id]) for v, s in zip(job.videos, scores) if v.video_id in truth]
    if mismatch and pairs:
        print(f"warning: {mismatch}; scoring those {len(pairs)}", file=sys.stderr)
    m = metrics.metrics(*zip(*pairs)) if pairs else None
    if m:
        print(metrics.describe(m))
    return m, truth, mismatch if not pairs else None


def run(args, name=None):
    """predict.py's steps, each a function above; cv.py --zero-shot runs them too, with `name` "" (its files are
    predictions.csv, answers.csv, ... in a folder of their own). Returns the Job, the scores, the count of invalid
    answers and the metrics (None without labels)."""
    if args.report:
        report.check(args.report)
    labels = read_labels(args.labels) if args.labels else None  # a malformed file stops the run before any work
    job = resolve(args)
    job.name = job.name if name is None else name
    if job.adapter:
        model.check_adapter(job.adapter, job.run.model, job.identity)
    select(job, args)
    processor, cache = prepare(job, args.videos or args.data, "" if args.videos else f" in split {args.split}")
    if args.videos:
        print(f"{args.videos}: {len(job.videos)} readable videos, {len(job.bad)} skipped")
    if args.explain and len(job.videos) < 2:
        raise InputError(f"{args.videos or args.data}: --explain needs two videos or more (other videos stand in for "
                         f"a video's frames and captions); one here: {job.videos[0].video_id}")
    net = load(job)
    if args.videos:
        caption(job, net, processor, cache, args.captions)
    answers, shares = answer(job, net, processor, cache, args.stand_ins if args.explain else None)
    scores, invalid = decode.postprocess(answers, job.fill)
    write(job, scores, invalid, answers, shares, ranked=bool(args.videos))
    if args.videos and args.sheet:
        own_videos.contact_sheet(args.sheet, job.videos, scores, cache)
    m, truth, unmatched = measure(job, scores, labels, args.labels)
    if args.report:
        about = [f"{len(job.videos)} videos of {args.videos or args.data + ', split ' + job.name}",
                 f"adapter {job.adapter}" if job.adapter else f"zero-shot {job.run.model}", f"decode {job.run.decode}",
                 metrics.describe(m) if m else None]
        report.write(args.report, job.videos, scores, cache, decode.spread(answers), truth, shares,
                     title=f"Memorability: {job.name}", about=" | ".join(filter(None, about)))
        print(f"wrote {args.report}")
    if unmatched:  # after every file is written: the predictions stand, only the scoring failed
        raise InputError(unmatched)
    return job, scores, invalid, m


def main(argv=None):
    return run(parse_args(argv))[1]


def parse_args(argv=None):
    d = train.Config()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # ---
    parser.add_argument("--data", default=d.data, help="dataset root (Memento10k, TRECVid, VideoMem): the run's source, "
                        "or another one (default: %(default)s)")
    parser.add_argument("--split", default="test", choices=data.SPLITS, help="videos to predict (default: %(default)s)")
    parser.add_argument("--fold", type=int, default=None, help="predict fold K of trainval (with --split trainval)")
    parser.add_argument("--videos", help="instead of a split: score every video file in this folder (scoring/videos.py)")
    parser.add_argument("--recursive", action="store_true", help="with --videos: also the videos in its subfolders")
    parser.add_argument("--captions", help="with --videos: a video,caption CSV (a row a caption, as many as a video "
                        "has; video: its path relative to the folder); videos it does not name get five captions of "
                        "the base model")
    parser.add_argument("--sheet", help="with --videos: a PNG of the middle frames, ranked, labelled with their scores")
    parser.add_argument("--adapter", help=f"run directory of train.py, or an adapter directory (default: {DEFAULT_RUN}, "
                        "what `python train.py` writes)")
    parser.add_argument("--zero-shot", action="store_true", help="predict with the base model, no adapter")
    parser.add_argument("--model", help=f"base model, hub id or folder (default: the run's, or {d.model}, the paper's)")
    parser.add_argument("--quant", default=None, choices=["nf4", "none"], help=f"default: the run's, or {d.quant}")
    parser.add_argument("--decode", default=None, choices=decode.DECODES, help="how a score is read (scoring/decode.py): "
                        f"greedy (the paper's), constrained or expected (default: the run's, or {d.decode})")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help=f"greedy decoding's budget of new tokens; it stops where the answer ends (default: "
                             f"{decode.ZERO_SHOT_TOKENS} zero-shot, where the base model answers in sentences; with an "
                             "adapter, the longest valid answer: 4 tokens, 3 digits and end-of-turn)")
    parser.add_argument("--target", default=None, choices=data.TARGETS, help="the score predicted and scored: short- "
                        f"or long-term (default: the run's, or {d.target})")
    parser.add_argument("--folds", type=int, default=None, help=f"number of folds (default: the run's, or {d.folds})")
    parser.add_argument("--seed", type=int, default=None, help=f"fold seed (default: the run's, or {d.seed})")
    parser.add_argument("--frames", type=int, default=None, help=f"frames a video (default: the run's, or {d.frames})")
    parser.add_argument("--input", default=None, choices=["images", "video"], help="the frames as images or as one "
                        f"native video input (default: the run's, or {d.input})")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help=f"pixels a frame keeps at most (default: the run's, or {d.max_pixels:,}: 448 x 448)")
    parser.add_argument("--min-pixels", type=int, default=None,
                        help="pixels a frame keeps at least (default: the run's, or the processor's)")
    parser.add_argument("--batch-size", type=int, default=None, help="prompts a forward pass: videos (default 8); with "
                        "--explain, variants of videos (1 + stand-ins x (N frames + C captions) each; default: those "
                        "of the video with the most captions, 33 with 3 frames, 5 captions, 4 stand-ins)")
    parser.add_argument("--explain", action="store_true", help="also each frame's and caption's share of the expected "
                        "score, each replaced by other videos' in turn (scoring/explain.py): explain-NAME.csv beside "
                        "the predictions; decodes expected")
    parser.add_argument("--stand-ins", type=int, default=explain.STAND_INS, help="with --explain: how many other "
                        "videos (the next ones in order, wrapping) stand in, one at a time, for an input taken away; a "
                        "share is the mean over them, its _std their spread (default: %(default)s)")
    parser.add_argument("--report", help="an HTML page of the scored videos (scoring/report.py): one self-contained "
                        "file, sortable, with the frames, the captions and, with --explain, their shares")
    parser.add_argument("--labels", help="a video_id,mem_score CSV to score the predictions against")
    parser.add_argument("--out", help="CSV to write (default: RUN/predictions-SPLIT[-foldK].csv; with --videos "
                        "RUN/scores-FOLDER.csv)")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"processes that make batches ahead (default: {d.workers})")
    parser.add_argument("--cache", default=None, help=f"folder of decoded frames (default: {d.cache})")
    parser.add_argument("--skip-bad", action="store_true", default=None, help="skip unreadable videos and bad records, "
                        "listing them (always so with --videos)")
    # ---
    args = parser.parse_args(argv)
    if args.adapter and args.zero_shot:
        parser.error("give one of --adapter and --zero-shot")
    if not args.videos and (args.recursive or args.captions or args.sheet):
        parser.error("--recursive, --captions and --sheet go with --videos")
    if args.explain and args.decode not in (None, "expected"):
        parser.error(f"--explain reads the expected score: drop --decode {args.decode}")
    if args.stand_ins < 1:
        parser.error("--stand-ins takes 1 or more")
    return args


if __name__ == "__main__":
    cli(main)
