"""
Memento10k: videos, their five captions and memorability scores, from either public release.

    python data.py --make-synthetic runs/synth --n 200       # a synthetic dataset in the authors' JSON layout
    python data.py --make-synthetic runs/synth-csv --n 200 --layout csv   # ... in the MediaEval 2021 layout
    python data.py --data runs/synth --split trainval        # parse a dataset, decode and cache its frames

Layouts, detected from the files under the root (--data):
  authors' JSON:  memento_{train,val,test}_data.json + videos/<filename>
  MediaEval 2021: {training,dev,test}_set/{train,dev,test}_scores.csv, *_text_descriptions.csv, Videos/{id:05d}.mp4
Per video the method uses N evenly spaced frames (N=3: first, middle, last), the five captions, and the score
0-1 as an integer label 0-100. Frames are decoded once and cached on disk.
"""

import argparse
import csv
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm


class InputError(Exception):
    """Bad user input. The message is one line that names the file or record and what is wrong with it."""


def cli(main):
    """How every script here ends: bad input is one line on stderr and exit code 2, never a traceback;
    Ctrl-C and running out of GPU memory say what to do next."""
    try:
        main()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue (train.py: with --resume)", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        if type(e).__name__ != "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
            raise
        print("error: out of GPU memory: lower --batch-size (raise --grad-accum to keep the effective batch), "
              "--frames or --r, and keep gradient checkpointing on; then rerun (train.py: with --resume)",
              file=sys.stderr)
        sys.exit(3)


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


def _problem(bad, where, message, video_id=""):
    if bad is None:
        raise InputError(f"{where}: {message}")
    bad.append(dict(video_id=video_id, where=where, problem=message))


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
            _problem(bad, f"{path}: record {i}", "no filename")
            continue
        video = Video(os.path.splitext(filename)[0], os.path.join(root, "videos", filename), r.get("captions"),
                      r.get("mem_score"))
        if _valid(video, f"{path}: record {i} ({video.video_id})", split != "test", bad):
            videos.append(video)
    return _drop_duplicates(videos, path, bad)


def _read_csv(root, split, bad):
    folder, prefix = CSV_DIRS[split]
    base = os.path.join(root, folder)
    captions = _read_captions(os.path.join(base, f"{prefix}_text_descriptions.csv"))
    scores_path = os.path.join(base, f"{prefix}_scores.csv")
    if os.path.isfile(scores_path):
        rows = _rows(scores_path, ["video_id", "scores_normalized_short_term"])
        scores = [(row["video_id"].strip(), row["scores_normalized_short_term"].strip()) for row in rows]
    elif split == "test":
        scores = [(video_id, "") for video_id in captions]
        scores_path = os.path.join(base, f"{prefix}_text_descriptions.csv")  # the record of a test video
    else:
        raise InputError(f"{scores_path}: missing")
    videos = []
    for video_id, score in scores:
        where = f"{scores_path}: video {video_id}"
        try:
            score = float(score) if score else None
            path = _video_file(os.path.join(base, "Videos"), f"{int(video_id):05d}")
        except ValueError:
            _problem(bad, where, f"not a number: {score if isinstance(score, str) else video_id!r}", video_id)
            continue
        video = Video(video_id, path, captions.get(video_id, []), score)
        if _valid(video, where, split != "test", bad):
            videos.append(video)
    return _drop_duplicates(videos, scores_path, bad)


def _video_file(folder, stem):
    """folder/stem.mp4, or the same stem in another container (.webm, .avi, .mkv...) when that is what exists."""
    path = os.path.join(folder, stem + ".mp4")
    if not os.path.exists(path) and os.path.isdir(folder):
        others = sorted(f for f in os.listdir(folder) if os.path.splitext(f)[0] == stem)
        if others:
            return os.path.join(folder, others[0])
    return path


def _valid(video, where, labelled, bad):
    """Check one record; report what is wrong with it (see _problem) and say whether it is usable."""
    c, score = video.captions, video.score
    if not isinstance(c, list) or len(c) != 5 or not all(isinstance(x, str) for x in c):
        n = len(c) if isinstance(c, list) else 0
        _problem(bad, where, f"expected 5 captions, found {n}", video.video_id)
    elif not all(x.strip() for x in c):
        _problem(bad, where, f"caption {[x.strip() for x in c].index('')} is empty", video.video_id)
    elif labelled and score is None:
        _problem(bad, where, "no score (mem_score) in a labelled split", video.video_id)
    elif score is not None and (not isinstance(score, (int, float)) or not 0 <= score <= 1):  # NaN fails too
        _problem(bad, where, f"score {score!r} is outside [0, 1]", video.video_id)
    elif not os.path.isfile(video.path):
        _problem(bad, where, f"missing video file {video.path}", video.video_id)
    else:
        return True
    return False


