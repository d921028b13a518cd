"""Training on several processes: DDP under torchrun and accelerate launch (gloo on CPUs, one thread a process) ends
where one process with the same global batch ends (without LoRA dropout, whose masks each rank draws for itself); a
killed run resumes to the same adapter, in place on another launcher, and after being copied to other paths on
another number of ranks. CV workers: a killed CV resumes without duplicates, workers split a grid, and a dead
worker's fold is taken over."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from synthetic import make_synthetic
from conftest import ROOT, build_once, script

TRAIN = os.path.join(ROOT, "train.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1")
# 34 train+val videos, fold 0 of 4 held out: 25 train on a global batch of 4, so each epoch ends with a step of one
# video, which leaves the second rank nothing (it passes a batch with no loss weight). No dropout: the draws of one
# process and of two cannot match, and the comparison is of the arithmetic.
FLAGS = ["--r", 4, "--alpha", 8, "--lr", 1e-3, "--epochs", 2, "--dropout", 0, "--no-grad-ckpt", "--ckpt-every", 4,
         "--split", "trainval", "--fold", 0, "--folds", 4, "--log-every", 1, "--workers", 0]
ONE, TWO = ["--batch-size", 4], ["--batch-size", 2]
# One process against two: the same sums in another order, so float32 rounding apart (measured: 1e-6 of weights
# of 0.09, losses equal to the 6 digits loss.csv keeps). Other orders of the same sums, as another CPU's kernels would
# take, stay as close: one process at batch 4 against 2 x 2 and 4 x 1 accumulated, 5e-7 and 1.0e-6 (a tenth of this
# tolerance), losses one last digit apart.
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def torchrun(*args):
    # "--": torchrun would read --r as an abbreviation of its own --rdzv-*/--role (pytorch#120601)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", TRAIN, "--", *args]


def accelerate(*args):
    # --multi_gpu is accelerate's name for its torchrun launcher: without GPUs the ranks join over gloo
    return [shutil.which("accelerate", path=os.path.dirname(sys.executable)), "launch", "--multi_gpu",
            "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", TRAIN,
            "--", *args]


def run(command):
    """A launcher's command (torchrun, accelerate launch, cv.py --gpus), which starts processes: its log."""
    out = subprocess.run(list(map(str, command)), cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def local(name, *args):
    """`python NAME ARGS` in one process, which must succeed: its log."""
    code, out, err = script(name, *args)
    assert code == 0, out[-3000:] + err[-3000:]
    return out + err


def kill_tree(pid):
    """SIGKILL a launcher and every process under it: torchrun starts each rank in a session of its own."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def flags(data, tiny, cache, out):
    return ["--data", data, "--model", tiny, "--cache", cache, "--out", out, *FLAGS]


def adapter(run_dir):
    return load_file(os.path.join(run_dir, "adapter", "adapter_model.safetensors"))


def losses(run_dir):
    lines = open(os.path.join(run_dir, "loss.csv")).read().splitlines()[1:]
    return torch.tensor([float(line.split(",")[2]) for line in lines])


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    return build_once(tmp_path_factory, "ddp-data", lambda folder: make_synthetic(folder, n=40, seed=7))


@pytest.fixture(scope="session")
def two_ranks(dataset, tiny, tmp_path_factory):
    """An uninterrupted run on two ranks of two videos each."""
    def build(folder):
        log = run(torchrun(*flags(dataset, tiny, os.path.join(folder, "cache"), os.path.join(folder, "run")), *TWO))
        assert "ranks: 2 | global batch: 4" in log, log

    return Path(build_once(tmp_path_factory, "two-ranks", build)) / "run"


def test_two_ranks_end_where_one_process_ends(two_ranks, dataset, tiny, tmp_path):
    one = tmp_path / "one"
    local("train.py", *flags(dataset, tiny, tmp_path / "cache", one), *ONE)
    a, b = adapter(one), adapter(two_ranks)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], **TOLERANCE)
    assert any(a[k].abs().max() > 1e-3 for k in a if "lora_B" in k)  # training did move B
    assert len(losses(one)) == len(losses(two_ranks)) == 14  # 7 steps an epoch: the last one of a single video
    torch.testing.assert_close(losses(two_ranks), losses(one), rtol=0, atol=2e-6)
    # rank 0 alone writes: one row a step, and the held-out predictions of all 9 videos, every rank's share
    assert len(open(two_ranks / "predictions-trainval-fold0.csv").read().splitlines()) == 1 + 9


def test_a_killed_run_resumes_on_another_launcher_and_after_moving(two_ranks, dataset, tiny, tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(list(map(str, torchrun(*flags(dataset, tiny, tmp_path / "cache", killed), *TWO))),
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_at = 9  # mid-epoch 1: checkpoints at steps 3, 6 (epoch 0's end), 7, 11 and 13
    try:
        while proc.poll() is None:
            if (killed / "loss.csv").exists() and len((killed / "loss.csv").read_text().splitlines()) > kill_at:
                kill_tree(proc.pid)  # the launcher and both ranks, with no clean-up
                break
            time.sleep(0.02)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "adapter").exists()

    # Moved: the run, its data and its model copied to other paths (another host's mounts), resumed there by one
    # process with the same global batch. Paths are not settings; the model is recognised by its configuration.
    moved = tmp_path / "elsewhere"
    shutil.copytree(killed, moved / "run")
    shutil.copytree(dataset, moved / "data")
    shutil.copytree(tiny, moved / "model")

    # In place, on two ranks again, under the other launcher: the same bits as the uninterrupted run.
    log = run(accelerate(*flags(dataset, tiny, tmp_path / "cache", killed), *TWO, "--resume"))
    resumed_at = int(re.search(r"resumed from .* at step (\d+)", log).group(1))
    assert resumed_at < 13, log  # from a checkpoint inside epoch 1
    a, b = adapter(two_ranks), adapter(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (two_ranks / "loss.csv").read_text() == (killed / "loss.csv").read_text()

    log = local("train.py", *flags(moved / "data", moved / "model", moved / "cache", moved / "run"), *ONE, "--resume")
    assert "resumed from" in log, log
    b = adapter(moved / "run")
    for k in a:
        torch.testing.assert_close(b[k], a[k], **TOLERANCE)


def test_resume_refuses_another_global_batch_or_model(two_ranks, dataset, tiny, tiny3, tmp_path):
    moved = tmp_path / "run"
    shutil.copytree(two_ranks, moved)
    for extra, message in [(["--batch-size", 2], "global batch"), (["--model", tiny3], "model")]:
        args = flags(dataset, tiny, tmp_path / "cache", moved) + ONE + extra + ["--resume"]
        code, _, err = script("train.py", *args)
        assert code == 2 and message in err and "settings that differ" in err, err


# -----------------------------------------------------------------------------
# the CV grid split between workers

CV = os.path.join(ROOT, "cv.py")
# 2 configs x 2 folds of the 34 train+val videos: 17 train a fold, 5 steps of 4, a checkpoint every 2
GRID = ["--folds", 2, "--r", 4, "--alpha", 8, 2, "--epochs", 1, "--lr", 1e-3, "--no-grad-ckpt", "--workers", 0,
        "--ckpt-every", 2, "--log-every", 1000]
JOBS = 4


def cv_flags(dataset, tiny, cache, out, *extra):
    return ["--data", dataset, "--model", tiny, "--cache", cache, "--out", out, *GRID, *extra]


def cv(dataset, tiny, cache, out, *extra):
    """cv.py's command, for a process of its own."""
    return [sys.executable, CV, *cv_flags(dataset, tiny, cache, out, *extra)]


def results(out):
    """(config, fold) -> the row without its timing, the one column a rerun may change; each job's row once."""
    lines = open(os.path.join(out, "results.csv")).read().splitlines()
    header, rows = lines[0].split(","), [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]
    jobs = [(r["config"], r["fold"]) for r in rows]
    assert len(jobs) == len(set(jobs)), f"a row landed twice: {jobs}"
    return {(r["config"], r["fold"]): tuple(r[c] for c in header if c != "seconds") for r in rows}


@pytest.fixture(scope="session")
def serial(dataset, tiny, tmp_path_factory):
    """The grid run through by one uninterrupted worker: (config, fold) -> its row."""
    def build(folder):
        local("cv.py", *cv_flags(dataset, tiny, os.path.join(folder, "cache"), os.path.join(folder, "run")))

    out = os.path.join(build_once(tmp_path_factory, "cv-serial", build), "run")
    assert len(results(out)) == JOBS
    return results(out)


def test_a_killed_cv_resumes_without_duplicates(serial, dataset, tiny, tmp_path):
    """One worker killed inside its second (config, fold), with no clean-up: the same command again trains only what
    is missing, continues the cut fold from its checkpoint, and ends with every row once, the uninterrupted grid's."""
    out = tmp_path / "run"
    landed, second = out / "results.csv", out / "r4-a8" / "fold1"
    command = list(map(str, cv(dataset, tiny, tmp_path / "cache", out)))
    proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # kill once the first (config, fold) has landed and the second has a checkpoint: a kill inside a fold
        while proc.poll() is None:
            if landed.exists() and len(landed.read_text().splitlines()) > 1 and list(second.glob("step-*")):
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # as a lost machine or the out-of-memory killer leaves it
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and len(results(out)) == 1, "the second fold landed before the kill"

    args = cv_flags(dataset, tiny, tmp_path / "cache", out)
    log = local("cv.py", *args)
    assert log.count("cv | ") == JOBS - 1  # only the three missing (config, fold)s ran
    assert f"1/{JOBS}" in log and f"resumed from {second}{os.sep}step-" in log  # the bar starts at what was done
    assert results(out) == serial

    log = local("cv.py", *args)  # all done: nothing trains; the summary and the figures are made again
    assert "cv | " not in log and f"{JOBS}/{JOBS}" in log and results(out) == serial


def test_workers_on_several_gpus_split_the_grid(serial, dataset, tiny, tmp_path):
    # --gpus starts the same command once a GPU, each seeing its own; without GPUs the two run on the CPU
    log = run(cv(dataset, tiny, tmp_path / "cache", tmp_path / "run", "--gpus", "0,1"))
    assert "2 workers, one a GPU" in log
    assert results(tmp_path / "run") == serial
    assert os.listdir(tmp_path / "run" / "claims") == []
    # each job ran once, in one worker or the other: a claim keeps the second worker off it
    logs = "".join(p.read_text() for p in (tmp_path / "run" / "logs").glob("gpu*.log"))
    ran = sorted(re.findall(r"cv \| (r\S+) fold (\d)", logs))
    assert ran == sorted(serial), ran
    assert "| r4-a8 | lora | 4 | 8 | 2 |" in (tmp_path / "run" / "summary.md").read_text()  # the summary has every fold


def test_a_killed_worker_s_fold_is_taken_over(serial, dataset, tiny, tmp_path):
    out, claims = tmp_path / "run", tmp_path / "run" / "claims"
    command = list(map(str, cv(dataset, tiny, tmp_path / "cache", out)))
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=open(log, "w"), stderr=subprocess.STDOUT)
               for log in logs]
    victim = None
    try:
        while victim is None and all(w.poll() is None for w in workers):  # kill a worker inside a fold
            for claim in (os.listdir(claims) if claims.exists() else []):
                config, fold = claim.rsplit("-", 1)
                try:
                    pid = int(open(claims / claim / "owner").read().split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if list((out / config / fold).glob("step-*")):
                    victim = next(w for w in workers if w.pid == pid)
                    victim.send_signal(signal.SIGKILL)  # no clean-up, as a lost machine or the OOM killer leaves it
                    break
            time.sleep(0.01)
        for w in workers:
            w.wait()
    finally:
        for w in workers:
            w.kill()
    assert victim is not None and victim.returncode == -signal.SIGKILL, "no worker was killed inside a fold"
    survivor = logs[1 - workers.index(victim)].read_text()
    assert next(w for w in workers if w is not victim).returncode == 0, survivor
    # The survivor saw the dead worker's claim on its next pass (same host: the process is gone) and continued that
    # fold from its checkpoint: nothing is left for a rerun, which trains nothing and writes the summary again.
    assert re.search(r"resumed from \S+fold\d\S*step-\d+", survivor), survivor[-3000:]
    log = local("cv.py", *command[2:])
    assert "cv | " not in log and f"{JOBS}/{JOBS}" in log
    assert results(out) == serial
