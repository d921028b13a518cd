"""
The paper's experiments: k-fold cross-validation over LoRA rank and alpha, and the zero-shot baseline (§4); and the
same CV over other parameter-efficient methods than LoRA (--peft).

    python cv.py --data data/memento10k                                          # 5-fold CV of r=128, alpha=1024
    python cv.py --data data/memento10k --r 8 16 32 64 128 --alpha 16 64 256 1024 --out runs/cv-grid   # the grid
    python cv.py --data data/memento10k --peft lora dora ia3 prompt-tuning --r 128 --alpha 1024 --out runs/cv-peft
    python cv.py --data data/memento10k --zero-shot                              # the base model, no training (§4.1)
    python cv.py --data "data/mediaeval2021/TRECVid Data" --target long          # the grid on long-term scores
    python cv.py --data data/memento10k --heldout-source data/videomem --out runs/cv-to-videomem   # across sources
    python cv.py --data runs/synth --model runs/tiny --folds 3 --r 16 --alpha 4 32 --epochs 7 --lr 1e-3 \\
        --warmup 0.05 --no-grad-ckpt --out runs/cv-tiny                          # the same on CPU, in minutes
    python cv.py ... --r 8 16 32 64 128 --alpha 16 64 256 1024 --search tpe --trials 8   # 8 of them, chosen by TPE
    python cv.py ... --gpus 0,1,2,3                                              # four folds at a time, one a GPU
    python cv.py --compare A.csv B.csv --data data/memento10k --split trainval --fold 2   # two predictions, paired
    sbatch --array=0-7 --wrap "python cv.py ... --out /shared/cv"                # eight workers on a cluster
    python cv.py ... --storage postgresql://user:password@host/cv               # the study in a database

The search is an Optuna study (plumbing/search.py). The grid (--search grid, the paper's) is Optuna's grid sampler
over the flags' lists: a trial is one (config, fold), so that workers split the folds of one config too, and each
trains as before. --search tpe --trials N: a trial is one configuration, which TPE chooses among the same lists
(--lr joins them when given several values, --peft when given other methods than LoRA); it trains its folds one by
one and reports its running mean SRCC after each, and the median pruner stops it after a fold where it falls below
the median of the trials before it. Any
number of the same cv.py command on one study (--gpus, a job array, other hosts on a shared folder or database)
split its trials: each (config, fold) is trained once, and a dead worker's trial is taken over (search.py says how).

Each (config, fold) trains with train.py on the other folds of train+val and predicts its fold; every flag of
train.py other than --split, --fold and --out passes through to it (--target among them). With --peft, a config is a
method with each of its ranks and alphas, once where it has none (`cv.py --peft lora ia3 --r 8 16` runs r8-a1024,
r16-a1024 and ia3), and the search chooses among those configurations' names; --dropout, --virtual-tokens and
--modules go to the methods that have them. With --heldout-source, the held-out fold is a whole other source instead
(MediaEval 2021's subtask 2): each config trains once on all of --data's labelled videos and is scored on all of the
other source's. OUT gets:
  results.csv      one row per (config, fold), appended as each lands (pruned: 1 for a config TPE's pruner
                   stopped); rerun the same command to resume
  study.log        the Optuna study (a journal file), unless --storage puts it elsewhere
  summary.md       mean +- std SRCC per config (its method, r, alpha) over the folds, and the best config; with
                   --search tpe, the trials, the fold trainings they cost and the parameters' importances
  figure-4-heatmap.png, figure-5-scatter.png (best config, out-of-fold), figure-6-best-worst.png; with --search tpe,
  search-history.png (each trial's mean SRCC and the best so far)
  NAME/fold{K}/    train.py's run directory of each fold (its checkpoints are removed once it lands); with
                   --heldout-source, NAME/heldout-source/, its row fold 0. NAME: r{R}-a{ALPHA} for LoRA, else the
                   method and its settings (dora-r{R}-a{ALPHA}, vera-r{R}, ia3, oft, prompt-tuning-v{N}); -lr{LR}
                   after it where several learning rates are searched
With --zero-shot, OUT/zero-shot/ (the paper's greedy decoding; OUT/zero-shot-constrained/ or zero-shot-expected/ with
--decode, so that each mode keeps its own) gets predictions.csv, answers.csv (each whole answer, as the model wrote it;
not with --decode expected: the predictions hold its whole answer), metrics.json (the invalid count and rate beside
the paper's, 600 of 8,500) and figure-3-scatter.png. Greedy decoding lets the base model finish its answer, up to
--max-new-tokens (default 256: the base model answers in sentences, and the paper read its score in "a paragraph
including a numerical result"); it stops at the end of the turn.
With --compare A.csv B.csv (two of predict.py's CSVs of the same videos), nothing trains and no model is read: one JSON
line on stdout gives n, srcc_a, srcc_b, delta = srcc_a - srcc_b and delta's 95% interval from a paired bootstrap over
the videos (scoring/metrics.py:srcc_difference), against the truth of --split (--fold K, --folds, --seed: the fold as
everywhere else; --target long) of --data.

One file for the paper's experiments, ~680 lines, and why: the CV itself (its configurations, each a method with its
settings, their folds and rows), the summary, and the two runs beside it that the paper reports with it (the zero-shot
baseline, through predict.py's own steps; the paired comparison of two prediction files). The engine that hands out
trials is Optuna's (plumbing/search.py), the figures are scoring/figures.py's, the statistics scoring/metrics.py's.
"""

