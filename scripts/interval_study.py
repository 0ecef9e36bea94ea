"""Coverage of featx's intervals and error rates of its paired test, by simulation (known truth).

Each replicate draws a data set of subjects and cells from a known population, runs featx's protocol on it
(featx's own subject folds and heads, so the learners are trained per fold and training variance is in every
number) and asks whether each interval holds the truth. Two truths are scored:

- ``conditional``: what the classifiers this protocol trained score on new subjects of the population (the mean
  over folds of each fold model's population metric); the target featx's intervals name.
- ``expected``: the mean of that over training sets of the same size drawn from the population (what a
  repeated study would average to).

The population: subjects of two classes (ALL, two thirds, and HEM); each subject has a stain offset shared by its
cells (patient-level stain variation) and a difficulty that moves its cells along the class axis (some patients'
cells look like the other class, so per-subject accuracy varies as in C-NMC); cells add independent noise. Cells per
subject vary. Features have ``dim`` columns; heads see them as they would see deep features.

Methods compared: featx's class-stratified subject jackknife t-interval on the logit scale (``jackknife``, shipped),
its linearization (infinitesimal jackknife, ``linearization``), the subject bootstrap featx used before (within
each test fold, percentile, widened to hold the estimate: ``old-bootstrap``), a class-stratified subject bootstrap
over the whole protocol (percentile: ``strat-bootstrap``), with ``--repeats R`` the Nadeau-Bengio corrected
repeated-CV t-interval (``nb-corrected``), and (tests only) the jackknife with cells as the unit
(``images-as-unit``: what ignoring subjects costs).
The paired test compares two heads trained on exchangeable feature sets (equal truth: its false-positive rate)
and on feature sets whose truth differs by about 3 points of weighted F1 (its power).

    python scripts/interval_study.py                 # every design, 1000 replicates (about an hour on 2 cores)
    python scripts/interval_study.py --designs 30 --reps 200 --jobs 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from scipy import stats

from featx.evaluation.intervals import OutOfFold, design_reason, difference, estimate, fold_values, interval
from featx.evaluation.splits import make_splits
from featx.heads import make_head
from featx.scoring import get_metric

STUDY_METRICS = ("accuracy", "balanced_accuracy", "f1_weighted", "f1", "precision", "recall", "roc_auc")
POSITIVE = 0  # class index of ALL (featx orders classes all, hem)


@dataclass(frozen=True)
class Design:
    """A study design: subjects per class, cells per subject (uniform between the two), folds, and the
    population's parameters."""

    name: str
    n_all: int
    n_hem: int
    cells: tuple[int, int]
    n_folds: int = 5
    held_out: tuple[int, int] | None = None  # (ALL, HEM) subjects of a held-out split instead of k-fold
    dim: int = 8
    signal: float = 2.6       # distance between the class means along the class axis (cell noise sd = 1)
    difficulty_sd: float = 0.6  # subject shift along the class axis
    stain_sd: float = 0.5     # subject offset in every column
    pop_subjects: int = 4500  # subjects (20 cells each) standing for the population


DESIGNS = {
    "cnmc": Design("C-NMC size (79 ALL + 39 HEM subjects, 30-150 cells each)", 79, 39, (30, 150)),
    "30": Design("30 subjects (20 ALL + 10 HEM, 15-25 cells each)", 20, 10, (15, 25)),
    "demo": Design("demo size (30 ALL + 15 HEM subjects, 4 cells each, as featx synth makes)", 30, 15, (4, 4)),
    "prelim": Design("held-out split (train 79 ALL + 39 HEM; test 20 ALL + 10 HEM, 30-150 cells)", 79, 39,
                     (30, 150), held_out=(20, 10)),
}


