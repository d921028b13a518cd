"""
The datasets as their releases lay them out on disk, read and checked record by record: Memento10k (the authors' JSON
or MediaEval 2021's CSV), MediaEval 2021's TRECVid set and VideoMem (MediaEval 2018-2019). data.py builds the splits
and folds on these readers; nothing here knows of a model.

Layouts, detected from the files under the root (--data); README's data section shows each on disk:
  json      Memento10k, the authors' release: memento_{train,val,test}_data.json + videos/<filename>
  csv       Memento10k, MediaEval 2021: {training,dev,test}_set/{train,dev,test}_scores.csv, *_text_descriptions.csv,
            Videos/{id:05d}.mp4
  trecvid   TRECVid, MediaEval 2021: the same files, with long-term columns in the scores and captions of its own
  videomem  VideoMem: dev-set/ground-truth/ground-truth_dev-set.csv, dev-set/dev-set_video-captions.txt,
            dev-set/sources/videoN.webm; test-set/test-set_videos-captions.txt, test-set/sources/
Every source has a short-term score, TRECVid and VideoMem a long-term one too (SCORE_COLUMNS). Memento10k gives five
captions a video; the others one (VideoMem) or several (TRECVid), and the prompt lists those a video has.
"""

import csv
import json
import math
import os
from dataclasses import dataclass

from plumbing.errors import InputError, problem


@dataclass
class Video:
    video_id: str
    path: str  # the video file
    captions: list  # its captions: five on Memento10k, one or more elsewhere
    score: float | None  # memorability 0-1 (the run's target: short- or long-term); None where labels are withheld

    @property
    def label(self):
        return round(100 * self.score)


JSON_FILES = {"train": "memento_train_data.json", "val": "memento_val_data.json", "test": "memento_test_data.json"}
CSV_DIRS = {"train": ("training_set", "train"), "val": ("dev_set", "dev"), "test": ("test_set", "test")}
VIDEOMEM_DIRS = {"trainval": "dev-set", "test": "test-set"}  # VideoMem has no val split: dev-set is all it labels
# VideoMem's captions file: "video" in public loaders of the dev set and the 2018 test set, "videos" in those of 2019's
VIDEOMEM_CAPTIONS = ("{}_video-captions.txt", "{}_videos-captions.txt")
VIDEOMEM_TRUTH = "ground-truth_{}.csv"  # in dev-set/ground-truth/; the test set's, where released, in test-set/

SOURCES = {"json": "Memento10k", "csv": "Memento10k", "trecvid": "TRECVid", "videomem": "VideoMem"}
# Where each layout keeps each target's score. Memento10k's is its normalized short-term score (the authors' mem_score);
# TRECVid's long-term score exists only raw.
SCORE_COLUMNS = {
    "json": {"short": "mem_score"},
    "csv": {"short": "scores_normalized_short_term"},
    "trecvid": {"short": "scores_normalized_short_term", "long": "scores_raw_long_term"},
    "videomem": {"short": "short-term_memorability", "long": "long-term_memorability"},
}
# A header with either of these is TRECVid's: Memento10k's release has short-term scores only
TRECVID_COLUMNS = ("scores_raw_long_term", "annotations_long_term")


# -----------------------------------------------------------------------------
# which release is where


def layout(root):
    """The layout of the dataset under `root` (json, csv, trecvid, videomem); one line saying what was expected else."""
    if not os.path.isdir(root):
        raise InputError(f"{root}: no such folder: put a dataset there (Memento10k, TRECVid, VideoMem) or pass --data")
    if os.path.isfile(os.path.join(root, JSON_FILES["train"])):
        return "json"
    scores = os.path.join(root, "training_set", "train_scores.csv")
    if os.path.isfile(scores):
        header = next(csv.reader(read_text(scores).splitlines()[:1]), [])
        return "trecvid" if set(TRECVID_COLUMNS) & {c.strip() for c in header} else "csv"
    if os.path.isfile(os.path.join(root, "dev-set", "ground-truth", VIDEOMEM_TRUTH.format("dev-set"))):
        return "videomem"
    inside = sorted(d for d in os.listdir(root)
                    if os.path.isfile(os.path.join(root, d, "training_set", "train_scores.csv")))
    if inside:  # MediaEval 2021's release: "Memento10k Data/" and "TRECVid Data/" side by side
        raise InputError(f"{root}: holds {' and '.join(inside)}: pass one of them as --data")
    raise InputError(f"{root}: not a dataset root: expected {JSON_FILES['train']} (Memento10k, authors' release), "
                     "training_set/train_scores.csv (MediaEval 2021: Memento10k or TRECVid) or "
                     f"dev-set/ground-truth/{VIDEOMEM_TRUTH.format('dev-set')} (VideoMem)")


