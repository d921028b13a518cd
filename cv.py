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
    python cv.py ... --gpus 0,1,2,3                                              # four folds at a time, one a GPU
    sbatch --array=0-7 --wrap "python cv.py ... --out /shared/cv"                # eight workers on a cluster

Any number of the same cv.py command on one OUT (--gpus, a job array, other hosts on a shared folder) split the
grid between them: each (config, fold) is claimed once, and a dead worker's is taken over by the next to look.

Each (config, fold) trains with train.py on the other folds of train+val and predicts its fold; every flag of
train.py other than --split, --fold and --out passes through to it (--target among them). A config is a method with
each of its ranks and alphas (a method without r or alpha, once: `cv.py --peft lora ia3 --r 8 16` runs r8-a1024,
r16-a1024 and ia3); --dropout, --virtual-tokens and --targets go to the methods that have them. With
--heldout-source, the held-out fold is a whole other source instead (MediaEval 2021's subtask 2): each config trains
once on all of --data's labelled videos and is scored on all of the other source's. OUT gets:
  results.csv      one row per (config, fold), appended as each lands; rerun the same command to resume
  claims/          the (config, fold) jobs being run now, each by one worker (host and pid inside)
  summary.md       mean +- std SRCC per config (its method, r, alpha) over the folds, and the best config
  figure-4-heatmap.png, figure-5-scatter.png (best config, out-of-fold), figure-6-best-worst.png
  NAME/fold{K}/    train.py's run directory of each fold (its checkpoints are removed once it lands); with
                   --heldout-source, NAME/heldout-source/, its row fold 0. NAME: r{R}-a{ALPHA} for LoRA, else the
                   method and its settings (dora-r{R}-a{ALPHA}, vera-r{R}, ia3, oft, prompt-tuning-v{N})
With --zero-shot, OUT/zero-shot/ (the paper's greedy decoding; OUT/zero-shot-constrained/ or zero-shot-expected/ with
--decode, so that each mode keeps its own) gets predictions.csv, answers.csv (not with --decode expected: the
predictions hold its whole answer), metrics.json and figure-3-scatter.png.
"""

import argparse
import csv
import dataclasses
import gc
import io
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

import data
import model as qwen
import predict
import train
from checkpoint import checkpoints, write_atomic
from claims import claimed, locked
from errors import InputError, cli
from frames import FrameCache

COLUMNS = ["config", "peft", "r", "alpha", "fold", "n", "srcc", "pearson", "mse", "invalid", "seconds"]
# results.csv as written before --peft: its rows are LoRA's
LORA_COLUMNS = [c for c in COLUMNS if c != "peft"]
DPI = 100
HEATMAP_SIZE, SCATTER_SIZE, SHEET_SIZE = (640, 480), (600, 600), (960, 560)  # pixels of the PNGs


def predictions_path(cfg):
    """Where train.py writes the held-out predictions of a (config, fold): predictions-trainval-fold{K}.csv, or
    predictions-heldout-source.csv (-long.csv for a long-term target)."""
    return os.path.join(cfg.out, f"predictions-{train.heldout_name(cfg)}.csv")


def job(cfg):
    """A (config, fold) as results.csv names it: a held-out source is the config's one fold, 0."""
    return qwen.config_name(cfg.r, cfg.alpha, cfg.peft, cfg.virtual_tokens), cfg.fold or 0


def n_folds(template):
    return 1 if template.heldout_data else template.folds


# -----------------------------------------------------------------------------
# cross-validation


def grid(methods, ranks, alphas, given):
    """The grid's adapters, in order, as train.Config's settings: each method with each of its ranks and alphas (None:
    its default), once where it has none; `given`, the other settings (model.ADAPTER_SETTINGS) as the flags gave them,
    to each method that has them. A setting that no method of the grid has is an InputError."""
    for name, value in dict(given, r=ranks[0], alpha=alphas[0]).items():
        if value is not None and not any(name in qwen.PEFT_METHODS[m] for m in methods):
            raise InputError(f"--{name.replace('_', '-')} is not a setting of {', '.join(methods)}")
    return [dict({k: v if k in qwen.PEFT_METHODS[m] else None for k, v in given.items()}, peft=m, r=r, alpha=alpha)
            for m in methods for r in (ranks if "r" in qwen.PEFT_METHODS[m] else [None])
            for alpha in (alphas if "alpha" in qwen.PEFT_METHODS[m] else [None])]


def plan(template, adapters):
    """Every (config, fold) as a train.Config, in grid order with the folds inside; with a held-out source, one a
    config. adapters: grid's. Building them all first checks every setting before the first fold trains."""
    cfgs = []
    for adapter in adapters:
        cfg = dataclasses.replace(template, **adapter)
        name = job(cfg)[0]
        if template.heldout_data:
            cfgs.append(dataclasses.replace(cfg, out=os.path.join(template.out, name, "heldout-source")))
        else:
            cfgs += [dataclasses.replace(cfg, fold=k, out=os.path.join(template.out, name, f"fold{k}"))
                     for k in range(template.folds)]
    return cfgs


# What cv.json does not record: the grid, which may grow between runs (each config's name tells its method, r, alpha
# and virtual tokens), and the fold
GRID_SETTINGS = ("peft", "r", "alpha", "virtual_tokens", "fold")


def check_settings(template, path):
    """OUT/cv.json records the training settings; a rerun with others would mix two experiments in one table.
    The grid may grow between runs: its methods, ranks and alphas are not part of the record."""
    settings = {k: v for k, v in dataclasses.asdict(template).items() if k not in GRID_SETTINGS}
    settings["model_identity"] = qwen.identity(template.model)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        # paths are where things are, not settings: a CV may move or be shared by hosts that mount it elsewhere
        changed = train.changed_settings(saved, template, ignore=GRID_SETTINGS)
        if changed:
            raise InputError(f"{path}: this CV ran with other settings ({', '.join(changed)}); "
                                  "rerun with those or choose another --out")
    write_atomic(path, json.dumps(settings, indent=1))


def read_results(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames not in (COLUMNS, LORA_COLUMNS):
            raise InputError(f"{path}: line 1: expected the columns {','.join(COLUMNS)}")
        rows = [dict(row, peft=row.get("peft", "lora")) for row in reader]
    for line, row in enumerate(rows, start=2):
        try:
            # r and alpha are empty where a method has none
            int(row["r"] or 0), float(row["alpha"] or 0), int(row["fold"]), float(row["srcc"])
        except (TypeError, ValueError):
            raise InputError(f"{path}: line {line}: not a result row of cv.py")
    return rows


def write_rows(path, header, rows):
    """A CSV written to a temporary file beside `path` and renamed into place: a kill at any moment leaves the
    old file or the new one, never half a row."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    write_atomic(path, buf.getvalue())


def append_result(path, row):
    """Add a (config, fold)'s row, once: workers append under a lock, and a row that landed already stays as it is."""
    with locked(path + ".lock"):
        rows = read_results(path)
        if (row["config"], str(row["fold"])) not in {(r["config"], r["fold"]) for r in rows}:
            write_rows(path, COLUMNS, [[r[c] for c in COLUMNS] for r in rows + [row]])


# -----------------------------------------------------------------------------
# workers: any number of the same cv.py command on one OUT (--gpus, a SLURM array, several hosts) split the grid with no
# coordinator, each (config, fold) claimed once under OUT/claims (claims.py), a dead worker's taken over


def run_fold(cfg):
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
    return dict(config=job(cfg)[0], peft=cfg.peft, r="" if cfg.r is None else cfg.r,
                alpha="" if cfg.alpha is None else f"{cfg.alpha:g}", fold=job(cfg)[1], n=m["n"],
                srcc=f"{m['srcc']:.6f}", pearson=f"{m['pearson']:.6f}", mse=f"{m['mse']:.6f}",
                invalid=m["invalid"], seconds=m["seconds"])


def landed(path):
    return {(row["config"], int(row["fold"])) for row in read_results(path)}


def cross_validate(cfgs, path):
    """Run every (config, fold) that results.csv does not hold yet and no live worker has claimed, in grid order, then
    again what is left while a pass finds work (a worker that died meanwhile left its job); returns the rows landed
    so far, other workers' included."""
    claims = os.path.join(os.path.dirname(path), "claims")
    os.makedirs(claims, exist_ok=True)
    todo = [c for c in cfgs if job(c) not in landed(path)]
    # smoothing=0: the ETA is the mean time of the folds run so far, steadier than a recent-rate estimate
    bar = tqdm(total=len(cfgs), initial=len(cfgs) - len(todo), desc="cross-validation", unit="fold", smoothing=0)
    ran = True
    while ran:
        ran = False
        for cfg in [c for c in todo if job(c) not in landed(path)]:
            name, fold = job(cfg)
            with claimed(os.path.join(claims, f"{name}-fold{fold}")) as mine:
                if not mine or (name, fold) in landed(path):  # another worker's, running or just landed
                    continue
                row = run_fold(cfg)
                append_result(path, row)
                # A fold's checkpoints (adapter + AdamW state, ~0.7 GB each at r=128 on a 7B model) are only for
                # resuming it; once its row has landed, its adapter/ and predictions are what is kept.
                for step_dir in checkpoints(cfg.out):
                    shutil.rmtree(step_dir)
            ran = True
            bar.update(1)
            tqdm.write(f"cv | {row['config']} fold {row['fold']} | SRCC {float(row['srcc']):.4f} | "
                       f"Pearson {float(row['pearson']):.4f} | invalid {row['invalid']}/{row['n']} | {row['seconds']}s")
    bar.close()
    return read_results(path)


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
    """One line per config, in the order they ran: its method, r and alpha (None where it has none), mean and std (n-1)
    of SRCC over folds, mean Pearson and MSE."""
    by_config = {}
    for row in rows:
        by_config.setdefault(row["config"], []).append(row)
    table = []
    for name, rs in by_config.items():
        srcc = np.array([float(r["srcc"]) for r in rs])
        r, alpha = rs[0]["r"], rs[0]["alpha"]
        table.append(dict(config=name, peft=rs[0]["peft"], r=int(r) if r else None,
                          alpha=float(alpha) if alpha else None, folds=len(rs),
                          srcc=float(srcc.mean()), std=float(srcc.std(ddof=1)) if len(rs) > 1 else float("nan"),
                          pearson=float(np.mean([float(r["pearson"]) for r in rs])),
                          mse=float(np.mean([float(r["mse"]) for r in rs])),
                          invalid=sum(int(r["invalid"]) for r in rs), n=sum(int(r["n"]) for r in rs)))
    # Only configs with every fold compete; a NaN SRCC (constant predictions in a fold) never wins.
    complete = [t for t in table if t["folds"] == folds and not math.isnan(t["srcc"])]
    best = max(complete, key=lambda t: t["srcc"]) if complete else None
    return table, best


def markdown(table, best, folds, heldout_source=None):
    """The summary table; with a held-out source, each config's one SRCC on it."""
    what = f"SRCC on the held-out source {heldout_source}" if heldout_source else f"SRCC mean ± std over {folds} folds"
    lines = [f"| config | method | r | alpha | folds | {what} | Pearson | MSE | invalid |",
             "|---|---|---|---|---|---|---|---|---|"]

    def srcc(t):
        return f"{t['srcc']:.4f}" + ("" if heldout_source else f" ± {t['std']:.4f}")

    def setting(value):
        return "-" if value is None else f"{value:g}"

    lines += [f"| {t['config']} | {t['peft']} | {setting(t['r'])} | {setting(t['alpha'])} | {t['folds']} | {srcc(t)} | "
              f"{t['pearson']:.4f} | {t['mse']:.5f} | {t['invalid']}/{t['n']} |" for t in table]
    lines.append("")
    lines.append(f"best: {best['config']} ({best['peft']}, r={setting(best['r'])}, alpha={setting(best['alpha'])}), "
                 f"{'SRCC' if heldout_source else 'mean SRCC'} {srcc(best)}" if best
                 else "best: none (no config has finished every fold)")
    return "\n".join(lines) + "\n"


# -----------------------------------------------------------------------------
# figures: written through matplotlib's Figure, without pyplot's global state, at a fixed pixel size


def new_figure(size):
    return Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)


def save(fig, path):
    tmp = f"{path}.{os.getpid()}.tmp"  # renamed into place: workers finishing together each write a whole file
    fig.savefig(tmp, dpi=DPI, format="png")  # no bbox_inches="tight": it would change the size
    os.replace(tmp, path)
    print(f"wrote {path}")


def heatmap(path, table):
    """Figure 4: mean SRCC over folds (± its std) for each rank and alpha; with other methods than LoRA, a row for each
    method and rank, and for a method without alpha its config in the last column, "-". A config not run is blank."""
    lora = all(t["peft"] == "lora" for t in table)

    def row(t):  # a method with alpha: a row a rank, its alphas across; another: a row a config, in the last column
        return t["peft"], t["r"] or 0, None if t["alpha"] is not None else t["config"]

    order = list(qwen.PEFT_METHODS)
    rows = sorted({row(t) for t in table}, key=lambda k: (order.index(k[0]), k[1], k[2] or ""))
    alphas = sorted({t["alpha"] for t in table if t["alpha"] is not None})
    alphas += [None] if any(t["alpha"] is None for t in table) else []
    grid, std = np.full((len(rows), len(alphas)), np.nan), np.full((len(rows), len(alphas)), np.nan)
    for t in table:
        grid[rows.index(row(t)), alphas.index(t["alpha"])] = t["srcc"]
        std[rows.index(row(t)), alphas.index(t["alpha"])] = t["std"]
    fig = new_figure(HEATMAP_SIZE)
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    middle = np.nanmean(grid) if np.isfinite(grid).any() else 0
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            text = f"{value:.3f}" + (f"\n± {std[i, j]:.3f}" if np.isfinite(std[i, j]) else "")
            ax.text(j, i, text, ha="center", va="center", color="white" if value < middle else "black")
    ax.set_xticks(range(len(alphas)), ["-" if a is None else f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(rows)), [str(r) if lora else config or f"{method} r={r}" for method, r, config in rows])
    ax.set(xlabel="LoRA alpha" if lora else "alpha", ylabel="LoRA rank r" if lora else "method, rank r",
           title="mean SRCC over folds")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    save(fig, path)


def scatter(path, truth, predicted, title):
    """Figures 3 and 5: prediction against ground truth (scores 0-1), with the identity line."""
    fig = new_figure(SCATTER_SIZE)
    ax = fig.subplots()
    ax.scatter(truth, predicted, s=8, alpha=0.5, edgecolors="none")
    ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="identity")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="ground truth", ylabel="prediction", title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    save(fig, path)


