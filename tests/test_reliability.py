"""Bad input gets a one-line error (exit code 2) naming the file or record, or with --skip-bad a warning and a
list in the run directory, and what it skips moves no other video's fold; labels that match none or part of the
predictions say so; odd but valid videos just work; a run killed at any step resumes to the same bits, every random
generator and the whole adapter restored, or says in one line what in its checkpoint is damaged."""

import csv
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import cv
import data
import model
import train
from plumbing.checkpoint import load_checkpoint, save_checkpoint
from plumbing.errors import InputError, cli
from frames import read_frames
from scaffold.synthetic import make_synthetic, write_video
from conftest import ROOT, script
from plumbing import files


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """20 synthetic videos (14 train, 3 val, 3 test), copied afresh for each case that breaks something."""
    return make_synthetic(str(tmp_path_factory.mktemp("small")), n=20, seed=3)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    return make_synthetic(str(tmp_path_factory.mktemp("small-csv")), n=20, seed=3, layout="csv")


def train_cli(*args):
    return script("train.py", *args)


def snapshot(folder):
    return {os.path.relpath(os.path.join(d, f), folder): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(folder) for f in files}


def edit_json(root, split, change):
    path = os.path.join(root, data.JSON_FILES[split])
    with open(path) as f:
        records = json.load(f)
    change(records)
    with open(path, "w") as f:
        json.dump(records, f)


def video(root, i):
    return os.path.join(root, "videos", f"synthetic_{i:05d}.mp4")


def set_field(i, key, value):
    return lambda records: records[i].__setitem__(key, value)


# Each case: how to break a copy of the small dataset, and what the message must name.
CASES = {
    "missing video": (lambda r: os.remove(video(r, 1)), "record 1 (synthetic_00001): missing video file"),
    "zero-byte video": (lambda r: open(video(r, 2), "wb").close(), "synthetic_00002.mp4: empty file (0 bytes), not a video"),
    "corrupt video": (lambda r: open(video(r, 3), "wb").write(os.urandom(5000)), "synthetic_00003.mp4: corrupt, truncated or not a video: FFmpeg: Invalid data"),
    "four captions": (lambda r: edit_json(r, "train", lambda x: x[4]["captions"].pop()), "record 4 (synthetic_00004): expected 5 captions, found 4"),
    "six captions": (lambda r: edit_json(r, "train", lambda x: x[5]["captions"].append("one more")), "record 5 (synthetic_00005): expected 5 captions, found 6"),
    "empty caption": (lambda r: edit_json(r, "train", lambda x: x[6]["captions"].__setitem__(2, " ")), "record 6 (synthetic_00006): caption 2 is empty"),
    "duplicate id": (lambda r: edit_json(r, "train", lambda x: x.append(dict(x[7]))), "duplicate video id synthetic_00007"),
    "missing score": (lambda r: edit_json(r, "train", lambda x: x[8].pop("mem_score")), "record 8 (synthetic_00008): no score"),
    "NaN score": (lambda r: edit_json(r, "train", set_field(9, "mem_score", float("nan"))), "record 9 (synthetic_00009): score nan is outside [0, 1]"),
    "score above 1": (lambda r: edit_json(r, "train", set_field(10, "mem_score", 1.7)), "record 10 (synthetic_00010): score 1.7 is outside [0, 1]"),
    "duplicate across train and val": (lambda r: edit_json(r, "val", lambda x: x.append(dict(x[0], filename="synthetic_00011.mp4"))), "duplicate video id synthetic_00011"),
}
FILE_CASES = {  # whole-file problems: never skippable
    "non-UTF-8 bytes": (lambda r: open(os.path.join(r, "memento_train_data.json"), "ab").write(b"\n\xff\xfe"), "memento_train_data.json: line"),
    "malformed JSON": (lambda r: open(os.path.join(r, "memento_train_data.json"), "w").write('[\n{"filename": "a.mp4",\n'), "memento_train_data.json: line 3: malformed JSON"),
}