def check_target(root, kind, target):
    """A long-term target needs a source that has long-term scores: one line where it has none."""
    if target not in SCORE_COLUMNS[kind]:
        raise InputError(f"{root}: {SOURCES[kind]} has {' and '.join(SCORE_COLUMNS[kind])}-term scores only, not "
                         f"{target}-term: --target {target} needs TRECVid (MediaEval 2021) or VideoMem")


def splits_of(kind):
    """The splits a layout's files hold; trainval is train + val where it has both."""
    return ("trainval", "test") if kind == "videomem" else ("train", "val", "test")


def read(root, kind, split, bad=None, target="short"):
    """The videos of one split that the layout's files hold (splits_of), with the target's score."""
    check_target(root, kind, target)
    if split not in splits_of(kind):
        raise InputError(f"{root}: {SOURCES[kind]} has no {split} split, only {' and '.join(splits_of(kind))} "
                         f"({VIDEOMEM_DIRS['trainval']}, its labelled videos, and {VIDEOMEM_DIRS['test']}): train with "
                         "--split trainval (--fold K holds out a fold)")
    if kind == "json":
        return _read_json(root, split, bad)
    if kind == "videomem":
        return _read_videomem(root, split, bad, SCORE_COLUMNS[kind][target])
    return _read_csv(root, split, bad, SCORE_COLUMNS[kind][target], five=kind == "csv")


# -----------------------------------------------------------------------------
# the releases


def clean_caption(text):
    """A caption as one line: every run of whitespace (line breaks, tabs, spaces) one space, none at the edges. The
    prompt puts one caption a line (prompt.messages), and the CSVs one a cell: a line break inside a caption would make
    it two captions to the model's eye."""
    return " ".join(text.split())


def _clean(captions):
    """A record's captions, each a `clean_caption` where it is text; anything else is left for `_valid` to report."""
    return [clean_caption(c) if isinstance(c, str) else c for c in captions] if isinstance(captions, list) else captions


def _read_json(root, split, bad):
    path = os.path.join(root, JSON_FILES[split])
    try:
        records = json.loads(read_text(path))
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
        video = Video(os.path.splitext(filename)[0], os.path.join(root, "videos", filename), _clean(r.get("captions")),
                      r.get("mem_score"))
        if _valid(video, f"{path}: record {i} ({video.video_id})", split != "test", bad):
            videos.append(video)
    return nonempty(drop_duplicates(videos, path, bad), path, len(records))


def _read_csv(root, split, bad, column, five):
    """MediaEval 2021's CSV release of either source: Memento10k (five captions a video) or TRECVid (several)."""
    folder, prefix = CSV_DIRS[split]
    base = os.path.join(root, folder)
    captions_path = os.path.join(base, f"{prefix}_text_descriptions.csv")
    captions, lines = read_captions(captions_path)
    scores_path = os.path.join(base, f"{prefix}_scores.csv")
    rows = _score_rows(scores_path, "video_id", column, split)

    def video(key, score):
        return Video(key, _video_file(os.path.join(base, "Videos"), f"{int(key):05d}"), captions.get(key, []), score)

    return _videos(rows, video, scores_path, captions_path, lines, split == "test", five, bad)


