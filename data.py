"""
The splits and folds of a memorability dataset, read from disk by sources.py (Memento10k in either release, MediaEval
2021's TRECVid set, VideoMem), with the score of the run's target, and the frame cache filled ahead.

    python data.py --data data/memento10k --split trainval   # parse a split and check every record
    python data.py --data data/videomem --split trainval --target long   # ... with its long-term scores
    python data.py --data data/memento10k --model Qwen/Qwen2.5-VL-7B-Instruct   # ... and cache its frames ahead

The layout is detected from the files under the root (sources.layout). Per video the method uses its frames
(frames.py), its captions (five on Memento10k), and the score 0-1 as an integer label 0-100. A bad record stops the run
with one line, or under --skip-bad is listed and left out (report_skipped).
"""

import argparse
import os
import sys

import numpy as np

import frames
import model
from plumbing import sources
from plumbing.errors import Help, InputError, cli
from plumbing.files import write_csv
from plumbing.sources import JSON_FILES, Video  # noqa: F401  (data.Video, data.JSON_FILES: where scripts and tests find them)

SPLITS = ("train", "val", "test", "trainval")
TARGETS = ("short", "long")  # short-term memorability (every source), long-term (TRECVid, VideoMem)


# -----------------------------------------------------------------------------
# reading a split


def load_split(root, split, bad=None, target="short"):
    """
    The videos of `split` (train, val, test, or trainval: every labelled video, train + val where a source has both),
    each with its `target` score. A bad record raises InputError naming it; with a list as `bad`, it is skipped and
    described there instead.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    if target not in TARGETS:
        raise InputError(f"unknown target {target!r}: expected one of {', '.join(TARGETS)}")
    kind = sources.layout(root)
    if split == "trainval" and split not in sources.splits_of(kind):
        return sum(train_val(root, bad, target), [])
    return sources.read(root, kind, split, bad, target)


def train_val(root, bad=None, target="short"):
    """(train, val), with a video id that stands in both reported as a duplicate and kept in train only."""
    train, val = load_split(root, "train", bad, target), load_split(root, "val", bad, target)
    kept = {id(v) for v in sources.drop_duplicates(train + val, f"{root}: train and val", bad)}
    return train, [v for v in val if id(v) in kept]


def source(root):
    """The name of the source under `root`: Memento10k, TRECVid or VideoMem."""
    return sources.SOURCES[sources.layout(root)]


def captions_note(videos):
    """One line on the captions a video has where they are not Listing 1's five; None where every video has five."""
    counts = [len(v.captions) for v in videos]
    if not counts or set(counts) == {5}:
        return None
    low, high = min(counts), max(counts)
    span = f"{low}" if low == high else f"{low} to {high} (mean {np.mean(counts):.1f})"
    return f"captions a video: {span}, not Listing 1's five: the prompt lists those each video has, one a line"


# -----------------------------------------------------------------------------
# splits and folds


