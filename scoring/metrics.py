"""
How well scores rank the videos: Spearman's rank correlation (the paper's metric) with Pearson's and the MSE, the
paper's 95% interval of an SRCC (Table 1) and its Spearman form beside it, the paired bootstrap that compares two
predictions of the same videos (cv.py --compare), and the check that labels and predictions name the same videos.
"""

import math
import warnings

import numpy as np
from scipy import stats


# what each interval of `metrics` is, as metrics.json records it beside them
CI_METHODS = dict(srcc_ci="Fisher z with Pearson's standard error 1/sqrt(n-3), as the paper's Table 1",
                  srcc_ci_spearman="Fisher z with Bonett-Wright's standard error sqrt((1+srcc^2/2)/(n-3)) for Spearman")


def fisher_z_ci(rho, se, level=0.95):
    """tanh(atanh(rho) +- z * se): a correlation's interval from its standard error on Fisher's z scale."""
    if abs(rho) >= 1:
        return rho, rho
    half = stats.norm.ppf(0.5 + level / 2) * se
    return math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)


def srcc_ci(rho, n, level=0.95):
    """
    The paper's interval of an SRCC (Table 1; each of its five rows to three decimals): Fisher z with the standard
    error of a Pearson correlation, 1/sqrt(n-3), applied to Spearman's as it is. A Spearman correlation varies more
    than a Pearson one of the same size, so this one is a little narrow: srcc_ci_spearman is its Spearman form.
    """
    return (rho, rho) if n <= 3 else fisher_z_ci(rho, 1 / math.sqrt(n - 3), level)


def srcc_ci_spearman(rho, n, level=0.95):
    """
    Bonett & Wright's (2000) interval of a Spearman correlation: Fisher z with the standard error
    sqrt((1 + rho^2 / 2) / (n - 3)), wider than the paper's by sqrt(1 + rho^2 / 2) on the z scale (1.13 at 0.744: 0.717
    to 0.768 where the paper gives 0.721 to 0.766). Their own code (R statpsych::ci.spear) computes the same.
    """
    return (rho, rho) if n <= 3 else fisher_z_ci(rho, math.sqrt((1 + rho ** 2 / 2) / (n - 3)), level)


def metrics(predicted, truth):
    """predicted: integer scores 0-100; truth: scores 0-1. SRCC with its two 95% intervals (CI_METHODS)."""
    p, t = np.asarray(predicted, float) / 100, np.asarray(truth, float)
    srcc = float(stats.spearmanr(p, t).statistic) if len(p) > 1 and np.ptp(p) > 0 else float("nan")
    pearson = float(stats.pearsonr(p, t).statistic) if len(p) > 1 and np.ptp(p) > 0 else float("nan")
    return dict(n=len(p), srcc=srcc, srcc_ci=srcc_ci(srcc, len(p)), srcc_ci_spearman=srcc_ci_spearman(srcc, len(p)),
                pearson=pearson, mse=float(np.mean((p - t) ** 2)))


def ranked_srcc(x, y, axis=-1):
    """Spearman's correlation of x and y along `axis`, many at once: Pearson's of their ranks, ties at their mean rank
    (scipy's spearmanr, which takes one pair of samples at a time, up to rounding)."""
    rx, ry = stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis)
    rx, ry = rx - rx.mean(axis, keepdims=True), ry - ry.mean(axis, keepdims=True)
    return (rx * ry).sum(axis) / np.sqrt((rx ** 2).sum(axis) * (ry ** 2).sum(axis))


BOOTSTRAP = dict(n_resamples=9999, method="percentile", seed=0)  # srcc_difference's; 9999: scipy's default count


def srcc_difference(truth, a, b, level=0.95):
    """
    Two predictions of the same videos against the same truth: SRCC(a) - SRCC(b) and its interval from a paired
    bootstrap over videos (scipy.stats.bootstrap, paired): each resample draws videos with replacement and keeps a
    video's truth and both its predictions together, so what the two share (the same hard videos) cancels out of the
    difference. Percentile interval, BOOTSTRAP's resamples and seed: the same input gives the same interval. An
    interval that excludes 0 is the reading: one ranks these videos better; one that holds 0 shows no difference.
    """
    truth, a, b = (np.asarray(x, float) for x in (truth, a, b))

    def delta(t, x, y, axis=-1):
        return ranked_srcc(x, t, axis) - ranked_srcc(y, t, axis)

    # batch: ranks of 1,000 resamples at a time, ~70 MB an array for the 8,500 labelled videos. A resample where a
    # prediction is constant has no SRCC: with so few videos, the interval is NaN, with no warning from each resample.
    with np.errstate(invalid="ignore"), warnings.catch_warnings(category=stats.DegenerateDataWarning, action="ignore"):
        res = stats.bootstrap((truth, a, b), delta, paired=True, vectorized=True, confidence_level=level, batch=1000,
                              n_resamples=BOOTSTRAP["n_resamples"], method=BOOTSTRAP["method"],
                              rng=np.random.default_rng(BOOTSTRAP["seed"]))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    srcc_a, srcc_b = float(ranked_srcc(a, truth)), float(ranked_srcc(b, truth))
    reading = "a ranks better" if lo > 0 else "b ranks better" if hi < 0 else "no difference shown"
    return dict(n=len(truth), srcc_a=srcc_a, srcc_b=srcc_b, delta=srcc_a - srcc_b, delta_ci=[lo, hi],
                ci_excludes_0=bool(lo > 0 or hi < 0), reading=reading)


def describe(m):
    """One line for the metrics of `metrics`: SRCC with its 95% CIs (the paper's Fisher z, then Bonett-Wright's),
    Pearson and MSE."""
    if math.isnan(m["srcc"]):
        return f"SRCC undefined: every prediction is the same (n={m['n']}) | MSE {m['mse']:.5f}"
    (lo, hi), (s_lo, s_hi) = m["srcc_ci"], m["srcc_ci_spearman"]
    return (f"SRCC {m['srcc']:.4f} (95% CI {lo:.3f} to {hi:.3f}, Fisher z as the paper; {s_lo:.3f} to {s_hi:.3f}, "
            f"Bonett-Wright; n={m['n']}) | Pearson {m['pearson']:.4f} | MSE {m['mse']:.5f}")


def label_mismatch(ids, labels, where):
    """None where every predicted video (`ids`) has a label in `labels` (read from `where`); else one line saying how
    many do, with a predicted id the labels lack and, if any, a labelled id that was not predicted: labels of another
    split or source, or ids written another way, would otherwise score nothing and say nothing."""
    lacking = next((i for i in ids if i not in labels), None)
    if lacking is None:
        return None
    predicted = set(ids)
    extra = next((i for i in labels if i not in predicted), None)
    return (f"{where}: labels for {sum(i in labels for i in ids)} of the {len(ids)} predicted videos: {lacking} is "
            "predicted but not in the labels" + (f", {extra} is in the labels but not predicted" if extra else ""))