def sheet(path, videos, truth, predicted, cache, k=4):
    """Figure 6: the k best and k worst predicted videos (absolute error), each as its middle frame."""
    ranked = sorted(predicted, key=lambda v: (abs(predicted[v] - truth[v]), v))
    k = max(1, min(k, len(ranked) // 2))
    fig = new_figure(SHEET_SIZE)
    axes = fig.subplots(2, k, squeeze=False)
    for row, (label, chosen) in enumerate([("best", ranked[:k]), ("worst", ranked[::-1][:k])]):
        for ax, video_id in zip(axes[row], chosen):
            frames = cache.get(videos[video_id])
            ax.imshow(frames[len(frames) // 2].permute(1, 2, 0).numpy())
            short = video_id if len(video_id) <= 24 else video_id[:21] + "..."
            ax.set_title(f"{label}: {short}\ntruth {truth[video_id]:.2f} | predicted {predicted[video_id]:.2f}",
                         fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    save(fig, path)


def figures(template, best, cfgs):
    """Figures 5-6 from the best config's fold directories under OUT: out of fold, or on the held-out source."""
    out = template.out
    truth_data = template.heldout_data or template.data
    videos = {v.video_id: v for v in data.load_split(truth_data, "trainval", [] if template.skip_bad else None,
                                                     template.target)}
    truth = {video_id: v.score for video_id, v in videos.items()}
    predicted = {}
    for cfg in [c for c in cfgs if job(c)[0] == best["config"]]:  # each video predicted by a model not trained on it
        predicted.update(predict.read_labels(predictions_path(cfg)))
    ids = [v for v in predicted if v in truth]
    m = predict.metrics([round(100 * predicted[v]) for v in ids], [truth[v] for v in ids])
    scatter(os.path.join(out, "figure-5-scatter.png"), [truth[v] for v in ids], [predicted[v] for v in ids],
            f"{best['config']}, {'held-out source' if template.heldout_data else 'out of fold'}: SRCC {m['srcc']:.3f} "
            f"(n={m['n']})")
    processor = qwen.load_processor(template.model, template.max_pixels, template.min_pixels)
    sheet(os.path.join(out, "figure-6-best-worst.png"), videos, truth, {v: predicted[v] for v in ids},
          FrameCache(template.cache, template.frames, qwen.budget_of(processor)))


# -----------------------------------------------------------------------------
# zero-shot (§4.1): the base model, the paper's prompt, and the paper's post-processing


def zero_shot(template):
    # one folder a decoding mode: a run with another --decode never overwrites or mixes with the paper's
    folder = os.path.join(template.out, "zero-shot" + ("" if template.decode == "greedy" else f"-{template.decode}"))
    bad = [] if template.skip_bad else None
    videos = data.load_split(template.data, "trainval", bad, template.target)
    os.makedirs(folder, exist_ok=True)
    processor = qwen.load_processor(template.model, template.max_pixels, template.min_pixels)
    cache = FrameCache(template.cache, template.frames, qwen.budget_of(processor))
    video = template.input == "video"
    videos = cache.fill(videos, bad, timed=video)
    data.report_skipped(bad, os.path.join(folder, "skipped.csv"))
    if not videos:
        raise InputError(f"{template.data}: no usable videos in train+val")
    model = qwen.load_model(template.model, template.quant)
    answers = predict.generate(model, processor, videos, cache, template.eval_batch_size, template.workers,
                               video=video, decode=template.decode)
    # The paper fills an invalid answer with the training mean, 80 (train+val mean score 0.801)
    scores, invalid = predict.postprocess(answers, predict.PAPER_TRAIN_MEAN)
    m = predict.metrics(scores, [v.score for v in videos])

    predict.write_predictions(os.path.join(folder, "predictions.csv"), videos, scores, answers)
    if template.decode != "expected":  # with expected, predictions.csv holds the whole answer: score, argmax and std
        write_rows(os.path.join(folder, "answers.csv"), ["video_id", "answer"],
                   zip([v.video_id for v in videos], answers))
    rate = invalid / max(len(videos), 1)
    result = dict(model=template.model, decode=template.decode, n=m["n"], invalid=invalid, invalid_rate=rate,
                  fill=predict.PAPER_TRAIN_MEAN, srcc=m["srcc"], srcc_ci=list(m["srcc_ci"]), ci_method="Fisher z",
                  pearson=m["pearson"], mse=m["mse"])
    write_atomic(os.path.join(folder, "metrics.json"), json.dumps(result, indent=1))
    print(f"invalid answers: {invalid}/{len(videos)} ({100 * rate:.2f}%), replaced by {predict.PAPER_TRAIN_MEAN}")
    print(f"zero-shot {predict.describe(m)}")
    scatter(os.path.join(folder, "figure-3-scatter.png"), [v.score for v in videos], [s / 100 for s in scores],
            f"zero-shot: SRCC {m['srcc']:.3f}, {invalid} invalid of {len(videos)}")
    return result


# -----------------------------------------------------------------------------


def parse_args(argv=None):
    d = train.Config()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every other flag is train.py's and goes to each fold (python train.py --help), e.g. --target, "
               "--targets, --batch-size, --grad-accum, --warmup, --dropout, --seed, --frames, --input, --quant, "
               "--no-grad-ckpt, --cache, --decode.",
        allow_abbrev=False)  # else --fold would silently abbreviate --folds
    # ---
    parser.add_argument("--data", default=d.data, help="dataset root (Memento10k, TRECVid, VideoMem): what to train on")
    parser.add_argument("--model", default=d.model, help="hub id or local folder of a native Qwen VLM")
    parser.add_argument("--out", default="runs/cv", help="CV directory: results.csv, summary.md, figures, fold runs")
    parser.add_argument("--folds", type=int, default=d.folds, help="number of folds over train+val")
    parser.add_argument("--heldout-source", help="another source's root: hold it out whole (train on all of --data, "
                        "score on all of it) instead of folds")
    parser.add_argument("--peft", nargs="+", default=[d.peft], choices=list(qwen.PEFT_METHODS),
                        help="the methods of the grid: lora (the paper's), dora, ia3, prompt-tuning, vera, oft")
    parser.add_argument("--r", type=int, nargs="+", default=[None], help="ranks of the grid (LoRA, DoRA, VeRA; "
                        "default 128)")
    parser.add_argument("--alpha", type=float, nargs="+", default=[None], help="alphas of the grid (LoRA, DoRA; "
                        "default 1024)")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training folds")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    parser.add_argument("--zero-shot", action="store_true", help="instead: the base model on train+val, no training")
    parser.add_argument("--gpus", type=lambda s: s.split(","), help="comma-separated GPUs to run folds on side by "
                        "side, one a GPU (e.g. 0,1,2,3); default: this process's device")
    # ---
    args, rest = parser.parse_known_args(argv)
    chosen_here = ("--split", "--fold", "--resume", "--overwrite", "--heldout-data")
    if any(a.split("=")[0] in chosen_here for a in rest):
        raise InputError(f"cv.py chooses the split, the folds and the run directories and always resumes: "
                              f"drop {', '.join(a for a in rest if a.split('=')[0] in chosen_here)}")
    # The rest is read by train.py's own parser: its flags, help, defaults and checks, not a copy of them.
    train_args = train.read_args(rest)
    if train_args.split != d.split:  # an abbreviation (--spl) that got past the check above
        raise InputError("cv.py chooses the split: drop --split")
    # a repeated value runs once
    args.peft, args.r, args.alpha = (list(dict.fromkeys(v)) for v in (args.peft, args.r, args.alpha))
    given = {k: getattr(train_args, k) for k in qwen.ADAPTER_SETTINGS if k not in ("r", "alpha")}
    args.adapters = grid(args.peft, args.r, args.alpha, given)
    fold_flags = {f.name: getattr(train_args, f.name) for f in dataclasses.fields(train.Config)}
    # the template holds the settings every fold shares, and LoRA's as the flags give them (the grid's methods take
    # theirs from args.adapters)
    template = train.Config(**dict(fold_flags, data=args.data, model=args.model, out=args.out, split="trainval",
                                   folds=args.folds, epochs=args.epochs, lr=args.lr, heldout_data=args.heldout_source,
                                   peft="lora", r=None, alpha=None, virtual_tokens=None))
    return args, template


def main(argv=None):
    args, template = parse_args(argv)
    if args.zero_shot:
        print(json.dumps(dataclasses.asdict(template), indent=1))
        return zero_shot(template)
    for method in args.peft:  # a method that cannot run on this base, before anything loads
        qwen.check_method(method, template.model)
    cfgs = plan(template, args.adapters)
    # a damaged results file, then bad data, stop the CV before it starts
    read_results(os.path.join(template.out, "results.csv"))
    for root in filter(None, (template.data, template.heldout_data)):
        data.load_split(root, "trainval", [] if template.skip_bad else None, template.target)
    qwen.load_processor(template.model)  # and a model that cannot be read, from a folder or the hub, before cv.json
    os.makedirs(template.out, exist_ok=True)
    check_settings(template, os.path.join(template.out, "cv.json"))
    print(json.dumps(dict(dataclasses.asdict(template), peft=args.peft, r=args.r, alpha=args.alpha), indent=1))

    if args.gpus:
        start_workers(argv, args.gpus, template.out, len(cfgs))
    path = os.path.join(template.out, "results.csv")
    cross_validate(cfgs, path)  # after --gpus's workers: nothing is left
    with locked(path + ".lock"):  # so the worker that lands the last row writes the summary of them all
        rows = read_results(path)
        if len(rows) < len(cfgs):
            print(f"{len(rows)} of {len(cfgs)} folds have landed; other workers hold the rest, and the last of them "
                  "to finish writes the whole summary")
        table, best = summarize(rows, n_folds(template))
        text = markdown(table, best, n_folds(template), template.heldout_data)
        write_atomic(os.path.join(template.out, "summary.md"), text)
        print(text, end="")
        heatmap(os.path.join(template.out, "figure-4-heatmap.png"), table)
        if best:
            figures(template, best, cfgs)
    return table, best


if __name__ == "__main__":
    cli(main)