import argparse
import csv
import dataclasses
import gc
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import optuna
import torch
from optuna.storages.journal import JournalFileOpenLock
from tqdm import tqdm

import data
import model
import predict
import train
from frames import FrameCache
from plumbing.checkpoint import checkpoints
from plumbing import search
from plumbing.errors import Help, InputError, cli
from plumbing.files import write_csv, write_text
from plumbing.sources import read_labels
from scoring import decode, metrics
from scoring.figures import DPI, HEATMAP_SIZE, heatmap, scatter, sheet

# §4.1: Qwen-VL-Chat-Int4 zero-shot on the 8,500 labelled videos, as the paper reports it (7.06% invalid)
PAPER_ZERO_SHOT = dict(invalid=600, n=8500, invalid_rate=0.0706, srcc=-0.050)
COLUMNS = ["config", "r", "alpha", "fold", "n", "srcc", "pearson", "mse", "invalid", "seconds", "pruned"]


def predictions_path(cfg):
    """Where train.py writes the held-out predictions of a (config, fold): predictions-trainval-fold{K}.csv, or
    predictions-heldout-source.csv (-long.csv for a long-term target)."""
    return os.path.join(cfg.out, f"predictions-{train.heldout_name(cfg)}.csv")


def n_folds(template):
    return 1 if template.heldout_data else template.folds


# -----------------------------------------------------------------------------
# cross-validation


def config_name(params):
    """A configuration's name in results.csv and its folder in OUT: r{R}-a{ALPHA}, or with --peft the adapter's name
    (model.config_name) that the search chose as "config"; then any other setting searched (-lr{LR} when several
    learning rates are given)."""
    adapter = params["config"] if "config" in params else model.config_name(params["r"], params["alpha"])
    return adapter + "".join(f"-{k}{v:g}" for k, v in params.items() if k not in ("r", "alpha", "config", "fold"))


def settings(params):
    """A configuration's train.Config settings: the searched ones, an adapter's name ("config") read back into its
    method and the settings it has (model.config_settings); dropout and modules dropped where the method has none."""
    if "config" not in params:
        return params
    adapter = model.config_settings(params["config"])
    has = model.PEFT_METHODS[adapter["peft"]]
    return dict(adapter, **{k: None for k in ("dropout", "modules") if k not in has},
                **{k: v for k, v in params.items() if k != "config"})


def configurations(space):
    """Every configuration of the search space {setting: values}, in the order of the flags' lists."""
    return [dict(zip(space, values)) for values in itertools.product(*space.values())]


def fold_runs(template, name, params):
    """A configuration's (config, fold)s as train.Configs, keyed by results.csv's (config, fold); with a held-out
    source, its one run, fold 0."""
    if template.heldout_data:
        return {(name, 0): dataclasses.replace(template, **params,
                                               out=os.path.join(template.out, name, "heldout-source"))}
    return {(name, k): dataclasses.replace(template, **params, fold=k, out=os.path.join(template.out, name, f"fold{k}"))
            for k in range(template.folds)}


def plan(template, space):
    """Every (config, fold) of the search space as a train.Config, keyed by results.csv's (config, fold), in grid
    order with the folds inside. Building them all first checks every setting before the first fold trains."""
    return {key: cfg for params in configurations(space)
            for key, cfg in fold_runs(template, config_name(params), settings(params)).items()}


def check_settings(template, path, space=None):
    """OUT/cv.json records the training settings; a rerun with others would mix two experiments in one table.
    The grid may grow between runs: methods, ranks and alphas are not part of the record, nor a searched learning
    rate, which names its configurations (the list is recorded, so that a single one is not taken for it)."""
    searched = ("peft", "r", "alpha", "virtual_tokens", "fold", *(space or {}))
    record = {k: v for k, v in dataclasses.asdict(template).items() if k not in searched}
    record.update({k: v for k, v in (space or {}).items() if k not in ("r", "alpha", "config")})
    record["model_identity"] = model.identity(template.model)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        # paths are where things are, not settings: a CV may move or be shared by hosts that mount it elsewhere
        changed = train.changed_settings(saved, template, ignore=searched)
        if changed:
            raise InputError(f"{path}: this CV ran with other settings ({', '.join(changed)}); "
                                  "rerun with those or choose another --out")
    write_text(path, json.dumps(record, indent=1))


