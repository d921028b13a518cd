"""
Memento10k: videos, their five captions and memorability scores, from either public release, and its folds.

    python data.py --data data/memento10k --split trainval   # parse a split and check every record
    python data.py --data data/memento10k --model Qwen/Qwen2.5-VL-7B-Instruct   # ... and cache its frames ahead

Layouts, detected from the files under the root (--data):
  authors' JSON:  memento_{train,val,test}_data.json + videos/<filename>
  MediaEval 2021: {training,dev,test}_set/{train,dev,test}_scores.csv, *_text_descriptions.csv, Videos/{id:05d}.mp4
Per video the method uses its frames (frames.py), the five captions, and the score 0-1 as an integer label 0-100.
A bad record stops the run with one line, or under --skip-bad is listed and left out (report_skipped).
"""

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass

import numpy as np

import frames
import model as qwen
from errors import InputError, cli, problem


@dataclass
class Video:
    video_id: str
    path: str  # the video file
    captions: list  # five strings
    score: float | None  # memorability 0-1; None where labels are withheld (the test split)

    @property
    def label(self):
        return round(100 * self.score)


SPLITS = ("train", "val", "test", "trainval")
JSON_FILES = {"train": "memento_train_data.json", "val": "memento_val_data.json", "test": "memento_test_data.json"}
CSV_DIRS = {"train": ("training_set", "train"), "val": ("dev_set", "dev"), "test": ("test_set", "test")}


# -----------------------------------------------------------------------------
# reading the two releases


def layout(root):
    if not os.path.isdir(root):
        raise InputError(f"{root}: no such folder: put Memento10k there (either release) or pass --data")
    if os.path.isfile(os.path.join(root, JSON_FILES["train"])):
        return "json"
    if os.path.isfile(os.path.join(root, "training_set", "train_scores.csv")):
        return "csv"
    raise InputError(f"{root}: not a Memento10k root: expected {JSON_FILES['train']} (authors' release) "
                     "or training_set/train_scores.csv (MediaEval 2021 release)")