# --------------------------------------------------------------------------------------------------
# the population
# --------------------------------------------------------------------------------------------------
def draw(rng, d: Design, n_all: int, n_hem: int, cells=None, signals=(None,), rho: float = 0.5):
    """Cells of ``n_all`` + ``n_hem`` new subjects: (features per signal, labels, subject ids).

    With several ``signals``, each gets its own feature set: the same subjects (stain and difficulty), cell noise
    correlated ``rho`` between the sets."""
    cells = cells or d.cells
    cls = np.r_[np.full(n_all, POSITIVE), np.full(n_hem, 1 - POSITIVE)]
    n = rng.integers(cells[0], cells[1] + 1, size=len(cls))
    subject = np.repeat(np.arange(len(cls)), n)
    y = cls[subject]
    difficulty = rng.normal(0, d.difficulty_sd, len(cls))[subject]
    stain = rng.normal(0, d.stain_sd, (len(cls), d.dim))[subject]
    axis = np.ones(d.dim) / np.sqrt(d.dim)
    shared = rng.normal(0, 1, (len(y), d.dim))
    sets = []
    for signal in signals:
        signal = d.signal if signal is None else signal
        side = np.where(y == POSITIVE, 0.5, -0.5) * signal
        own = rng.normal(0, 1, (len(y), d.dim))
        noise = shared if len(signals) == 1 else rho * shared + np.sqrt(1 - rho ** 2) * own
        sets.append((side + difficulty)[:, None] * axis + stain + noise)
    return sets, y, subject


def population(d: Design, signals=(None,), seed: int = 12345):
    """A large sample of new subjects (``d.pop_subjects``, two thirds ALL, 20 cells each) standing for the
    population."""
    n_all = 2 * d.pop_subjects // 3
    sets, y, subject = draw(np.random.default_rng(seed), d, n_all, d.pop_subjects - n_all, (20, 20), signals)
    return sets, y


def metric_of(model, X, y) -> dict[str, float]:
    """Each metric of ``model`` on one test set (featx's definitions, :func:`fold_values` of one fold)."""
    oof = OutOfFold(y, model.predict(X), model.predict_proba(X)[:, POSITIVE], np.zeros(len(y), dtype=int), None, 2,
                    POSITIVE)
    return {m: float(fold_values(oof, m)[0]) for m in STUDY_METRICS}


def expected_truth(d: Design, signals=(None,), n_train: int = 200, seed: int = 777) -> list[dict]:
    """Per feature set, each metric of a head trained on a training set of the protocol's size, averaged over
    ``n_train`` training sets drawn from the population."""
    pop, y_pop = population(d, signals)
    rng = np.random.default_rng(seed)
    if d.held_out is None:
        n_all, n_hem = round(d.n_all * (d.n_folds - 1) / d.n_folds), round(d.n_hem * (d.n_folds - 1) / d.n_folds)
    else:
        n_all, n_hem = d.n_all, d.n_hem
    out = [[] for _ in signals]
    for _ in range(n_train):
        sets, y, _ = draw(rng, d, n_all, n_hem, signals=signals)
        for i, X in enumerate(sets):
            out[i].append(metric_of(make_head("logistic").fit(X, y), pop[i], y_pop))
    return [{m: float(np.mean([o[m] for o in res])) for m in STUDY_METRICS} for res in out]


# --------------------------------------------------------------------------------------------------
# one replicate
# --------------------------------------------------------------------------------------------------
def _protocol(d: Design, y, subject, seed: int):
    if d.held_out is None:
        return make_splits(subject.astype(str), y, None, cv="subject", n_folds=d.n_folds, seed=seed).folds
    n_subj = d.n_all + d.n_hem
    test = subject >= n_subj
    return [(np.flatnonzero(~test), np.flatnonzero(test))]


def _subject_ids(d: Design, subject):
    return subject.astype(str)


def run_protocol(d: Design, X, y, subject, folds, pop, y_pop, fold_offset: int = 0, repeat: int = 0):
    """OutOfFold predictions of the logistic head and the population metrics of each fold model."""
    preds, scores, fold_of, rows, cond = [], [], [], [], []
    for k, (train, test) in enumerate(folds):
        model = make_head("logistic").fit(X[train], y[train])
        preds.append(model.predict(X[test]))
        scores.append(model.predict_proba(X[test])[:, POSITIVE])
        fold_of.append(np.full(len(test), fold_offset + k))
        rows.append(test)
        cond.append(metric_of(model, pop, y_pop))
    rows = np.concatenate(rows)
    oof = OutOfFold(y[rows], np.concatenate(preds), np.concatenate(scores), np.concatenate(fold_of),
                    _subject_ids(d, subject[rows]), 2, POSITIVE, np.full(len(rows), repeat))
    return oof, {m: float(np.nanmean([c[m] for c in cond])) for m in STUDY_METRICS}


def old_bootstrap(oof: OutOfFold, metric: str, n_boot: int, rng) -> tuple[float, float]:
    """featx's interval before this study: subjects resampled within each test fold, percentile, widened."""
    return _bootstrap(oof, metric, n_boot, rng, within_fold=True, widen=True)