def read_results(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames not in (COLUMNS, COLUMNS[:-1]):  # the second: a CV from before pruning, none pruned
            raise InputError(f"{path}: line 1: expected the columns {','.join(COLUMNS)}")
        rows = [dict(row, pruned=row.get("pruned", "0")) for row in reader]
    for line, row in enumerate(rows, start=2):
        try:
            # r and alpha are empty where a method has none (the config's name says its method)
            int(row["r"] or 0), float(row["alpha"] or 0), int(row["fold"]), float(row["srcc"])
        except (TypeError, ValueError):
            raise InputError(f"{path}: line {line}: not a result row of cv.py")
    return rows


# Seconds after which a results.csv lock not released is a dead worker's, and is broken. Optuna's lock tells a dead
# holder from a live one by this age alone, and the last worker holds it while it writes the summary and the figures
# (Figure 6 reads the whole labelled set): far longer than Optuna's default of 30 s, which would let another worker in.
LOCK_GRACE = 600


@contextmanager
def locked(path):
    """Hold PATH.lock while the block runs: Optuna's lock file for its journal, made atomically on local and network
    filesystems alike, and broken LOCK_GRACE seconds after it was taken (a worker that died holding it)."""
    lock = JournalFileOpenLock(path, grace_period=LOCK_GRACE)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def append_result(path, row):
    """Add a (config, fold)'s row, once: workers append under a lock, and a row that landed already stays as it is."""
    with locked(path):
        rows = read_results(path)
        if (row["config"], str(row["fold"])) not in {(r["config"], r["fold"]) for r in rows}:
            write_csv(path, COLUMNS, [[r[c] for c in COLUMNS] for r in rows + [row]])


def mark_pruned(path, config, folds):
    """Mark a configuration's rows of `folds` as pruned: its trial went through them and stopped."""
    with locked(path):
        rows = read_results(path)
        write_csv(path, COLUMNS, [[1 if c == "pruned" and r["config"] == config and int(r["fold"]) in folds else r[c]
                                   for c in COLUMNS] for r in rows])


# -----------------------------------------------------------------------------
# the search: the study's trials in this worker (plumbing/search.py splits them between workers and takes a dead
# one's over)


def run_fold(cfg, name):
    """Train on the other folds and predict fold K through train.py's own code; returns the fold's row."""
    metrics_path = os.path.join(cfg.out, "metrics.json")
    if os.path.exists(metrics_path):
        # The fold finished but the CV was killed before its row landed. train.py writes metrics.json last;
        # the check a --resume does confirms it is this config's run.
        train.prepare_out(cfg, resume=True, overwrite=False)
        with open(metrics_path) as f:
            m = json.load(f)
    else:
        m = train.main(cfg, resume=True)  # continues from the fold's newest checkpoint, if any
        # Each fold loads its own model: give the last one's memory back before the next loads.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return dict(config=name, r="" if cfg.r is None else cfg.r, alpha="" if cfg.alpha is None else f"{cfg.alpha:g}",
                fold=cfg.fold or 0, n=m["n"], srcc=f"{m['srcc']:.6f}",
                pearson=f"{m['pearson']:.6f}", mse=f"{m['mse']:.6f}", invalid=m["invalid"], seconds=m["seconds"],
                pruned=0)


def landed(path):
    """{(config, fold): its row} of results.csv."""
    return {(row["config"], int(row["fold"])): row for row in read_results(path)}


def study_space(template, space, trials):
    """What a trial of the study chooses: the grid's trial a (config, fold), TPE's (`trials` of them) a config."""
    return dict(space, fold=list(range(n_folds(template)))) if trials is None else space


