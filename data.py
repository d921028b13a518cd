"""
Memento10k: videos, their five captions and memorability scores, from either public release.

    python data.py --data data/memento10k --split trainval   # parse a split and check every record
    python data.py --data data/memento10k --model Qwen/Qwen2.5-VL-7B-Instruct   # ... and cache its frames ahead

Layouts, detected from the files under the root (--data):
  authors' JSON:  memento_{train,val,test}_data.json + videos/<filename>
  MediaEval 2021: {training,dev,test}_set/{train,dev,test}_scores.csv, *_text_descriptions.csv, Videos/{id:05d}.mp4
Per video the method uses N evenly spaced frames (N=3: first, middle, last), the five captions, and the score
0-1 as an integer label 0-100. Frames are decoded once, on every core, and cached on disk at the size the model
sees them (the pixel budget). Batches for the model are made off the training thread (Batches, loader).
"""

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

import prompt


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
        if type(e).__name__ != "OutOfMemoryError":  # torch.OutOfMemoryError, matched by its name
            raise
        print("error: out of GPU memory: lower --batch-size (raise --grad-accum to keep the effective batch), "
              "--max-pixels, --frames or --r, keep gradient checkpointing on, and start again (train.py: --overwrite); "
              "if it ran out while predicting, lower --eval-batch-size and rerun (train.py: with --resume)",
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
# 448 x 448: the input size of the paper's Qwen-VL-Chat, 256 visual tokens a frame on Qwen2-VL / Qwen2.5-VL
DEFAULT_MAX_PIXELS = 448 * 448
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
            _problem(bad, where, f"not a number: {score if isinstance(score, str) else video_id!r}", video_id)
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
    return np.stack(_decode(path, n)[0])


def _decode(path, n):
    """
    The N frames of `frame_indices`, a list of (H, W, 3) uint8 arrays, and when each is shown: seconds from the
    video's first frame, or None where the file tells no time.

    Frames are counted in display order from the packets' timestamps (demuxed once, no decoding). Every frame up to
    the last one kept must pass through the decoder, since later frames reference earlier ones, but FFmpeg may skip
    the work of a frame that no other frame references (skip_frame NONREF) unless it is one we keep: most B-frames of
    an H.264 clip then cost nothing, and what is kept is exact (tested against full decodes). Seeks are not exact.
    """
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            packets = [p for p in container.demux(stream) if p.size]
            times = sorted(p.pts for p in packets if p.pts is not None)
            if not times or len(times) < len(packets) or len(set(times)) < len(times):
                return _decode_all(path, n)  # no timestamps to count by: count the decoded frames
            wanted = [times[i] for i in frame_indices(len(times), n)]
            seconds = [float((t - times[0]) * stream.time_base) for t in wanted] if stream.time_base else None
            keep, frames = set(wanted), {}
            stream.thread_count = 1  # FrameCache.fill runs one decoder a core; and skip_frame is then read per packet
            for packet in packets + [None]:  # None flushes the frames the decoder still holds
                stream.codec_context.skip_frame = "DEFAULT" if packet is None or packet.pts in keep else "NONREF"
                for frame in stream.codec_context.decode(packet):
                    if frame.pts in keep:
                        frames[frame.pts] = frame.to_ndarray(format="rgb24")
                if len(frames) == len(keep):
                    break
        if len(frames) < len(keep):  # a frame the timestamps promised never came out of the decoder
            return _decode_all(path, n)
    except FileNotFoundError:
        raise InputError(f"{path}: missing video file")
    except (av.FFmpegError, OSError, IndexError, ValueError) as e:
        raise InputError(f"{path}: cannot decode video ({getattr(e, 'strerror', None) or e})")
    return [frames[t] for t in wanted], seconds


def _decode_all(path, n):
    import av

    with av.open(path) as container:
        decoded = [(f.to_ndarray(format="rgb24"), f.time) for f in container.decode(video=0)]
        rate = container.streams.video[0].average_rate
    if not decoded:
        raise InputError(f"{path}: no decodable frames")
    picked = frame_indices(len(decoded), n)
    times = [t for _, t in decoded]
    if None in times:  # frames without timestamps: timed by the stream's frame rate, if it has one
        times = [i / float(rate) for i in range(len(decoded))] if rate else None
    return [decoded[i][0] for i in picked], [times[i] - times[0] for i in picked] if times else None


@dataclass(frozen=True)
class Budget:
    """
    The pixels a frame keeps. Qwen's image processors resize a frame to sides that are multiples of `factor` (patch
    size x merge size: one visual token per factor x factor square), with min_pixels <= height x width <= max_pixels
    and the aspect ratio kept as well as that allows.
    """

    max_pixels: int
    min_pixels: int
    factor: int

    def size(self, height, width):
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        return smart_resize(height, width, self.factor, self.min_pixels, self.max_pixels)

    def fit(self, frames):
        """(H, W, 3) uint8 frames -> an (N, 3, h, w) uint8 tensor, channels first as the processor takes them, at
        `size`, resized as the processor resizes (bicubic with antialiasing, on uint8): given these, it computes
        exactly what it computes from the originals."""
        import torchvision.transforms.v2.functional as tvF

        frames = [torch.from_numpy(f).permute(2, 0, 1) for f in frames]
        size = list(self.size(*frames[0].shape[1:]))
        return torch.stack([f if size == list(f.shape[1:]) else tvF.resize(
            f, size, interpolation=tvF.InterpolationMode.BICUBIC, antialias=True) for f in frames])


class FrameCache:
    """
    The N frames of each video as the model sees them, decoded once: resized to the pixel budget (Budget.fit) and
    stacked top to bottom into one JPEG (quality 95, no chroma subsampling), named by a hash of the video file's
    path, size and mtime, N and the budget. The JPEG's comment records when each frame is shown (`clip`).

    Why this size: the processor would resize a larger frame down to exactly this, so storing more serves no run at
    this budget (another budget gets its own entries). Why JPEG: kept raw, three 720p frames at the default budget
    are 1.8 MB a video (18 GB for Memento10k); as JPEG they are ~0.3-0.5 MB and read in a few ms, and the error
    JPEG adds (~1.5 grey levels, PSNR ~40 dB) is well under that of the lossy H.264 the clips come in.
    """

    def __init__(self, folder, n_frames=3, budget=None):
        self.folder, self.n_frames, self.budget = folder, n_frames, budget  # budget None: full resolution
        os.makedirs(folder, exist_ok=True)

    def path(self, video):
        try:
            st = os.stat(video.path)
        except FileNotFoundError:
            raise InputError(f"{video.path}: missing video file (video {video.video_id})")
        key = f"{os.path.abspath(video.path)}|{st.st_size}|{st.st_mtime_ns}|frames={self.n_frames}|{self.budget}"
        return os.path.join(self.folder, hashlib.sha1(key.encode()).hexdigest() + ".jpg")

    def get(self, video):
        """The video's frames as stored, (N, 3, H, W) uint8: channels first, as the processor takes them."""
        return self._frames(self._file(video))

    def clip(self, video):
        """(frames, seconds): `get`'s frames and when each is shown, in seconds from the video's first frame (None where
        the file tells no time), for the model's native video input. An entry stored before the cache recorded times
        is decoded again, once (same pixels; runs of images never need it)."""
        raw = self._file(video)
        meta = _metadata(raw.numpy().tobytes())
        if meta is None:
            self.put(video)
            raw = self._file(video)
            meta = _metadata(raw.numpy().tobytes())
        return self._frames(raw), meta["seconds"]

    def _file(self, video):
        """The entry's JPEG file as a uint8 tensor, decoded and stored first if absent."""
        from torchvision.io import read_file

        path = self.path(video)
        if not os.path.exists(path):
            self.put(video)
        return read_file(path)

    def _frames(self, raw):
        from torchvision.io import ImageReadMode, decode_jpeg

        stacked = decode_jpeg(raw, mode=ImageReadMode.RGB)  # (3, N x H, W)
        return stacked.view(3, self.n_frames, -1, stacked.shape[-1]).transpose(0, 1)

    def put(self, video):
        """Decode `video`, fit its frames to the budget and store them; the JPEG's comment says when each is shown."""
        from PIL import Image

        frames, seconds = _decode(video.path, self.n_frames)
        frames = self.budget.fit(frames) if self.budget else torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
        n, _, height, width = frames.shape
        if n * height > 65500:  # JPEG's limit on a side
            raise InputError(f"{video.path}: {n} frames of {height} rows do not fit the cache; "
                             "lower --frames or --max-pixels")
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            stacked = frames.permute(0, 2, 3, 1).reshape(n * height, width, 3).numpy()
            Image.fromarray(stacked).save(f, format="JPEG", quality=95, subsampling=0,
                                          comment=json.dumps(dict(seconds=seconds)))
        os.replace(tmp, self.path(video))  # atomic: a killed run never leaves half a file under the real name

    def fill(self, videos, bad=None, workers=None, timed=False):
        """Decode every video not cached yet (with `timed`, also those stored before the cache recorded times: see
        `clip`), `workers` processes at a time (default: one a core), with a progress bar; later passes only read the
        cache. Returns the videos that decoded; one that does not raises InputError, or with a list as `bad` is
        described there and left out."""
        missing = [v for v in videos if not os.path.exists(self.path(v)) or timed and _metadata(self.path(v)) is None]
        if not missing:
            return videos
        failed, workers = set(), os.cpu_count() if workers is None else workers
        decoded = torch.utils.data.DataLoader(_Decode(self, missing), batch_size=None,
                                              num_workers=workers if len(missing) > 1 else 0, generator=torch.Generator())
        for v, problem in zip(missing, tqdm(decoded, total=len(missing), desc="decoding frames", unit="video")):
            if problem is None:
                continue
            if bad is None:
                raise InputError(problem)
            _problem(bad, v.path, problem, v.video_id)
            failed.add(v.video_id)
        return [v for v in videos if v.video_id not in failed]


def _metadata(jpeg):
    """The JSON in a cache entry's JPEG comment (a path or the file's bytes); None when it has none. Reading it leaves
    the pixels undecoded."""
    from PIL import Image

    with Image.open(io.BytesIO(jpeg) if isinstance(jpeg, bytes) else jpeg) as image:
        comment = image.info.get("comment")
    return json.loads(comment) if comment else None


class _Decode(torch.utils.data.Dataset):
    """FrameCache.put of each video in a worker process; an item is None, or the problem that stopped it."""

    def __init__(self, cache, videos):
        self.cache, self.videos = cache, videos

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        try:
            self.cache.put(self.videos[i])
        except InputError as e:
            return str(e)


# -----------------------------------------------------------------------------
# batches for the model, made off the training thread


class Batches(torch.utils.data.Dataset):
    """
    Micro-batches ready for the model. An item is a list of indices into `videos`; it comes back as prompt.encode's
    (inputs, labels) of their cached frames and captions, labels None unless `labelled`; with `video`, the frames of
    each go in as one native video input, with when each is shown. Through `loader`, the processor's work (patches,
    chat layout, tokens) runs in worker processes, ahead of the step that uses it.
    """

    def __init__(self, videos, cache, processor, labelled=True, video=False):
        self.videos, self.cache, self.processor, self.labelled, self.video = videos, cache, processor, labelled, video

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, indices):
        chunk = [self.videos[i] for i in indices]
        if self.video:
            frames, seconds = map(list, zip(*(self.cache.clip(v) for v in chunk)))
        else:
            frames, seconds = [self.cache.get(v) for v in chunk], None
        return prompt.encode(self.processor, frames, [v.captions for v in chunk],
                             [v.label for v in chunk] if self.labelled else None, seconds)


