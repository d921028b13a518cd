"""MediaEval 2021's TRECVid set and VideoMem, read as their public loaders read them (sources.py): splits, captions of
any count, short- and long-term scores, webm videos; one line naming the file and row for each bad input; --target long
learning the long-term rule and not the short-term one; and a run of one source predicting another's test set
(MediaEval 2021's subtask 2) through predict.py and cv.py --heldout-source."""

import csv
import dataclasses
import json
import os
import shutil

import pytest
from scipy import stats

import data
import predict
import prompt
import sources
import train
from errors import InputError
from frames import read_frames
from synthetic import make_synthetic
from conftest import RECIPE, command, script
from test_train import LEARNED, MSE, UNLEARNED


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def srcc(predictions, labels):
    """SRCC of a predictions CSV against {video_id: score}, over the videos both name."""
    ids = [i for i in predictions if i in labels]
    return stats.spearmanr([predictions[i] for i in ids], [labels[i] for i in ids]).statistic


@pytest.fixture(scope="module")
def trecvid_small(tmp_path_factory):
    """20 videos in MediaEval 2021's TRECVid layout (14 train, 3 dev, 3 test)."""
    return make_synthetic(str(tmp_path_factory.mktemp("trecvid-small")), n=20, seed=3, layout="trecvid")


@pytest.fixture(scope="module")
def videomem_small(tmp_path_factory):
    """The same 20 videos in VideoMem's layout (17 in dev-set, 3 in test-set), as webm."""
    return make_synthetic(str(tmp_path_factory.mktemp("videomem-small")), n=20, seed=3, layout="videomem")


# -----------------------------------------------------------------------------
# reading the releases