@pytest.mark.parametrize("case", list(CASES) + list(FILE_CASES))
def test_bad_input_gets_one_line(case, small, tiny, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(small, root)
    breaks, message = {**CASES, **FILE_CASES}[case]
    breaks(root)
    before = snapshot(root)
    code, out, err = train_cli("--data", root, "--model", tiny, "--out", tmp_path / "run", "--cache", tmp_path / "run" / "cache")
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert message in errors[0], err
    assert snapshot(root) == before  # nothing written outside the run directory
    assert set(os.listdir(tmp_path)) <= {"data", "run"}
    assert not os.path.exists(tmp_path / "run" / "config.json")


def test_malformed_csv_says_the_line(small_csv, tiny, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(small_csv, root)
    with open(os.path.join(root, "training_set", "train_scores.csv"), "a") as f:
        f.write("99,https://example.invalid/x.mp4,90,0.5\n")
    code, out, err = train_cli("--data", root, "--model", tiny, "--out", tmp_path / "run", "--cache", tmp_path / "cache")
    assert code == 2 and "train_scores.csv: line 16: expected 6 fields" in err, err


def test_skip_bad_lists_and_trains_on_the_rest(small, tiny, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(small, root)
    for breaks, _ in CASES.values():
        breaks(root)
    code, out, err = train_cli("--data", root, "--model", tiny, "--out", tmp_path / "run", "--cache", tmp_path / "cache",
                               "--skip-bad", "--epochs", 1, "--r", 4, "--alpha", 8, "--no-grad-ckpt")
    assert code == 0, err
    with open(tmp_path / "run" / "skipped.csv") as f:
        skipped = list(csv.DictReader(f))
    assert len(skipped) == len(CASES)
    assert {s["video_id"] for s in skipped} == {f"synthetic_{i:05d}" for i in range(1, 12)}
    assert f"skipped {len(CASES)} bad videos or records" in err and err.count("warning: skipped") == len(CASES)
    # 9 of the 14 training videos are broken; the duplicates' first copies (7, 11) stay
    assert "training videos: 5 |" in out
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_odd_videos_just_work(small, tiny, tmp_path):
    """A one-frame clip, another container (.mkv, no .mp4), grayscale frames, odd frame sizes."""
    import av

    root = str(tmp_path / "data")
    shutil.copytree(small, root)
    write_video(video(root, 0), np.full((1, 64, 64, 3), 200, np.uint8))  # one frame
    os.remove(video(root, 1))
    with av.open(os.path.join(root, "videos", "synthetic_00001.mkv"), "w") as c:  # gray, odd-sized, lossless
        s = c.add_stream("ffv1", rate=24)
        s.width, s.height, s.pix_fmt = 67, 45, "gray"
        for t in range(10):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.full((45, 67), 20 * t, np.uint8), format="gray")))
        c.mux(s.encode())
    edit_json(root, "train", set_field(1, "filename", "synthetic_00001.mkv"))

    frames = read_frames(video(root, 0), 3)
    assert frames.shape == (3, 64, 64, 3) and (frames[0] == frames[2]).all()
    frames = read_frames(os.path.join(root, "videos", "synthetic_00001.mkv"), 3)
    assert frames.shape == (3, 45, 67, 3) and [int(f.mean()) for f in frames] == [0, 80, 180]  # frames 0, 4, 9

    code, out, err = train_cli("--data", root, "--model", tiny, "--out", tmp_path / "run", "--cache", tmp_path / "cache",
                               "--epochs", 1, "--r", 4, "--alpha", 8, "--no-grad-ckpt")
    assert code == 0, err
    assert "training videos: 14 |" in out


def test_model_folder_without_weights(tiny, small, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny, folder)
    os.remove(folder / "model.safetensors")
    code, out, err = train_cli("--data", small, "--model", folder, "--out", tmp_path / "run", "--cache", tmp_path / "cache")
    assert code == 2 and f"error: {folder}: no weights" in err and "Traceback" not in err, err


