"""Training on several processes: DDP under torchrun and accelerate launch (gloo on CPUs, one thread a process) ends
where one process with the same global batch ends (without LoRA dropout, whose masks each rank draws for itself); a
killed run resumes to the same adapter, in place on another launcher, and after being copied to other paths on
another number of ranks. CV workers on one Optuna study: a grid's (config, fold) is train.py's run of it, a killed CV
resumes without duplicates, workers split a grid through a journal file, an SQLite file or a PostgreSQL server, each
(config, fold) trained once, and a dead worker's trial is taken over."""

import glob
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scaffold.synthetic import make_synthetic
from conftest import ROOT, build_once, script

TRAIN = os.path.join(ROOT, "train.py")
# unbuffered: a test reads which fold a CV worker trains from its log while it runs
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
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
# 2 configs x 2 folds of the 34 train+val videos: 17 train a fold, 5 steps of 4, a checkpoint every 2. A heartbeat
# every 2 s: a killed worker's trial is retried after 20 s of silence, while a live one never goes that long silent.
GRID = ["--folds", 2, "--r", 4, "--alpha", 8, 2, "--epochs", 1, "--lr", 1e-3, "--no-grad-ckpt", "--workers", 0,
        "--ckpt-every", 2, "--log-every", 1000, "--heartbeat", 2]
JOBS = 4
FOLD = re.compile(r'"out": "(.*)"')  # the run directory train.py prints as it starts a (config, fold)


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


def test_a_grid_fold_is_train_py_s_run(serial, dataset, tiny, tmp_path):
    """A (config, fold) of the grid, run as a trial of the study, is train.py's run of that fold: the same numbers."""
    run_dir = tmp_path / "fold1"
    local("train.py", "--data", dataset, "--model", tiny, "--cache", tmp_path / "cache", "--out", run_dir, "--split",
          "trainval", "--fold", 1, "--folds", 2, "--r", 4, "--alpha", 2, "--epochs", 1, "--lr", 1e-3, "--no-grad-ckpt",
          "--workers", 0, "--ckpt-every", 2, "--log-every", 1000)
    m = json.loads((run_dir / "metrics.json").read_text())
    row = dict(zip(["config", "r", "alpha", "fold", "n", "srcc", "pearson", "mse", "invalid", "pruned"],
                   serial["r4-a2", "1"]))
    assert row == dict(config="r4-a2", r="4", alpha="2", fold="1", n=str(m["n"]), srcc=f"{m['srcc']:.6f}",
                       pearson=f"{m['pearson']:.6f}", mse=f"{m['mse']:.6f}", invalid=str(m["invalid"]), pruned="0")


def in_fold(out, log):
    """The (config, fold) directory a CV worker trains now, from its log, if it holds a checkpoint and no row yet."""
    folds = FOLD.findall(log.read_text()) if log.exists() else []
    if not folds or not list(Path(folds[-1]).glob("step-*")):
        return None
    job = Path(folds[-1]).parent.name, Path(folds[-1]).name.removeprefix("fold")
    return None if (out / "results.csv").exists() and job in results(out) else Path(folds[-1])


def test_a_killed_cv_resumes_without_duplicates(serial, dataset, tiny, tmp_path):
    """One worker killed inside its second (config, fold), with no clean-up: the same command again trains only what
    is missing, continues the cut fold from its checkpoint, and ends with every row once, the uninterrupted grid's.
    The killed trial stays running in the study until it has been silent for 10 heartbeats: the rerun trains the
    rest meanwhile, then takes it over."""
    out, log = tmp_path / "run", tmp_path / "worker.log"
    command = list(map(str, cv(dataset, tiny, tmp_path / "cache", out)))
    proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    second = None
    try:
        # kill once the first (config, fold) has landed and the second has a checkpoint: a kill inside a fold
        while proc.poll() is None and second is None:
            if (out / "results.csv").exists() and len((out / "results.csv").read_text().splitlines()) > 1:
                second = in_fold(out, log)
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # as a lost machine or the out-of-memory killer leaves it
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and len(results(out)) == 1 and second, "no kill inside the second fold"

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
    # each job ran once, in one worker or the other, through the study in the default journal file OUT/study.log
    logs = "".join(p.read_text() for p in (tmp_path / "run" / "logs").glob("gpu*.log"))
    ran = sorted(re.findall(r"cv \| (r\S+) fold (\d)", logs))
    assert ran == sorted(serial), ran
    assert (tmp_path / "run" / "study.log").exists()
    assert "| r4-a8 | lora | 4 | 8 | 2 |" in (tmp_path / "run" / "summary.md").read_text()  # the summary has every fold