def strat_bootstrap(oof: OutOfFold, metric: str, n_boot: int, rng) -> tuple[float, float]:
    """Subjects resampled within their class over the whole protocol (each keeps its fold), percentile."""
    return _bootstrap(oof, metric, n_boot, rng, within_fold=False, widen=False)


def _bootstrap(oof, metric, n_boot, rng, *, within_fold: bool, widen: bool):
    unit, stratum = oof.units()
    folds = np.unique(oof.fold)
    fold_of_unit = np.zeros(unit.max() + 1, dtype=int)
    fold_of_unit[unit] = np.searchsorted(folds, oof.fold)
    cells = [fold_of_unit == f for f in range(len(folds))] if within_fold else [stratum == h for h in (0, 1)]
    W = np.zeros((n_boot, unit.max() + 1))
    for members in cells:
        idx = np.flatnonzero(members)
        if len(idx):
            W[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1 / len(idx)), size=n_boot)
    m = get_metric(metric)
    values = np.full((n_boot, len(folds)), np.nan)
    for f in range(len(folds)):
        rows = oof.fold == folds[f]
        w = W[:, unit[rows]]
        if m.needs_score:
            values[:, f] = _bootstrap_auc(oof.y_true[rows] == POSITIVE, oof.score[rows], unit[rows], W)
        else:
            onehot = np.zeros((rows.sum(), 4))
            onehot[np.arange(rows.sum()), oof.y_true[rows] * 2 + oof.y_pred[rows]] = 1
            values[:, f] = m.batched((w @ onehot).reshape(-1, 2, 2), POSITIVE)
    mean = np.nanmean(values, axis=1)
    low, high = np.nanpercentile(mean, [2.5, 97.5])
    if widen:
        est = estimate(oof, metric)
        low, high = min(low, est), max(high, est)
    return float(low), float(high)


def _bootstrap_auc(is_pos, score, unit, W):
    """AUC of one fold under each row of unit weights ``W`` (B, units): pairs of units counted once."""
    present = np.unique(unit)
    M = np.zeros((len(present), len(present)))  # M[g, h]: pairs (positive of g above negative of h), ties half
    for a, g in enumerate(present):
        s = score[(unit == g) & is_pos]
        if not len(s):
            continue
        for b, h in enumerate(present):
            neg = np.sort(score[(unit == h) & ~is_pos])
            if len(neg):
                M[a, b] = ((np.searchsorted(neg, s, "left") + np.searchsorted(neg, s, "right")) / 2).sum()
    n_pos = np.array([np.sum((unit == g) & is_pos) for g in present], float)
    n_neg = np.array([np.sum((unit == g) & ~is_pos) for g in present], float)
    w = W[:, present]
    den = (w @ n_pos) * (w @ n_neg)
    return np.divide(np.einsum("bg,gh,bh->b", w, M, w), den, out=np.full(len(w), np.nan), where=den > 0)


def nb_corrected(fold_vals: np.ndarray, n_test: float, n_train: float, level: float = 0.95):
    """Nadeau-Bengio corrected t-interval of the mean of J fold values (``fold_vals``)."""
    v = fold_vals[np.isfinite(fold_vals)]
    J = len(v)
    se = np.sqrt((1 / J + n_test / n_train) * np.var(v, ddof=1))
    q = stats.t.ppf((1 + level) / 2, J - 1)
    return float(v.mean() - q * se), float(v.mean() + q * se)