def loader(dataset, batches, workers):
    """The items of `dataset` for `batches` (lists of indices), in that order, made by `workers` processes (0: in
    this one) a few batches ahead, in pinned memory when a GPU will take them."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are the parallelism; forked tokenizers warn
    return torch.utils.data.DataLoader(
        dataset, sampler=batches, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        # Its own generator: the loader draws a seed at each pass, which must not move the global RNG (LoRA
        # dropout), or a resumed run would differ from an uninterrupted one.
        generator=torch.Generator())


def chunks(n, size):
    """range(n) as consecutive lists of `size` indices, the last one shorter."""
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def default_workers():
    """Loader and decoder processes: all cores but the training one's, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="Memento10k root to parse and decode")
    parser.add_argument("--split", default="trainval", choices=SPLITS, help="split to parse")
    parser.add_argument("--model", help="cache the frames for this model's processor (hub id or folder) at --max-pixels")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="pixels a frame keeps, at most")
    parser.add_argument("--min-pixels", type=int, help="pixels a frame keeps, at least (default: the processor's)")
    parser.add_argument("--frames", type=int, default=3, help="frames per video")
    parser.add_argument("--cache", default=default_cache(), help="folder of decoded frames")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="decoding processes")
    args = parser.parse_args(argv)
    videos = load_split(args.data, args.split)
    if args.model:
        import model

        budget = model.budget(model.load_processor(args.model, args.max_pixels, args.min_pixels))
        FrameCache(args.cache, args.frames, budget).fill(videos, workers=args.workers)
    labelled = [v.score for v in videos if v.score is not None]
    print(f"{args.split}: {len(videos)} videos, {len(labelled)} labelled"
          + (f", mean score {np.mean(labelled):.3f}" if labelled else ""))


if __name__ == "__main__":
    cli(main)