def make_folds(video_ids, folds, seed):
    """Partition the ids into `folds` disjoint folds; a function of the id set, the count and the seed only."""
    ids = sorted(video_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    return [sorted(ids[i] for i in part) for part in np.array_split(order, folds)]


def trainval_folds(root, folds, seed, bad=None, target="short"):
    """
    trainval's usable videos, and its folds (lists of ids) drawn from its full labelled list: the records --skip-bad
    leaves out (listed in `bad`) keep their places, so a dropped record leaves a gap in its fold and no other video
    moves. A video that later does not decode (frames.FrameCache.fill) was drawn like any other. Only a record without
    an id cannot keep a place.
    """
    skipped = None if bad is None else []
    videos = load_split(root, "trainval", skipped, target)
    if bad is not None:
        bad.extend(skipped)
    ids = {v.video_id for v in videos} | {b["video_id"] for b in skipped or [] if b["video_id"]}
    return videos, make_folds(ids, folds, seed)


def fold_split(videos, fold, assignment):
    """(the other folds, fold `fold`) of `videos`, by the folds of `trainval_folds`."""
    if not 0 <= fold < len(assignment):
        raise InputError(f"fold {fold} is outside 0..{len(assignment) - 1}")
    held = set(assignment[fold])
    return [v for v in videos if v.video_id not in held], [v for v in videos if v.video_id in held]


def train_heldout(root, split, fold=None, folds=5, seed=0, bad=None, target="short", other=None):
    """What to train on and what to evaluate on, and the folds they come from (None unless `fold`): train -> val;
    trainval -> none; trainval + fold K -> fold K. With `other`, another source's root: train or trainval -> that
    source's labelled videos (its trainval), all of them."""
    if split not in ("train", "trainval"):
        raise InputError(f"cannot train on split {split!r}: expected train or trainval")
    if other is not None:
        return load_split(root, split, bad, target), load_split(other, "trainval", bad, target), None
    if split == "train":
        return *train_val(root, bad, target), None
    if fold is None:
        return load_split(root, "trainval", bad, target), [], None
    videos, assignment = trainval_folds(root, folds, seed, bad, target)
    return *fold_split(videos, fold, assignment), assignment


def heldout(root, split, fold=None, folds=5, seed=0, bad=None, target="short"):
    """The videos to predict: a split, or fold K of trainval (the fold train.py held out: the same folds)."""
    if fold is None:
        return load_split(root, split, bad, target)
    if split != "trainval":
        raise InputError(f"--fold needs --split trainval, not {split!r}")
    videos, assignment = trainval_folds(root, folds, seed, bad, target)
    return fold_split(videos, fold, assignment)[1]


def split_record(assignment, fold, seed, used):
    """folds.json: the folds as the run used them, every id in the fold it was drawn in, the training folds and the
    held-out one holding exactly the videos trained on and held out (`used`: their ids), and the ids drawn but left
    out (--skip-bad: a bad record, a video that does not decode) with their fold."""
    used = set(used)
    return dict(seed=seed, fold=fold, folds=[[i for i in ids if i in used] for ids in assignment],
                dropped={i: k for k, ids in enumerate(assignment) for i in ids if i not in used})


# -----------------------------------------------------------------------------
# what --skip-bad left out


def report_skipped(bad, path):
    """With --skip-bad: warn, count, and list what was left out in a CSV (video_id, where, problem)."""
    if not bad:
        return
    for b in bad:
        print(f"warning: skipped {b['where']}: {b['problem']}", file=sys.stderr)
    columns = ["video_id", "where", "problem"]
    write_csv(path, columns, [[b[c] for c in columns] for b in bad])
    print(f"skipped {len(bad)} bad videos or records; listed in {path}", file=sys.stderr)


# -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=Help)
    parser.add_argument("--data", required=True, help="dataset root to parse and decode (Memento10k, TRECVid, VideoMem)")
    parser.add_argument("--split", default="trainval", choices=SPLITS, help="split to parse")
    parser.add_argument("--target", default="short", choices=TARGETS, help="the score read: short- or long-term")
    parser.add_argument("--model", help="cache the frames for this model's processor (hub id or folder) at --max-pixels")
    parser.add_argument("--max-pixels", type=int, default=frames.DEFAULT_MAX_PIXELS, help="pixels a frame keeps, at most")
    parser.add_argument("--min-pixels", type=int, help="pixels a frame keeps, at least (default: the processor's)")
    parser.add_argument("--frames", type=int, default=3, help="frames per video")
    parser.add_argument("--cache", default=frames.default_cache(), help="folder of decoded frames")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes")
    args = parser.parse_args(argv)
    videos = load_split(args.data, args.split, target=args.target)
    note = captions_note(videos)
    if note:
        print(note)
    if args.model:
        budget = model.budget_of(model.load_processor(args.model, args.max_pixels, args.min_pixels))
        frames.FrameCache(args.cache, args.frames, budget).fill(videos, workers=args.workers)
    labelled = [v.score for v in videos if v.score is not None]
    print(f"{args.split}: {len(videos)} videos, {len(labelled)} labelled"
          + (f", mean {'long-term ' if args.target == 'long' else ''}score {np.mean(labelled):.3f}" if labelled else ""))


if __name__ == "__main__":
    cli(main)