def replicate(d: Design, rep: int, repeats: int = 0, n_boot: int = 400, methods=("jackknife",)) -> dict:
    """One data set: the estimate, the conditional truth and each method's interval of every metric."""
    rng = np.random.default_rng([rep, 2024])
    (pop,), y_pop = POP[d]
    if d.held_out is None:
        (X,), y, subject = draw(rng, d, d.n_all, d.n_hem)
    else:  # training subjects, then the held-out split's (numbered after them)
        (Xa,), ya, sa = draw(rng, d, d.n_all, d.n_hem)
        (Xb,), yb, sb = draw(rng, d, *d.held_out)
        X, y, subject = np.r_[Xa, Xb], np.r_[ya, yb], np.r_[sa, sb + d.n_all + d.n_hem]
    folds = _protocol(d, y, subject, seed=rep)
    oof, cond = run_protocol(d, X, y, subject, folds, pop, y_pop)
    out = {"est": {}, "cond": cond, "ci": {m: {} for m in STUDY_METRICS}, "na": design_reason(oof)}
    images = replace(oof, subject=None, _units=None)  # the same predictions, cells taken as independent
    for metric in STUDY_METRICS:
        out["est"][metric] = estimate(oof, metric)
        for method in ("jackknife", "linearization"):
            if method in methods:
                iv = interval(oof, metric, reason=out["na"], method=method)
                out["ci"][metric][method] = (iv.low, iv.high)
        if "images-as-unit" in methods:
            iv = interval(images, metric)
            out["ci"][metric]["images-as-unit"] = (iv.low, iv.high)
        if "old-bootstrap" in methods:
            out["ci"][metric]["old-bootstrap"] = old_bootstrap(oof, metric, n_boot, rng)
        if "strat-bootstrap" in methods:
            out["ci"][metric]["strat-bootstrap"] = strat_bootstrap(oof, metric, n_boot, rng)
    if repeats and d.held_out is None:
        values = {m: [fold_values(oof, m)] for m in STUDY_METRICS}
        for r in range(1, repeats):
            more, _ = run_protocol(d, X, y, subject, _protocol(d, y, subject, seed=10_000 * rep + r), pop, y_pop)
            for m in STUDY_METRICS:
                values[m].append(fold_values(more, m))
        n_test = len(y) / d.n_folds
        for m in STUDY_METRICS:
            out["ci"][m][f"nb-corrected R={repeats}"] = nb_corrected(np.concatenate(values[m]), n_test,
                                                                      len(y) - n_test)
    return out


def paired_replicate(d: Design, rep: int, signals) -> dict:
    """Two heads on two feature sets of the same subjects, scored on the same folds: their difference's
    interval and p-value on weighted F1 and accuracy."""
    rng = np.random.default_rng([rep, 77])
    pops, y_pop = POP[(d, signals)]
    (XA, XB), y, subject = draw(rng, d, d.n_all, d.n_hem, signals=signals)
    folds = _protocol(d, y, subject, seed=rep)
    a, cond_a = run_protocol(d, XA, y, subject, folds, pops[0], y_pop)
    b, cond_b = run_protocol(d, XB, y, subject, folds, pops[1], y_pop)
    out = {}
    for metric in ("f1_weighted", "accuracy"):
        diff = difference(b, a, metric)
        out[metric] = {"delta": diff.delta, "low": diff.low, "high": diff.high, "p": diff.p_value,
                       "cond": cond_b[metric] - cond_a[metric]}
    return out


POP: dict = {}


def _with_population(key, signals=(None,)):
    d = key[0] if isinstance(key, tuple) else key
    if key not in POP:
        POP[key] = population(d, signals)


def _run_replicate(d, rep, repeats, methods):
    _with_population(d)
    return replicate(d, rep, repeats, methods=methods)


def _run_paired(d, rep, signals):
    _with_population((d, signals), signals)
    return paired_replicate(d, rep, signals)


# --------------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------------
METHODS = ("jackknife", "linearization", "old-bootstrap", "strat-bootstrap")


def coverage_study(d: Design, reps: int, *, repeats: int = 0, jobs: int = 1, methods=METHODS,
                   n_train: int = 200) -> dict:
    """Coverage of each method's interval of each metric in ``reps`` replicates of design ``d``."""
    expected = expected_truth(d, n_train=n_train)[0]
    results = Parallel(n_jobs=jobs)(delayed(_run_replicate)(d, r, repeats, methods) for r in range(reps))
    table = {}
    for m in STUDY_METRICS:
        est = np.array([r["est"][m] for r in results])
        cond = np.array([r["cond"][m] for r in results])
        row = {"expected_truth": expected[m], "bias": float(np.nanmean(est) - expected[m]),
               "sd_estimate": float(np.nanstd(est)), "methods": {}}
        for method in results[0]["ci"][m]:
            ci = np.array([r["ci"][m][method] for r in results], dtype=float)
            given = np.isfinite(ci).all(axis=1)
            low, high = ci[:, 0], ci[:, 1]
            row["methods"][method] = {
                "n_intervals": int(given.sum()),
                "coverage_conditional": float(np.mean((low <= cond) & (cond <= high))) if given.all() else
                float(np.mean(((low <= cond) & (cond <= high))[given])) if given.any() else None,
                "coverage_expected": float(np.mean(((low <= expected[m]) & (expected[m] <= high))[given]))
                if given.any() else None,
                "mean_width": float(np.mean((high - low)[given])) if given.any() else None,
                "truth_above": float(np.mean((cond > high)[given])) if given.any() else None,
                "truth_below": float(np.mean((cond < low)[given])) if given.any() else None,
            }
        table[m] = row
    na = [r["na"] for r in results if r["na"]]
    return {"design": d.name, "reps": reps, "metrics": table, "n_a": len(na), "n_a_example": na[0] if na else None}