def test_adapter_of_another_base_model(tiny, tiny3, small, tmp_path):
    m = model.add_lora(model.load_model(tiny), 4, 8)
    model.save_adapter(m, str(tmp_path / "adapter"))
    code, _, err = script("predict.py", "--data", small, "--adapter", tmp_path / "adapter", "--model", tiny3, "--split",
                          "val", "--cache", tmp_path / "cache")
    assert code == 2 and f"adapter was trained on {tiny}, not {tiny3}" in err, err
    assert not os.path.exists(tmp_path / "cache")  # refused before any work


def test_out_dir_holding_another_run(small, tiny, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "notes.txt").write_text("mine")
    code, out, err = train_cli("--data", small, "--model", tiny, "--out", run, "--cache", tmp_path / "cache")
    assert code == 2 and f"{run}: holds a run already; pass --resume" in err, err
    assert (run / "notes.txt").read_text() == "mine"


def test_killed_run_resumes_bit_for_bit(tiny, tmp_path_factory, tmp_path):
    root = make_synthetic(str(tmp_path_factory.mktemp("resume")), n=40, seed=5)
    # 28 training videos, batch 2: 14 steps an epoch, 2 epochs; a checkpoint every 4 steps and at each epoch's end;
    # LoRA dropout on, so the RNG state must be restored too.
    flags = ["--data", root, "--model", tiny, "--cache", tmp_path / "cache", "--r", 4, "--alpha", 8, "--lr", 1e-3,
             "--epochs", 2, "--batch-size", 2, "--ckpt-every", 4, "--no-grad-ckpt"]
    code, _, err = train_cli(*flags, "--out", tmp_path / "a")
    assert code == 0, err

    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *map(str, flags), "--out", tmp_path / "b"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loss_log, kill_at = tmp_path / "b" / "loss.csv", 17  # mid-epoch 1, one step after a checkpoint
    while proc.poll() is None:
        if loss_log.exists() and len(loss_log.read_text().splitlines()) > kill_at:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "b" / "adapter").exists()
    code, out, err = train_cli(*flags, "--out", tmp_path / "b", "--resume")
    assert code == 0, err
    assert "resumed from" in out

    a = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # bit for bit
    assert (tmp_path / "a" / "loss.csv").read_text() == loss_log.read_text()
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_resume_refuses_changed_settings(small, tiny, tmp_path):
    flags = ["--data", small, "--model", tiny, "--out", tmp_path / "run", "--cache", tmp_path / "cache",
             "--epochs", 1, "--r", 4, "--alpha", 8, "--no-grad-ckpt"]
    assert train_cli(*flags)[0] == 0
    code, out, err = train_cli(*flags[:-5], "--r", 8, "--alpha", 8, "--no-grad-ckpt", "--resume")
    assert code == 2 and "differ from the run's: r" in err, err


def test_out_of_memory_and_ctrl_c_say_what_to_do(capsys):
    class OutOfMemoryError(RuntimeError):  # what torch raises: matched by name, so data.py needs no torch
        pass

    for raised, code, says in [(OutOfMemoryError("CUDA out of memory"), 3, "lower --batch-size (raise --grad-accum"),
                               (KeyboardInterrupt(), 130, "with --resume"),
                               (InputError("x.json: line 3: malformed JSON"), 2, "error: x.json: line 3")]:
        def main():
            raise raised

        with pytest.raises(SystemExit) as e:
            cli(main)
        assert e.value.code == code and says in capsys.readouterr().err
    with pytest.raises(ValueError):  # anything else is a bug: its traceback is kept
        cli(lambda: int("x"))