def _drop_duplicates(videos, where, bad):
    seen, kept = set(), []
    for v in videos:
        if v.video_id in seen:
            _problem(bad, where, f"duplicate video id {v.video_id}", v.video_id)
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
# frames


def frame_indices(total, n):
    """N evenly spaced frame indices from first to last; N=3 gives first, middle, last."""
    if n == 1:
        return [(total - 1) // 2]
    return [round(i * (total - 1) / (n - 1)) for i in range(n)]


def read_frames(path, n):
    """The N frames of `frame_indices` as an (N, H, W, 3) uint8 array, decoded with PyAV."""
    import av

    try:
        with av.open(path) as container:
            total = container.streams.video[0].frames  # from the container's index; 0 when it has none
        if total <= 0:
            with av.open(path) as container:
                total = sum(1 for _ in container.decode(video=0))
        wanted = frame_indices(total, n)
        frames = {}
        # Decoding forward from the start is exact for every codec and cheap for clips of a few seconds;
        # keyframe seeks are not exact.
        with av.open(path) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    frames[i] = frame.to_ndarray(format="rgb24")
                if i >= wanted[-1]:
                    break
    except FileNotFoundError:
        raise InputError(f"{path}: missing video file")
    except (av.FFmpegError, OSError, IndexError, ValueError) as e:
        raise InputError(f"{path}: cannot decode video ({getattr(e, 'strerror', None) or e})")
    if len(frames) < len(set(wanted)):
        if total > 0 and not frames:
            raise InputError(f"{path}: no decodable frames")
        # The container claimed more frames than it holds: count them and pick again.
        return _read_all_and_pick(path, n)
    return np.stack([frames[i] for i in wanted])


def _read_all_and_pick(path, n):
    import av

    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise InputError(f"{path}: no decodable frames")
    return np.stack([frames[i] for i in frame_indices(len(frames), n)])


class FrameCache:
    """Frames decoded once, kept as .npy files keyed by the video file's path, size, mtime and the frame count."""

    def __init__(self, folder, n_frames=3):
        self.folder, self.n_frames = folder, n_frames
        os.makedirs(folder, exist_ok=True)

    def path(self, video):
        try:
            st = os.stat(video.path)
        except FileNotFoundError:
            raise InputError(f"{video.path}: missing video file (video {video.video_id})")
        key = f"{os.path.abspath(video.path)}|{st.st_size}|{st.st_mtime_ns}|frames={self.n_frames}"
        return os.path.join(self.folder, hashlib.sha1(key.encode()).hexdigest() + ".npy")

    def get(self, video):
        path = self.path(video)
        if os.path.exists(path):
            return np.load(path, allow_pickle=False)
        frames = read_frames(video.path, self.n_frames)
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, frames, allow_pickle=False)
        os.replace(tmp, path)  # atomic: a killed run never leaves half a file under the real name
        return frames

    def fill(self, videos, bad=None):
        """Decode every video not cached yet, with a progress bar; later passes only read the cache.
        Returns the videos that decoded; one that does not raises InputError, or with a list as `bad` is
        described there and left out."""
        missing = [v for v in videos if not os.path.exists(self.path(v))]
        failed = set()
        for v in tqdm(missing, desc="decoding frames", unit="video", disable=not missing):
            try:
                self.get(v)
            except InputError as e:
                if bad is None:
                    raise
                _problem(bad, v.path, str(e), v.video_id)
                failed.add(v.video_id)
        return [v for v in videos if v.video_id not in failed]


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


def default_cache():
    return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "memento-frames")


# -----------------------------------------------------------------------------
# a synthetic dataset in the real formats, for the demo and the tests

CAPTION_PARTS = (
    ["a man", "a woman", "a child", "a dog", "a cat", "two people", "a group of friends", "a bird"],
    ["walks", "runs", "dances", "jumps", "sits", "plays", "cooks", "swims"],
    ["in a park", "on the beach", "in a kitchen", "on a street", "in the snow", "at a party", "in a forest",
     "on a stage"],
)
CAPTION_WORDS = [p for parts in CAPTION_PARTS for p in parts]


def synthetic_caption(rng):
    return " ".join(rng.choice(parts) for parts in CAPTION_PARTS)


def synthetic_frames(first, last, tint, n_frames, size):
    """A clip whose brightness fades from `first` to `last` (0-1), with a white bar across the top whose
    width grows from nothing (first frame) to the full width (last frame) so each frame shows its position."""
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for t in range(n_frames):
        level = first + (last - first) * t / (n_frames - 1)
        frames[t] = (30 + 170 * level * tint).astype(np.uint8)
        frames[t, :8, : round(size * t / (n_frames - 1))] = 255
    return frames