def cross_validate(template, space, cfgs, study, trials=None, heartbeat=search.HEARTBEAT):
    """Run the study's trials in this worker, their rows landing in results.csv beside other workers'. The grid
    (trials None): a trial trains one (config, fold). TPE: a trial is a configuration, its folds in order, with its
    running mean SRCC reported after each so that the pruner may stop it; a configuration pruned once stays pruned
    when proposed again. A (config, fold) in results.csv is never trained again: its row stands for it."""
    path = os.path.join(template.out, "results.csv")
    done = len(landed(path).keys() & cfgs.keys())
    # smoothing=0: the ETA is the mean time of the folds run so far, steadier than a recent-rate estimate; TPE's
    # count of folds is not known ahead
    bar = tqdm(total=len(cfgs) if trials is None else None, initial=done if trials is None else 0,
               desc="cross-validation", unit="fold", smoothing=0)

    def train_fold(key):
        cfg = cfgs[key]
        row = run_fold(cfg, key[0])
        append_result(path, row)
        # A fold's checkpoints (adapter + AdamW state, ~0.7 GB each at r=128 on a 7B model) are only for
        # resuming it; once its row has landed, its adapter/ and predictions are what is kept.
        for step_dir in checkpoints(cfg.out):
            shutil.rmtree(step_dir)
        bar.update(1)
        tqdm.write(f"cv | {row['config']} fold {row['fold']} | SRCC {float(row['srcc']):.4f} | "
                   f"Pearson {float(row['pearson']):.4f} | invalid {row['invalid']}/{row['n']} | {row['seconds']}s")
        return row

    def fold_trial(trial, params):
        key = config_name(params), params["fold"]
        row = landed(path).get(key) or train_fold(key)
        return float(row["srcc"])

    def config_trial(trial, params):
        name, rows = config_name(params), landed(path)
        pruned = any(row["pruned"] == "1" for (config, _), row in rows.items() if config == name)
        srcc = []
        for k in range(n_folds(template)):
            row = rows.get((name, k))
            if pruned and (row is None or row["pruned"] != "1"):  # past the folds it went through before
                raise optuna.TrialPruned(f"{name} was pruned before")
            row = row or train_fold((name, k))
            srcc.append(float(row["srcc"]))
            trial.report(float(np.mean(srcc)), k)
            if k < n_folds(template) - 1 and trial.should_prune():
                mark_pruned(path, name, range(k + 1))
                tqdm.write(f"cv | {name} pruned after fold {k}: mean SRCC {np.mean(srcc):.4f}, below the median of "
                           "the trials before it")
                raise optuna.TrialPruned()
        return float(np.mean(srcc))

    if trials is None:
        search.work(study, study_space(template, space, trials), fold_trial, lambda p: (config_name(p), p["fold"]),
                    heartbeat=heartbeat)
    else:
        search.work(study, space, config_trial, config_name, trials, heartbeat)
    bar.close()