@pytest.fixture(scope="session")
def postgresql():
    """A PostgreSQL server from Debian's package for the session, on a Unix socket in a folder of its own: its URL.
    The server refuses to run as root, so initdb and pg_ctl run as the package's postgres user where the tests run
    as root. Skipped, with the reason, where the package, its user or the driver is missing."""
    pytest.importorskip("psycopg2", reason="psycopg2 (requirements-dev.txt) is not installed")
    found = [shutil.which("initdb")] + sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]
    initdb = next(filter(None, found), None)
    if initdb is None:
        pytest.skip("PostgreSQL is not installed (Debian's postgresql: initdb, pg_ctl)")
    pg_ctl = os.path.join(os.path.dirname(os.path.realpath(initdb)), "pg_ctl")
    as_user = []
    folder = tempfile.mkdtemp(prefix="cv-postgresql-")  # under /tmp: that user may not enter pytest's folders
    if os.geteuid() == 0:
        try:
            os.chown(folder, pwd.getpwnam("postgres").pw_uid, -1)
        except KeyError:
            pytest.skip("no postgres user to run the server as (the tests run as root)")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(folder, "data")
    subprocess.run([*as_user, initdb, "-D", data, "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    subprocess.run([*as_user, pg_ctl, "-D", data, "-l", os.path.join(folder, "log"), "-w", "-o",
                    f"-k {folder} -c listen_addresses=''", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@/postgres?host={folder}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["journal", "sqlite", "postgresql"])
def storage(request, tmp_path):
    """Where the workers' study lives: the default journal file in OUT, an SQLite file, or a PostgreSQL server."""
    if request.param == "journal":
        return []
    if request.param == "sqlite":
        return ["--storage", f"sqlite:///{tmp_path / 'study.db'}"]
    return ["--storage", request.getfixturevalue("postgresql")]


def test_a_killed_worker_s_trial_is_taken_over(serial, storage, dataset, tiny, tmp_path):
    """Two workers on one study, one killed inside a fold: the other trains every other (config, fold), waits while
    the dead worker's trial runs in the study, and once it has been silent for 10 heartbeats, Optuna fails it and
    queues its copy, which the survivor takes and continues from the fold's checkpoint. Each (config, fold) is
    trained once, and a rerun trains nothing."""
    out = tmp_path / "run"
    command = list(map(str, cv(dataset, tiny, tmp_path / "cache", out, *storage)))
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=open(log, "w"), stderr=subprocess.STDOUT)
               for log in logs]
    victim = fold = None
    try:
        while victim is None and all(w.poll() is None for w in workers):  # kill a worker inside a fold
            for worker, log in zip(workers, logs):
                fold = in_fold(out, log)
                if fold:
                    victim = worker
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
    assert next(w for w in workers if w is not victim).returncode == 0, survivor[-3000:]
    assert f"resumed from {fold}{os.sep}step-" in survivor, survivor[-3000:]
    ran = sorted(re.findall(r"cv \| (r\S+) fold (\d)", survivor + logs[workers.index(victim)].read_text()))
    assert ran == sorted(serial), ran
    log = local("cv.py", *command[2:])
    assert "cv | " not in log and f"{JOBS}/{JOBS}" in log
    assert results(out) == serial