def paired_study(d: Design, reps: int, *, signals, jobs: int = 1, n_train: int = 200) -> dict:
    """How often the paired interval excludes 0 (and p < 0.05) when two rows compare ``signals``."""
    truths = expected_truth(d, signals, n_train=n_train)
    results = Parallel(n_jobs=jobs)(delayed(_run_paired)(d, r, tuple(signals)) for r in range(reps))
    out = {"design": d.name, "reps": reps, "signals": list(signals), "metrics": {}}
    for m in ("f1_weighted", "accuracy"):
        rs = [r[m] for r in results if r[m]["low"] is not None]
        excl = np.array([not (r["low"] <= 0 <= r["high"]) for r in rs])
        sig = np.array([r["p"] < 0.05 for r in rs])
        out["metrics"][m] = {"expected_difference": truths[1][m] - truths[0][m],
                             "mean_difference": float(np.mean([r["delta"] for r in rs])),
                             "excludes_zero": float(excl.mean()), "p_below_0.05": float(sig.mean()),
                             "n": len(rs)}
    return out


def format_coverage(res: dict) -> str:
    lines = [f"### {res['design']}: {res['reps']} replicates"
             + (f" ({res['n_a']} n/a: e.g. {res['n_a_example']})" if res["n_a"] else ""),
             "", "| metric | truth | bias | sd | method | coverage (conditional) | above / below | coverage (expected) "
                 "| width |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, row in res["metrics"].items():
        for method, v in row["methods"].items():
            cov_c = "n/a" if v["coverage_conditional"] is None else f"{v['coverage_conditional']:.3f}"
            cov_e = "n/a" if v["coverage_expected"] is None else f"{v['coverage_expected']:.3f}"
            width = "n/a" if v["mean_width"] is None else f"{100 * v['mean_width']:.2f}"
            miss = "n/a" if v["truth_above"] is None else f"{v['truth_above']:.3f} / {v['truth_below']:.3f}"
            lines.append(f"| {m} | {100 * row['expected_truth']:.2f} | {100 * row['bias']:+.2f} | "
                         f"{100 * row['sd_estimate']:.2f} | {method} | {cov_c} | {miss} | {cov_e} | {width} |")
    return "\n".join(lines)


def format_paired(res: dict, label: str) -> str:
    lines = [f"### paired test, {label}: {res['design']}, {res['reps']} replicates", "",
             "| metric | expected difference | mean difference | interval excludes 0 | p < 0.05 |",
             "|---|---|---|---|---|"]
    for m, v in res["metrics"].items():
        lines.append(f"| {m} | {100 * v['expected_difference']:+.2f} | {100 * v['mean_difference']:+.2f} | "
                     f"{v['excludes_zero']:.3f} | {v['p_below_0.05']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--designs", default="cnmc,30,demo,prelim", help=f"comma-separated: {', '.join(DESIGNS)}")
    p.add_argument("--reps", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=0, help="also the NB-corrected interval of R repeats")
    p.add_argument("--paired-reps", type=int, default=1000, help="replicates of the paired test (0: none)")
    p.add_argument("--power-signal", type=float, default=2.28, help="the weaker feature set's signal")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="also write the study as JSON")
    args = p.parse_args(argv)
    t0 = time.time()
    report = {"coverage": [], "paired": []}
    for key in args.designs.split(","):
        res = coverage_study(DESIGNS[key], args.reps, repeats=args.repeats, jobs=args.jobs)
        report["coverage"].append(res)
        print(format_coverage(res), f"\n({time.time() - t0:.0f} s)\n", flush=True)
    if args.paired_reps:
        d = DESIGNS["cnmc"]
        for label, signals in (("equal truth", (d.signal, d.signal)),
                               ("a weaker feature set", (d.signal, args.power_signal))):
            res = paired_study(d, args.paired_reps, signals=signals, jobs=args.jobs)
            report["paired"].append({"label": label, **res})
            print(format_paired(res, label), f"\n({time.time() - t0:.0f} s)\n", flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