def start_workers(argv, gpus, out, n_jobs):
    """`--gpus 0,1,2,3`: the same command once a GPU, each seeing only its own; waits for all of them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    i = next(i for i, a in enumerate(argv) if a.split("=")[0] == "--gpus")
    argv = argv[:i] + argv[i + (1 if "=" in argv[i] else 2):]
    logs = os.path.join(out, "logs")
    os.makedirs(logs, exist_ok=True)
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(gpus))))
    procs = []
    for gpu in gpus:
        log = os.path.join(logs, f"gpu{gpu}.log")
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu, OMP_NUM_THREADS=threads)
        with open(log, "a") as f:
            procs.append((gpu, log, subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv], env=env,
                                                     stdout=f, stderr=subprocess.STDOUT)))
    print(f"{len(gpus)} workers, one a GPU; their logs: {logs}/gpu*.log")
    path = os.path.join(out, "results.csv")
    bar = tqdm(total=n_jobs, desc="cross-validation", unit="fold", smoothing=0)
    try:
        while any(p.poll() is None for _, _, p in procs):
            time.sleep(2)
            bar.update(len(read_results(path)) - bar.n)
    finally:
        for _, _, p in procs:  # Ctrl-C or an error here: the workers stop too
            if p.poll() is None:
                p.terminate()
                p.wait()
        bar.close()
    failed = [(gpu, log, p.returncode) for gpu, log, p in procs if p.returncode != 0]
    if failed:
        gpu, log, code = failed[0]
        raise InputError(f"{log}: the worker on GPU {gpu} stopped (exit {code}); rerun the same command to finish")


def summarize(rows, folds):
    """One line per config, in the order of the rows: its method, r and alpha (None where it has none), mean and std
    (n-1) of SRCC over folds, mean Pearson and MSE."""
    by_config = {}
    for row in rows:
        by_config.setdefault(row["config"], []).append(row)
    table = []
    for name, rs in by_config.items():
        srcc = np.array([float(r["srcc"]) for r in rs])
        r, alpha = rs[0]["r"], rs[0]["alpha"]
        table.append(dict(config=name, peft=model.config_settings(name)["peft"], r=int(r) if r else None,
                          alpha=float(alpha) if alpha else None, folds=len(rs),
                          srcc=float(srcc.mean()), std=float(srcc.std(ddof=1)) if len(rs) > 1 else float("nan"),
                          pearson=float(np.mean([float(r["pearson"]) for r in rs])),
                          mse=float(np.mean([float(r["mse"]) for r in rs])),
                          invalid=sum(int(r["invalid"]) for r in rs), n=sum(int(r["n"]) for r in rs),
                          pruned=any(r["pruned"] == "1" for r in rs)))
    # Only configs with every fold compete (a pruned one has not); a NaN SRCC (constant predictions in a fold) never
    # wins.
    complete = [t for t in table if t["folds"] == folds and not math.isnan(t["srcc"])]
    best = max(complete, key=lambda t: t["srcc"]) if complete else None
    return table, best


def search_summary(study, space, cfgs, path):
    """What TPE's search found and what it cost: its trials, the configurations they tried and pruned, the fold
    trainings of those configurations against the grid's, and Optuna's parameter importances."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.params.keys() == space.keys()]
    tried = {config_name(t.params) for t in trials}
    pruned = {config_name(t.params) for t in trials if t.state == optuna.trial.TrialState.PRUNED}
    folds = sum(config in tried for config, _ in landed(path))
    lines = ["", f"search: TPE over {len(configurations(space))} configurations "
             f"({', '.join(f'{k} {len(v)}' for k, v in space.items())}), {len(trials)} trials: {len(tried)} "
             f"configurations, {len(pruned)} of them pruned; {folds} fold trainings of the grid's {len(cfgs)}"]
    shares = search.importances(study)
    if shares:
        lines.append("parameter importances (Optuna, over the complete trials): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in shares.items()))
    return "\n".join(lines) + "\n"


def markdown(table, best, folds, heldout_source=None):
    """The summary table; with a held-out source, each config's one SRCC on it."""
    what = f"SRCC on the held-out source {heldout_source}" if heldout_source else f"SRCC mean ± std over {folds} folds"
    lines = [f"| config | method | r | alpha | folds | {what} | Pearson | MSE | invalid |",
             "|---|---|---|---|---|---|---|---|---|"]

    def srcc(t):
        return f"{t['srcc']:.4f}" + ("" if heldout_source else f" ± {t['std']:.4f}")

    def setting(value):  # "-" where the method has none
        return "-" if value is None else f"{value:g}"

    lines += [f"| {t['config']} | {t['peft']} | {setting(t['r'])} | {setting(t['alpha'])} | "
              f"{t['folds']}{', pruned' if t['pruned'] else ''} | {srcc(t)} | {t['pearson']:.4f} | {t['mse']:.5f} | "
              f"{t['invalid']}/{t['n']} |" for t in table]
    lines.append("")
    lines.append(f"best: {best['config']} ({best['peft']}, r={setting(best['r'])}, alpha={setting(best['alpha'])}), "
                 f"{'SRCC' if heldout_source else 'mean SRCC'} {srcc(best)}" if best
                 else "best: none (no config has finished every fold)")
    return "\n".join(lines) + "\n"


# -----------------------------------------------------------------------------
# figures 5 and 6 of the best config (scoring/figures.py draws them)


def figures(template, best):
    """Figures 5-6 from the best config's fold directories under OUT: out of fold, or on the held-out source."""
    out = template.out
    truth_data = template.heldout_data or template.data
    videos = {v.video_id: v for v in data.load_split(truth_data, "trainval", [] if template.skip_bad else None,
                                                     template.target)}
    truth = {video_id: v.score for video_id, v in videos.items()}
    predicted = {}
    # each video predicted by a model that did not train on it (the runs' folders are all that is read of them)
    for cfg in fold_runs(template, best["config"], {}).values():
        predicted.update(read_labels(predictions_path(cfg)))
    mismatch = metrics.label_mismatch(list(predicted), truth, truth_data)
    ids = [v for v in predicted if v in truth]
    if mismatch and not ids:
        raise InputError(mismatch)
    if mismatch:
        print(f"warning: {mismatch}; figure 5 shows those {len(ids)}", file=sys.stderr)
    m = metrics.metrics([round(100 * predicted[v]) for v in ids], [truth[v] for v in ids])
    scatter(os.path.join(out, "figure-5-scatter.png"), [truth[v] for v in ids], [predicted[v] for v in ids],
            f"{best['config']}, {'held-out source' if template.heldout_data else 'out of fold'}: SRCC {m['srcc']:.3f} "
            f"(n={m['n']})")
    processor = model.load_processor(template.model, template.max_pixels, template.min_pixels)
    sheet(os.path.join(out, "figure-6-best-worst.png"), videos, truth, {v: predicted[v] for v in ids},
          FrameCache(template.cache, template.frames, model.budget_of(processor)))


# -----------------------------------------------------------------------------
# zero-shot (§4.1): the base model, the paper's prompt, and the paper's post-processing


def zero_shot(template, max_new_tokens):
    """The base model on train+val: predict.py's own run (`predict.py --zero-shot --split trainval`, the paper's
    post-processing and fill of 80 included) into OUT/zero-shot/, then the paper's invalid count beside its own in
    metrics.json, and Figure 3. max_new_tokens: greedy's budget (decode.token_budget)."""
    # one folder a decoding mode: a run with another --decode never overwrites or mixes with the paper's
    folder = os.path.join(template.out, "zero-shot" + ("" if template.decode == "greedy" else f"-{template.decode}"))
    flags = dict(data=template.data, model=template.model, quant=template.quant, decode=template.decode,
                 target=template.target, frames=template.frames, input=template.input, max_pixels=template.max_pixels,
                 min_pixels=template.min_pixels, batch_size=template.eval_batch_size, workers=template.workers,
                 cache=template.cache, max_new_tokens=max_new_tokens, out=os.path.join(folder, "predictions.csv"))
    argv = ["--zero-shot", "--split", "trainval"] + ["--skip-bad"] * template.skip_bad
    argv += [str(x) for k, v in flags.items() if v is not None for x in (f"--{k.replace('_', '-')}", v)]
    job, scores, invalid, m = predict.run(predict.parse_args(argv), name="")
    n, paper = len(job.videos), PAPER_ZERO_SHOT
    result = dict(model=template.model, decode=template.decode, max_new_tokens=max_new_tokens, n=n, invalid=invalid,
                  invalid_rate=invalid / max(n, 1), fill=job.fill, srcc=m["srcc"], srcc_ci=list(m["srcc_ci"]),
                  srcc_ci_spearman=list(m["srcc_ci_spearman"]), ci_method=metrics.CI_METHODS, pearson=m["pearson"],
                  mse=m["mse"], paper=paper)
    write_text(os.path.join(folder, "metrics.json"), json.dumps(result, indent=1))
    print(f"the paper's: {paper['invalid']}/{paper['n']} invalid ({100 * paper['invalid_rate']:.2f}%), "
          f"SRCC {paper['srcc']:.3f}")
    scatter(os.path.join(folder, "figure-3-scatter.png"), [v.score for v in job.videos], [s / 100 for s in scores],
            f"zero-shot: SRCC {m['srcc']:.3f}, {invalid} invalid of {n}")
    return result


# -----------------------------------------------------------------------------
# --compare: two prediction files of the same videos, paired


def compare(args):
    """
    --compare: SRCC(A) - SRCC(B) on the videos of the split both files predicted, with its paired bootstrap interval
    (predict.srcc_difference), printed as one JSON line and returned. Files that cover other videos than the split's
    are compared on the videos all three share, said on stderr and in n; none in common is an error.
    """
    videos = data.heldout(args.data, args.split, args.fold, args.folds, args.seed, target=args.target)
    truth = {v.video_id: v.score for v in videos if v.score is not None}
    if not truth:
        raise InputError(f"{args.data}: split {args.split} has no {args.target}-term scores to compare against")
    path_a, path_b = args.compare
    where = f"split {args.split}" + (f" fold {args.fold}" if args.fold is not None else "")
    a, b = read_labels(path_a), read_labels(path_b)  # a file that is none says so in one line
    ids = [v for v in truth if v in a and v in b]
    sets = {path_a: a, path_b: b, where: truth}
    left = {name: min(set(s) - set(ids)) for name, s in sets.items() if len(s) > len(ids)}  # an id not compared
    if left:
        examples = "; ".join(f"{name}'s {odd!r} is not in " + " nor ".join(n for n, s in sets.items() if odd not in s)
                             for name, odd in left.items())
        coverage = (f"{len(ids)} of the {len(truth)} videos of {where} of {args.data} are in both files ({path_a} has "
                    f"{len(a)} videos, {path_b} {len(b)}): e.g. {examples}")
        if not ids:
            raise InputError(f"nothing to compare: {coverage} (the predictions' --split, --fold, --folds and --seed?)")
        print(f"warning: compared on the videos all three share: {coverage}", file=sys.stderr)
    for path, scores in [(path_a, a), (path_b, b)]:
        if len({scores[v] for v in ids}) < 2:
            raise InputError(f"{path}: the same score for all {len(ids)} videos compared: its SRCC is undefined")
    result = metrics.srcc_difference([truth[v] for v in ids], [a[v] for v in ids], [b[v] for v in ids])
    if np.isnan(result["delta_ci"]).any():
        raise InputError(f"{path_a}, {path_b}: {len(ids)} videos are too few for a bootstrap interval: some resamples "
                         "hold one score of a file only, where SRCC is undefined")
    method = metrics.BOOTSTRAP
    result = dict(a=path_a, b=path_b, **result, delta_is="srcc_a - srcc_b",
                  ci_method=f"paired bootstrap over videos: {method['n_resamples']} resamples, {method['method']}, "
                            f"seed {method['seed']}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v] if k == "delta_ci" else v
                      for k, v in result.items()}))
    return result


