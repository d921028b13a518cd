"""data.py and frames.py: both Memento10k releases, frame selection by content, the frame cache (filled ahead by
data.py's command line), folds (drawn from the whole labelled list: a skipped record moves no other video), the
synthetic set, and a broken video's one line saying what is wrong with it."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import data
import model
from plumbing import sources
from plumbing.errors import InputError
from frames import DEFAULT_MAX_PIXELS, FrameCache, frame_indices, read_frames
from scaffold.synthetic import make_synthetic, synthetic_frames, write_video
from conftest import ROOT, script


def test_json_layout(synthetic):
    train, val, test = (data.load_split(synthetic, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (210, 45, 45)
    assert all(v.score is not None and 0 <= v.score <= 1 and len(v.captions) == 5 for v in train + val)
    assert all(v.score is None for v in test)  # labels withheld in the split's file ...
    with open(os.path.join(synthetic, "test_labels.csv")) as f:  # ... and kept apart
        assert len(f.readlines()) == 46
    v = train[0]
    assert v.video_id == "synthetic_00000" and v.path.endswith(os.path.join("videos", "synthetic_00000.mp4"))
    assert v.label == round(100 * v.score)
    assert len(data.load_split(synthetic, "trainval")) == 255


def test_csv_layout(synthetic_csv):
    train, val, test = (data.load_split(synthetic_csv, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (28, 6, 6)
    assert train[0].video_id == "00000" and train[0].path.endswith(os.path.join("training_set", "Videos", "00000.mp4"))
    assert val[0].path.endswith(os.path.join("dev_set", "Videos", f"{val[0].video_id}.mp4"))
    assert all(len(v.captions) == 5 and v.captions[0] for v in train + val + test)
    assert all(v.score is not None for v in train + val) and all(v.score is None for v in test)
    assert all(os.path.isfile(v.path) for v in train + val + test)


def test_csv_captions_one_row_per_caption(synthetic_csv, tmp_path):
    wide, _ = sources.read_captions(os.path.join(synthetic_csv, "training_set", "train_text_descriptions.csv"))
    long = tmp_path / "long.csv"
    long.write_text("video_id,description\n" + "".join(f"{k},{c}\n" for k, cs in wide.items() for c in cs))
    assert sources.read_captions(str(long))[0] == wide


def test_unknown_root_says_what_was_expected(tmp_path):
    with pytest.raises(InputError, match="memento_train_data.json.*train_scores.csv"):
        data.load_split(str(tmp_path), "train")


def bar_width(frame):
    """The synthetic clip's top bar: its width in pixels tells the frame's position in the clip."""
    return int((frame[2:6].mean(axis=(0, 2)) > 240).sum())


def test_first_middle_last_frames_by_content(tmp_path):
    n_frames, size = 25, 64
    path = str(tmp_path / "clip.mp4")
    write_video(path, synthetic_frames(0.2, 0.8, np.ones(3), n_frames, size))
    frames = read_frames(path, 3)
    assert frames.shape == (3, size, size, 3)
    widths = [bar_width(f) for f in frames]
    assert widths[0] <= 1 and abs(widths[1] - size / 2) <= 2 and widths[2] >= size - 1
    assert frames[0][10:].mean() < frames[1][10:].mean() < frames[2][10:].mean()  # the fade to brighter
    assert frame_indices(25, 3) == [0, 12, 24] and frame_indices(90, 5) == [0, 22, 44, 67, 89]
    assert [bar_width(f) for f in read_frames(path, 5)] == pytest.approx([0, 16, 32, 48, 64], abs=2)


def test_cache_decodes_once(synthetic, tmp_path, monkeypatch):
    videos = data.load_split(synthetic, "val")[:5]
    cache = FrameCache(str(tmp_path / "cache"))
    cache.fill(videos)
    first = [cache.get(v) for v in videos]
    assert len(os.listdir(tmp_path / "cache")) == 5

    def no_decoding(*args):
        raise AssertionError("decoded a cached video")

    monkeypatch.setattr("frames._decode", no_decoding)
    cache.fill(videos)
    assert all(np.array_equal(a, cache.get(v)) for a, v in zip(first, videos))
    # a different frame count is a different key
    with pytest.raises(AssertionError, match="decoded a cached video"):
        FrameCache(str(tmp_path / "cache"), n_frames=5).get(videos[0])


def test_folds_disjoint_cover_and_stable(synthetic):
    ids = [v.video_id for v in data.load_split(synthetic, "trainval")]
    folds = data.make_folds(ids, 5, seed=0)
    assert sorted(i for f in folds for i in f) == sorted(ids)
    assert len({i for f in folds for i in f}) == len(ids)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    assert data.make_folds(list(reversed(ids)), 5, seed=0) == folds  # a function of the id set, not its order
    assert data.make_folds(ids, 5, seed=1) != folds
    # the same in another process with another hash seed: every run agrees
    code = f"import data, json; print(json.dumps(data.make_folds({ids!r}, 5, 0)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONHASHSEED="123"))
    assert json.loads(out.stdout) == folds
    rest, held, assignment = data.train_heldout(synthetic, "trainval", fold=2, folds=5, seed=0)
    assert assignment == folds
    assert {v.video_id for v in held} == set(folds[2]) and not {v.video_id for v in rest} & set(folds[2])
    assert [v.video_id for v in data.heldout(synthetic, "trainval", 2, 5, 0)] == [v.video_id for v in held]
    with pytest.raises(InputError, match="fold 5 is outside 0..4"):
        data.fold_split(data.load_split(synthetic, "trainval"), 5, folds)


def test_the_command_line_fills_the_cache_ahead(synthetic, tiny, tmp_path):
    """README's `python data.py --data DIR --model MODEL`: every train+val video's frames land in the cache under the
    key a run with that model at the default budget reads (train.py then decodes nothing), and the split is summed up."""
    cache = tmp_path / "cache"
    code, out, err = script("data.py", "--data", synthetic, "--model", tiny, "--cache", cache)
    assert code == 0, out + err
    videos = data.load_split(synthetic, "trainval")
    assert len(os.listdir(cache)) == len(videos) == 255  # one JPEG a video
    budget = model.budget_of(model.load_processor(tiny, DEFAULT_MAX_PIXELS))
    assert all(os.path.isfile(FrameCache(str(cache), 3, budget).path(v)) for v in videos)
    mean = np.mean([v.score for v in videos])
    assert out.strip().splitlines()[-1] == f"trainval: 255 videos, 255 labelled, mean score {mean:.3f}"


def break_score(layout, root):
    """One labelled record's score made bad: 1.7 in the authors' JSON (record 4), 'n/a' in VideoMem's ground truth
    (video5.webm, whose video id is video5). Returns that video's id."""
    if layout == "json":
        path = os.path.join(root, data.JSON_FILES["train"])
        records = json.load(open(path))
        records[4]["mem_score"] = 1.7
        json.dump(records, open(path, "w"))
        return "synthetic_00004"
    path = os.path.join(root, "dev-set", "ground-truth", sources.VIDEOMEM_TRUTH.format("dev-set"))
    with open(path) as f:
        rows = list(csv.reader(f))
    column = rows[0].index("short-term_memorability")
    next(r for r in rows if r[0] == "video5.webm")[column] = "n/a"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return "video5"