@pytest.mark.parametrize("scores", ["header only", "missing", "one score kept"])
def test_mediaeval_test_split_comes_from_the_descriptions(scores, small_csv, tiny, tmp_path):
    """Labels withheld: the test videos are those test_text_descriptions.csv lists, whatever test_scores.csv holds."""
    root = str(tmp_path / "data")
    shutil.copytree(small_csv, root)
    with open(os.path.join(root, "test_set", "test_text_descriptions.csv")) as f:
        ids = [row["video_id"] for row in csv.DictReader(f)]
    header = "video_id,video_url,annotations_short_term,scores_raw_short_term,scores_normalized_short_term,decay_alpha\n"
    path = os.path.join(root, "test_set", "test_scores.csv")
    assert not os.path.exists(path)  # the synthetic release withholds the file
    if scores != "missing":
        with open(path, "w") as f:
            f.write(header + (f"{ids[0]},u,90,0.7,0.7,-0.01\n" if scores == "one score kept" else ""))
    assert [v.video_id for v in data.load_split(root, "test")] == ids and len(ids) == 3
    assert [v.score for v in data.load_split(root, "test")] == [0.7 if scores == "one score kept" else None, None, None]
    code, out, err = script("predict.py", "--data", root, "--zero-shot", "--model", tiny, "--split", "test",
                                "--cache", tmp_path / "cache", "--out", tmp_path / "submission.csv")
    assert code == 0, err
    with open(tmp_path / "submission.csv") as f:
        assert [row["video_id"] for row in csv.DictReader(f)] == ids
    assert f"wrote {len(ids)} predictions" in out


def empty_file(path, text):
    return lambda root: open(os.path.join(root, path), "w").write(text)


HEADER = "video_id,video_url,annotations_short_term,scores_raw_short_term,scores_normalized_short_term,decay_alpha\n"
EMPTY = {  # how to empty a split, which script meets it, and the file its one-line error names
    "train scores, header only": ("csv", empty_file("training_set/train_scores.csv", HEADER), "train.py",
                                  "training_set/train_scores.csv: holds no videos"),
    "test descriptions, header only": ("csv", empty_file("test_set/test_text_descriptions.csv", "video_id,description\n"),
                                       "predict.py", "test_set/test_text_descriptions.csv: holds no videos"),
    "test JSON, no records": ("json", empty_file("memento_test_data.json", "[]"), "predict.py",
                              "memento_test_data.json: holds no videos"),
    "val JSON, no records": ("json", empty_file("memento_val_data.json", "[]"), "cv.py",
                             "memento_val_data.json: holds no videos"),
}


@pytest.mark.parametrize("case", list(EMPTY))
def test_an_empty_split_is_an_error(case, small, small_csv, tiny, tmp_path):
    layout, breaks, name, message = EMPTY[case]
    root = str(tmp_path / "data")
    shutil.copytree(small if layout == "json" else small_csv, root)
    breaks(root)
    out = tmp_path / "out"
    flags = {"train.py": ["--out", out], "cv.py": ["--out", out, "--folds", 2],
             "predict.py": ["--zero-shot", "--split", "test", "--out", out / "submission.csv"]}[name]
    code, _, err = script(name, "--data", root, "--model", tiny, "--cache", tmp_path / "cache", *flags)
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("error: ") and message in err and "Traceback" not in err, err
    assert not (out / "submission.csv").exists() and not (out / "config.json").exists()


def test_a_dropped_video_or_record_moves_no_other_fold(small, tiny, tmp_path):
    """Under --skip-bad, a video that does not decode and a record that is bad each leave their fold one video short
    and move no other video: folds.json holds the folds of the whole labelled list as the run used them (exactly the
    videos it trained on and held out) and names what it dropped with their folds; the held-out predictions, and
    predict.py --fold K on the same data, are exactly the held-out fold."""
    root = str(tmp_path / "data")
    shutil.copytree(small, root)
    clip = open(video(root, 2), "rb").read()
    open(video(root, 2), "wb").write(clip[:len(clip) // 2])  # truncated: decodes no more
    edit_json(root, "train", set_field(10, "mem_score", 1.7))
    dropped = {"synthetic_00002", "synthetic_00010"}
    folds = data.make_folds([v.video_id for v in data.load_split(small, "trainval")], 3, 0)  # of the data intact
    k = next(k for k, ids in enumerate(folds) if "synthetic_00002" in ids)  # the held-out fold loses a video
    code, out, err = train_cli("--data", root, "--model", tiny, "--out", tmp_path / "run", "--cache", tmp_path / "cache",
                               "--split", "trainval", "--fold", k, "--folds", 3, "--skip-bad", "--epochs", 1,
                               "--r", 4, "--alpha", 8, "--no-grad-ckpt")
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "folds.json").read_text())
    assert record["folds"] == [[i for i in ids if i not in dropped] for ids in folds] and record["fold"] == k
    assert record["dropped"] == {i: j for j, ids in enumerate(folds) for i in ids if i in dropped}
    assert f"training videos: {sum(map(len, record['folds'])) - len(record['folds'][k])} |" in out
    with open(tmp_path / "run" / f"predictions-trainval-fold{k}.csv") as f:
        assert sorted(row["video_id"] for row in csv.DictReader(f)) == record["folds"][k]
    code, out, err = script("predict.py", "--data", root, "--adapter", tmp_path / "run", "--split", "trainval",
                            "--fold", k, "--skip-bad", "--cache", tmp_path / "cache", "--out", tmp_path / "fold.csv")
    assert code == 0, err
    with open(tmp_path / "fold.csv") as f:
        assert sorted(row["video_id"] for row in csv.DictReader(f)) == record["folds"][k]