# -----------------------------------------------------------------------------


def parse_args(argv=None):
    d = train.Config()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=Help,
        epilog="Every other flag is train.py's and goes to each fold (python train.py --help), e.g. --target, "
               "--modules, --batch-size, --grad-accum, --warmup, --dropout, --seed, --frames, --input, --quant, "
               "--no-grad-ckpt, --cache, --decode.",
        allow_abbrev=False)  # else --fold would silently abbreviate --folds
    # ---
    parser.add_argument("--data", default=d.data, help="dataset root (Memento10k, TRECVid, VideoMem): what to train on")
    parser.add_argument("--model", default=d.model, help="hub id or local folder: Qwen-VL-Chat-Int4 (the paper's), "
                        "Qwen-VL-Chat, or a native Qwen2-VL / Qwen2.5-VL / Qwen3-VL")
    parser.add_argument("--out", default="runs/cv", help="CV directory: results.csv, summary.md, figures, fold runs")
    parser.add_argument("--folds", type=int, default=d.folds, help="number of folds over train+val")
    parser.add_argument("--heldout-source", help="another source's root: hold it out whole (train on all of --data, "
                        "score on all of it) instead of folds")
    parser.add_argument("--peft", nargs="+", default=[d.peft], choices=list(model.PEFT_METHODS),
                        help="the methods of the search: lora (the paper's), dora, ia3, prompt-tuning, vera, oft")
    parser.add_argument("--r", type=int, nargs="+", help=f"ranks of the grid (LoRA, DoRA, VeRA; default {d.r})")
    parser.add_argument("--alpha", type=float, nargs="+", help=f"alphas of the grid (LoRA, DoRA; default {d.alpha:g})")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training folds")
    parser.add_argument("--lr", type=float, nargs="+", default=[d.lr],
                        help="peak learning rate; several join the search, each a choice as the ranks are")
    parser.add_argument("--zero-shot", action="store_true", help="instead: the base model on train+val, no training")
    parser.add_argument("--max-new-tokens", type=int, help="with --zero-shot: greedy decoding's budget of new tokens; "
                        f"it stops where the answer ends (default {decode.ZERO_SHOT_TOKENS}: the base model answers "
                        "in sentences); the folds' adapters answer in at most 4 (3 digits and end-of-turn)")
    parser.add_argument("--gpus", type=lambda s: s.split(","), help="comma-separated GPUs to run folds on side by "
                        "side, one a GPU (e.g. 0,1,2,3); default: this process's device")
    parser.add_argument("--compare", nargs=2, metavar=("A.csv", "B.csv"), help="instead: two prediction files of the "
                        "same videos, SRCC(A) - SRCC(B) with its paired bootstrap 95%% CI, against the truth of "
                        "--split SPLIT [--fold K --folds N --seed S] [--target long] of --data; no training, no model")
    parser.add_argument("--search", default="grid", choices=["grid", "tpe"], help="grid: every configuration of the "
                        "lists (the paper's); tpe: --trials configurations chosen by TPE, each stopped after a fold "
                        "where its mean SRCC falls below the median")
    parser.add_argument("--trials", type=int, help="with --search tpe: the trials (configurations) to run")
    parser.add_argument("--storage", help="the study: a journal file (default: OUT/study.log), or a database URL "
                        "(sqlite:///FILE, postgresql://..., mysql://...), shared by every worker")
    parser.add_argument("--heartbeat", type=int, default=search.HEARTBEAT, help="seconds between a running trial's "
                        f"heartbeats; a trial silent for {search.SILENT} of them is a dead worker's and runs again")
    # ---
    args, rest = parser.parse_known_args(argv)
    if args.compare:
        given = [k for k, v in vars(args).items()
                 if k not in ("compare", "data", "folds") and v != parser.get_default(k)]
        if given:
            raise InputError(f"--compare trains nothing: drop {', '.join('--' + k.replace('_', '-') for k in given)}")
        return parse_compare(args, rest), None
    if args.max_new_tokens is not None and not args.zero_shot:
        raise InputError("--max-new-tokens goes with --zero-shot: a fold's adapter answers in at most 4 tokens "
                         "(3 digits and end-of-turn), all it needs")
    chosen_here = ("--split", "--fold", "--resume", "--overwrite", "--heldout-data")
    if any(a.split("=")[0] in chosen_here for a in rest):
        raise InputError(f"cv.py chooses the split, the folds and the run directories and always resumes: "
                              f"drop {', '.join(a for a in rest if a.split('=')[0] in chosen_here)}")
    # The rest is read by train.py's own parser: its flags, help, defaults and checks, not a copy of them.
    train_args = train.read_args(rest)
    if train_args.split != d.split:  # an abbreviation (--spl) that got past the check above
        raise InputError("cv.py chooses the split: drop --split")
    fold_flags = {f.name: getattr(train_args, f.name) for f in dataclasses.fields(train.Config)}
    # a repeated value runs once
    args.peft, args.r, args.alpha, args.lr = (list(dict.fromkeys(v)) if v else v
                                              for v in (args.peft, args.r, args.alpha, args.lr))
    args.virtual_tokens = train_args.virtual_tokens
    for name, value in dict(r=args.r, alpha=args.alpha, dropout=train_args.dropout, modules=train_args.modules,
                            virtual_tokens=train_args.virtual_tokens).items():
        if value is not None and not any(name in model.PEFT_METHODS[m] for m in args.peft):
            raise InputError(f"--{name.replace('_', '-')} is not a setting of {', '.join(args.peft)}")
    args.r, args.alpha = args.r or [d.r], args.alpha or [d.alpha]
    # the template holds the settings every fold shares, LoRA's among them; each configuration sets its own adapter's
    # (settings)
    template = train.Config(**dict(fold_flags, data=args.data, model=args.model, out=args.out, split="trainval",
                                   folds=args.folds, epochs=args.epochs, lr=args.lr[0],
                                   heldout_data=args.heldout_source, peft="lora", virtual_tokens=None))
    if (args.search == "tpe") != (args.trials is not None):
        raise InputError("--search tpe needs --trials N, the configurations to try" if args.trials is None else
                         "--trials is for --search tpe: the grid runs every configuration")
    if args.trials is not None and args.trials < 1 or args.heartbeat < 1:
        raise InputError("--trials and --heartbeat must be positive")
    if args.zero_shot:
        args.max_new_tokens = decode.token_budget(args.max_new_tokens, template.decode, zero_shot=True)
    return args, template