def _read_videomem(root, split, bad, column):
    """VideoMem: the ground truth lists the labelled videos by file name, the captions file gives each its caption."""
    folder = VIDEOMEM_DIRS[split]
    base = os.path.join(root, folder)
    names = [os.path.join(base, name.format(folder)) for name in VIDEOMEM_CAPTIONS]
    captions_path = next((p for p in names if os.path.isfile(p)), None)
    if captions_path is None:
        raise InputError(f"{names[0]}: missing (nor is there {os.path.basename(names[1])})")
    captions, lines = _read_caption_lines(captions_path)
    truth_path = os.path.join(base, "ground-truth", VIDEOMEM_TRUTH.format(folder))
    rows = _score_rows(truth_path, "video", column, split)

    def video(key, score):
        return Video(os.path.splitext(key)[0], os.path.join(base, "sources", key), captions.get(key, []), score)

    return _videos(rows, video, truth_path, captions_path, lines, split == "test", False, bad)


def _score_rows(path, key, column, split):
    """A scores file's rows as (where, the video's key, its score as text); a test split's file may be missing."""
    if not os.path.isfile(path):
        if split == "test":
            return []
        raise InputError(f"{path}: missing")
    return [(f"{path}: line {n}", row[key].strip(), row[column].strip()) for n, row in _rows(path, [key, column])]


def _videos(rows, video, scores_path, captions_path, lines, test, five, bad):
    """
    The Videos of a split from its score rows, (where, key, score text), and its captions (keyed like the rows; `lines`:
    the first line of each key in the captions file): video(key, score) makes one. A test split's videos are those its
    captions list, their labels withheld: the scores file may be missing or hold only its header, and where it has a
    video's score, that score is kept. In a labelled split, a caption of a video the scores do not name is an error.
    """
    if test:
        known = {key: score for _, key, score in rows}
        rows = [(f"{captions_path}: line {lines[key]}", key, known.get(key, "")) for key in lines]
        scores_path = captions_path
    videos = []
    for where, key, score in rows:
        where = f"{where} (video {key})"
        try:
            v = video(key, None)
        except ValueError:  # MediaEval 2021's ids name their files as numbers
            problem(bad, where, f"video id {key!r} is not a number", key)
            continue
        try:
            v.score = float(score) if score else None
        except ValueError:  # skipped under its video id, which keeps its place in the folds (data.trainval_folds)
            problem(bad, where, f"score {score!r} is not a number", v.video_id)
            continue
        if _valid(v, where, not test, bad, five):
            videos.append(v)
    videos = nonempty(drop_duplicates(videos, scores_path, bad), scores_path, len(rows))
    listed = {key for _, key, _ in rows}
    for key in (k for k in lines if k not in listed):  # (a test split's rows are its captions)
        # no video id in the list: no labelled video is left out, and none may take a place in the folds
        problem(bad, f"{captions_path}: line {lines[key]}", f"video {key} is not in {os.path.basename(scores_path)}")
    return videos


# -----------------------------------------------------------------------------
# checking a record


def _valid(video, where, labelled, bad, five=True):
    """Check one record; report what is wrong with it (see errors.problem) and say whether it is usable. Memento10k
    gives five captions a video: another count is damage (five); other sources give any number but none."""
    c, score = video.captions, video.score
    n = len(c) if isinstance(c, list) else 0
    if not isinstance(c, list) or not all(isinstance(x, str) for x in c) or (n != 5 if five else n == 0):
        problem(bad, where, f"expected 5 captions, found {n}" if five else "no captions", video.video_id)
    elif not all(x.strip() for x in c):
        problem(bad, where, f"caption {[x.strip() for x in c].index('')} is empty", video.video_id)
    elif labelled and score is None:
        problem(bad, where, "no score in a labelled split", video.video_id)
    elif score is not None and (not isinstance(score, (int, float)) or not 0 <= score <= 1):  # NaN fails too
        problem(bad, where, f"score {score!r} is outside [0, 1]", video.video_id)
    elif not os.path.isfile(video.path):
        problem(bad, where, f"missing video file {video.path}", video.video_id)
    else:
        return True
    return False