def write_video(path, frames, fps=24):
    """Frames (N, H, W, 3) uint8 -> an H.264 mp4."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def make_synthetic(root, n=200, seed=0, layout="json", n_frames=24, size=64):
    """
    Write n videos split 70/15/15 into train, val and test, in the authors' JSON or the MediaEval CSV layout.
    The score is a function of the last frame's brightness (0.45-0.95): the first frame says nothing about it,
    the middle frame half. Test labels are withheld from the split's file and written to test_labels.csv.
    """
    rng = np.random.default_rng(seed)
    n_train, n_val = round(0.7 * n), round(0.15 * n)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * (n - n_train - n_val)
    records = {s: [] for s in ("train", "val", "test")}
    for i, split in enumerate(tqdm(splits, desc="writing synthetic videos", unit="video")):
        first, last = rng.uniform(0, 1, size=2)
        tint = rng.uniform(0.6, 1.0, size=3)
        score = float(np.clip(0.45 + 0.5 * last + rng.normal(0, 0.01), 0, 1))
        captions = [synthetic_caption(rng) for _ in range(5)]
        video_id = f"synthetic_{i:05d}" if layout == "json" else f"{i:05d}"
        if layout == "json":
            folder, filename = os.path.join(root, "videos"), f"{video_id}.mp4"
        else:
            folder, filename = os.path.join(root, CSV_DIRS[split][0], "Videos"), f"{video_id}.mp4"
        os.makedirs(folder, exist_ok=True)
        write_video(os.path.join(folder, filename), synthetic_frames(first, last, tint, n_frames, size))
        records[split].append(dict(video_id=video_id, filename=filename, captions=captions,
                                   mem_score=round(score, 4), alpha=-round(rng.uniform(0, 0.01), 5)))
    (_write_json if layout == "json" else _write_csv)(root, records)
    with open(os.path.join(root, "test_labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "mem_score"])
        w.writerows([r["video_id"], r["mem_score"]] for r in records["test"])
    return root


def _write_json(root, records):
    for split, rows in records.items():
        out = [dict(filename=r["filename"], url=f"https://example.invalid/{r['filename']}", captions=r["captions"],
                    action_labels=[], **({} if split == "test" else dict(mem_score=r["mem_score"], alpha=r["alpha"])))
               for r in rows]
        with open(os.path.join(root, JSON_FILES[split]), "w") as f:
            json.dump(out, f, indent=1)


def _write_csv(root, records):
    for split, rows in records.items():
        folder, prefix = CSV_DIRS[split]
        base = os.path.join(root, folder)
        with open(os.path.join(base, f"{prefix}_text_descriptions.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id"] + [f"description_{k}" for k in range(5)])
            w.writerows([r["video_id"], *r["captions"]] for r in rows)
        with open(os.path.join(base, f"{prefix}_video_urls.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id", "video_url"])
            w.writerows([r["video_id"], f"https://example.invalid/{r['filename']}"] for r in rows)
        if split == "test":
            continue
        with open(os.path.join(base, f"{prefix}_scores.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id", "video_url", "annotations_short_term", "scores_raw_short_term",
                        "scores_normalized_short_term", "decay_alpha"])
            w.writerows([r["video_id"], f"https://example.invalid/{r['filename']}", 90, r["mem_score"],
                         r["mem_score"], r["alpha"]] for r in rows)


# -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make-synthetic", metavar="DIR", help="write a synthetic dataset to DIR and exit")
    parser.add_argument("--n", type=int, default=200, help="number of synthetic videos")
    parser.add_argument("--layout", default="json", choices=["json", "csv"], help="synthetic dataset's layout")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset")
    parser.add_argument("--data", help="Memento10k root to parse and decode")
    parser.add_argument("--split", default="trainval", choices=SPLITS, help="split to parse")
    parser.add_argument("--frames", type=int, default=3, help="frames per video")
    parser.add_argument("--cache", default=default_cache(), help="folder of decoded frames")
    args = parser.parse_args(argv)
    if args.make_synthetic:
        make_synthetic(args.make_synthetic, args.n, args.seed, args.layout)
        print(f"wrote {args.n} synthetic videos to {args.make_synthetic} ({args.layout} layout)")
    elif args.data:
        videos = load_split(args.data, args.split)
        FrameCache(args.cache, args.frames).fill(videos)
        labelled = [v.score for v in videos if v.score is not None]
        print(f"{args.split}: {len(videos)} videos, {len(labelled)} labelled"
              + (f", mean score {np.mean(labelled):.3f}" if labelled else ""))
    else:
        parser.print_help()


if __name__ == "__main__":
    cli(main)