def search_space(args):
    """{setting: its values}: the ranks and alphas (LoRA alone, the paper's), or with other methods (--peft) "config",
    the adapters' names, each method with each of its ranks and alphas and once where it has none (a grid over
    method, r and alpha would run ia3 once an (r, alpha)); and the learning rates when several are given."""
    lrs = {"lr": args.lr} if len(args.lr) > 1 else {}
    if args.peft == ["lora"]:
        return dict(r=args.r, alpha=args.alpha, **lrs)
    names = []
    for method in args.peft:
        has = model.PEFT_METHODS[method]
        tokens = args.virtual_tokens or model.ADAPTER_DEFAULTS["virtual_tokens"] if "virtual_tokens" in has else None
        for r in args.r if "r" in has else [None]:
            for alpha in args.alpha if "alpha" in has else [None]:
                names.append(model.config_name(r, alpha, method, tokens))
    return dict(config=list(dict.fromkeys(names)), **lrs)


def parse_compare(args, rest):
    """--compare's own flags, added to `args`: which videos the two files predicted, named as predict.py names them
    (--fold, --folds and --seed are the fold's, as everywhere else); a flag of training is an error: nothing trains."""
    d = train.Config()
    parser = argparse.ArgumentParser(prog="cv.py --compare A.csv B.csv", allow_abbrev=False)
    parser.add_argument("--split", required=True, choices=data.SPLITS, help="the videos both files predicted")
    parser.add_argument("--fold", type=int, help="fold K of trainval (with --split trainval)")
    parser.add_argument("--seed", type=int, default=d.seed, help="fold seed")
    parser.add_argument("--target", default=d.target, choices=data.TARGETS, help="the score they are compared on")
    vars(args).update(vars(parser.parse_args(rest)))
    return args