def drop_duplicates(videos, where, bad):
    seen, kept = set(), []
    for v in videos:
        if v.video_id in seen:
            problem(bad, where, f"duplicate video id {v.video_id}", v.video_id)
        else:
            seen.add(v.video_id)
            kept.append(v)
    return kept


def nonempty(videos, path, n_records):
    """A split with no usable video is an error, never an empty result: it would train on nothing or write an empty
    submission."""
    if not videos:
        what = "holds no videos" if not n_records else f"none of its {n_records} videos is usable (see the warnings)"
        raise InputError(f"{path}: {what}")
    return videos


# -----------------------------------------------------------------------------
# reading files


def read_text(path):
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


def _rows(path, required):
    """The rows of a CSV file as (line, dict); a missing column or a row with the wrong number of fields is an error
    that names the line and, for a column, the header expected."""
    reader = csv.DictReader(read_text(path).splitlines())
    fieldnames = [c.strip() for c in reader.fieldnames or []]
    reader.fieldnames = fieldnames
    missing = [c for c in required if c not in fieldnames]
    if missing:
        raise InputError(f"{path}: line 1: missing column(s) {', '.join(missing)} (expected a header with "
                         f"{', '.join(required)})")
    rows = []
    for row in reader:
        if None in row or None in row.values():
            raise InputError(f"{path}: line {reader.line_num}: expected {len(fieldnames)} fields")
        rows.append((reader.line_num, row))
    return rows


def read_labels(path):
    """
    A video_id,mem_score CSV, MediaEval's submission format (a run's predictions, the synthetic test_labels.csv) ->
    {video_id: score}. A missing column, a row with the wrong number of fields, a score that is not a number or an id
    given twice is one line naming the file and line.
    """
    labels = {}
    for n, row in _rows(path, ["video_id", "mem_score"]):
        video_id, text = row["video_id"].strip(), row["mem_score"].strip()
        try:
            score = float(text)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise InputError(f"{path}: line {n}: score {text!r} is not a number")
        if video_id in labels:
            raise InputError(f"{path}: line {n}: video {video_id} is listed twice")
        labels[video_id] = score
    return labels


def read_captions(path):
    """
    MediaEval 2021's text descriptions, either one row per video (video_id, description_0..4: Memento10k as public code
    reads it) or one row per caption (video_id, description: TRECVid's, several rows a video), each made one line
    (clean_caption). Returns ({video_id: captions}, {video_id: the first line that names it}).
    """
    captions, lines = {}, {}
    rows = _rows(path, ["video_id"])
    if rows and "description" not in rows[0][1] and not any(k.startswith("description_") for k in rows[0][1]):
        raise InputError(f"{path}: line 1: expected the columns video_id,description (one row a caption) or "
                         "video_id,description_0,...,description_4 (one row a video)")
    for n, row in rows:
        video_id = row["video_id"].strip()
        lines.setdefault(video_id, n)
        if "description" in row:
            captions.setdefault(video_id, []).append(clean_caption(row["description"]))
        else:
            captions[video_id] = [clean_caption(row[k]) for k in sorted(row) if k.startswith("description_")]
    return captions, lines


def _read_caption_lines(path):
    """
    VideoMem's captions: one line a video, its file name then its caption, the caption's words joined by dashes
    (video10.webm couple-relaxing-on-picnic-crane-shot); the dashes are read as the spaces they stand for. A name on
    several lines gives the video several captions. Returns ({file name: captions}, {file name: its first line}).
    """
    captions, lines = {}, {}
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            raise InputError(f"{path}: line {n}: expected a video's file name, then its caption")
        name, caption = parts
        captions.setdefault(name, []).append(clean_caption(caption.replace("-", " ")))
        lines.setdefault(name, n)
    return captions, lines


def _video_file(folder, stem):
    """folder/stem.mp4, or the same stem in another container (.webm, .avi, .mkv...) when that is what exists."""
    path = os.path.join(folder, stem + ".mp4")
    if not os.path.exists(path) and os.path.isdir(folder):
        others = sorted(f for f in os.listdir(folder) if os.path.splitext(f)[0] == stem)
        if others:
            return os.path.join(folder, others[0])
    return path
