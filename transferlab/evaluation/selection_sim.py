"""Which within-budget selection rule to default to, by simulation.

A replicate chooses between candidates (strategies, configurations) on its budget's labels only
(:mod:`transferlab.adapt.selection`). This module measures, on synthetic tasks, how often each
rule's choice is the candidate truly best on a large test set after the refit on all budget
labels (*selection accuracy*), the mean test accuracy lost to a wrong choice (*regret*), and
what the rule costs in fits per candidate (its folds or splits, plus the refit).

- Tasks (:class:`TaskSpec`, :func:`make_task`): C Gaussian classes in d dimensions with a shared
  anisotropic covariance, a separation drawn per task (log-uniform), and optionally two modes
  per class (a per-task share), so that accuracies range widely and the candidates' ranking
  changes with the task and the budget. Every repetition draws a new task.
- Candidates (:data:`DEFAULT_CANDIDATES`): closed-form learners of different quality (nearest
  class mean, Ledoit-Wolf shrunk LDA, one-hot ridge classifiers at three penalties, 1-NN). They
  stand for strategies; closed forms keep thousands of fits within seconds.
- Rules (:class:`Rule`): split the budget with the pipeline's own
  :func:`~transferlab.adapt.selection.plan_selection`; a candidate's score is its accuracy pooled
  over every held-out example of every fold (kfold: each budget label exactly once) and of
  every repeat (repeated holdout); the best score wins, ties to the earlier candidate.

The budgets of one repetition are nested (the first n labels per class of one draw), and every
rule of a (repetition, budget) sees the same labels and the same test set, so rules are paired:
:func:`summarize` gives each rule's difference in regret to a reference rule with its paired
standard error. Not modelled: the pipeline's score is also a maximum over epochs (early
stopping), which a candidate here does not have.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from transferlab.adapt.selection import plan_selection
from transferlab.config.params import SelectionParams

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_RULES",
    "Predictor",
    "Candidate",
    "Rule",
    "Task",
    "TaskSpec",
    "make_task",
    "markdown_table",
    "rule_scores",
    "simulate",
    "simulate_records",
    "summarize",
]

Predictor = Callable[[np.ndarray], np.ndarray]  # (N, d) features -> (N,) predicted labels


# ---------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class TaskSpec:
    """The distribution tasks are drawn from (each range inclusive; log-uniform where noted)."""

    classes: tuple[int, int] = (5, 10)
    dims: tuple[int, int] = (20, 64)
    # log-uniform: typical distance between two class centres, in noise standard deviations
    separation: tuple[float, float] = (2.5, 8.0)
    condition: tuple[float, float] = (1.0, 100.0)  # log-uniform: shared covariance's condition
    multimodal_share: float = 0.5  # share of tasks whose classes have two modes each
    test_size: int = 2000  # test examples (split evenly over the classes, rounded up)


@dataclass(frozen=True)
class Task:
    """One drawn task: its class modes, the noise's covariance root, and its test set."""

    means: np.ndarray  # (C, M, d): M modes per class (1 or 2), drawn with equal chance
    scale: np.ndarray  # (d, d): x = mode + scale @ z, z standard normal
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def n_classes(self) -> int:
        """Number of classes C."""
        return int(self.means.shape[0])

    def sample(self, per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``per_class`` examples of every class.

        Args:
            per_class: examples per class.
            rng: the generator to draw from.
        Returns:
            (features (C * per_class, d), labels (C * per_class,)), grouped by class.
        """
        return _draw(self.means, self.scale, per_class, rng)


def _draw(means: np.ndarray, scale: np.ndarray, per_class: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    c, m, d = means.shape
    y = np.repeat(np.arange(c), per_class)
    mode = rng.integers(0, m, size=len(y))
    x = means[y, mode] + rng.standard_normal((len(y), d)) @ scale.T
    return x, y


def make_task(spec: TaskSpec, rng: np.random.Generator) -> Task:
    """Draw one task from ``spec``.

    Args:
        spec: the task distribution.
        rng: the generator to draw from.
    Returns:
        The :class:`Task`, with its test set already drawn.
    """
    c = int(rng.integers(spec.classes[0], spec.classes[1] + 1))
    d = int(rng.integers(spec.dims[0], spec.dims[1] + 1))
    sep = math.exp(rng.uniform(*np.log(spec.separation)))
    cond = math.exp(rng.uniform(*np.log(spec.condition)))
    eig = cond ** -rng.uniform(0, 1, size=d)
    eig /= eig.mean()  # total noise variance d, whatever the condition
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scale = q * np.sqrt(eig)  # covariance q diag(eig) q^T
    centres = sep * rng.standard_normal((c, 1, d)) / math.sqrt(2 * d)  # distances ~ sep
    if rng.uniform() < spec.multimodal_share:  # two modes per class, each near the centre
        offsets = sep * rng.standard_normal((c, 1, d)) / math.sqrt(2 * d)
        means = np.concatenate([centres + offsets, centres - offsets], axis=1)
    else:
        means = centres
    test_x, test_y = _draw(means, scale, -(-spec.test_size // c), rng)
    return Task(means, scale, test_x, test_y)


# ------------------------------------------------------------------------------ candidates
@dataclass(frozen=True)
class Candidate:
    """A learner: ``fit(features, labels, n_classes)`` returns a predictor."""

    name: str
    fit: Callable[[np.ndarray, np.ndarray, int], Predictor]


def _class_means(x: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    return np.stack([x[y == k].mean(axis=0) for k in range(c)])


def _fit_ncm(x: np.ndarray, y: np.ndarray, c: int) -> Predictor:
    mu = _class_means(x, y, c)
    w, b = mu, -0.5 * (mu * mu).sum(axis=1)
    return lambda z: np.argmax(z @ w.T + b, axis=1)


def _fit_lda(x: np.ndarray, y: np.ndarray, c: int) -> Predictor:
    """Linear discriminant with the pooled within-class covariance shrunk to a scaled identity
    by the Ledoit-Wolf formula (a nearest class mean where no within-class spread exists)."""
    mu = _class_means(x, y, c)
    r = x - mu[y]
    n, d = r.shape
    s = r.T @ r / n
    target = np.trace(s) / d
    if target <= 1e-12:
        return _fit_ncm(x, y, c)
    # Ledoit-Wolf: shrinkage = min(1, sum_i ||r_i r_i^T - S||_F^2 / n^2 / ||S - target I||_F^2)
    row2 = (r * r).sum(axis=1)
    beta = ((row2 ** 2).sum() / n - (s * s).sum()) / n
    delta = ((s - target * np.eye(d)) ** 2).sum()
    alpha = 1.0 if delta <= 0 else min(1.0, max(0.0, beta / delta))
    cov = (1 - alpha) * s + alpha * target * np.eye(d)
    w = np.linalg.solve(cov, mu.T).T
    b = -0.5 * (w * mu).sum(axis=1)
    return lambda z: np.argmax(z @ w.T + b, axis=1)


def _ridge(alpha: float) -> Callable[[np.ndarray, np.ndarray, int], Predictor]:
    """One-hot least squares with an L2 penalty ``alpha`` times the mean squared norm of the
    centred features (so the penalty means the same across dimensions), and an intercept."""

    def fit(x: np.ndarray, y: np.ndarray, c: int) -> Predictor:
        mx = x.mean(axis=0)
        xc = x - mx
        t = np.eye(c)[y]
        t -= t.mean(axis=0)
        lam = alpha * max((xc * xc).sum() / len(x), 1e-12)
        gram = xc @ xc.T  # dual form: n <= a few hundred
        w = xc.T @ np.linalg.solve(gram + lam * np.eye(len(x)), t)
        return lambda z: np.argmax((z - mx) @ w, axis=1)

    return fit


def _fit_1nn(x: np.ndarray, y: np.ndarray, c: int) -> Predictor:
    sq = (x * x).sum(axis=1)
    return lambda z: y[np.argmin(sq - 2 * z @ x.T, axis=1)]


DEFAULT_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("ncm", _fit_ncm),
    Candidate("lda_lw", _fit_lda),
    Candidate("ridge_0.01", _ridge(0.01)),
    Candidate("ridge_1", _ridge(1.0)),
    Candidate("ridge_100", _ridge(100.0)),
    Candidate("1nn", _fit_1nn),
)


# ----------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """A selection rule: the pipeline's ``selection`` params, applied ``repeats`` times with
    different split seeds (scores pooled over every repeat)."""

    name: str
    params: SelectionParams = field(default_factory=SelectionParams)
    repeats: int = 1


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("holdout"),
    Rule("holdout_x3", repeats=3),
    Rule("kfold2", SelectionParams(scheme="kfold", folds=2)),
    Rule("kfold3", SelectionParams(scheme="kfold", folds=3)),
    Rule("kfold5", SelectionParams(scheme="kfold", folds=5)),
)


def rule_scores(x: np.ndarray, y: np.ndarray, rule: Rule, candidates: Sequence[Candidate],
                seed: int, cache: dict | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """Score every candidate under one rule on one budget.

    Args:
        x: (B, d) the budget's features (the pool is the budget: indices 0..B-1).
        y: (B,) its labels.
        rule: the rule.
        candidates: the learners.
        seed: the replicate's split seed (repeat r uses ``seed + r``; repeat 0 is the plain
            rule's split, as in the pipeline).
        cache: optional {(candidate, train indices): held-out predictions for a fit}, shared by
            the rules of one budget so that an identical split is not refitted.
    Returns:
        (scores (K,) pooled held-out accuracy per candidate, fits per candidate including the
        refit, times each budget example was held out (B,)).
    """
    cache = {} if cache is None else cache
    budget_idx = np.arange(len(y), dtype=np.int64)
    correct = np.zeros(len(candidates))
    held_times = np.zeros(len(y), dtype=np.int64)
    fits = 1  # the refit on all budget labels
    for r in range(rule.repeats):
        plan = plan_selection(budget_idx, y, rule.params, seed + r)
        if not plan.folds:
            raise ValueError(f"rule {rule.name}: no held-out labels at {len(y)} labels "
                             f"({plan.method}); budgets need >= 2 labels per class")
        for train, held in plan.folds:
            fits += 1
            held_times[held] += 1
            for k, cand in enumerate(candidates):
                key = (k, train.tobytes(), held.tobytes())
                if key not in cache:
                    cache[key] = cand.fit(x[train], y[train], int(y.max()) + 1)(x[held])
                correct[k] += (cache[key] == y[held]).sum()
    return correct / held_times.sum(), fits, held_times


# ------------------------------------------------------------------------------ simulation
def simulate_records(reps: int, budgets: Sequence[int], rules: Sequence[Rule] = DEFAULT_RULES,
                     seed: int = 0, candidates: Sequence[Candidate] = DEFAULT_CANDIDATES,
                     spec: TaskSpec | None = None) -> pd.DataFrame:
    """Run the simulation and keep one row per (repetition, budget, rule).

    Args:
        reps: repetitions (each a new task, budget draw and split seed).
        budgets: labels per class, each >= 2.
        rules: the rules compared.
        seed: the simulation's seed (the result is a function of it and the arguments).
        candidates: the learners chosen between.
        spec: the task distribution (default :class:`TaskSpec`).
    Returns:
        Columns rep, budget, rule, fits, selected, best, correct (the selected candidate's
        test accuracy equals the best's), regret (best minus selected test accuracy),
        best_acc, selected_acc, held_per_label (mean times a budget label was held out), and
        test_<name>: each candidate's test accuracy after the refit.
    """
    spec = TaskSpec() if spec is None else spec
    budgets = sorted(int(b) for b in budgets)
    if budgets[0] < 2:
        raise ValueError(f"budgets need >= 2 labels per class to hold any out, got {budgets}")
    names = [c.name for c in candidates]
    rows = []
    for rep in range(reps):
        rng = np.random.default_rng([seed, rep])
        task = make_task(spec, rng)
        c = task.n_classes
        px, py = task.sample(budgets[-1], rng)  # nested budgets: first n of each class
        split_seed = int(rng.integers(2**31))
        for n in budgets:
            take = (np.arange(c)[:, None] * budgets[-1] + np.arange(n)).ravel()
            x, y = px[take], py[take]
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                test_acc = np.array([(cand.fit(x, y, c)(task.test_x) == task.test_y).mean()
                                     for cand in candidates])
                cache: dict = {}
                for rule in rules:
                    scores, fits, held = rule_scores(x, y, rule, candidates, split_seed, cache)
                    sel = int(np.argmax(scores))  # ties: the earlier candidate
                    best = float(test_acc.max())
                    rows.append({
                        "rep": rep, "budget": n, "rule": rule.name, "fits": fits,
                        "selected": names[sel], "best": names[int(np.argmax(test_acc))],
                        "correct": bool(test_acc[sel] == best),
                        "regret": best - float(test_acc[sel]), "best_acc": best,
                        "selected_acc": float(test_acc[sel]),
                        "held_per_label": float(held.mean()),
                        **{f"test_{m}": float(a) for m, a in zip(names, test_acc, strict=True)},
                    })
    return pd.DataFrame(rows)


def _se(v: np.ndarray) -> float:
    return float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def summarize(records: pd.DataFrame, reference: str | None = "holdout") -> pd.DataFrame:
    """One row per rule x budget from :func:`simulate_records`' rows.

    Args:
        records: the per-repetition rows.
        reference: the rule that ``regret_diff`` compares with (paired by repetition and
            budget); None or absent: no comparison columns.
    Returns:
        Columns budget, rule, reps, fits_per_candidate, selection_accuracy, selection_se,
        regret, regret_se, best_acc (mean test accuracy of the truly best candidate), and
        regret_diff, regret_diff_se (this rule's regret minus the reference's).
    """
    order = list(dict.fromkeys(records["rule"]))
    ref = None
    if reference is not None and reference in order:
        ref = records[records["rule"] == reference].set_index(["rep", "budget"])["regret"]
    out = []
    for (budget, rule), g in records.groupby(["budget", "rule"], sort=False):
        row = {"budget": int(budget), "rule": rule, "reps": len(g),
               "fits_per_candidate": float(g["fits"].mean()),
               "selection_accuracy": float(g["correct"].mean()),
               "selection_se": _se(g["correct"].to_numpy(float)),
               "regret": float(g["regret"].mean()), "regret_se": _se(g["regret"].to_numpy()),
               "best_acc": float(g["best_acc"].mean())}
        if ref is not None:
            mine = g.set_index(["rep", "budget"])["regret"]
            diff = mine - ref.reindex(mine.index)
            row["regret_diff"] = float(diff.mean())
            row["regret_diff_se"] = _se(diff.to_numpy())
        out.append(row)
    df = pd.DataFrame(out)
    df["_r"] = df["rule"].map(order.index)
    return df.sort_values(["budget", "_r"]).drop(columns="_r").reset_index(drop=True)


def simulate(reps: int, budgets: Sequence[int], rules: Sequence[Rule] = DEFAULT_RULES,
             seed: int = 0, candidates: Sequence[Candidate] = DEFAULT_CANDIDATES,
             spec: TaskSpec | None = None) -> pd.DataFrame:
    """Selection accuracy, regret and cost of each rule at each budget.

    Args:
        reps: repetitions (each a new task).
        budgets: labels per class, each >= 2.
        rules: the rules compared (the first is the reference of ``regret_diff``).
        seed: the simulation's seed.
        candidates: the learners chosen between.
        spec: the task distribution.
    Returns:
        :func:`summarize` of :func:`simulate_records`: one row per rule x budget.
    """
    records = simulate_records(reps, budgets, rules, seed, candidates, spec)
    return summarize(records, reference=rules[0].name if rules else None)


def markdown_table(summary: pd.DataFrame) -> str:
    """Render :func:`simulate`'s frame as a markdown table (accuracies and regret in %).

    Args:
        summary: the frame.
    Returns:
        The table, one line per rule x budget, newline-terminated.
    """
    diff = "regret_diff" in summary.columns
    head = ["n/class", "rule", "fits/cand.", "sel. acc. % (±se)", "regret pp (±se)"]
    if diff:
        head.append("Δregret vs ref. pp (±se)")
    head.append("best test acc. %")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in summary.itertuples(index=False):
        cells = [str(r.budget), r.rule, f"{r.fits_per_candidate:.2g}",
                 f"{100 * r.selection_accuracy:.1f} ± {100 * r.selection_se:.1f}",
                 f"{100 * r.regret:.2f} ± {100 * r.regret_se:.2f}"]
        if diff:
            cells.append(f"{100 * r.regret_diff:+.2f} ± {100 * r.regret_diff_se:.2f}")
        cells.append(f"{100 * r.best_acc:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