def main(argv=None):
    args, template = parse_args(argv)
    if args.compare:
        return compare(args)
    if args.zero_shot:
        print(json.dumps(dict(dataclasses.asdict(template), max_new_tokens=args.max_new_tokens), indent=1))
        return zero_shot(template, args.max_new_tokens)
    for method in args.peft:  # a method that cannot run on this base, before anything loads
        model.check_method(method, template.model)
    space = search_space(args)
    cfgs = plan(template, space)
    # a damaged results file, then bad data, stop the CV before it starts
    read_results(os.path.join(template.out, "results.csv"))
    for root in filter(None, (template.data, template.heldout_data)):
        data.load_split(root, "trainval", [] if template.skip_bad else None, template.target)
    # and a model that cannot be read (from a folder or the hub) or read as asked, before cv.json
    model.load_processor(template.model, template.max_pixels, template.min_pixels, template.input == "video")
    check_settings(template, os.path.join(template.out, "cv.json"), space)
    print(json.dumps(dict(dataclasses.asdict(template), **space, search=args.search, trials=args.trials), indent=1))
    storage = search.storage(args.storage or os.path.join(template.out, "study.log"), args.heartbeat)
    # made here, before --gpus's workers load it
    study = search.open_study(storage, args.search, study_space(template, space, args.trials), template.seed)

    if args.gpus:
        start_workers(argv, args.gpus, template.out, len(cfgs) if args.trials is None else None)
    cross_validate(template, space, cfgs, study, args.trials, args.heartbeat)  # after --gpus's workers: nothing left
    path = os.path.join(template.out, "results.csv")
    with locked(path):  # so the worker that lands the last row writes the summary of them all
        order = {name: i for i, name in enumerate(dict.fromkeys(name for name, _ in cfgs))}
        rows = sorted(read_results(path), key=lambda r: (order.get(r["config"], len(order)), int(r["fold"])))
        done = len({(r["config"], int(r["fold"])) for r in rows} & cfgs.keys())
        if args.trials is None and done < len(cfgs):
            print(f"{done} of {len(cfgs)} folds have landed; other workers hold the rest, and the last of them to "
                  "finish writes the whole summary")
        table, best = summarize(rows, n_folds(template))
        text = markdown(table, best, n_folds(template), template.heldout_data)
        if args.trials is not None:
            text += search_summary(study, space, cfgs, path)
            search.history(study, os.path.join(template.out, "search-history.png"), HEATMAP_SIZE, DPI)
        write_text(os.path.join(template.out, "summary.md"), text)
        print(text, end="")
        heatmap(os.path.join(template.out, "figure-4-heatmap.png"), table)
        if best:
            figures(template, best)
    return table, best


if __name__ == "__main__":
    cli(main)