def write_labels(path, text):
    path.write_text(text)
    return path


def test_labels_that_do_not_match_the_predictions(small, tiny, tmp_path):
    """predict.py --labels whose ids match only some of the predicted videos: a warning saying how many match, with an
    id of each side, and SRCC over those; matching none: the same line as an error, exit code 2, after the
    predictions are written. A labels file without its columns or with a score that is no number stops the run
    before any work, in one line naming the file and line."""
    with open(os.path.join(small, data.JSON_FILES["train"])) as f:
        truth = {os.path.splitext(r["filename"])[0]: r["mem_score"] for r in json.load(f)}  # the 14 train videos
    ids = list(truth)
    flags = ["--data", small, "--zero-shot", "--model", tiny, "--split", "train", "--cache", tmp_path / "cache"]

    # none: the ids written as MediaEval 2021's CSV writes them
    labels = write_labels(tmp_path / "none.csv", "video_id,mem_score\n" + "".join(f"{i:05d},0.8\n" for i in range(14)))
    code, out, err = script("predict.py", *flags, "--labels", labels, "--out", tmp_path / "none-predictions.csv")
    assert code == 2, out + err
    assert err.strip().splitlines()[-1] == (f"error: {labels}: labels for 0 of the 14 predicted videos: {ids[0]} is "
                                            "predicted but not in the labels, 00000 is in the labels but not predicted")
    assert "Traceback" not in err and "SRCC" not in out
    assert len((tmp_path / "none-predictions.csv").read_text().splitlines()) == 15  # written, and kept

    # part: 10 of the 14, and one id of no predicted video
    labels = write_labels(tmp_path / "part.csv", "video_id,mem_score\n" + "".join(f"{i},{truth[i]}\n" for i in ids[4:])
                          + "elsewhere_00001,0.5\n")
    code, out, err = script("predict.py", *flags, "--labels", labels, "--out", tmp_path / "part-predictions.csv")
    assert code == 0, err
    assert (f"warning: {labels}: labels for 10 of the 14 predicted videos: {ids[0]} is predicted but not in the "
            "labels, elsewhere_00001 is in the labels but not predicted; scoring those 10") in err
    assert "n=10)" in out

    for name, text, message in [
        ("columns.csv", "id,score\nsynthetic_00000,0.8\n", "line 1: missing column(s) video_id, mem_score"),
        ("number.csv", f"video_id,mem_score\n{ids[0]},0.8\n{ids[1]},high\n", "line 3: score 'high' is not a number"),
    ]:
        code, out, err = script("predict.py", *flags[:-2], "--labels", write_labels(tmp_path / name, text),
                                "--cache", tmp_path / f"{name}-cache", "--out", tmp_path / f"{name}-predictions.csv")
        assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: {tmp_path / name}: {message}"), err
        assert not (tmp_path / f"{name}-predictions.csv").exists() and not (tmp_path / f"{name}-cache").exists()


