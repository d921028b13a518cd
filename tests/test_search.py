"""cv.py --search tpe: TPE chooses configurations among the flags' lists, each trial reports its running mean SRCC
after every fold, and the median pruner stops one that falls below the median; results.csv marks a pruned
configuration, and summary.md gives the trials, the fold trainings they cost and the parameters' importances, with
the search's history as a PNG. (The grid's workers, storages and dead workers: test_distributed.py.)"""

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from PIL import Image

import cv
import train
from plumbing import search
from plumbing.files import write_csv
from scaffold.synthetic import make_synthetic
from conftest import ROOT, build_once, script

SPACE = dict(r=[4, 8, 16], alpha=[2.0, 8.0])


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_configuration_below_the_median_is_pruned_and_stays_pruned(tmp_path):
    """Six configurations, their folds landed already (a CV's rows stand for its trainings, so nothing trains here),
    proposed in a fixed order: the sixth, whose first fold is far below the median of the five before it, is pruned
    after that fold; its second fold is never trained, its rows are marked, and it does not compete. Proposed again
    in a study where no pruner could stop it yet, it stays pruned."""
    template = train.Config(data=str(tmp_path / "data"), out=str(tmp_path / "run"), split="trainval", folds=2)
    cfgs = cv.plan(template, SPACE)
    os.makedirs(template.out)
    path = os.path.join(template.out, "results.csv")
    params = {cv.config_name(p): p for p in cv.configurations(SPACE)}
    # in the order proposed: each of the first five at or above the median of those before it
    srcc = {"r8-a2": [0.6, 0.6], "r16-a2": [0.65, 0.65], "r4-a8": [0.7, 0.7], "r8-a8": [0.75, 0.75],
            "r4-a2": [0.8, 0.8], "r16-a8": [0.1]}
    write_csv(path, cv.COLUMNS, [[name, params[name]["r"], f"{params[name]['alpha']:g}", k, 20, value, value, 0.05, 0,
                                  1.0, 0] for name, values in srcc.items() for k, value in enumerate(values)])

    def run(storage, order):
        study = search.open_study(search.storage(str(tmp_path / storage), heartbeat=1), "tpe", SPACE, seed=0)
        for name in order:
            study.enqueue_trial(params[name])
        cv.cross_validate(template, SPACE, cfgs, study, trials=len(order), heartbeat=1)
        return study

    study = run("study.log", srcc)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 5 + ["PRUNED"]
    assert study.trials[-1].intermediate_values == {0: 0.1}
    rows = {(r["config"], r["fold"]): r["pruned"] for r in read_csv(path)}
    assert rows == {**{(name, str(k)): "0" for name in list(srcc)[:5] for k in range(2)}, ("r16-a8", "0"): "1"}

    table, best = cv.summarize(cv.read_results(path), 2)
    assert best["config"] == "r4-a2"
    assert "| r16-a8 | lora | 16 | 8 | 1, pruned | 0.1000 ± nan |" in cv.markdown(table, best, 2)
    text = cv.search_summary(study, SPACE, cfgs, path)
    assert "search: TPE over 6 configurations (r 3, alpha 2), 6 trials: 6 configurations, 1 of them pruned; " \
           "11 fold trainings of the grid's 12" in text
    shares = search.importances(study)  # r and alpha both vary among the five complete configurations
    assert set(shares) == {"r", "alpha"} and abs(sum(shares.values()) - 1) < 1e-9
    assert "parameter importances (Optuna, over the complete trials): " in text

    again = run("another-study.log", ["r16-a8"])  # its first trial: the pruner waits for 3 complete ones
    assert [t.state.name for t in again.trials] == ["PRUNED"]
    assert len(read_csv(path)) == 11  # its second fold still not trained


def test_tpe_search(tiny, tmp_path_factory, tmp_path):
    """`cv.py --search tpe --trials 3` on the tiny model: three trials among six configurations, each fold trained
    once (a configuration proposed again costs nothing), the summary and the history written; the same command
    again finds its three trials done and trains nothing."""
    dataset = build_once(tmp_path_factory, "ddp-data", lambda folder: make_synthetic(folder, n=40, seed=7))
    out = tmp_path / "run"
    args = ["--data", dataset, "--model", tiny, "--cache", tmp_path / "cache", "--out", out, "--folds", 2,
            "--r", 4, 8, 16, "--alpha", 2, 8, "--epochs", 1, "--lr", 1e-3, "--no-grad-ckpt", "--workers", 0,
            "--log-every", 1000, "--search", "tpe", "--trials", 3]
    code, log, err = script("cv.py", *args)
    assert code == 0, (log + err)[-3000:]
    study = optuna.load_study(study_name="tpe r=4,8,16 alpha=2,8", storage=search.storage(str(out / "study.log")))
    assert len(study.trials) == 3
    tried = {cv.config_name(t.params) for t in study.trials}
    rows = read_csv(out / "results.csv")
    assert sorted((r["config"], r["fold"]) for r in rows) == sorted((c, str(k)) for c in tried for k in range(2))
    assert log.count("cv | ") == len(rows)  # each fold trained once
    summary = (out / "summary.md").read_text()
    assert (f"search: TPE over 6 configurations (r 3, alpha 2), 3 trials: {len(tried)} configurations, 0 of them "
            f"pruned; {len(rows)} fold trainings of the grid's 12") in summary
    with Image.open(out / "search-history.png") as image:
        assert image.size == (640, 480)
    assert Path(out / "figure-4-heatmap.png").is_file()

    code, log, err = script("cv.py", *args)
    assert code == 0 and "cv | " not in log and len(read_csv(out / "results.csv")) == len(rows)


def test_workers_that_start_together_open_one_new_database(tmp_path):
    """Four workers opening one new SQLite database at the same instant, as a job array's tasks do: Optuna's making of
    the tables races (without search.storage's retry, 7 of 12 such openings failed here on a table or a version row
    that existed already); each opens it."""
    url, start = f"sqlite:///{tmp_path / 'study.db'}", time.time() + 8  # past every process's imports
    opener = ("import sys, time; from plumbing import search; time.sleep(max(0, float(sys.argv[2]) - time.time())); "
              "search.storage(sys.argv[1]); print('opened')")
    workers = [subprocess.Popen([sys.executable, "-c", opener, url, str(start)], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(4)]
    logs = [w.communicate()[0] for w in workers]
    assert [log.strip().splitlines()[-1] for log in logs] == ["opened"] * 4, logs