@pytest.mark.parametrize("layout", ["json", "videomem"])
def test_a_skipped_record_keeps_its_fold_and_moves_no_other(layout, tmp_path):
    """The folds are drawn from the whole labelled list: a record --skip-bad leaves out keeps its place in the draw,
    so its fold is one video short and every other video stays in the fold it has with the record intact; the folds
    train.py holds out (train_heldout) and predict.py predicts (heldout) are those."""
    clean = make_synthetic(str(tmp_path / "clean"), n=20, seed=3, layout=layout)
    broken = str(tmp_path / "broken")
    shutil.copytree(clean, broken)
    dropped = break_score(layout, broken)
    _, folds = data.trainval_folds(clean, 3, 0)
    with pytest.raises(InputError, match=re.escape(dropped)):
        data.trainval_folds(broken, 3, 0)  # without --skip-bad, it stops the run
    bad = []
    videos, drawn = data.trainval_folds(broken, 3, 0, bad)
    assert [b["video_id"] for b in bad] == [dropped] and dropped not in {v.video_id for v in videos}
    assert drawn == folds
    for k in range(3):
        rest, held, _ = data.train_heldout(broken, "trainval", k, 3, 0, [])
        assert sorted(v.video_id for v in held) == [i for i in folds[k] if i != dropped]
        assert sorted(v.video_id for v in rest) == sorted(i for j, f in enumerate(folds) if j != k for i in f
                                                          if i != dropped)
        assert [v.video_id for v in data.heldout(broken, "trainval", k, 3, 0, [])] == [v.video_id for v in held]


BROKEN_VIDEOS = {  # how to write the broken file, and what the one line must say after its path
    "empty file": (lambda path, clip: open(path, "wb").close(), "empty file (0 bytes), not a video"),
    "random bytes": (lambda path, clip: open(path, "wb").write(np.random.default_rng(0).bytes(5000)),
                     "corrupt, truncated or not a video: FFmpeg: Invalid data found when processing input"),
    "truncated mp4": (lambda path, clip: open(path, "wb").write(clip[:len(clip) // 2]),
                      "corrupt, truncated or not a video: FFmpeg: Invalid data found when processing input "
                      "(moov atom not found)"),
    "audio only": (lambda path, clip: write_audio(path), "no video stream (the file holds audio)"),
    "no frames": (lambda path, clip: write_no_frames(path), "its video stream holds no frames"),
    "unknown codec": (lambda path, clip: open(path, "wb").write(clip.replace(b"avc1", b"zzzz")),
                      "unsupported codec: this FFmpeg has no decoder for its video stream"),
}


def write_audio(path):
    """Half a second of silence as AAC in an .mp4: a file with no video stream."""
    import av

    with av.open(path, "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_no_frames(path):
    """An AVI with a video stream and not one frame in it."""
    import av

    with av.open(path, "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width = stream.height = 64
        container.start_encoding()


@pytest.mark.parametrize("case", list(BROKEN_VIDEOS))
def test_a_broken_video_says_what_is_wrong(case, tmp_path):
    """A video that gives no frames is one line naming the file and what is wrong with it, in FFmpeg's words where
    FFmpeg rejects the data: never a traceback, nor one message for every cause."""
    write_video(str(tmp_path / "clip.mp4"), synthetic_frames(0.2, 0.8, np.ones(3), 24, 64))
    clip = (tmp_path / "clip.mp4").read_bytes()
    assert clip.find(b"moov") > clip.find(b"mdat") > 0  # the index at the end: half the file has none
    path = str(tmp_path / "broken.mp4")
    writes, message = BROKEN_VIDEOS[case]
    writes(path, clip)
    with pytest.raises(InputError) as e:
        read_frames(path, 3)
    assert str(e.value).startswith(f"{path}: {message}") and "\n" not in str(e.value), str(e.value)