def test_cv_figures_refuse_predictions_of_other_videos(small, tmp_path):
    """cv.py's Figure 5 reads the folds' predictions against the truth: files whose ids name none of the data's videos
    are one line naming the data and an id of each side, not an empty figure."""
    template = train.Config(data=small, out=str(tmp_path), split="trainval", folds=2, r=4, alpha=8)
    for cfg in cv.plan(template, dict(r=[4], alpha=[8.0])).values():
        os.makedirs(cfg.out)
        files.write_csv(cv.predictions_path(cfg), ["video_id", "mem_score"], [[f"{cfg.fold:05d}", "0.80"]])
    with pytest.raises(InputError, match=re.escape(f"{small}: labels for 0 of the 2 predicted videos: 00000 is "
                                                   "predicted but not in the labels, synthetic_00000 is in the labels "
                                                   "but not predicted")):
        cv.figures(template, dict(r=4, alpha=8, config="r4-a8"))


@pytest.fixture(scope="module")
def run_state(tiny, tmp_path_factory):
    """A fresh LoRA on the tiny model, its optimizer and its run's settings: what a run checkpoints."""
    folder = tmp_path_factory.mktemp("checkpoints")
    cfg = train.Config(data=str(folder), model=tiny, out=str(folder / "run"), r=4, alpha=8, keep=10)
    net = model.add_lora(model.load_model(tiny, "none"), cfg.r, cfg.alpha)
    return cfg, net, train.optimizer(net, cfg)


def checkpoint(cfg, model, opt, step):
    """save_checkpoint at `step`, as a run writes it: its path."""
    os.makedirs(cfg.out, exist_ok=True)
    save_checkpoint(cfg, step, model, opt, dict(loss=[], epochs=[]), dict(epoch=0, position=4, order=[]))
    return os.path.join(cfg.out, f"step-{step:06d}")


def draws():
    """A few draws from every generator a run has: Python's (and its Gaussian cache), NumPy's (and its Gaussian
    cache: randn(3) leaves one Gaussian cached), torch's."""
    return (random.random(), random.gauss(0, 1), np.random.rand(2).tolist(), np.random.randn(3).tolist(),
            torch.rand(3).tolist())


def test_resume_restores_every_random_generator(run_state):
    """Through a checkpoint's file (read with weights_only), Python's, NumPy's and torch's generators, each taken
    mid-stream with a Gaussian cached, continue exactly as they would have without the round trip."""
    cfg, model, opt = run_state
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    draws()  # mid-stream, a Gaussian cached in Python's and in NumPy's
    path = checkpoint(cfg, model, opt, 3)
    expected = draws()
    random.seed(2), np.random.seed(2), torch.manual_seed(2)  # elsewhere entirely
    meta, step = load_checkpoint(path, model, opt)
    assert step == 4 and meta["step"] == 3
    assert draws() == expected


@pytest.mark.parametrize("change", ["missing", "extra", "reshaped"])
def test_resume_refuses_an_adapter_with_a_missing_or_extra_tensor(change, run_state):
    """A checkpoint's adapter that lacks one of the model's LoRA tensors, holds one the model has no place for, or
    one of another shape is one line naming the file and that tensor: never a resume on half an adapter."""
    cfg, model, opt = run_state
    path = checkpoint(cfg, model, opt, ["missing", "extra", "reshaped"].index(change))
    file = os.path.join(path, "adapter", "adapter_model.safetensors")
    tensors = load_file(file)
    name = next(k for k in sorted(tensors) if ".layers.1.self_attn.v_proj.lora_B." in k)
    if change == "missing":
        del tensors[name]
    elif change == "extra":  # the same tensor in a layer the model does not have
        tensors[name.replace(".layers.1.", ".layers.7.")] = tensors[name].clone()
        name = name.replace(".layers.1.", ".layers.7.")
    else:
        tensors[name] = torch.zeros(2, 2)
    save_file(tensors, file)
    with pytest.raises(InputError) as e:
        load_checkpoint(path, model, opt)
    message = {"missing": f"lacks the tensor {name}: ", "extra": f"holds a tensor the model has no place for, {name}: ",
               "reshaped": f"size mismatch for {name.replace('.lora_B.', '.lora_B.default.')}: "}[change]
    assert str(e.value).startswith(f"{file}: {message}") and "\n" not in str(e.value), str(e.value)