def test_trecvid_layout(trecvid_small):
    assert sources.layout(trecvid_small) == "trecvid" and data.source(trecvid_small) == "TRECVid"
    train, val, test = (data.load_split(trecvid_small, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (14, 3, 3)
    assert train[0].video_id == "00000" and train[0].path.endswith(os.path.join("training_set", "Videos", "00000.mp4"))
    assert val[0].path.endswith(os.path.join("dev_set", "Videos", f"{val[0].video_id}.mp4"))
    # one row a caption: every row of a video is one of its captions, in order, however many it has
    rows = read_csv(os.path.join(trecvid_small, "training_set", "train_text_descriptions.csv"))
    assert all(v.captions == [r["description"] for r in rows if r["video_id"] == v.video_id] for v in train)
    assert len({len(v.captions) for v in train + val + test}) > 1 and all(v.captions for v in train + val + test)
    # short-term: the normalized score; long-term: the raw long-term score; the test split's labels are withheld
    scores = {r["video_id"]: r for r in read_csv(os.path.join(trecvid_small, "training_set", "train_scores.csv"))}
    long = data.load_split(trecvid_small, "train", target="long")
    assert [v.score for v in train] == [float(scores[v.video_id]["scores_normalized_short_term"]) for v in train]
    assert [v.score for v in long] == [float(scores[v.video_id]["scores_raw_long_term"]) for v in train]
    assert [v.score for v in long] != [v.score for v in train]
    assert all(v.score is None for v in data.load_split(trecvid_small, "test", target="long"))
    assert len(data.load_split(trecvid_small, "trainval", target="long")) == 17


def test_videomem_layout(videomem_small, tmp_path):
    assert sources.layout(videomem_small) == "videomem" and data.source(videomem_small) == "VideoMem"
    dev, test = data.load_split(videomem_small, "trainval"), data.load_split(videomem_small, "test")
    assert (len(dev), len(test)) == (17, 3)
    v = dev[0]
    assert v.video_id == "video0" and v.path == os.path.join(videomem_small, "dev-set", "sources", "video0.webm")
    assert read_frames(v.path, 3).shape == (3, 64, 64, 3)  # webm (VP9) decodes like the mp4 clips
    # one caption a video, its words joined by dashes on disk, spaces in the prompt
    with open(os.path.join(videomem_small, "dev-set", "dev-set_video-captions.txt")) as f:
        name, caption = f.readline().split()
    assert name == "video0.webm" and "-" in caption and v.captions == [caption.replace("-", " ")]
    truth = {r["video"]: r for r in read_csv(os.path.join(videomem_small, "dev-set", "ground-truth",
                                                          "ground-truth_dev-set.csv"))}
    assert [v.score for v in dev] == [float(truth[f"{v.video_id}.webm"]["short-term_memorability"]) for v in dev]
    assert [v.score for v in data.load_split(videomem_small, "trainval", target="long")] == [
        float(truth[f"{v.video_id}.webm"]["long-term_memorability"]) for v in dev]
    assert all(v.score is None for v in test)
    assert test[0].path == os.path.join(videomem_small, "test-set", "sources", "video17.webm")
    with pytest.raises(InputError, match="VideoMem has no train split, only trainval and test .* --split trainval"):
        data.load_split(videomem_small, "train")

    # the test captions under the other name public loaders use, and the test set's ground truth where released
    root = str(tmp_path / "videomem")
    shutil.copytree(videomem_small, root)
    test_dir = os.path.join(root, "test-set")
    os.rename(os.path.join(test_dir, "test-set_videos-captions.txt"),
              os.path.join(test_dir, "test-set_video-captions.txt"))
    os.makedirs(os.path.join(test_dir, "ground-truth"))
    labels = predict.read_labels(os.path.join(root, "test_labels_long.csv"))
    with open(os.path.join(test_dir, "ground-truth", "ground-truth_test-set.csv"), "w") as f:
        f.write("video,short-term_memorability,nb_short-term_annotations,long-term_memorability,"
                "nb_long-term_annotations\n")
        f.writelines(f"{k}.webm,0.5,30,{s},10\n" for k, s in labels.items())
    assert {v.video_id: v.score for v in data.load_split(root, "test", target="long")} == labels


def test_every_layout_is_detected_or_named(tmp_path, trecvid_small):
    root = tmp_path / "mediaeval2021"
    for name in ("Memento10k Data", "TRECVid Data"):
        shutil.copytree(os.path.join(trecvid_small, "training_set"), root / name / "training_set")
    with pytest.raises(InputError, match="holds Memento10k Data and TRECVid Data: pass one of them as --data"):
        data.load_split(str(root), "train")
    with pytest.raises(InputError, match="expected memento_train_data.json .*train_scores.csv .*ground-truth_dev-set"):
        data.load_split(str(tmp_path), "train")
    memento = make_synthetic(str(tmp_path / "memento"), n=10, seed=2, layout="csv")
    assert sources.layout(memento) == "csv"
    with pytest.raises(InputError, match="Memento10k has short-term scores only, not long-term: --target long needs"):
        data.load_split(memento, "train", target="long")


def test_the_prompt_keeps_listing_1_with_the_captions_a_video_has():
    for captions in (["one caption"], ["a first", "a second", "a third"]):
        content = prompt.messages(captions, 3)[0]["content"]
        assert content[-1]["text"] == "\n".join(captions) + "\n" + prompt.ANSWER_CUE
        assert content[0]["text"] == prompt.INSTRUCTION + "\n" and sum(c["type"] == "image" for c in content) == 3
    video = data.Video("v", "v.mp4", ["a"] * 5, 0.5)
    assert data.captions_note([video, video]) is None
    assert data.captions_note([video, data.Video("w", "w.webm", ["a"], 0.5)]).startswith(
        "captions a video: 1 to 5 (mean 3.0), not Listing 1's five")


# -----------------------------------------------------------------------------
# bad input: one line naming the file and the row


def rewrite(path, change):
    """Apply `change` to the lines of a text file."""
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(change(lines)) + "\n")


def drop_column(name):
    def change(lines):
        header = lines[0].split(",")
        k = header.index(name)
        return [",".join(x for j, x in enumerate(line.split(",")) if j != k) for line in lines]
    return change


def set_cell(line, column, value):
    def change(lines):
        k = lines[0].split(",").index(column)
        cells = lines[line - 1].split(",")
        cells[k] = value
        return lines[:line - 1] + [",".join(cells)] + lines[line:]
    return change


TRECVID_SCORES, TRECVID_CAPTIONS = "training_set/train_scores.csv", "training_set/train_text_descriptions.csv"
VIDEOMEM_TRUTH = "dev-set/ground-truth/ground-truth_dev-set.csv"
VIDEOMEM_CAPTIONS = "dev-set/dev-set_video-captions.txt"
# layout, file, how it breaks, the split read, and the one line that must name the file and the row
BAD = {
    "TRECVid without its long-term column": (
        "trecvid", TRECVID_SCORES, drop_column("scores_raw_long_term"), "train",
        f"{TRECVID_SCORES}: line 1: missing column(s) scores_raw_long_term (expected a header with video_id, "
        "scores_raw_long_term)"),
    "VideoMem without its long-term column": (
        "videomem", VIDEOMEM_TRUTH, drop_column("long-term_memorability"), "trainval",
        f"{VIDEOMEM_TRUTH}: line 1: missing column(s) long-term_memorability"),
    "TRECVid captions under another column": (
        "trecvid", TRECVID_CAPTIONS, lambda lines: ["video_id,text"] + lines[1:], "train",
        f"{TRECVID_CAPTIONS}: line 1: expected the columns video_id,description (one row a caption) or "),
    "a TRECVid caption of an unknown video": (
        "trecvid", TRECVID_CAPTIONS, lambda lines: lines + ["99999,a caption of no video"], "train",
        f"{TRECVID_CAPTIONS}: line LAST: video 99999 is not in train_scores.csv"),
    "a VideoMem caption of an unknown video": (
        "videomem", VIDEOMEM_CAPTIONS, lambda lines: lines + ["video99999.webm\ta-caption-of-no-video"], "trainval",
        f"{VIDEOMEM_CAPTIONS}: line LAST: video video99999.webm is not in ground-truth_dev-set.csv"),
    "a TRECVid long-term score above 1": (
        "trecvid", TRECVID_SCORES, set_cell(4, "scores_raw_long_term", "1.7"), "train",
        f"{TRECVID_SCORES}: line 4 (video 00002): score 1.7 is outside [0, 1]"),
    "a VideoMem long-term score below 0": (
        "videomem", VIDEOMEM_TRUTH, set_cell(2, "long-term_memorability", "-0.2"), "trainval",
        f"{VIDEOMEM_TRUTH}: line 2 (video video0.webm): score -0.2 is outside [0, 1]"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_the_file_and_row(case, trecvid_small, videomem_small, tmp_path):
    layout, name, breaks, split, message = BAD[case]
    root = str(tmp_path / "data")
    shutil.copytree(trecvid_small if layout == "trecvid" else videomem_small, root)
    path = os.path.join(root, name)
    rewrite(path, breaks)
    with open(path) as f:
        message = message.replace("LAST", str(len(f.read().splitlines())))
    with pytest.raises(InputError) as e:
        data.load_split(root, split, target="long")
    assert str(e.value).startswith(os.path.join(root, message)) and "\n" not in str(e.value), str(e.value)
    if "line 1:" not in message:  # a row's problem: --skip-bad lists it and reads the rest
        bad = []
        videos = data.load_split(root, split, bad, target="long")
        assert [f"{b['where']}: {b['problem']}" for b in bad] == [os.path.join(root, message)]
        whole = data.load_split(trecvid_small if layout == "trecvid" else videomem_small, split, target="long")
        assert len(videos) == len(whole) - ("score" in case)  # a bad score loses its video; a stray caption, nothing


def test_bad_input_stops_train_py_in_one_line(trecvid_small, tmp_path):
    """Through the command line: exit code 2, the one line, nothing written, a run already in --out left as it was."""
    root = str(tmp_path / "data")
    shutil.copytree(trecvid_small, root)
    rewrite(os.path.join(root, TRECVID_SCORES), set_cell(4, "scores_raw_long_term", "1.7"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"earlier": "run"}')
    code, out, err = script("train.py", "--data", root, "--target", "long", "--out", run, "--overwrite",
                            "--cache", tmp_path / "cache")
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [f"error: {root}/{TRECVID_SCORES}: line 4 (video 00002): score 1.7 is outside "
                                        "[0, 1]"], err
    assert os.listdir(run) == ["config.json"] and json.loads((run / "config.json").read_text()) == {"earlier": "run"}
    assert not (tmp_path / "cache").exists()


def test_old_runs_resume_without_the_new_settings():
    """A config.json from before --target and --heldout-data had them at their defaults: a resume compares equal."""
    cfg = train.Config(out="runs/x")
    saved = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("target", "heldout_data")}
    assert train.changed_settings(saved, cfg) == []
    assert train.changed_settings(saved, train.Config(out="runs/x", target="long")) == ["target"]


# -----------------------------------------------------------------------------
# the long-term target, and one source's run predicting another's test set


@pytest.fixture(scope="module")
def trecvid(tmp_path_factory):
    """300 videos in TRECVid's layout (210 train, 45 dev, 45 test), the demo's rule: the short-term score follows the
    last frame, the long-term score the first (synthetic.RULES), drawn independently."""
    folder = str(tmp_path_factory.mktemp("trecvid"))
    command("synthetic.py", folder, "--n", 300, "--layout", "trecvid")  # README's command
    return folder


@pytest.fixture(scope="module")
def videomem(tmp_path_factory):
    """45 test videos (and 15 in dev-set) of the same rules in VideoMem's layout, other videos (seed 1), as webm."""
    return make_synthetic(str(tmp_path_factory.mktemp("videomem")), n=60, seed=1, layout="videomem",
                          fractions=(0.1, 0.15))


def beyond(predicted, short, long):
    """How much more the predictions follow the short-term scores than the long-term scores themselves do: 45 videos'
    two independent scores correlate by chance (-0.25 on these dev videos), and a model of the long-term score inherits
    that, no more (within UNLEARNED, 3 standard deviations of chance)."""
    return srcc(predicted, short) - srcc(long, short)


def test_long_term_target_learns_its_rule_and_predicts_another_source(tiny, trecvid, videomem, cache, tmp_path):
    """train.py --target long on TRECVid with the tiny recipe: its held-out predictions follow the long-term scores and
    not the short-term ones; then predict.py with that run on VideoMem's test set, a source it never saw, as in
    MediaEval 2021's subtask 2: the same. The recipe's 10 epochs, not the 6 of TEST_RECIPE: measured on seeds 0 / 1,
    held-out SRCC 0.80 / 0.70 and on VideoMem 0.73 / 0.83 in 10 epochs; in 6, 0.63 / 0.75 and on VideoMem 0.34 / 0.76,
    where reading the first frame and not the last one is still being learned."""
    out = tmp_path / "run"
    code, log, err = script("train.py", "--data", trecvid, "--target", "long", "--model", tiny, "--out", out,
                            "--cache", cache, *RECIPE, "--log-every", 1000)
    assert code == 0, err[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["target"] == "long" and config["source"] == "TRECVid"
    assert "| target: long-term scores" in log and "captions a video: 1 to 4" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["srcc"] >= LEARNED and metrics["mse"] < MSE and metrics["invalid"] == 0, metrics
    held = predict.read_labels(out / "predictions-val-long.csv")  # the file says which score it predicts
    long = {v.video_id: v.score for v in data.load_split(trecvid, "val", target="long")}
    short = {v.video_id: v.score for v in data.load_split(trecvid, "val")}
    assert len(held) == 45 and srcc(held, long) == pytest.approx(metrics["srcc"])
    assert abs(beyond(held, short, long)) < UNLEARNED, (srcc(held, short), srcc(long, short))

    code, log, err = script("predict.py", "--adapter", out, "--data", videomem, "--split", "test", "--cache", cache,
                            "--labels", os.path.join(videomem, "test_labels_long.csv"))
    assert code == 0, err[-3000:]
    path = out / "predictions-videomem-test-long.csv"
    assert [r["video_id"] for r in read_csv(path)] == [v.video_id for v in data.load_split(videomem, "test")]
    assert list(read_csv(path)[0]) == ["video_id", "mem_score"]  # the submission's format, whatever the score
    assert "across sources: the run trained on TRECVid" in log and "predictions of the long-term score" in log
    predicted = predict.read_labels(path)
    long, short = (predict.read_labels(os.path.join(videomem, name)) for name in ("test_labels_long.csv",
                                                                                   "test_labels.csv"))
    assert srcc(predicted, long) >= LEARNED and f"SRCC {srcc(predicted, long):.4f}" in log, log
    assert abs(beyond(predicted, short, long)) < UNLEARNED, (srcc(predicted, short), srcc(long, short))


def test_cv_holds_out_a_whole_source(tiny, trecvid_small, videomem_small, cache, tmp_path):
    """cv.py --heldout-source: each config trains once on all of one source's labelled videos and is scored on all of
    the other's, one row a config; the summary says so."""
    out = tmp_path / "cv"
    code, log, err = script("cv.py", "--data", trecvid_small, "--heldout-source", videomem_small, "--target", "long",
                            "--model", tiny, "--cache", cache, "--out", out, "--r", 4, "--alpha", 8, "--epochs", 2,
                            "--lr", 1e-3, "--no-grad-ckpt", "--eval-batch-size", 17, "--log-every", 1000)
    assert code == 0, err[-3000:]
    assert f"training videos: 17 | held-out videos: 17 (of {videomem_small})" in log
    rows = read_csv(out / "results.csv")
    assert [(r["config"], r["fold"], r["n"]) for r in rows] == [("r4-a8", "0", "17")]
    predicted = predict.read_labels(out / "r4-a8" / "heldout-source" / "predictions-heldout-source-long.csv")
    long = {v.video_id: v.score for v in data.load_split(videomem_small, "trainval", target="long")}
    assert set(predicted) == set(long)
    row, ours = float(rows[0]["srcc"]), srcc({k: round(100 * p) for k, p in predicted.items()}, long)
    assert row == pytest.approx(ours, abs=1e-6) or (row != row and ours != ours)  # NaN: constant predictions
    summary = (out / "summary.md").read_text()
    assert f"| SRCC on the held-out source {videomem_small} |" in summary and "| r4-a8 | lora | 4 | 8 | 1 |" in summary
    assert (out / "figure-4-heatmap.png").is_file()
    assert (out / "figure-5-scatter.png").is_file() == (row == row)  # the best config's scatter, where one is best