def load_split(root, split, bad=None):
    """
    The videos of `split` (train, val, test, or trainval = train + val, the 8,500 labelled videos).
    A bad record raises InputError naming it; with a list as `bad`, it is skipped and described there instead.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    if split == "trainval":
        return sum(train_val(root, bad), [])
    read = _read_json if layout(root) == "json" else _read_csv
    return read(root, split, bad)


def train_val(root, bad=None):
    """(train, val), with a video id that stands in both reported as a duplicate and kept in train only."""
    train, val = load_split(root, "train", bad), load_split(root, "val", bad)
    kept = {id(v) for v in _drop_duplicates(train + val, f"{root}: train and val", bad)}
    return train, [v for v in val if id(v) in kept]


def _read_text(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: missing")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line}: not valid UTF-8")


def _read_json(root, split, bad):
    path = os.path.join(root, JSON_FILES[split])
    try:
        records = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {e.lineno}: malformed JSON ({e.msg})")
    if not isinstance(records, list):
        raise InputError(f"{path}: expected a JSON list of records")
    videos = []
    for i, r in enumerate(records):
        filename = r.get("filename") if isinstance(r, dict) else None
        if not isinstance(filename, str) or not filename:
            problem(bad, f"{path}: record {i}", "no filename")
            continue
        video = Video(os.path.splitext(filename)[0], os.path.join(root, "videos", filename), r.get("captions"),
                      r.get("mem_score"))
        if _valid(video, f"{path}: record {i} ({video.video_id})", split != "test", bad):
            videos.append(video)
    return _nonempty(_drop_duplicates(videos, path, bad), path, len(records))


def _read_csv(root, split, bad):
    folder, prefix = CSV_DIRS[split]
    base = os.path.join(root, folder)
    captions_path = os.path.join(base, f"{prefix}_text_descriptions.csv")
    captions = _read_captions(captions_path)
    scores_path = os.path.join(base, f"{prefix}_scores.csv")
    scores = []
    if os.path.isfile(scores_path):
        rows = _rows(scores_path, ["video_id", "scores_normalized_short_term"])
        scores = [(row["video_id"].strip(), row["scores_normalized_short_term"].strip()) for row in rows]
    elif split != "test":
        raise InputError(f"{scores_path}: missing")
    if split == "test":
        # The test videos are the ones the descriptions list. Their labels are withheld: the scores file may be
        # missing or hold only its header, and where it has a video's score, that score is kept.
        known = dict(scores)
        scores, scores_path = [(video_id, known.get(video_id, "")) for video_id in captions], captions_path
    videos = []
    for video_id, score in scores:
        where = f"{scores_path}: video {video_id}"
        try:
            score = float(score) if score else None
            path = _video_file(os.path.join(base, "Videos"), f"{int(video_id):05d}")
        except ValueError:
            problem(bad, where, f"not a number: {score if isinstance(score, str) else video_id!r}", video_id)
            continue
        video = Video(video_id, path, captions.get(video_id, []), score)
        if _valid(video, where, split != "test", bad):
            videos.append(video)
    return _nonempty(_drop_duplicates(videos, scores_path, bad), scores_path, len(scores))


def _nonempty(videos, path, n_records):
    """A split with no usable video is an error, never an empty result: it would train on nothing or write an empty
    submission."""
    if not videos:
        what = "holds no videos" if not n_records else f"none of its {n_records} videos is usable (see the warnings)"
        raise InputError(f"{path}: {what}")
    return videos


def _video_file(folder, stem):
    """folder/stem.mp4, or the same stem in another container (.webm, .avi, .mkv...) when that is what exists."""
    path = os.path.join(folder, stem + ".mp4")
    if not os.path.exists(path) and os.path.isdir(folder):
        others = sorted(f for f in os.listdir(folder) if os.path.splitext(f)[0] == stem)
        if others:
            return os.path.join(folder, others[0])
    return path


def _valid(video, where, labelled, bad):
    """Check one record; report what is wrong with it (see errors.problem) and say whether it is usable."""
    c, score = video.captions, video.score
    if not isinstance(c, list) or len(c) != 5 or not all(isinstance(x, str) for x in c):
        n = len(c) if isinstance(c, list) else 0
        problem(bad, where, f"expected 5 captions, found {n}", video.video_id)
    elif not all(x.strip() for x in c):
        problem(bad, where, f"caption {[x.strip() for x in c].index('')} is empty", video.video_id)
    elif labelled and score is None:
        problem(bad, where, "no score (mem_score) in a labelled split", video.video_id)
    elif score is not None and (not isinstance(score, (int, float)) or not 0 <= score <= 1):  # NaN fails too
        problem(bad, where, f"score {score!r} is outside [0, 1]", video.video_id)
    elif not os.path.isfile(video.path):
        problem(bad, where, f"missing video file {video.path}", video.video_id)
    else:
        return True
    return False


def _drop_duplicates(videos, where, bad):
    seen, kept = set(), []
    for v in videos:
        if v.video_id in seen:
            problem(bad, where, f"duplicate video id {v.video_id}", v.video_id)
        else:
            seen.add(v.video_id)
            kept.append(v)
    return kept


def _rows(path, required):
    """The rows of a CSV file as dicts; a missing column or a row with the wrong number of fields is an error."""
    reader = csv.DictReader(_read_text(path).splitlines())
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{path}: line 1: missing column(s) {', '.join(missing)}")
    rows = []
    for row in reader:
        if None in row or None in row.values():
            raise InputError(f"{path}: line {reader.line_num}: expected {len(reader.fieldnames)} fields")
        rows.append(row)
    return rows


def _read_captions(path):
    """Either one row per video (video_id, description_0..4) or one row per caption (video_id, description)."""
    captions = {}
    for row in _rows(path, ["video_id"]):
        video_id = row["video_id"].strip()
        if "description" in row:
            captions.setdefault(video_id, []).append(row["description"])
        else:
            captions[video_id] = [row[k] for k in sorted(row) if k.startswith("description_")]
    return captions


# -----------------------------------------------------------------------------
# splits and folds


def make_folds(video_ids, folds, seed):
    """Partition the ids into `folds` disjoint folds; a function of the id set, the count and the seed only."""
    ids = sorted(video_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    return [sorted(ids[i] for i in part) for part in np.array_split(order, folds)]


def fold_split(videos, fold, folds, seed):
    """(the other folds, fold `fold`) of `videos`."""
    if not 0 <= fold < folds:
        raise InputError(f"fold {fold} is outside 0..{folds - 1}")
    held = set(make_folds([v.video_id for v in videos], folds, seed)[fold])
    return [v for v in videos if v.video_id not in held], [v for v in videos if v.video_id in held]


def train_heldout(root, split, fold=None, folds=5, seed=0, bad=None):
    """What to train on and what to evaluate on: train -> val; trainval -> none; trainval + fold K -> fold K."""
    if split == "train":
        return train_val(root, bad)
    if split != "trainval":
        raise InputError(f"cannot train on split {split!r}: expected train or trainval")
    videos = load_split(root, "trainval", bad)
    return (videos, []) if fold is None else fold_split(videos, fold, folds, seed)


def heldout(root, split, fold=None, folds=5, seed=0, bad=None):
    """The videos to predict: a split, or fold K of trainval."""
    videos = load_split(root, split, bad)
    if fold is None:
        return videos
    if split != "trainval":
        raise InputError(f"--fold needs --split trainval, not {split!r}")
    return fold_split(videos, fold, folds, seed)[1]


# -----------------------------------------------------------------------------
# what --skip-bad left out


def report_skipped(bad, path):
    """With --skip-bad: warn, count, and list what was left out in a CSV (video_id, where, problem)."""
    if not bad:
        return
    for b in bad:
        print(f"warning: skipped {b['where']}: {b['problem']}", file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, ["video_id", "where", "problem"])
        w.writeheader()
        w.writerows(bad)
    print(f"skipped {len(bad)} bad videos or records; listed in {path}", file=sys.stderr)


# -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="Memento10k root to parse and decode")
    parser.add_argument("--split", default="trainval", choices=SPLITS, help="split to parse")
    parser.add_argument("--model", help="cache the frames for this model's processor (hub id or folder) at --max-pixels")
    parser.add_argument("--max-pixels", type=int, default=frames.DEFAULT_MAX_PIXELS, help="pixels a frame keeps, at most")
    parser.add_argument("--min-pixels", type=int, help="pixels a frame keeps, at least (default: the processor's)")
    parser.add_argument("--frames", type=int, default=3, help="frames per video")
    parser.add_argument("--cache", default=frames.default_cache(), help="folder of decoded frames")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes")
    args = parser.parse_args(argv)
    videos = load_split(args.data, args.split)
    if args.model:
        budget = qwen.budget_of(qwen.load_processor(args.model, args.max_pixels, args.min_pixels))
        frames.FrameCache(args.cache, args.frames, budget).fill(videos, workers=args.workers)
    labelled = [v.score for v in videos if v.score is not None]
    print(f"{args.split}: {len(videos)} videos, {len(labelled)} labelled"
          + (f", mean score {np.mean(labelled):.3f}" if labelled else ""))


if __name__ == "__main__":
    cli(main)
