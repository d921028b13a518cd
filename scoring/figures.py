"""
The paper's figures, drawn through matplotlib's Figure (no pyplot global state) at a fixed pixel size and written
whole: Figure 3 and 5 (prediction against truth), Figure 4 (mean SRCC over folds for each rank x alpha; with --peft,
a row a method and rank), Figure 6 (the best and worst predicted videos).
"""

import numpy as np
from matplotlib.figure import Figure

from plumbing.files import atomic

DPI = 100
HEATMAP_SIZE, SCATTER_SIZE, SHEET_SIZE = (640, 480), (600, 600), (960, 560)  # pixels of the PNGs


def new_figure(size):
    return Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)


def save(fig, path):
    with atomic(path, "wb") as f:  # workers finishing together each write a whole file
        fig.savefig(f, dpi=DPI, format="png")  # no bbox_inches="tight": it would change the size
    print(f"wrote {path}")


def heatmap(path, table):
    """Figure 4: mean SRCC over folds, ± its std, for each (rank, alpha); a config not run is left blank. Where another
    setting is searched too (several learning rates), a cell shows its best. With other methods than LoRA (--peft,
    cv.summarize's "peft"), a row for each method and rank, in the order they ran, and a method without alpha in the
    last column, "-"."""
    lora = all(t["peft"] == "lora" for t in table)
    methods = list(dict.fromkeys(t["peft"] for t in table))
    rows = sorted({(t["peft"], t["r"]) for t in table}, key=lambda k: (methods.index(k[0]), k[1] or 0))
    alphas = sorted({t["alpha"] for t in table if t["alpha"] is not None})
    alphas += [None] if any(t["alpha"] is None for t in table) else []
    grid, std = np.full((len(rows), len(alphas)), np.nan), np.full((len(rows), len(alphas)), np.nan)
    for t in table:
        i, j = rows.index((t["peft"], t["r"])), alphas.index(t["alpha"])
        if np.isfinite(t["srcc"]) and not t["srcc"] <= grid[i, j]:  # the best over the other settings searched
            grid[i, j], std[i, j] = t["srcc"], t["std"]
    fig = new_figure(HEATMAP_SIZE)
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    middle = np.nanmean(grid) if np.isfinite(grid).any() else 0
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            text = f"{value:.3f}" + (f"\n± {std[i, j]:.3f}" if np.isfinite(std[i, j]) else "")
            ax.text(j, i, text, ha="center", va="center", color="white" if value < middle else "black")
    ax.set_xticks(range(len(alphas)), ["-" if a is None else f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(rows)), [str(r) if lora else method if r is None else f"{method} r={r}"
                                     for method, r in rows])
    ax.set(xlabel="LoRA alpha" if lora else "alpha", ylabel="LoRA rank r" if lora else "method, rank r",
           title="mean SRCC ± std over folds")
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
